import Foundation
import Dispatch
import DonutBLAS
import DonutNN
import DonutPhysics

/// Per-frame physics refinement: the maximum-likelihood parameters of one frame under the
/// smooth model, with uncertainties from the Fisher information.
///
/// Counts are Poisson: x_i ~ Poisson(λ_i), λ_i = m·A·I_i(θ) + b, with θ = (ε, ω, χ[, t]), m the
/// frame's monitor (incident intensity relative to the scan's reference; the MODEL is scaled,
/// so the counts keep their Poisson statistics), A the unknown intensity scale per unit
/// monitor (a free parameter) and b a small constant background (photons per pixel) that
/// keeps λ > 0 where the model is dark. Only measured pixels (weight w_i = 1) enter; masked
/// ones (w_i = 0: gaps, hot pixels) carry no information. Levenberg–Marquardt on
///
///     ℓ(θ, A) = Σ w_i (x_i log λ_i − λ_i)
///     g = ∂ℓ/∂p = Σ w_i (x_i/λ_i − 1) ∂λ_i/∂p          F = Σ w_i ∂λ_i/∂p ∂λ_i/∂pᵀ / λ_i   (Fisher)
///     (F + μ·diag F) Δ = g,   p ← clamp(p + Δ) to the configured ranges
///
/// with ∂λ/∂θ = m·A·∂I/∂θ from the model's analytic Jacobian and ∂λ/∂A = m·I. (The iteration
/// runs on s = m·A, an exact reparametrisation; A = s/m is reported. θ and its σ do not depend on
/// m — the scale is free per frame — but A becomes a brightness per unit incident intensity.) μ shrinks after an
/// accepted step and grows after a rejected one; at most `maxIterations` trial steps. The
/// standard deviations are √diag(F⁻¹) at the answer (the Cramér–Rao bound, exact for a
/// correct model in the many-photon limit), made honest for a model that does not match the
/// frame exactly by `sigmaModel` (see `Result.sigma`).
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
    /// Scale the Fisher variance by the frame's goodness of fit (when > 1): the quasi-likelihood
    /// correction for residuals larger than Poisson (a model that does not explain the frame).
    public var scaleSigmaByGoodness = true
    /// Systematic error of the smooth model added in quadrature to σ (ε, ω°, χ°, t Å): what the
    /// refinement gets wrong on noiseless frames of the box (published-library) model
    /// (`PhysicsRefinement.modelMismatchSigma`); zero = trust the model.
    public var sigmaModel = SIMD4<Double>(repeating: 0)
    let config: DonutConfig
    let n: Int
    /// Pattern and Jacobian ((4, n, n)) at the current point, and at the trial point.
    var pattern: [Float], jacobian: [Float], trialPattern: [Float], trialJacobian: [Float]
    /// Weighted rows S (count × n), weighted residual v (n), F (count²) and g (count) in Float.
    var rows: [Float], weighted: [Float], fisherF: [Float], gradientF: [Float]
    /// λ at the answer (n), for the goodness of fit.
    var lambda: [Float]
    /// F and g in Double, the damped system (factored in place) and the step: the LM
    /// iteration allocates nothing.
    let fisher = UnsafeMutablePointer<Double>.allocate(capacity: 25), gradient = UnsafeMutablePointer<Double>.allocate(capacity: 5)
    let system = UnsafeMutablePointer<Double>.allocate(capacity: 25), step = UnsafeMutablePointer<Double>.allocate(capacity: 5)

    public struct Result: Sendable {
        public var parameters: FrameParameters
        /// Standard deviations (ε, ω°, χ°, t Å); NaN for t when thickness is not fitted.
        public var sigma: SIMD4<Double>
        /// Intensity scale A (photons per model unit per unit monitor).
        public var scale: Double
        /// Mean |x − λ| over the measured pixels at the answer (photons).
        public var residual: Double
        /// Reduced Poisson deviance of the frame at the answer over the measured pixels, with the
        /// pixel that contributes most (`GoodnessOfFit`).
        public var fit: FrameFit
        /// D/E[D]: ≈ 1 when the model explains the frame.
        public var goodness: Double { fit.goodness }
        /// Trial steps taken (each one pattern + Jacobian evaluation).
        public var iterations: Int
        public var converged: Bool
    }

    /// Iterations per frame when none are asked for: enough for the encoder's or the fit's
    /// start to converge (`donut bench refine` reports the trial steps actually taken).
    public static let defaultMaxIterations = 8

    /// `modelMismatch`: add the smooth model's systematic error against the box model to σ
    /// (`modelMismatchSigma`, computed once per config); false: σ is the Fisher σ (× √gof).
    public init(config: DonutConfig, fitThickness: Bool, maxIterations: Int = PhysicsRefinement.defaultMaxIterations, background: Double = 1e-3, modelMismatch: Bool = true) {
        self.config = config
        model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .smooth)
        ranges = config.ranges
        self.fitThickness = fitThickness; self.maxIterations = maxIterations; self.background = background
        n = model.pixelCount
        pattern = .init(repeating: 0, count: n); jacobian = .init(repeating: 0, count: 4 * n)
        trialPattern = pattern; trialJacobian = jacobian
        rows = .init(repeating: 0, count: 5 * n); weighted = .init(repeating: 0, count: n)
        fisherF = .init(repeating: 0, count: 25); gradientF = .init(repeating: 0, count: 5)
        lambda = .init(repeating: 0, count: n)
        if modelMismatch { sigmaModel = Self.modelMismatchSigma(config: config, fitThickness: fitThickness) }
    }
    deinit { for p in [fisher, gradient, system, step] { p.deallocate() } }

    /// A refinement with the same settings and its own buffers (one per thread).
    public func copy() -> PhysicsRefinement {
        let c = PhysicsRefinement(config: config, fitThickness: fitThickness, maxIterations: maxIterations, background: background,
                                  modelMismatch: false)
        c.scaleSigmaByGoodness = scaleSigmaByGoodness; c.sigmaModel = sigmaModel
        return c
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

    /// ℓ = Σ w (x log λ − λ) (Double) for scale `a` (= m·A) and the given pattern.
    func logLikelihood(scale a: Double, pattern: [Float], frame: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>?) -> Double {
        pattern.withUnsafeBufferPointer { pat in
            var l = 0.0
            for i in 0..<n where weights.map({ $0[i] > 0 }) ?? true {
                let lambda = a * Double(pat[i]) + background, x = Double(frame[i])
                l += (x > 0 ? x * log(lambda) : 0) - lambda
            }
            return l
        }
    }

    /// F (Fisher) and g (gradient of ℓ) at the current point into `fisher` (k × k) and `gradient` (k).
    func fisherAndGradient(scale a: Double, frame: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>?) {
        let k = count, np = n, theta = k - 1
        let af = Float(a), b = Float(background)
        rows.withUnsafeMutableBufferPointer { sBuf in
            weighted.withUnsafeMutableBufferPointer { vBuf in
                pattern.withUnsafeBufferPointer { pat in
                    jacobian.withUnsafeBufferPointer { jac in
                        let s = sBuf.baseAddress!, v = vBuf.baseAddress!, ip = pat.baseAddress!, j = jac.baseAddress!
                        // S_j = √w·(∂λ/∂p_j)/√λ, v = √w·(x − λ)/√λ, so g = S·v and F = S·Sᵀ (w = 0 or 1).
                        for i in 0..<np {
                            let lambda = af * ip[i] + b, inverseRoot = (weights?[i] ?? 1) / lambda.squareRoot()
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

    /// Refines `start` against `frame` (counts) over the pixels of weight 1 (all when `weights`
    /// is nil; masked pixels may hold anything), the model scaled by `monitor`.
    public func refine(_ frame: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>? = nil, monitor: Double = 1,
                       from start: FrameParameters) -> Result {
        precondition(frame.count == n && (weights?.count ?? n) == n, "frame of \(frame.count) pixels (weights \(weights?.count ?? n)), model has \(n)")
        precondition(monitor > 0 && monitor.isFinite, "monitor \(monitor) must be positive")
        let k = count
        var p = clamp(start)
        evaluateTrial(p)
        swap(&pattern, &trialPattern); swap(&jacobian, &trialJacobian)
        // Start the scale s = m·A at its profile maximum for the starting shape: s = Σ w x / Σ w I.
        var total = 0.0, modelTotal = 0.0
        for i in 0..<n where weights.map({ $0[i] > 0 }) ?? true { total += Double(frame[i]); modelTotal += Double(pattern[i]) }
        var a = max(total / max(modelTotal, 1e-300), 1e-12)
        var l = logLikelihood(scale: a, pattern: pattern, frame: frame, weights: weights)
        var mu = 1e-3
        var iterations = 0, converged = false
        fisherAndGradient(scale: a, frame: frame, weights: weights)
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
            let lq = logLikelihood(scale: b, pattern: trialPattern, frame: frame, weights: weights)
            if lq >= l {
                let gain = lq - l
                p = q; a = b; l = lq; mu = max(mu / 10, 1e-9)
                swap(&pattern, &trialPattern); swap(&jacobian, &trialJacobian)
                fisherAndGradient(scale: a, frame: frame, weights: weights)
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
        var residual = 0.0, measured = 0
        for i in 0..<n {
            lambda[i] = Float(a * Double(pattern[i]) + background)
            if weights.map({ $0[i] > 0 }) ?? true { residual += abs(Double(frame[i]) - Double(lambda[i])); measured += 1 }
        }
        let fit = lambda.withUnsafeBufferPointer { GoodnessOfFit.evaluate(counts: frame, weights: weights, expected: $0) }
        return Result(parameters: p, sigma: honest(sigma, goodness: fit.goodness), scale: a / monitor,
                      residual: measured > 0 ? residual / Double(measured) : .nan, fit: fit,
                      iterations: iterations, converged: converged)
    }

    /// σ under model mismatch (`Result.sigma`): σ² = max(gof, 1)·σ_F² + σ_model².
    func honest(_ fisher: SIMD4<Double>, goodness: Double) -> SIMD4<Double> {
        let inflation = scaleSigmaByGoodness && goodness.isFinite ? max(goodness, 1) : 1
        return (inflation * fisher * fisher + sigmaModel * sigmaModel).squareRoot()
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
    /// Refines frames `0..<starts.count` of `frames` (n pixels each, every pixel measured, no
    /// monitor) from `starts`: `refine(block:…)` on a block of plain counts.
    public func refine(frames: UnsafeBufferPointer<Float>, from starts: [FrameParameters], skip: [Bool],
                       helpers: [PhysicsRefinement]) -> [Result?] {
        let block = FrameBlock(first: 0, count: starts.count, pixelCount: n, counts: Array(frames.prefix(starts.count * n)))
        return refine(block: block, from: starts, skip: skip, helpers: helpers)
    }

    /// Refines the frames of `block` from `starts` (one per frame), each over its measured
    /// pixels with the model scaled by its monitor, on `threads` threads with a fixed
    /// contiguous partition (this refinement and `helpers`, one per extra thread, each owning
    /// its buffers; OpenBLAS runs inline on each: its GEMMs are too small to gain from
    /// threads), so the answers do not depend on the thread count. `skip[f]` leaves frame f out (nil).
    public func refine(block: FrameBlock, from starts: [FrameParameters], skip: [Bool],
                       helpers: [PhysicsRefinement]) -> [Result?] {
        let count = starts.count, np = n, threads = min(helpers.count + 1, max(count, 1))
        precondition(block.pixelCount == np && count == block.count && skip.count == count,
                     "\(block.count) frames of \(block.pixelCount) pixels, \(count) starts, \(skip.count) skip flags, model of \(np) pixels")
        let out = UnsafeMutableBufferPointer<Result?>.allocate(capacity: count)
        out.initialize(repeating: nil)
        defer { out.deallocate() }
        block.counts.withUnsafeBufferPointer { frames in
            block.weights.withOptionalBuffer { weights in
                let work = { (t: Int) in
                    let worker = t == 0 ? self : helpers[t - 1]
                    for f in (t * count / threads)..<((t + 1) * count / threads) where !skip[f] {
                        let pixels = (f * np)..<((f + 1) * np)
                        out[f] = worker.refine(UnsafeBufferPointer(rebasing: frames[pixels]),
                                               weights: weights.map { UnsafeBufferPointer(rebasing: $0[pixels]) },
                                               monitor: block.monitor?[f] ?? 1, from: starts[f])
                    }
                }
                serialBLAS {
                    if threads <= 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: threads, execute: work) }
                }
            }
        }
        return Array(out)
    }

    /// `refine(_:readBlock:…)` on frames read as plain counts.
    public func refine(_ results: inout FrameResults, batch: Int = 256, threads: Int = Parallel.threads,
                       readFrames: (Range<Int>) throws -> [Float], judge: FrameJudge? = nil,
                       progress: ((Int, Int) -> Void)? = nil) rethrows {
        try refine(&results, batch: batch, threads: threads,
                   readBlock: { r in FrameBlock(first: r.lowerBound, count: r.count, pixelCount: n, counts: try readFrames(r)) },
                   judge: judge, progress: progress)
    }

    /// Refines every valid frame of `results` from its current estimate, in place: the maps
    /// become the maximum-likelihood parameters, `*_sigma` their standard deviations (Fisher,
    /// made honest under model mismatch: `Result.sigma`), `residual` the mean |x − λ| over
    /// measured pixels (photons). `readBlock` gives the frames of a range of the scan (the
    /// block of `results`), read `batch` at a time; the frames of a batch are shared between
    /// `threads` threads (default: OpenBLAS's thread count). `judge` fills the goodness of fit
    /// at the refined estimates, sets valid = 0 above its threshold and keeps the verdict.
    public func refine(_ results: inout FrameResults, batch: Int = 256, threads: Int = Parallel.threads,
                       readBlock: (Range<Int>) throws -> FrameBlock, judge: FrameJudge? = nil,
                       progress: ((Int, Int) -> Void)? = nil) rethrows {
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
            let frames = try readBlock(range)
            precondition(frames.first == range.lowerBound && frames.count == range.count, "read frames \(frames.range) for \(range)")
            let offset = range.lowerBound - block.lowerBound
            let starts = range.indices.map { f -> FrameParameters in
                let i = f - block.lowerBound
                let t = results.thicknessA?[i]
                return FrameParameters(strain: results.strain[i], tiltLRDeg: results.tiltLRDeg[i], tiltUDDeg: results.tiltUDDeg[i],
                                       thicknessA: t?.isFinite == true ? t! : model.geometry.defaultThicknessA)
            }
            let skip = range.indices.map { results.valid[$0 - block.lowerBound] != 1 }
            let refined = refine(block: frames, from: starts, skip: skip, helpers: helpers)
            for (k, r) in refined.enumerated() {
                guard let r else { continue }
                let i = offset + k
                results.strain[i] = r.parameters.strain; results.tiltLRDeg[i] = r.parameters.tiltLRDeg
                results.tiltUDDeg[i] = r.parameters.tiltUDDeg
                if fitThickness { results.thicknessA?[i] = r.parameters.thicknessA }
                for (j, name) in names.enumerated() { results.sigmas[name]?[i] = r.sigma[j] }
                results.residual?[i] = r.residual
            }
            judge?.judge(&results, block: frames, usable: skip.map { !$0 })
            progress?(range.upperBound - block.lowerBound, block.count)
            start = range.upperBound
        }
    }
}

extension PhysicsRefinement {
    /// The smooth model's systematic error against the box (published-library) model: the RMS
    /// error per parameter (ε, ω°, χ°, t Å; t NaN → 0 when not fitted) of refinements of
    /// `samples` noiseless box patterns — expected counts at the config's peak photons, no
    /// Poisson noise — at random parameters in the central 80 % of the ranges, started at the
    /// truth. Noiseless, so the error is the bias the model difference alone causes.
    ///
    /// Why it enters σ: on box-model frames at 7 photons the bias is 0.8× (ε), 1.7× (ω) and 3×
    /// (χ) the Fisher σ, while the deviance cannot see it (gof ≈ 1: the box–smooth difference
    /// is far below the Poisson noise of one frame), so neither σ_F nor √gof·σ_F covers the
    /// error. Real frames follow neither model exactly; the two models' disagreement is the
    /// measured size of that uncertainty. Deterministic (fixed seed); cached per config.
    public static func modelMismatchSigma(config: DonutConfig, fitThickness: Bool, samples: Int = 64) -> SIMD4<Double> {
        let key = MismatchKey(config: config, fitThickness: fitThickness, samples: samples)
        mismatchLock.lock()
        if let cached = mismatchCache[key] { mismatchLock.unlock(); return cached }
        mismatchLock.unlock()
        let refinement = PhysicsRefinement(config: config, fitThickness: fitThickness, maxIterations: 20, modelMismatch: false)
        let box = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let r = config.ranges
        func central(_ range: [Double], _ u: Double) -> Double { let c = (range[0] + range[1]) / 2, h = 0.4 * (range[1] - range[0]); return c + h * (2 * u - 1) }
        var rng = SplitMix64(seed: 0x5EED_B0C5)
        var sum = SIMD4<Double>(repeating: 0), used = 0.0
        for _ in 0..<samples {
            let truth = FrameParameters(strain: central(r.strain, rng.uniform()), tiltLRDeg: central(r.tiltLRDeg, rng.uniform()),
                                        tiltUDDeg: central(r.tiltUDDeg, rng.uniform()),
                                        thicknessA: fitThickness ? central(r.thicknessA, rng.uniform()) : box.geometry.defaultThicknessA)
            var frame = box.patterns([truth])
            let peak = Double(frame.max() ?? 0)
            guard peak > 0 else { continue }
            let scale = Float(config.noise.peakPhotons / peak)
            for i in frame.indices { frame[i] *= scale }
            let result = frame.withUnsafeBufferPointer { refinement.refine($0, from: truth) }
            let e = SIMD4(result.parameters.strain - truth.strain, result.parameters.tiltLRDeg - truth.tiltLRDeg,
                          result.parameters.tiltUDDeg - truth.tiltUDDeg, fitThickness ? result.parameters.thicknessA - truth.thicknessA : 0)
            sum += e * e; used += 1
        }
        let sigma = used > 0 ? (sum / used).squareRoot() : SIMD4(repeating: 0)
        mismatchLock.lock(); mismatchCache[key] = sigma; mismatchLock.unlock()
        return sigma
    }

    struct MismatchKey: Hashable {
        var config: String, fitThickness: Bool, samples: Int
        init(config: DonutConfig, fitThickness: Bool, samples: Int) {
            self.config = "\(config)"; self.fitThickness = fitThickness; self.samples = samples
        }
    }
}

nonisolated(unsafe) private var mismatchCache: [PhysicsRefinement.MismatchKey: SIMD4<Double>] = [:]
private let mismatchLock = NSLock()
