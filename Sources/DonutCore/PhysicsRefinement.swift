import Foundation
import DonutBLAS
import DonutPhysics

/// Per-frame physics refinement: the maximum-likelihood parameters of one frame under the
/// smooth model, with uncertainties from the Fisher information.
///
/// Counts are Poisson: x_i ~ Poisson(λ_i), λ_i = A·I_i(θ) + b, with θ = (ε, ω, χ[, t]), A the
/// unknown intensity scale (a free parameter) and b a small constant background (photons per
/// pixel) that keeps λ > 0 where the model is dark. Levenberg–Marquardt on
///
///     ℓ(θ, A) = Σ x_i log λ_i − λ_i
///     g = ∂ℓ/∂p = Σ (x_i/λ_i − 1) ∂λ_i/∂p          F = Σ ∂λ_i/∂p ∂λ_i/∂pᵀ / λ_i   (Fisher)
///     (F + μ·diag F) Δ = g,   p ← clamp(p + Δ) to the configured ranges
///
/// with ∂λ/∂θ = A·∂I/∂θ from the model's analytic Jacobian and ∂λ/∂A = I. μ shrinks after an
/// accepted step and grows after a rejected one; at most `maxIterations` Jacobians. The
/// standard deviations are √diag(F⁻¹) at the answer (the Cramér–Rao bound, exact for a
/// correct model in the many-photon limit).
public final class PhysicsRefinement {
    public let model: ForwardModel<Double>
    public let ranges: ParameterRanges
    public let fitThickness: Bool
    public var maxIterations: Int
    /// Background λ floor (photons per pixel).
    public var background: Double
    let n: Int
    var pattern: [Double], jacobian: [Double]

    public struct Result: Sendable {
        public var parameters: FrameParameters
        /// Standard deviations (ε, ω°, χ°, t Å); NaN for t when thickness is not fitted.
        public var sigma: [Double]
        /// Intensity scale A (photons per model unit).
        public var scale: Double
        /// Mean |x − λ| over the frame at the answer (photons).
        public var residual: Double
        public var iterations: Int
        public var converged: Bool
    }

    public init(config: DonutConfig, fitThickness: Bool, maxIterations: Int = 8, background: Double = 1e-3) {
        model = ForwardModel<Double>(geometry: DiffractionGeometry(config: config), profile: .smooth)
        ranges = config.ranges
        self.fitThickness = fitThickness; self.maxIterations = maxIterations; self.background = background
        n = model.pixelCount
        pattern = .init(repeating: 0, count: n); jacobian = .init(repeating: 0, count: 4 * n)
    }

    /// Free parameters: θ (3 or 4) then A.
    var count: Int { (fitThickness ? 4 : 3) + 1 }

    /// Log-likelihood at (p, A), filling pattern and Jacobian.
    func evaluate(_ p: FrameParameters, scale a: Double, frame: UnsafeBufferPointer<Float>) -> Double {
        pattern.withUnsafeMutableBufferPointer { pat in
            jacobian.withUnsafeMutableBufferPointer { jac in
                model.jacobian(p, pattern: pat.baseAddress!, jacobian: jac.baseAddress!)
            }
        }
        var l = 0.0
        for i in 0..<n {
            let lambda = a * pattern[i] + background, x = Double(frame[i])
            l += (x > 0 ? x * log(lambda) : 0) - lambda
        }
        return l
    }

    /// Refines `start` against `frame` (counts).
    public func refine(_ frame: UnsafeBufferPointer<Float>, from start: FrameParameters) -> Result {
        precondition(frame.count == n, "frame of \(frame.count) pixels, model has \(n)")
        let k = count
        var p = clamp(start)
        // Start the scale at its profile maximum for the starting shape: A = Σx / ΣI.
        _ = evaluate(p, scale: 1, frame: frame)
        let total = frame.reduce(0.0) { $0 + Double($1) }
        var a = max(total / max(pattern.reduce(0, +), 1e-300), 1e-12)
        var l = evaluate(p, scale: a, frame: frame)
        var mu = 1e-3
        var iterations = 0, converged = false
        var fisher = [Double](repeating: 0, count: k * k), g = [Double](repeating: 0, count: k)
        func accumulate() {
            for i in 0..<(k * k) { fisher[i] = 0 }
            for i in 0..<k { g[i] = 0 }
            var d = [Double](repeating: 0, count: k)
            for i in 0..<n {
                let lambda = a * pattern[i] + background
                let w = Double(frame[i]) / lambda - 1
                for j in 0..<(k - 1) { d[j] = a * jacobian[j * n + i] }
                d[k - 1] = pattern[i]
                for r in 0..<k {
                    g[r] += w * d[r]
                    let dr = d[r] / lambda
                    for c in r..<k { fisher[r * k + c] += dr * d[c] }
                }
            }
            for r in 0..<k { for c in 0..<r { fisher[r * k + c] = fisher[c * k + r] } }
        }
        accumulate()
        while iterations < maxIterations {
            iterations += 1
            var system = fisher
            for i in 0..<k { system[i * k + i] *= 1 + mu }
            guard let step = solve(system, g, k) else { mu *= 10; continue }
            var q = p
            q.strain += step[0]; q.tiltLRDeg += step[1]; q.tiltUDDeg += step[2]
            if fitThickness { q.thicknessA += step[3] }
            q = clamp(q)
            let b = max(a + step[k - 1], 1e-12)
            let lq = evaluate(q, scale: b, frame: frame)
            if lq >= l {
                let gain = lq - l
                p = q; a = b; l = lq; mu = max(mu / 10, 1e-9)
                accumulate()
                if gain < 1e-6 * max(1, abs(l)) { converged = true; break }
            } else {
                _ = evaluate(p, scale: a, frame: frame)   // restore pattern and Jacobian at p
                mu *= 10
            }
        }
        var sigma = [Double](repeating: .nan, count: 4)
        if let inverse = invert(fisher, k) {
            for j in 0..<(k - 1) { sigma[j] = inverse[j * k + j].squareRoot() }
        }
        var residual = 0.0
        for i in 0..<n { residual += abs(Double(frame[i]) - (a * pattern[i] + background)) }
        return Result(parameters: p, sigma: sigma, scale: a, residual: residual / Double(n),
                      iterations: iterations, converged: converged)
    }

    func clamp(_ p: FrameParameters) -> FrameParameters {
        func c(_ v: Double, _ r: [Double]) -> Double { min(max(v, r[0]), r[1]) }
        return FrameParameters(strain: c(p.strain, ranges.strain), tiltLRDeg: c(p.tiltLRDeg, ranges.tiltLRDeg),
                               tiltUDDeg: c(p.tiltUDDeg, ranges.tiltUDDeg),
                               thicknessA: fitThickness ? c(p.thicknessA, ranges.thicknessA) : p.thicknessA)
    }
}

/// Solves the symmetric positive-definite k×k system S·x = b (Cholesky); nil if not SPD.
func solve(_ s: [Double], _ b: [Double], _ k: Int) -> [Double]? {
    guard let l = cholesky(s, k) else { return nil }
    var y = b
    for i in 0..<k { for j in 0..<i { y[i] -= l[i * k + j] * y[j] }; y[i] /= l[i * k + i] }
    for i in stride(from: k - 1, through: 0, by: -1) { for j in (i + 1)..<k { y[i] -= l[j * k + i] * y[j] }; y[i] /= l[i * k + i] }
    return y
}

/// Inverse of a symmetric positive-definite k×k matrix; nil if not SPD.
func invert(_ s: [Double], _ k: Int) -> [Double]? {
    var out = [Double](repeating: 0, count: k * k)
    for c in 0..<k {
        var e = [Double](repeating: 0, count: k); e[c] = 1
        guard let x = solve(s, e, k) else { return nil }
        for r in 0..<k { out[r * k + c] = x[r] }
    }
    return out
}

/// Lower-triangular L with S = L·Lᵀ; nil if S is not positive definite.
func cholesky(_ s: [Double], _ k: Int) -> [Double]? {
    var l = [Double](repeating: 0, count: k * k)
    for i in 0..<k {
        for j in 0...i {
            var sum = s[i * k + j]
            for m in 0..<j { sum -= l[i * k + m] * l[j * k + m] }
            if i == j {
                guard sum > 0 else { return nil }
                l[i * k + i] = sum.squareRoot()
            } else {
                l[i * k + j] = sum / l[j * k + j]
            }
        }
    }
    return l
}

extension PhysicsRefinement {
    /// Refines every valid frame of `results` from its current estimate, in place: the maps
    /// become the maximum-likelihood parameters, `*_sigma` their Cramér–Rao standard
    /// deviations, `residual` the mean |x − λ| (photons). `readFrames` gives frames of a
    /// range of the scan (the block of `results`), read `batch` at a time.
    public func refine(_ results: inout FrameResults, batch: Int = 256, readFrames: (Range<Int>) throws -> [Float],
                       progress: ((Int, Int) -> Void)? = nil) rethrows {
        let block = results.frameRange, np = n
        var names = ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"]
        if fitThickness { names.append("thickness_sigma") }
        for name in names { results.sigmas[name] = .init(repeating: .nan, count: block.count) }
        if results.residual == nil { results.residual = .init(repeating: .nan, count: block.count) }
        if fitThickness && results.thicknessA == nil { results.thicknessA = .init(repeating: .nan, count: block.count) }
        var start = block.lowerBound
        while start < block.upperBound {
            let range = start..<min(start + batch, block.upperBound)
            let frames = try readFrames(range)
            for f in range {
                let i = f - block.lowerBound
                guard results.valid[i] == 1 else { continue }
                let from = FrameParameters(strain: results.strain[i], tiltLRDeg: results.tiltLRDeg[i], tiltUDDeg: results.tiltUDDeg[i],
                                           thicknessA: results.thicknessA?[i].isFinite == true ? results.thicknessA![i] : model.geometry.defaultThicknessA)
                let r = frames.withUnsafeBufferPointer {
                    refine(UnsafeBufferPointer(rebasing: $0[((f - range.lowerBound) * np)..<((f - range.lowerBound + 1) * np)]), from: from)
                }
                results.strain[i] = r.parameters.strain; results.tiltLRDeg[i] = r.parameters.tiltLRDeg
                results.tiltUDDeg[i] = r.parameters.tiltUDDeg
                if fitThickness { results.thicknessA?[i] = r.parameters.thicknessA }
                for (j, name) in names.enumerated() { results.sigmas[name]?[i] = r.sigma[j] }
                results.residual?[i] = r.residual
            }
            progress?(range.upperBound - block.lowerBound, block.count)
            start = range.upperBound
        }
    }
}
