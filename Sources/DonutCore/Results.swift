import DonutPhysics

/// How a scan's frames are laid out: frame `n` is at row `n / cols`, column `n % cols`.
public struct ScanLayout: Equatable, Sendable {
    public var rows: Int
    public var cols: Int
    /// Scan axes: positions (µm) when known, else indices; `axisUnits` says which.
    public var y: [Double]
    public var x: [Double]
    /// "um" for positions, "" (dimensionless index) otherwise.
    public var axisUnits: String

    public init(rows: Int, cols: Int, y: [Double]? = nil, x: [Double]? = nil, axisUnits: String? = nil) {
        self.rows = rows; self.cols = cols
        self.y = y ?? (0..<rows).map(Double.init)
        self.x = x ?? (0..<cols).map(Double.init)
        self.axisUnits = axisUnits ?? ((y == nil && x == nil) ? "" : "um")
    }
    public var frameCount: Int { rows * cols }
}

/// Per-frame results of one method for a contiguous block of a scan's frames
/// (flat frame index = row·cols + col). Each rank holds the block it computed; the
/// NeXus writer places every block into the full maps collectively.
public struct FrameResults: Equatable, Sendable {
    public var frameRange: Range<Int>
    /// Strain ε (dimensionless).
    public var strain: [Double]
    /// In-plane tilt ω (deg).
    public var tiltLRDeg: [Double]
    /// Out-of-plane tilt χ (deg).
    public var tiltUDDeg: [Double]
    /// Thickness t (Å), when the method predicts it.
    public var thicknessA: [Double]?
    /// Physics MAE between the frame and the model at the answer (photons), when computed.
    public var residual: [Double]?
    /// Reduced Poisson deviance of the frame against the method's model at its estimate
    /// (D / E[D]; ≈ 1 when the model explains the frame, whatever the count level), when
    /// computed. Every method reports it the same way, so it flags frames a map cannot be
    /// trusted at (a hot pixel, a wrong ROI or mask).
    public var goodnessOfFit: [Double]?
    /// 1 where the frame was usable, 0 where it was rejected (its parameters are NaN).
    public var valid: [UInt8]
    /// Standard deviations keyed by map name ("strain_sigma", "tilt_lr_sigma", …), same units as the map.
    public var sigmas: [String: [Double]]
    /// How the σ maps were made (`PhysicsRefinement.finishSigmas`), recorded as the result's
    /// `sigma_model` attribute; nil when no σ was computed or the method says nothing.
    public var sigmaModel: String?

    public init(frameRange: Range<Int>) {
        self.frameRange = frameRange
        let n = frameRange.count
        strain = .init(repeating: .nan, count: n); tiltLRDeg = strain; tiltUDDeg = strain
        thicknessA = nil; residual = nil; goodnessOfFit = nil; valid = .init(repeating: 0, count: n); sigmas = [:]
    }
}

/// Where a result came from: enough to redo it.
public struct Provenance: Equatable, Sendable {
    public struct Input: Equatable, Sendable {
        /// Path relative to the result file's folder when possible.
        public var path: String
        /// Dataset path inside the file.
        public var dataset: String
        /// Checksum of the frames (or patterns) actually read, e.g. "fnv1a64:…".
        public var checksum: String
        /// The frames read, where `dataset` is only what was asked for: that dataset, or
        /// every part of a Dectris master with its data file (as result maps' frames_source);
        /// empty for inputs other than scans.
        public var framesSource: [String]
        public init(path: String, dataset: String, checksum: String, framesSource: [String] = []) {
            self.path = path; self.dataset = dataset; self.checksum = checksum; self.framesSource = framesSource
        }
    }
    public var program: String = "donut"
    public var version: String
    /// ISO 8601 date of the run.
    public var date: String
    /// "correlation-fit", "donut", "nanobeamnn", …
    public var method: String
    public var commandLine: String
    /// Full config as JSON (snake_case keys, as in the YAML).
    public var configJSON: String
    public var inputs: [Input]
    /// Identifier of the model or library used (checksum or file name + checksum).
    public var modelID: String

    public init(version: String, date: String, method: String, commandLine: String,
                configJSON: String, inputs: [Input], modelID: String) {
        self.version = version; self.date = date; self.method = method
        self.commandLine = commandLine; self.configJSON = configJSON; self.inputs = inputs
        self.modelID = modelID
    }
}

extension FrameResults {
    /// Every frame whose estimate (strain, tilts, thickness when present) is not finite gets
    /// valid = 0, whatever the method: a non-finite number never leaves Donut marked valid
    /// (a NaN model, a diverged refinement). The values stay as computed (NaN, ±inf).
    /// Returns how many frames this newly invalidated.
    @discardableResult
    public mutating func invalidateNonFiniteEstimates() -> Int {
        var changed = 0
        for i in valid.indices where valid[i] != 0 {
            let finite = strain[i].isFinite && tiltLRDeg[i].isFinite && tiltUDDeg[i].isFinite && (thicknessA?[i].isFinite ?? true)
            guard !finite else { continue }
            valid[i] = 0
            changed += 1
        }
        return changed
    }

    /// Copies `part` (a sub-block of this block, e.g. one streamed chunk) into place.
    /// Optional maps and sigmas present in `part` are created here (NaN elsewhere) first.
    public mutating func place(_ part: FrameResults) {
        precondition(part.frameRange.lowerBound >= frameRange.lowerBound && part.frameRange.upperBound <= frameRange.upperBound,
                     "chunk \(part.frameRange) outside the block \(frameRange)")
        let o = part.frameRange.lowerBound - frameRange.lowerBound, n = frameRange.count
        func put(_ dst: inout [Double], _ src: [Double]) { for (k, v) in src.enumerated() { dst[o + k] = v } }
        put(&strain, part.strain); put(&tiltLRDeg, part.tiltLRDeg); put(&tiltUDDeg, part.tiltUDDeg)
        for (k, v) in part.valid.enumerated() { valid[o + k] = v }
        if let t = part.thicknessA {
            if thicknessA == nil { thicknessA = .init(repeating: .nan, count: n) }
            put(&thicknessA!, t)
        }
        if let r = part.residual {
            if residual == nil { residual = .init(repeating: .nan, count: n) }
            put(&residual!, r)
        }
        if let g = part.goodnessOfFit {
            if goodnessOfFit == nil { goodnessOfFit = .init(repeating: .nan, count: n) }
            put(&goodnessOfFit!, g)
        }
        for (name, values) in part.sigmas {
            var dst = sigmas[name] ?? .init(repeating: .nan, count: n)
            put(&dst, values)
            sigmas[name] = dst
        }
    }
}
