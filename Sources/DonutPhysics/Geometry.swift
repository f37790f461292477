import Foundation

/// Reciprocal-space sampling of one experiment, precomputed from a config (all in Å⁻¹).
///
/// Detector pixel (y, x) of the frame and zone-plate grid point (u, v) map to
///
///     DQx(x) = k(cos θ − cos γ(x))     DQz(x) = k(sin γ(x) + sin θ)     DQy(y) = k·y·p/D
///     OQx(u) = −u·s·k·sin θ            OQz(u) = u·s·k·cos θ             OQy(v) = v·s·k
///
/// with k = 2π/λ, θ the incidence (Bragg) angle, γ(x) = asin((x − X0)·p/D) + γ0 the exit
/// angle, p the binned pixel, D the distance, s = p/(D·upsampling) the zone-plate grid's
/// angular step (rad). Frame coordinates are x = i − (n−1)/2 + Xcen, y = j − (n−1)/2;
/// grid coordinates u, v = i − (m−1)/2. The detector arm sits at 2θ_B, so with a rocking
/// offset Δθ the incidence is θ = θ_B + Δθ and the specular exit γ0 = 2θ_B − θ.
/// Nothing here changes after init: a new config means a new geometry.
public struct DiffractionGeometry: Sendable {
    /// Detector pixels per frame side (after ROI and binning).
    public let frameSize: Int
    /// Zone-plate grid points per side (frameSize × upsampling).
    public let gridSize: Int
    /// Wave number k = 2π/λ (Å⁻¹).
    public let k: Double
    /// Incidence angle θ = θ_B + Δθ (rad).
    public let theta: Double
    /// Reciprocal-lattice vector of the unstrained film, G0 = 2πl/c (Å⁻¹); G(ε) = G0/(1+ε).
    public let braggG: Double
    /// Per detector column x: DQx, DQz (Å⁻¹).
    public let detectorQx: [Double]
    public let detectorQz: [Double]
    /// Per detector row y: DQy (Å⁻¹).
    public let detectorQy: [Double]
    /// Per zone-plate column u: OQx, OQz (Å⁻¹); per zone-plate row v: OQy (Å⁻¹).
    public let opticsQx: [Double]
    public let opticsQz: [Double]
    public let opticsQy: [Double]
    /// Zone-plate pupil M(v, u), row-major gridSize × gridSize: 1 strictly between the
    /// central-stop angle d_CS/2f and the zone-plate angle d_ZP/2f, else 0.
    public let zonePlateMask: [Double]
    /// Box half-width h (Å⁻¹) and smooth width σ (Å⁻¹) from the config.
    public let boxHalfWidth: Double
    public let smoothSigma: Double
    /// Film thickness used when a parameter set does not vary it (Å).
    public let defaultThicknessA: Double

    public init(config: DonutConfig) {
        let ins = config.instrument, zp = config.zonePlate
        let n = config.model.frameSize, m = n * zp.upsampling
        frameSize = n; gridSize = m
        let lambda = ins.wavelengthA
        k = 2 * .pi / lambda
        let thetaB = asin(lambda * Double(config.sample.reflectionL) / (2 * config.sample.latticeCA))
        theta = thetaB + ins.deltaThetaDeg * .pi / 180
        let gamma0 = 2 * thetaB - theta
        braggG = 2 * .pi * Double(config.sample.reflectionL) / config.sample.latticeCA
        let p = ins.pixelSizeM * Double(ins.binning), d = ins.detectorDistanceM
        let centre = Double(n - 1) / 2
        var dqx = [Double](repeating: 0, count: n), dqz = dqx, dqy = dqx
        for i in 0..<n {
            let xMinusX0 = Double(i) - centre + ins.xcen - ins.x0
            let gamma = asin(xMinusX0 * p / d) + gamma0
            dqx[i] = k * (cos(theta) - cos(gamma))
            dqz[i] = k * (sin(gamma) + sin(theta))
            dqy[i] = k * (Double(i) - centre) * p / d
        }
        detectorQx = dqx; detectorQz = dqz; detectorQy = dqy
        let s = p / (d * Double(zp.upsampling))
        let gridCentre = Double(m - 1) / 2
        let u = (0..<m).map { Double($0) - gridCentre }
        let (kk, th) = (k, theta)
        opticsQx = u.map { -$0 * s * kk * sin(th) }
        opticsQz = u.map { $0 * s * kk * cos(th) }
        opticsQy = u.map { $0 * s * kk }
        let outer = zp.diameterM / (2 * zp.focalLengthM)
        let inner = zp.centralStopDiameterM / (2 * zp.focalLengthM)
        var mask = [Double](repeating: 0, count: m * m)
        for v in 0..<m {
            for uu in 0..<m {
                let r = (u[uu] * u[uu] + u[v] * u[v]).squareRoot() * s
                mask[v * m + uu] = (r > inner && r < outer) ? 1 : 0
            }
        }
        zonePlateMask = mask
        boxHalfWidth = config.model.boxHalfWidthInvA
        smoothSigma = config.model.smoothSigmaInvA
        defaultThicknessA = config.sample.thicknessA
    }

    /// G(ε) = G0/(1+ε) (Å⁻¹).
    @inline(__always) public func g(strain: Double) -> Double { braggG / (1 + strain) }

    /// Pixels per frame.
    public var pixelCount: Int { frameSize * frameSize }
}
