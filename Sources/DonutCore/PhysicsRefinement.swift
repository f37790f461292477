import Foundation
import Dispatch
import DonutBLAS
import DonutNN
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
/// accepted step and grows after a rejected one; at most `maxIterations` trial steps. The
/// standard deviations are √diag(F⁻¹) at the answer (the Cramér–Rao bound, exact for a
/// correct model in the many-photon limit).
///
/// A step whose predicted gain (quadratic model) is already below the tolerance is taken
/// without evaluating it, and ends the iteration.
///
/// Speed (`donut bench refine`): the model runs in Float on the fast path
/// (`smoothPatternAndJacobian`: recurrences instead of per-element exp/sin, B-side
/// derivatives shared); each trial step evaluates pattern and Jacobian once, kept for the
/// next iteration when accepted and dropped (buffers swapped back) when rejected; F and g
/// are one GEMM over the weighted rows S_j = (∂λ/∂p_j)/√λ, F = S·Sᵀ, g = S·((x − λ)/√λ);
/// ℓ and the convergence test stay in Double. Not thread-safe (owns its buffers): the
/// scan-level `refine(_:…)` gives every thread its own copy.
public final class PhysicsRefinement {
    public let model: ForwardModel<Float>
    public let ranges: ParameterRanges
    public let fitThickness: Bool
    public var maxIterations: Int
    /// Background λ floor (photons per pixel).
    public var background: Double
    let config: DonutConfig
    let n: Int
    /// Pattern and Jacobian ((4, n, n)) at the current point, and at the trial point.
    var pattern: [Float], jacobian: [Float], trialPattern: [Float], trialJacobian: [Float]
    /// Weighted rows S (count × n), weighted residual v (n), F (count²) and g (count) in Float.
    var rows: [Float], weighted: [Float], fisherF: [Float], gradientF: [Float]
    /// F and g in Double, the damped system (factored in place) and the step: the LM
    /// iteration allocates nothing.
    let fisher = UnsafeMutablePointer<Double>.allocate(capacity: 25), gradient = UnsafeMutablePointer<Double>.allocate(capacity: 5)
    let system = UnsafeMutablePointer<Double>.allocate(capacity: 25), step = UnsafeMutablePointer<Double>.allocate(capacity: 5)

    public struct Result: Sendable {
        public var parameters: FrameParameters
        /// Standard deviations (ε, ω°, χ°, t Å); NaN for t when thickness is not fitted.
        public var sigma: SIMD4<Double>
        /// Intensity scale A (photons per model unit).
        public var scale: Double
        /// Mean |x − λ| over the frame at the answer (photons).
        public var residual: Double
        /// Trial steps taken (each one pattern + Jacobian evaluation).
        public var iterations: Int
        public var converged: Bool
    }

    public init(config: DonutConfig, fitThickness: Bool, maxIterations: Int = 8, background: Double = 1e-3) {
        self.config = config
        model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .smooth)
        ranges = config.ranges
        self.fitThickness = fitThickness; self.maxIterations = maxIterations; self.background = background
        n = model.pixelCount
        pattern = .init(repeating: 0, count: n); jacobian = .init(repeating: 0, count: 4 * n)
        trialPattern = pattern; trialJacobian = jacobian
        rows = .init(repeating: 0, count: 5 * n); weighted = .init(repeating: 0, count: n)
        fisherF = .init(repeating: 0, count: 25); gradientF = .init(repeating: 0, count: 5)
    }
    deinit { for p in [fisher, gradient, system, step] { p.deallocate() } }

    /// A refinement with the same settings and its own buffers (one per thread).
    public func copy() -> PhysicsRefinement {
        PhysicsRefinement(config: config, fitThickness: fitThickness, maxIterations: maxIterations, background: background)
    }

    /// Free parameters: θ (3 or 4) then A.
    var count: Int { (fitThickness ? 4 : 3) + 1 }

    /// Pattern and Jacobian at `p` into the trial buffers.
    func evaluateTrial(_ p: FrameParameters) {
        trialPattern.withUnsafeMutableBufferPointer { pat in
            trialJacobian.withUnsafeMutableBufferPointer { jac in
                model.smoothPatternAndJacobian(p, pattern: pat.baseAddress!, jacobian: jac.baseAddress!, thickness: fitThickness)
            }
        }
    }

    /// ℓ = Σ x log λ − λ (Double) for scale `a` and the given pattern.
    func logLikelihood(scale a: Double, pattern: [Float], frame: UnsafeBufferPointer<Float>) -> Double {
        pattern.withUnsafeBufferPointer { pat in
            var l = 0.0
            for i in 0..<n {
                let lambda = a * Double(pat[i]) + background, x = Double(frame[i])
                l += (x > 0 ? x * log(lambda) : 0) - lambda
            }
            return l
        }
    }

    /// F (Fisher) and g (gradient of ℓ) at the current point into `fisher` (k × k) and `gradient` (k).
    func fisherAndGradient(scale a: Double, frame: UnsafeBufferPointer<Float>) {
        let k = count, np = n, theta = k - 1
        let af = Float(a), b = Float(background)
        rows.withUnsafeMutableBufferPointer { sBuf in
            weighted.withUnsafeMutableBufferPointer { vBuf in
                pattern.withUnsafeBufferPointer { pat in
                    jacobian.withUnsafeBufferPointer { jac in
                        let s = sBuf.baseAddress!, v = vBuf.baseAddress!, ip = pat.baseAddress!, j = jac.baseAddress!
                        // S_j = (∂λ/∂p_j)/√λ, v = (x − λ)/√λ, so g = S·v and F = S·Sᵀ.
                        for i in 0..<np {
                            let lambda = af * ip[i] + b, inverseRoot = 1 / lambda.squareRoot()
                            v[i] = (frame[i] - lambda) * inverseRoot
                            s[theta * np + i] = ip[i] * inverseRoot
                            let scaled = af * inverseRoot
                            for r in 0..<theta { s[r * np + i] = scaled * j[r * np + i] }
                        }
                        fisherF.withUnsafeMutableBufferPointer { f in
                            Float.gemm(transA: false, transB: true, m: k, n: k, k: np, alpha: 1, a: s, lda: np, b: s, ldb: np,
                                       beta: 0, c: f.baseAddress!, ldc: k)
                        }
                        gradientF.withUnsafeMutableBufferPointer { g in
                            Float.gemm(transA: false, transB: false, m: k, n: 1, k: np, alpha: 1, a: s, lda: np, b: v, ldb: 1,
                                       beta: 0, c: g.baseAddress!, ldc: 1)
                        }
                    }
                }
            }
        }
        for i in 0..<(k * k) { fisher[i] = Double(fisherF[i]) }
        for i in 0..<k { gradient[i] = Double(gradientF[i]) }
    }

    /// Refines `start` against `frame` (counts).
    public func refine(_ frame: UnsafeBufferPointer<Float>, from start: FrameParameters) -> Result {
        precondition(frame.count == n, "frame of \(frame.count) pixels, model has \(n)")
        let k = count
        var p = clamp(start)
        evaluateTrial(p)
        swap(&pattern, &trialPattern); swap(&jacobian, &trialJacobian)
        // Start the scale at its profile maximum for the starting shape: A = Σx / ΣI.
        let total = frame.reduce(0.0) { $0 + Double($1) }
        var a = max(total / max(pattern.reduce(0.0) { $0 + Double($1) }, 1e-300), 1e-12)
        var l = logLikelihood(scale: a, pattern: pattern, frame: frame)
        var mu = 1e-3
        var iterations = 0, converged = false
        fisherAndGradient(scale: a, frame: frame)
        while iterations < maxIterations {
            system.update(from: fisher, count: k * k)
            for i in 0..<k { system[i * k + i] *= 1 + mu }
            step.update(from: gradient, count: k)
            iterations += 1
            guard choleskyFactor(system, k) else { mu *= 10; continue }
            choleskySubstitute(system, step, k)
            // Gain the quadratic model predicts for this step, gᵀΔ − ½ΔᵀFΔ (from g and F, so
            // not limited by the Float resolution of ℓ): below `predictedGainTolerance` the
            // step is ≲ 0.014σ, where the quadratic model is exact to second order, so it is
            // taken without evaluating it (F, σ and the residual stay those of the point
            // before, 0.014σ away): the answer lands on the optimum to ~1e-4σ whatever the
            // start, e.g. the encoder's rounding with 1 or 2 BLAS threads.
            var predicted = 0.0
            for r in 0..<k {
                var fDelta = 0.0
                for c in 0..<k { fDelta += fisher[r * k + c] * step[c] }
                predicted += gradient[r] * step[r] - 0.5 * step[r] * fDelta
            }
            if predicted < predictedGainTolerance {
                iterations -= 1; converged = true
                p = clamp(FrameParameters(strain: p.strain + step[0], tiltLRDeg: p.tiltLRDeg + step[1], tiltUDDeg: p.tiltUDDeg + step[2],
                                          thicknessA: fitThickness ? p.thicknessA + step[3] : p.thicknessA))
                a = max(a + step[k - 1], 1e-12)
                break
            }
            var q = p
            q.strain += step[0]; q.tiltLRDeg += step[1]; q.tiltUDDeg += step[2]
            if fitThickness { q.thicknessA += step[3] }
            q = clamp(q)
            let b = max(a + step[k - 1], 1e-12)
            evaluateTrial(q)
            let lq = logLikelihood(scale: b, pattern: trialPattern, frame: frame)
            if lq >= l {
                let gain = lq - l
                p = q; a = b; l = lq; mu = max(mu / 10, 1e-9)
                swap(&pattern, &trialPattern); swap(&jacobian, &trialJacobian)
                fisherAndGradient(scale: a, frame: frame)
                if gain < tolerance(l) { converged = true; break }
            } else {
                mu *= 10   // the current point's pattern and Jacobian are still in place
            }
        }
        // σ_j = √(F⁻¹)_jj: F factored once, one substitution per parameter.
        var sigma = SIMD4<Double>(repeating: .nan)
        system.update(from: fisher, count: k * k)
        if choleskyFactor(system, k) {
            for j in 0..<(k - 1) {
                for i in 0..<k { step[i] = i == j ? 1 : 0 }
                choleskySubstitute(system, step, k)
                sigma[j] = step[j].squareRoot()
            }
        }
        var residual = 0.0
        for i in 0..<n { residual += abs(Double(frame[i]) - (a * Double(pattern[i]) + background)) }
        return Result(parameters: p, sigma: sigma, scale: a, residual: residual / Double(n),
                      iterations: iterations, converged: converged)
    }

    /// Converged when an accepted step gained less than this in ℓ: 1e-6 of |ℓ|, about the
    /// resolution of ℓ computed from a Float model.
    @inline(__always) func tolerance(_ l: Double) -> Double { 1e-6 * max(1, abs(l)) }
    /// Converged when the next step is predicted to gain less than this in ℓ (a step of d
    /// standard deviations gains ≈ d²/2 near the optimum).
    let predictedGainTolerance = 1e-4

    func clamp(_ p: FrameParameters) -> FrameParameters {
        func c(_ v: Double, _ r: [Double]) -> Double { min(max(v, r[0]), r[1]) }
        return FrameParameters(strain: c(p.strain, ranges.strain), tiltLRDeg: c(p.tiltLRDeg, ranges.tiltLRDeg),
                               tiltUDDeg: c(p.tiltUDDeg, ranges.tiltUDDeg),
                               thicknessA: fitThickness ? c(p.thicknessA, ranges.thicknessA) : p.thicknessA)
    }
}

/// Cholesky factorisation in place: the lower triangle of the k×k matrix `s` becomes L with
/// S = L·Lᵀ (the upper triangle is not read). False if S is not positive definite.
func choleskyFactor(_ s: UnsafeMutablePointer<Double>, _ k: Int) -> Bool {
    for i in 0..<k {
        for j in 0...i {
            var sum = s[i * k + j]
            for m in 0..<j { sum -= s[i * k + m] * s[j * k + m] }
            if i == j {
                guard sum > 0 else { return false }
                s[i * k + i] = sum.squareRoot()
            } else {
                s[i * k + j] = sum / s[j * k + j]
            }
        }
    }
    return true
}

/// Solves L·Lᵀ·x = b in place (`b` becomes x), L from `choleskyFactor`.
func choleskySubstitute(_ l: UnsafePointer<Double>, _ b: UnsafeMutablePointer<Double>, _ k: Int) {
    for i in 0..<k { for j in 0..<i { b[i] -= l[i * k + j] * b[j] }; b[i] /= l[i * k + i] }
    for i in stride(from: k - 1, through: 0, by: -1) { for j in (i + 1)..<k { b[i] -= l[j * k + i] * b[j] }; b[i] /= l[i * k + i] }
}

/// Solves the symmetric positive-definite k×k system S·x = b; nil if not SPD.
func solve(_ s: [Double], _ b: [Double], _ k: Int) -> [Double]? {
    var l = s, x = b
    let ok = l.withUnsafeMutableBufferPointer { choleskyFactor($0.baseAddress!, k) }
    guard ok else { return nil }
    l.withUnsafeBufferPointer { lp in x.withUnsafeMutableBufferPointer { choleskySubstitute(lp.baseAddress!, $0.baseAddress!, k) } }
    return x
}

extension PhysicsRefinement {
    /// Refines frames `0..<starts.count` of `frames` (n pixels each) from `starts`, on
    /// `threads` threads with a fixed contiguous partition (this refinement and `helpers`,
    /// one per extra thread, each owning its buffers; OpenBLAS runs inline on each: its GEMMs
    /// are too small to gain from threads), so
    /// the answers do not depend on the thread count. `skip[f]` leaves frame f out (nil).
    public func refine(frames: UnsafeBufferPointer<Float>, from starts: [FrameParameters], skip: [Bool],
                       helpers: [PhysicsRefinement]) -> [Result?] {
        let count = starts.count, np = n, threads = min(helpers.count + 1, max(count, 1))
        precondition(frames.count >= count * np, "\(frames.count) values for \(count) frames of \(np) pixels")
        let out = UnsafeMutableBufferPointer<Result?>.allocate(capacity: count)
        out.initialize(repeating: nil)
        defer { out.deallocate() }
        let work = { (t: Int) in
            let worker = t == 0 ? self : helpers[t - 1]
            for f in (t * count / threads)..<((t + 1) * count / threads) where !skip[f] {
                out[f] = worker.refine(UnsafeBufferPointer(rebasing: frames[(f * np)..<((f + 1) * np)]), from: starts[f])
            }
        }
        serialBLAS {
            if threads <= 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: threads, execute: work) }
        }
        return Array(out)
    }

    /// Refines every valid frame of `results` from its current estimate, in place: the maps
    /// become the maximum-likelihood parameters, `*_sigma` their Cramér–Rao standard
    /// deviations, `residual` the mean |x − λ| (photons). `readFrames` gives frames of a
    /// range of the scan (the block of `results`), read `batch` at a time; the frames of a
    /// batch are shared between `threads` threads (default: OpenBLAS's thread count).
    public func refine(_ results: inout FrameResults, batch: Int = 256, threads: Int = Parallel.threads,
                       readFrames: (Range<Int>) throws -> [Float], progress: ((Int, Int) -> Void)? = nil) rethrows {
        let block = results.frameRange
        var names = ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"]
        if fitThickness { names.append("thickness_sigma") }
        for name in names where results.sigmas[name] == nil { results.sigmas[name] = .init(repeating: .nan, count: block.count) }
        if results.residual == nil { results.residual = .init(repeating: .nan, count: block.count) }
        if fitThickness && results.thicknessA == nil { results.thicknessA = .init(repeating: .nan, count: block.count) }
        let helpers = (1..<max(threads, 1)).map { _ in copy() }
        var start = block.lowerBound
        while start < block.upperBound {
            let range = start..<min(start + batch, block.upperBound)
            let frames = try readFrames(range)
            let offset = range.lowerBound - block.lowerBound
            let starts = range.indices.map { f -> FrameParameters in
                let i = f - block.lowerBound
                let t = results.thicknessA?[i]
                return FrameParameters(strain: results.strain[i], tiltLRDeg: results.tiltLRDeg[i], tiltUDDeg: results.tiltUDDeg[i],
                                       thicknessA: t?.isFinite == true ? t! : model.geometry.defaultThicknessA)
            }
            let skip = range.indices.map { results.valid[$0 - block.lowerBound] != 1 }
            let refined = frames.withUnsafeBufferPointer { refine(frames: $0, from: starts, skip: skip, helpers: helpers) }
            for (k, r) in refined.enumerated() {
                guard let r else { continue }
                let i = offset + k
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
