import Foundation

/// Everything that fixes the experiment and the simulation: instrument, zone plate,
/// sample, forward-model settings, parameter ranges, library steps and noise.
///
/// Keys are snake_case with units in the name (`energy_keV`, `detector_distance_m`), the
/// same in YAML (`configs/*.yaml`) and in the JSON copy written into every result file.
/// Loading and unknown-key checks live in DonutIO; `validate()` here checks the physics.
public struct DonutConfig: Codable, Equatable, Sendable {
    public var instrument: Instrument
    public var zonePlate: ZonePlate
    public var sample: Sample
    public var model: ModelSettings
    public var ranges: ParameterRanges
    public var library: LibrarySteps
    public var noise: Noise

    enum CodingKeys: String, CodingKey {
        case instrument, zonePlate = "zone_plate", sample, model, ranges, library, noise
    }

    public init(instrument: Instrument, zonePlate: ZonePlate, sample: Sample,
                model: ModelSettings, ranges: ParameterRanges, library: LibrarySteps,
                noise: Noise) {
        self.instrument = instrument; self.zonePlate = zonePlate; self.sample = sample
        self.model = model; self.ranges = ranges; self.library = library; self.noise = noise
    }

    /// The published preset: SrIrO3 (002) on LSAT, 11.3 keV (Luo et al.; Zhou et al.).
    public static let srio3LSAT002 = DonutConfig(
        instrument: Instrument(
            energyKeV: 11.3, detectorDistanceM: 0.85, pixelSizeM: 55e-6, binning: 2,
            x0: 256, xcen: 256, roi: DetectorROI(x: 192, y: 192, width: 128, height: 128),
            deltaThetaDeg: 0),
        zonePlate: ZonePlate(focalLengthM: 0.021874, diameterM: 149e-6,
                             centralStopDiameterM: 77e-6, upsampling: 2),
        sample: Sample(latticeCA: 4.013, reflectionL: 2, thicknessA: 117),
        model: ModelSettings(frameSize: 64, boxHalfWidthInvA: 5e-4,
                             smoothSigmaInvA: ModelSettings.secondMomentSigma(halfWidth: 5e-4)),
        ranges: ParameterRanges(strain: [-0.005, 0.005], tiltLRDeg: [-0.05, 0.05],
                                tiltUDDeg: [-0.1, 0.1], thicknessA: [80, 160]),
        library: LibrarySteps(strain: 41, tiltLR: 41, tiltUD: 41, thickness: 1),
        noise: Noise(peakPhotons: 7))
}

public struct DetectorROI: Codable, Equatable, Sendable {
    /// First column and row of the region of interest on the raw detector (pixels).
    public var x: Int
    public var y: Int
    /// Size of the region on the raw detector (pixels), before binning.
    public var width: Int
    public var height: Int
    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x; self.y = y; self.width = width; self.height = height
    }
}

public struct Instrument: Codable, Equatable, Sendable {
    /// Photon energy (keV); λ[Å] = 12.398 / E.
    public var energyKeV: Double
    /// Sample–detector distance D (m).
    public var detectorDistanceM: Double
    /// Raw detector pixel (m); the model pixel is `pixelSizeM * binning`.
    public var pixelSizeM: Double
    /// Binning applied to the ROI (raw ROI / binning = model frame size).
    public var binning: Int
    /// Detector column (model pixels, frame coordinates + offset) of the specular exit beam γ0.
    public var x0: Double
    /// Detector column (model pixels) at the centre of the frame.
    public var xcen: Double
    /// ROI cut from raw detector frames larger than the model frame.
    public var roi: DetectorROI
    /// Offset added to the Bragg angle (deg): the sample's rocking angle error.
    public var deltaThetaDeg: Double

    enum CodingKeys: String, CodingKey {
        case energyKeV = "energy_keV", detectorDistanceM = "detector_distance_m"
        case pixelSizeM = "pixel_size_m", binning, x0 = "X0", xcen = "Xcen", roi
        case deltaThetaDeg = "delta_theta_deg"
    }
    public init(energyKeV: Double, detectorDistanceM: Double, pixelSizeM: Double, binning: Int,
                x0: Double, xcen: Double, roi: DetectorROI, deltaThetaDeg: Double) {
        self.energyKeV = energyKeV; self.detectorDistanceM = detectorDistanceM
        self.pixelSizeM = pixelSizeM; self.binning = binning; self.x0 = x0; self.xcen = xcen
        self.roi = roi; self.deltaThetaDeg = deltaThetaDeg
    }
    /// Wavelength λ (Å).
    public var wavelengthA: Double { 12.398 / energyKeV }
}

public struct ZonePlate: Codable, Equatable, Sendable {
    /// Focal length f (m).
    public var focalLengthM: Double
    /// Zone-plate diameter d_ZP (m); outer angle d_ZP / 2f.
    public var diameterM: Double
    /// Central-stop diameter d_CS (m); inner angle d_CS / 2f.
    public var centralStopDiameterM: Double
    /// Zone-plate grid points per detector pixel (grid = frameSize × upsampling).
    public var upsampling: Int

    enum CodingKeys: String, CodingKey {
        case focalLengthM = "focal_length_m", diameterM = "diameter_m"
        case centralStopDiameterM = "central_stop_diameter_m", upsampling
    }
    public init(focalLengthM: Double, diameterM: Double, centralStopDiameterM: Double, upsampling: Int) {
        self.focalLengthM = focalLengthM; self.diameterM = diameterM
        self.centralStopDiameterM = centralStopDiameterM; self.upsampling = upsampling
    }
}

public struct Sample: Codable, Equatable, Sendable {
    /// Out-of-plane lattice constant c of the unstrained film (Å).
    public var latticeCA: Double
    /// Reflection order l of the (00l) Bragg peak.
    public var reflectionL: Int
    /// Film thickness t (Å) used when thickness is not a fitted parameter.
    public var thicknessA: Double

    enum CodingKeys: String, CodingKey {
        case latticeCA = "lattice_c_A", reflectionL = "reflection_l", thicknessA = "thickness_A"
    }
    public init(latticeCA: Double, reflectionL: Int, thicknessA: Double) {
        self.latticeCA = latticeCA; self.reflectionL = reflectionL; self.thicknessA = thicknessA
    }
}

public struct ModelSettings: Codable, Equatable, Sendable {
    /// Model frame edge (pixels, after ROI and binning).
    public var frameSize: Int
    /// Box model half-width h (Å⁻¹): Px = [|qx| < h], Py = [|qy| < h].
    public var boxHalfWidthInvA: Double
    /// Smooth model width σ (Å⁻¹): Px = exp(−qx²/σ²), Py = exp(−qy²/σ²).
    public var smoothSigmaInvA: Double

    enum CodingKeys: String, CodingKey {
        case frameSize = "frame_size", boxHalfWidthInvA = "box_half_width_invA"
        case smoothSigmaInvA = "smooth_sigma_invA"
    }
    public init(frameSize: Int, boxHalfWidthInvA: Double, smoothSigmaInvA: Double) {
        self.frameSize = frameSize; self.boxHalfWidthInvA = boxHalfWidthInvA
        self.smoothSigmaInvA = smoothSigmaInvA
    }

    /// σ whose Gaussian exp(−q²/σ²) has the second moment of a box of half-width h:
    /// σ²/2 = h²/3, so σ = h·√(2/3) (4.08e-4 Å⁻¹ for h = 5e-4). Measured over the
    /// published library this correlates 0.9991 on average with the box model
    /// (`donut bench smooth-vs-box`), essentially the optimum over σ.
    public static func secondMomentSigma(halfWidth h: Double) -> Double { h * (2.0 / 3.0).squareRoot() }
}

public struct ParameterRanges: Codable, Equatable, Sendable {
    /// [min, max] of strain ε (dimensionless).
    public var strain: [Double]
    /// [min, max] of the in-plane tilt ω (deg).
    public var tiltLRDeg: [Double]
    /// [min, max] of the out-of-plane tilt χ (deg).
    public var tiltUDDeg: [Double]
    /// [min, max] of the film thickness (Å).
    public var thicknessA: [Double]

    enum CodingKeys: String, CodingKey {
        case strain, tiltLRDeg = "tilt_lr_deg", tiltUDDeg = "tilt_ud_deg", thicknessA = "thickness_A"
    }
    public init(strain: [Double], tiltLRDeg: [Double], tiltUDDeg: [Double], thicknessA: [Double]) {
        self.strain = strain; self.tiltLRDeg = tiltLRDeg; self.tiltUDDeg = tiltUDDeg
        self.thicknessA = thicknessA
    }
}

public struct LibrarySteps: Codable, Equatable, Sendable {
    /// Number of library points along each axis (linspace over the ranges, ends included).
    /// `thickness == 1` means no thickness axis (the sample thickness is used).
    public var strain: Int
    public var tiltLR: Int
    public var tiltUD: Int
    public var thickness: Int

    enum CodingKeys: String, CodingKey {
        case strain, tiltLR = "tilt_lr", tiltUD = "tilt_ud", thickness
    }
    public init(strain: Int, tiltLR: Int, tiltUD: Int, thickness: Int) {
        self.strain = strain; self.tiltLR = tiltLR; self.tiltUD = tiltUD; self.thickness = thickness
    }
}

public struct Noise: Codable, Equatable, Sendable {
    /// Frames are scaled so that their maximum is this many photons, then Poisson-sampled.
    public var peakPhotons: Double

    enum CodingKeys: String, CodingKey { case peakPhotons = "peak_photons" }
    public init(peakPhotons: Double) { self.peakPhotons = peakPhotons }
}

/// A configuration read from YAML with strict checks (DonutIO's `ConfigFile`): every key
/// required, unknown keys rejected, types checked against `schemaExample`, then `validate()`.
public protocol StrictConfig: Codable, Equatable, Sendable {
    /// A complete value whose encoding defines the allowed keys and their types.
    static var schemaExample: Self { get }
    /// Physical or logical checks; throws `ConfigError` naming the dotted key.
    func validate() throws
    /// Keys that may be left out (decoded as nil), as dotted paths with `[]` for any list
    /// index: `"defaults.model"`, `"scans[].dataset"`. Empty by default: every key required.
    static var optionalKeys: Set<String> { get }
}

extension StrictConfig {
    public static var optionalKeys: Set<String> { [] }
}

extension DonutConfig: StrictConfig {
    public static var schemaExample: DonutConfig { .srio3LSAT002 }
}

/// A config value that cannot describe a real experiment; `key` is the dotted YAML path.
public struct ConfigError: Error, Equatable, CustomStringConvertible, Sendable {
    public var key: String
    public var message: String
    public init(key: String, _ message: String) { self.key = key; self.message = message }
    public var description: String { "config key '\(key)': \(message)" }
}

extension DonutConfig {
    /// Checks that every value is physical; throws naming the first offending key.
    public func validate() throws {
        func positive(_ v: Double, _ key: String) throws {
            guard v.isFinite, v > 0 else { throw ConfigError(key: key, "must be a positive finite number (got \(v))") }
        }
        func positiveInt(_ v: Int, _ key: String) throws {
            guard v > 0 else { throw ConfigError(key: key, "must be a positive integer (got \(v))") }
        }
        func finite(_ v: Double, _ key: String) throws {
            guard v.isFinite else { throw ConfigError(key: key, "must be finite (got \(v))") }
        }
        func range(_ r: [Double], _ key: String, positiveOnly: Bool = false) throws {
            guard r.count == 2 else { throw ConfigError(key: key, "must be [min, max] (got \(r.count) values)") }
            guard r[0].isFinite, r[1].isFinite, r[0] < r[1] else {
                throw ConfigError(key: key, "must be [min, max] with min < max (got \(r))")
            }
            if positiveOnly, r[0] <= 0 { throw ConfigError(key: key, "must be positive (got \(r))") }
        }
        let i = instrument
        try positive(i.energyKeV, "instrument.energy_keV")
        try positive(i.detectorDistanceM, "instrument.detector_distance_m")
        try positive(i.pixelSizeM, "instrument.pixel_size_m")
        try positiveInt(i.binning, "instrument.binning")
        try finite(i.x0, "instrument.X0")
        try finite(i.xcen, "instrument.Xcen")
        try finite(i.deltaThetaDeg, "instrument.delta_theta_deg")
        // Sizes before any product of them is formed (overflow-safe, against the memory).
        try positiveInt(model.frameSize, "model.frame_size")
        try positiveInt(zonePlate.upsampling, "zone_plate.upsampling")
        if let why = Sizes.memoryProblem("one detector frame", factors: [("model.frame_size", model.frameSize), ("instrument.binning", i.binning),
                                                                          ("model.frame_size", model.frameSize), ("instrument.binning", i.binning)], bytesPerElement: 4) {
            throw ConfigError(key: "model.frame_size", why)
        }
        if let why = Sizes.memoryProblem("the forward model's pupil grid", factors: [("model.frame_size", model.frameSize), ("zone_plate.upsampling", zonePlate.upsampling),
                                                                                     ("model.frame_size", model.frameSize), ("zone_plate.upsampling", zonePlate.upsampling)], bytesPerElement: 64) {
            throw ConfigError(key: "zone_plate.upsampling", why)
        }
        guard i.roi.x >= 0, i.roi.y >= 0 else { throw ConfigError(key: "instrument.roi", "x and y must be ≥ 0 (got \(i.roi.x), \(i.roi.y))") }
        try positiveInt(i.roi.width, "instrument.roi.width")
        try positiveInt(i.roi.height, "instrument.roi.height")
        guard i.roi.width == model.frameSize * i.binning, i.roi.height == model.frameSize * i.binning else {
            throw ConfigError(key: "instrument.roi", "width and height must equal model.frame_size × instrument.binning = \(model.frameSize * i.binning) (got \(i.roi.width)×\(i.roi.height))")
        }
        let z = zonePlate
        try positive(z.focalLengthM, "zone_plate.focal_length_m")
        try positive(z.diameterM, "zone_plate.diameter_m")
        guard z.centralStopDiameterM.isFinite, z.centralStopDiameterM >= 0 else {
            throw ConfigError(key: "zone_plate.central_stop_diameter_m", "must be ≥ 0 (got \(z.centralStopDiameterM))")
        }
        guard z.centralStopDiameterM < z.diameterM else {
            throw ConfigError(key: "zone_plate.central_stop_diameter_m", "must be smaller than zone_plate.diameter_m (\(z.centralStopDiameterM) ≥ \(z.diameterM))")
        }
        try positiveInt(z.upsampling, "zone_plate.upsampling")
        try positive(sample.latticeCA, "sample.lattice_c_A")
        try positiveInt(sample.reflectionL, "sample.reflection_l")
        try positive(sample.thicknessA, "sample.thickness_A")
        let sinTheta = i.wavelengthA * Double(sample.reflectionL) / (2 * sample.latticeCA)
        guard sinTheta < 1 else {
            throw ConfigError(key: "instrument.energy_keV", "Bragg angle undefined: λl/2c = \(sinTheta) ≥ 1 for λ = \(i.wavelengthA) Å, l = \(sample.reflectionL), c = \(sample.latticeCA) Å (raise the energy or lower the reflection order)")
        }
        let theta = asin(sinTheta) + i.deltaThetaDeg * .pi / 180
        guard theta > 0, theta < .pi / 2 else {
            throw ConfigError(key: "instrument.delta_theta_deg", "puts the Bragg angle outside (0°, 90°) (θ = \(theta * 180 / .pi)°)")
        }
        try positiveInt(model.frameSize, "model.frame_size")
        try positive(model.boxHalfWidthInvA, "model.box_half_width_invA")
        try positive(model.smoothSigmaInvA, "model.smooth_sigma_invA")
        let halfDetector = Double(model.frameSize) / 2 * i.pixelSizeM * Double(i.binning) / i.detectorDistanceM
        guard halfDetector < 1 else {
            throw ConfigError(key: "instrument.detector_distance_m", "too small for the detector: half the frame spans sin γ = \(halfDetector) ≥ 1")
        }
        // The pattern is the image of the zone plate's annulus: it must reach into the frame,
        // or every pattern is zero (the central stop's angle beyond the frame's half-angle).
        let halfFrameAngle = Double(model.frameSize) / 2 * i.pixelSizeM * Double(i.binning) / i.detectorDistanceM
        let stopAngle = z.centralStopDiameterM / (2 * z.focalLengthM)
        guard stopAngle < halfFrameAngle else {
            throw ConfigError(key: "zone_plate.central_stop_diameter_m", "the central stop's angle d_CS/2f = \(stopAngle) rad exceeds the frame's half-angle \(halfFrameAngle) rad (model.frame_size × pixel / 2D): the annulus lies outside the frame and every pattern is zero")
        }
        try range(ranges.strain, "ranges.strain")
        guard ranges.strain[0] > -1 else { throw ConfigError(key: "ranges.strain", "must stay above −1 (got \(ranges.strain))") }
        try range(ranges.tiltLRDeg, "ranges.tilt_lr_deg")
        try range(ranges.tiltUDDeg, "ranges.tilt_ud_deg")
        try range(ranges.thicknessA, "ranges.thickness_A", positiveOnly: true)
        try positiveInt(library.strain, "library.strain")
        try positiveInt(library.tiltLR, "library.tilt_lr")
        try positiveInt(library.tiltUD, "library.tilt_ud")
        try positiveInt(library.thickness, "library.thickness")
        // The library is held in memory by `fit` (and written as one file): its size must fit.
        if let why = Sizes.memoryProblem("the library patterns", factors: [
            ("library.strain", library.strain), ("library.tilt_lr", library.tiltLR), ("library.tilt_ud", library.tiltUD),
            ("library.thickness", library.thickness), ("model.frame_size", model.frameSize), ("model.frame_size", model.frameSize)],
                                         bytesPerElement: 4) {
            throw ConfigError(key: "library", why)
        }
        try positive(noise.peakPhotons, "noise.peak_photons")
        // The pattern itself: a config can pass every check above and still put the Bragg
        // condition nowhere on the detector (e.g. energy_keV 1e6: θ ≈ 0, the rocking curve
        // misses every pixel), which gives an all-zero library that makes every frame "bad".
        // One box-model pattern at the centre of the ranges (a 2·n·m² GEMM) tells.
        func mid(_ r: [Double]) -> Double { (r[0] + r[1]) / 2 }
        let centre = FrameParameters(strain: mid(ranges.strain), tiltLRDeg: mid(ranges.tiltLRDeg),
                                     tiltUDDeg: mid(ranges.tiltUDDeg), thicknessA: sample.thicknessA)
        let pattern = ForwardModel<Double>(geometry: DiffractionGeometry(config: self), profile: .box).patterns([centre])
        guard pattern.allSatisfy(\.isFinite), pattern.contains(where: { $0 > 0 }) else {
            throw ConfigError(key: "instrument.energy_keV", "the diffraction pattern at the centre of the ranges (strain \(centre.strain), tilt_lr \(centre.tiltLRDeg)°, tilt_ud \(centre.tiltUDDeg)°) is \(pattern.allSatisfy(\.isFinite) ? "zero on every pixel" : "not finite"): the Bragg condition is met nowhere on the detector; check instrument.energy_keV, sample.lattice_c_A, sample.reflection_l, model.box_half_width_invA and the ranges")
        }
    }
}

extension DonutConfig {
    /// Dotted keys of the values that shape a diffraction pattern (instrument, zone plate,
    /// lattice, reflection, frame size, model widths) and differ between `self` and `other`.
    /// Ranges, steps, noise, ROI and the nominal thickness do not change a pattern at given
    /// parameters, so a library and a scan may differ in those.
    public func patternKeysDiffering(from other: DonutConfig) -> [String] {
        var keys: [String] = []
        func check<V: Equatable>(_ a: V, _ b: V, _ key: String) { if a != b { keys.append(key) } }
        let i = instrument, j = other.instrument
        check(i.energyKeV, j.energyKeV, "instrument.energy_keV")
        check(i.detectorDistanceM, j.detectorDistanceM, "instrument.detector_distance_m")
        check(i.pixelSizeM, j.pixelSizeM, "instrument.pixel_size_m")
        check(i.binning, j.binning, "instrument.binning")
        check(i.x0, j.x0, "instrument.X0")
        check(i.xcen, j.xcen, "instrument.Xcen")
        check(i.deltaThetaDeg, j.deltaThetaDeg, "instrument.delta_theta_deg")
        check(zonePlate, other.zonePlate, "zone_plate")
        check(sample.latticeCA, other.sample.latticeCA, "sample.lattice_c_A")
        check(sample.reflectionL, other.sample.reflectionL, "sample.reflection_l")
        check(model.frameSize, other.model.frameSize, "model.frame_size")
        check(model.boxHalfWidthInvA, other.model.boxHalfWidthInvA, "model.box_half_width_invA")
        return keys
    }
}
