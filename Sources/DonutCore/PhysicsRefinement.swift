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
/// frames by `mismatch` (see `finishSigmas` and `MismatchEvidence`).
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
    /// The smooth model's systematic error against the box (published-library) model as a
    /// function of the estimate (`ModelMismatch`): folded into one frame's σ by `refine`, and
    /// into a scan's by `finishSigmas` when the scan-level test (`MismatchEvidence`) says the
    /// model does not explain the frames; nil = trust the model (σ is the Fisher σ, × √gof).
    public var mismatch: ModelMismatch?
    let config: DonutConfig
    let n: Int
    /// Pattern and Jacobian ((4, n, n)) at the current point, and at the trial point.
    var pattern: [Float], jacobian: [Float], trialPattern: [Float], trialJacobian: [Float]
    /// Weighted rows S (count × n), weighted residual v (n), F (count²) and g (count) in Float.
    var rows: [Float], weighted: [Float], fisherF: [Float], gradientF: [Float]
    /// λ at the answer (n), for the goodness of fit.
    var lambda: [Float]
    /// Counts of a parametric-bootstrap replicate (n), drawn from `lambda` (`bootstrapReplicate`).
    var replicate: [Float]
    /// The scan-level test of the model, accumulated by `refine(_:readBlock:…)` over the frames
    /// this process refined (`MismatchEvidence`, made global and used by `finishSigmas`): one
    /// scan's, so a refinement serves one scan (as every pipeline makes it).
    public private(set) var evidence = MismatchEvidence()
    /// F and g in Double, the damped system (factored in place) and the step: the LM
    /// iteration allocates nothing.
    let fisher = UnsafeMutablePointer<Double>.allocate(capacity: 25), gradient = UnsafeMutablePointer<Double>.allocate(capacity: 5)
    let system = UnsafeMutablePointer<Double>.allocate(capacity: 25), step = UnsafeMutablePointer<Double>.allocate(capacity: 5)

    public struct Result: Sendable {
        public var parameters: FrameParameters
        /// Standard deviations (ε, ω°, χ°, t Å); NaN for t when thickness is not fitted. With a
        /// `mismatch` table and `honestSigma`, widened by it (`ModelMismatch.sigma`); else = `statisticalSigma`.
        public var sigma: SIMD4<Double>
        /// √max(gof, 1)·σ_F: the Fisher σ, quasi-likelihood inflated (no model-mismatch term).
        public var statisticalSigma: SIMD4<Double>
        /// gof and contrast score of a parametric-bootstrap replicate of the frame (Poisson counts
        /// drawn from λ at the answer, refined the same way), when one was drawn
        /// (`refine(block:…)`): the scan-level model test (`MismatchEvidence`).
        public var replicate: (goodness: Double, contrastScore: Double)?
        /// Intensity scale A (photons per model unit per unit monitor).
        public var scale: Double
        /// Mean |x − λ| over the measured pixels at the answer (photons).
        public var residual: Double
        /// Reduced Poisson deviance of the frame at the answer over the measured pixels, with the
        /// pixel that contributes most (`GoodnessOfFit`).
        public var fit: FrameFit
        /// D/E[D]: ≈ 1 when the model explains the frame.
        public var goodness: Double { fit.goodness }
        /// Σ w (x − λ)·log λ at the answer: the score ∂ℓ/∂γ at γ = 0 of a contrast exponent
        /// (λ ∝ I^(1+γ)), ≈ 0 on average when the pattern's contrast is the model's; a frame
        /// sharper or flatter than the model (box edges against Gaussian tails) moves it.
        public var contrastScore: Double
        /// Trial steps taken (each one pattern + Jacobian evaluation).
        public var iterations: Int
        public var converged: Bool
    }

    /// Iterations per frame when none are asked for: enough for the encoder's or the fit's
    /// start to converge (`donut bench refine` reports the trial steps actually taken).
    public static let defaultMaxIterations = 8

    /// `modelMismatch`: make σ cover the smooth model's systematic error against the box model
    /// (`ModelMismatch.boxAgainstSmooth`, tabulated once per config); false: σ is the Fisher σ (× √gof).
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
        lambda = .init(repeating: 0, count: n); replicate = lambda
        if modelMismatch { mismatch = ModelMismatch.boxAgainstSmooth(config: config, fitThickness: fitThickness) }
    }
    deinit { for p in [fisher, gradient, system, step] { p.deallocate() } }

    /// A refinement with the same settings and its own buffers (one per thread).
    public func copy() -> PhysicsRefinement {
        let c = PhysicsRefinement(config: config, fitThickness: fitThickness, maxIterations: maxIterations, background: background,
                                  modelMismatch: false)
        c.scaleSigmaByGoodness = scaleSigmaByGoodness; c.mismatch = mismatch
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
    /// `honestSigma`: widen σ by `mismatch` here (false: the scan-level refinement decides later,
    /// `finishSigmas`).
    public func refine(_ frame: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>? = nil, monitor: Double = 1,
                       from start: FrameParameters, honestSigma: Bool = true) -> Result {
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
        var residual = 0.0, measured = 0, contrast = 0.0
        for i in 0..<n {
            lambda[i] = Float(a * Double(pattern[i]) + background)
            if weights.map({ $0[i] > 0 }) ?? true {
                let l = Double(lambda[i]), r = Double(frame[i]) - l
                residual += abs(r); measured += 1; contrast += r * log(l)
            }
        }
        let fit = lambda.withUnsafeBufferPointer { GoodnessOfFit.evaluate(counts: frame, weights: weights, expected: $0) }
        let statistical = statisticalSigma(sigma, goodness: fit.goodness)
        return Result(parameters: p, sigma: honestSigma ? mismatch?.sigma(statistical: statistical, at: p) ?? statistical : statistical,
                      statisticalSigma: statistical, scale: a / monitor,
                      residual: measured > 0 ? residual / Double(measured) : .nan, fit: fit, contrastScore: contrast,
                      iterations: iterations, converged: converged)
    }

    /// The statistical σ_s = √max(gof, 1)·σ_F (quasi-likelihood: residuals larger than Poisson
    /// widen it); the model-mismatch term, when asked for, is added on top (`ModelMismatch.sigma`).
    func statisticalSigma(_ fisher: SIMD4<Double>, goodness: Double) -> SIMD4<Double> {
        let inflation = scaleSigmaByGoodness && goodness.isFinite ? max(goodness, 1) : 1
        return inflation.squareRoot() * fisher
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
    /// `honestSigma` as for one frame; `bootstrapStride`: frames whose scan index is a multiple of
    /// it also get a parametric-bootstrap replicate (`Result.replicate`).
    public func refine(block: FrameBlock, from starts: [FrameParameters], skip: [Bool],
                       helpers: [PhysicsRefinement], honestSigma: Bool = true, bootstrapStride: Int? = nil) -> [Result?] {
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
                        let w = weights.map { UnsafeBufferPointer(rebasing: $0[pixels]) }, monitor = block.monitor?[f] ?? 1
                        var r = worker.refine(UnsafeBufferPointer(rebasing: frames[pixels]), weights: w, monitor: monitor,
                                              from: starts[f], honestSigma: honestSigma)
                        if let stride = bootstrapStride, (block.first + f) % stride == 0 {
                            let b = worker.bootstrapReplicate(at: r.parameters, weights: w, monitor: monitor, frameIndex: block.first + f)
                            r.replicate = (b.goodness, b.contrastScore)
                        }
                        out[f] = r
                    }
                }
                serialBLAS {
                    if threads <= 1 { work(0) } else { DispatchQueue.concurrentPerform(iterations: threads, execute: work) }
                }
            }
        }
        return Array(out)
    }

    /// A parametric-bootstrap replicate of the frame just refined (λ of its answer in `lambda`):
    /// Poisson counts drawn from λ on the measured pixels, refined from `p` with the same
    /// weights and monitor. Under a model that explains the frame, the frame's own gof and
    /// contrast score have the replicate's distribution (`MismatchEvidence`). The draws are
    /// seeded by the scan index `frameIndex`: the same on any rank or thread count.
    func bootstrapReplicate(at p: FrameParameters, weights: UnsafeBufferPointer<Float>?, monitor: Double, frameIndex: Int) -> Result {
        var rng = SplitMix64.seeded(MismatchEvidence.seed, stream: UInt64(frameIndex))
        // From the film's signal m·A·I alone: the floor b only keeps λ > 0 for the likelihood and
        // is no background the frames were measured with (drawn, it would put ~b·n photons on
        // dark pixels no measured frame has, and every frame would look better than its replicate).
        let floor = Float(background)
        for i in 0..<n {
            replicate[i] = weights.map { $0[i] > 0 } ?? true ? Float(rng.poisson(Double(max(lambda[i] - floor, 0)))) : 0
        }
        let copy = replicate
        return copy.withUnsafeBufferPointer { refine($0, weights: weights, monitor: monitor, from: p, honestSigma: false) }
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
    /// become the maximum-likelihood parameters, `*_sigma` their statistical standard
    /// deviations (`Result.statisticalSigma`; `finishSigmas`, once the whole scan is refined,
    /// widens them where the scan shows model mismatch), `residual` the mean |x − λ| over
    /// measured pixels (photons). `readBlock` gives the frames of a range of the scan (the
    /// block of `results`), read `batch` at a time; the frames of a batch are shared between
    /// `threads` threads (default: OpenBLAS's thread count). `judge` fills the goodness of fit
    /// at the refined estimates, sets valid = 0 above its threshold and keeps the verdict.
    public func refine(_ results: inout FrameResults, batch: Int = 256, threads: Int = Parallel.threads,
                       readBlock: (Range<Int>) throws -> FrameBlock, judge: FrameJudge? = nil,
                       progress: ((Int, Int) -> Void)? = nil) rethrows {
        let block = results.frameRange
        let names = Array(Self.sigmaMaps.prefix(fitThickness ? 4 : 3))
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
            let refined = refine(block: frames, from: starts, skip: skip, helpers: helpers,
                                 honestSigma: false, bootstrapStride: mismatch == nil ? nil : MismatchEvidence.stride)
            for (k, r) in refined.enumerated() {
                guard let r else { continue }
                let i = offset + k
                results.strain[i] = r.parameters.strain; results.tiltLRDeg[i] = r.parameters.tiltLRDeg
                results.tiltUDDeg[i] = r.parameters.tiltUDDeg
                if fitThickness { results.thicknessA?[i] = r.parameters.thicknessA }
                for (j, name) in names.enumerated() { results.sigmas[name]?[i] = r.statisticalSigma[j] }
                if let replicate = r.replicate { evidence.add(r, replicate: replicate) }
                results.residual?[i] = r.residual
            }
            judge?.judge(&results, block: frames, usable: skip.map { !$0 })
            progress?(range.upperBound - block.lowerBound, block.count)
            start = range.upperBound
        }
    }
}

extension PhysicsRefinement {
    /// The σ maps, in the order of `Result.sigma` (ε, ω, χ, t); t's only when thickness is fitted.
    static let sigmaMaps = ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma", "thickness_sigma"]

    /// Ends a scan's refinement (collective: every rank, after `refine(_:readBlock:…)` on its
    /// block): makes `evidence` global, decides whether the smooth model explains the scan
    /// (`MismatchEvidence.decision`) and, where it does not, widens every refined frame's σ in
    /// `results` by the `mismatch` table (`ModelMismatch.sigma`, at the frame's estimate).
    /// Returns the sentence recorded as the result's `sigma_model` (also set on `results`).
    /// `minimumFrames`: fewest frames that can clear the scan (`MismatchEvidence.minimumFrames`).
    @discardableResult
    public func finishSigmas(_ results: inout FrameResults, minimumFrames: Int = MismatchEvidence.minimumFrames,
                             allreduceSum: (inout [UInt64]) -> Void) -> String {
        let global = evidence.global(allreduceSum)
        let note: String
        if let mismatch {
            let decision = global.decision(minimumFrames: minimumFrames)
            if decision.widen {
                let names = Self.sigmaMaps
                for i in 0..<results.frameRange.count where results.valid[i] == 1 {
                    var s = SIMD4<Double>(repeating: .nan)
                    for (j, name) in names.enumerated() { s[j] = results.sigmas[name]?[i] ?? .nan }
                    let p = FrameParameters(strain: results.strain[i], tiltLRDeg: results.tiltLRDeg[i], tiltUDDeg: results.tiltUDDeg[i],
                                            thicknessA: results.thicknessA?[i] ?? model.geometry.defaultThicknessA)
                    guard p.strain.isFinite && p.tiltLRDeg.isFinite && p.tiltUDDeg.isFinite else { continue }
                    let widened = mismatch.sigma(statistical: s, at: p)
                    for (j, name) in names.enumerated() where results.sigmas[name] != nil { results.sigmas[name]![i] = widened[j] }
                }
            }
            note = decision.sentence
        } else {
            note = "Fisher σ × √max(gof, 1) (no model-mismatch term asked for)"
        }
        results.sigmaModel = note
        return note
    }
}

/// The scan-level test of whether the smooth model explains the frames at the Poisson level,
/// which decides whether σ carries the model-mismatch term (`PhysicsRefinement.finishSigmas`).
///
/// Why a test: the mismatch term (`ModelMismatch`) is the spread of the smooth model's error on
/// box-model frames. Where the model is exact it only inflates σ (on smooth-model scans it
/// made 1σ cover 0.79–0.97 instead of 0.68), and one frame of a few photons cannot tell the two
/// models apart (gof 0.980 on box frames, 0.986 on smooth ones, spread 0.03). A scan can.
///
/// How: every frame (`stride`) gets a parametric-bootstrap replicate — Poisson counts drawn
/// from λ at its answer, refined the same way — and two statistics of the frame are compared
/// with its replicate's: the goodness of fit (D/E[D]) and the contrast score
/// S = Σ w (x − λ)·log λ (`Result.contrastScore`: the score test of a contrast exponent, the
/// direction in which sharp box edges differ from Gaussian tails). Under a model that explains
/// the frames each pair is exchangeable, so the frame's value is below its replicate's with
/// probability ½, and each sign test
///
///     z = (n₋ − n₊) / √(n₋ + n₊)          n₋, n₊: frames below / above their replicate
///
/// is ≈ N(0, 1) whatever the count level, mask or monitor. |z| > `threshold` for either says the
/// model does not explain the scan, and σ is widened. The contrast score's sign on box frames
/// depends on where the scan's tilts sit: measured at 7 photons, box-model scans z_S = +9.2
/// (32×32 `domains`, `ScanSigmaModelTests`), −24.5 and −11.7 (64×64 `paper`, `domains`,
/// `scripts/bench-refinement`), z_gof = +4.5, +13.6, +10.1; smooth-model scans z_S = +0.2,
/// −0.2, +1.1 and z_gof = −0.6, +2.2, +0.5. Sign tests, not mean differences: the counts are
/// exact integers (the same sums on any rank count) and one bad frame moves them by one, not
/// by its size.
/// Fewer than `minimumFrames` pairs cannot clear a scan, and σ is widened (the safe side: a
/// missed mismatch leaves σ overconfident, a false alarm only conservative).
public struct MismatchEvidence: Sendable, Equatable {
    /// Every `stride`-th frame (by scan index) is replicated: +1/`stride` of the refinement's
    /// cost. 1: the tests' power grows as √pairs, and a missed mismatch leaves σ overconfident.
    public static let stride = 1
    /// Fewest refined frames that can clear a scan of mismatch: below, σ is widened whatever
    /// the tests say. A box-like mismatch can hide from a few hundred frames (16×16 box-model
    /// `domains` scans: max |z| as low as 0.5, while the Fisher σ covered 14–27 % of the tilt
    /// errors); on 32×32 (1,024 frames) the weakest of nine gave 3.8, on 64×64 the weakest of
    /// twelve 6.6 (`scripts/bench-refinement`, docs/benchmarks.md); 2,048 keeps a miss unlikely.
    public static let minimumFrames = 2048
    /// |z| above which the model is rejected: 3 (either of two tests: a false alarm on ~0.5 % of
    /// exact-model scans, which then get the wider σ).
    public static let threshold = 3.0
    /// Seed of the replicates' Poisson draws (stream = the frame's scan index).
    static let seed: UInt64 = 0xB007_5791
    /// Sign counts of the goodness of fit and of the contrast score: pairs whose frame value is
    /// below / above its replicate's (ties and non-finite pairs are left out).
    public private(set) var goodness: SignCount, contrast: SignCount

    public struct SignCount: Sendable, Equatable {
        public var below: UInt64 = 0, above: UInt64 = 0
        public init(below: UInt64 = 0, above: UInt64 = 0) { self.below = below; self.above = above }
        mutating func add(_ observed: Double, _ replicate: Double) {
            guard observed.isFinite && replicate.isFinite else { return }
            if observed < replicate { below += 1 } else if observed > replicate { above += 1 }
        }
        public var pairs: UInt64 { below + above }
        /// The sign-test statistic (see `MismatchEvidence`); NaN without pairs.
        public var z: Double { pairs == 0 ? .nan : (Double(below) - Double(above)) / Double(pairs).squareRoot() }
    }

    public init(goodness: SignCount = .init(), contrast: SignCount = .init()) { self.goodness = goodness; self.contrast = contrast }

    mutating func add(_ frame: PhysicsRefinement.Result, replicate: (goodness: Double, contrastScore: Double)) {
        goodness.add(frame.goodness, replicate.goodness)
        contrast.add(frame.contrastScore, replicate.contrastScore)
    }

    /// The counts as one array (for a sum over ranks) and back.
    public var counts: [UInt64] { [goodness.below, goodness.above, contrast.below, contrast.above] }
    public init(counts c: [UInt64]) { self.init(goodness: .init(below: c[0], above: c[1]), contrast: .init(below: c[2], above: c[3])) }

    /// The sums over every rank.
    func global(_ allreduceSum: (inout [UInt64]) -> Void) -> MismatchEvidence {
        var c = counts
        allreduceSum(&c)
        return MismatchEvidence(counts: c)
    }

    /// Frames tested: the fewer of the two tests' pairs.
    public var pairs: UInt64 { min(goodness.pairs, contrast.pairs) }

    /// Whether σ gets the model-mismatch term, and the sentence that says why.
    public var decision: (widen: Bool, sentence: String) { decision(minimumFrames: Self.minimumFrames) }

    /// `decision` with another floor on the frames (tests of small scans).
    public func decision(minimumFrames: Int) -> (widen: Bool, sentence: String) {
        let test = String(format: "sign tests of %llu frames against parametric-bootstrap replicates: contrast score z = %+.1f, goodness of fit z = %+.1f",
                          pairs, contrast.z, goodness.z)
        if pairs < UInt64(minimumFrames) {
            return (true, "Fisher σ × √max(gof, 1) widened by the box-model mismatch term: too few frames to clear the scan of model mismatch (\(test); fewer than \(minimumFrames))")
        }
        if abs(contrast.z) > Self.threshold || abs(goodness.z) > Self.threshold {
            return (true, "Fisher σ × √max(gof, 1) widened by the box-model mismatch term: the smooth model does not explain the frames at the Poisson level (\(test))")
        }
        return (false, "Fisher σ × √max(gof, 1): the smooth model explains the frames at the Poisson level (\(test))")
    }
}

/// The smooth model's systematic error against the box (published-library) model, tabulated
/// against the estimate, and the σ that covers it.
///
/// Why: on box-model frames the refinement's error is e = b(θ) + n, with n the Poisson noise
/// (σ_F, the Fisher σ) and b(θ) the bias the model difference alone causes (the error on a
/// noiseless frame). b is far larger than σ_F for the tilts (up to ~3σ_F for χ at 7 photons)
/// and the deviance cannot see it (gof ≈ 0.98 on such frames), so σ_F, √gof·σ_F, or σ_F plus
/// one RMS of b over the ranges all miss: b is not noise-like but a sawtooth of the parameter.
/// The box pattern B(y, v) = [|DQy(y) + G·χ − OQy(v)| < h] only changes when an edge of the box
/// crosses a zone-plate grid row, so the box frame is piecewise constant in G·χ (cells of a
/// zone-plate row step, ~0.002° and ~0.005° alternating on the published preset); the smooth
/// estimate of every χ in a cell is one value, and b runs across the cell. Along ω the same
/// holds more loosely (the qx edges cross at different x). Within a cell the frame carries no
/// information on where the truth is, but which cell — hence how wide b spreads — is known
/// from the estimate: near a cell's value b spans the whole cell, between cells b is small.
///
/// So b is tabulated against the estimate: `samples` noiseless box frames (expected counts at
/// the config's peak photons) at truths stratified over the whole configured ranges (χ and ω
/// each on their own stratified grid, ε and t uniform) are refined with the smooth model
/// from the truth, and each parameter's error is kept against the coordinate of the tilt that
/// decides its cell, in units of G·tilt: u = χ̂/(1+ε̂) for χ, u = ω̂/(1+ε̂) for ε, ω and t
/// (G = G0/(1+ε); B depends on (ε, χ) only through G·χ). A frame's σ_j is then the 68.27 %
/// quantile of |b_k + σ_s·Z| over the tabulated errors b_k whose u lies within
/// `windowWidth`·σ_s(u) of the frame's (at least `minimumNeighbours` nearest), Z ~ N(0, 1) and
/// σ_s the frame's statistical σ (√max(gof, 1)·σ_F):
///
///     (1/K) Σ_k [Φ((σ − b_k)/σ_s) − Φ((−σ − b_k)/σ_s)] = 0.6827
///
/// — the σ whose ±1σ interval holds 68 % of the errors of frames like this one, whatever the
/// shape of b's spread there (a quadrature sum σ_s² + ⟨b²⟩ gives 0.58 for a uniform b ≫ σ_s).
/// σ ≥ σ_s always (a centred interval is most probable under a centred normal), = σ_s where
/// b = 0. The bias is not subtracted: real frames follow neither model, and within a cell its
/// sign is unknown. Deterministic (fixed seed, each sample refined whole by one thread);
/// computed once per config and cached. Cost on the published preset: 4.0–4.5 CPU-s for the
/// 4,096 samples, ~1 ms each (docs/benchmarks.md, "σ under model mismatch").
public struct ModelMismatch: Sendable {
    /// The tabulated samples: truth and the smooth model's estimate of its noiseless box frame.
    public let truths: [FrameParameters]
    public let estimates: [FrameParameters]
    /// Per parameter (ε, ω, χ, t): the samples' coordinates u (ascending) and errors
    /// (estimate − truth) in the same order; t's errors are 0 when thickness is not fitted.
    let coordinates: [[Double]], errors: [[Double]]

    /// Probability mass within ±1σ of a normal: erf(1/√2).
    public static let coverage = 0.682689492137086
    /// Half-width of the neighbourhood of an estimate, in σ_s of its coordinate: the estimate
    /// is not the truth, so the errors of every cell within reach of the noise count.
    public static let windowWidth = 2.0
    /// Fewest tabulated errors a σ is taken over (many photons: a window narrower than the
    /// samples' spacing).
    public static let minimumNeighbours = 16
    /// Samples tabulated per config: spacing 0.2°/4096 ≈ 5e-5° in χ and 2.4e-5° in ω on the
    /// published ranges, well below σ_F at 30 photons (2e-4°, 1e-4°). Fewer samples (2,048)
    /// already move `paper` tilt_lr coverage by 0.04 (the window at its plateaus thins out).
    public static let defaultSamples = 4096

    /// The coordinate parameter j's error is tabulated against (see the type): G·tilt in units
    /// of G0 — ω/(1+ε) for ε, ω and t, χ/(1+ε) for χ.
    @inline(__always) static func coordinate(_ j: Int, _ p: FrameParameters) -> Double {
        (j == 2 ? p.tiltUDDeg : p.tiltLRDeg) / (1 + p.strain)
    }
    /// Index (1 = ω, 2 = χ) of the tilt in that coordinate.
    @inline(__always) static func tiltIndex(_ j: Int) -> Int { j == 2 ? 2 : 1 }

    /// Table from samples (truths and their estimates, same order).
    init(truths: [FrameParameters], estimates: [FrameParameters], fitThickness: Bool) {
        precondition(truths.count == estimates.count, "\(truths.count) truths, \(estimates.count) estimates")
        self.truths = truths; self.estimates = estimates
        var coordinates: [[Double]] = [], errors: [[Double]] = []
        for j in 0..<4 {
            let u = estimates.map { Self.coordinate(j, $0) }
            let e = zip(estimates, truths).map { est, truth -> Double in
                switch j {
                case 0: return est.strain - truth.strain
                case 1: return est.tiltLRDeg - truth.tiltLRDeg
                case 2: return est.tiltUDDeg - truth.tiltUDDeg
                default: return fitThickness ? est.thicknessA - truth.thicknessA : 0
                }
            }
            let order = u.indices.sorted { u[$0] < u[$1] || (u[$0] == u[$1] && $0 < $1) }
            coordinates.append(order.map { u[$0] }); errors.append(order.map { e[$0] })
        }
        self.coordinates = coordinates; self.errors = errors
    }

    /// σ of the estimate `p` for each parameter, from its statistical σ_s (√max(gof,1)·σ_F):
    /// the coverage quantile over the neighbourhood (see the type). NaN where σ_s is NaN
    /// (t not fitted); σ_s where nothing is tabulated.
    public func sigma(statistical s: SIMD4<Double>, at p: FrameParameters) -> SIMD4<Double> {
        var out = s
        for j in 0..<4 where s[j].isFinite && s[j] > 0 {
            let range = neighbours(j, of: p, halfWidth: Self.windowWidth * s[Self.tiltIndex(j)] / (1 + p.strain))
            guard !range.isEmpty else { continue }
            out[j] = errors[j].withUnsafeBufferPointer {
                Self.coverageQuantile(errors: UnsafeBufferPointer(rebasing: $0[range]), noise: s[j], coverage: Self.coverage)
            }
        }
        return out
    }

    /// Indices (into the sorted table of parameter j) of the samples whose coordinate lies within
    /// `halfWidth` of p's, or the `minimumNeighbours` nearest when fewer do (or halfWidth is NaN).
    func neighbours(_ j: Int, of p: FrameParameters, halfWidth: Double) -> Range<Int> {
        let u = coordinates[j], n = u.count, centre = Self.coordinate(j, p)
        guard n > 0, centre.isFinite else { return 0..<0 }
        func lowerBound(_ x: Double) -> Int {
            var lo = 0, hi = n
            while lo < hi { let mid = (lo + hi) / 2; if u[mid] < x { lo = mid + 1 } else { hi = mid } }
            return lo
        }
        if halfWidth.isFinite {
            let window = lowerBound(centre - halfWidth)..<lowerBound(centre + halfWidth)
            if window.count >= Self.minimumNeighbours { return window }
        }
        // The K nearest: grow [lo, hi) from the insertion point towards the nearer side.
        let k = min(Self.minimumNeighbours, n)
        var lo = lowerBound(centre), hi = lo
        while hi - lo < k {
            if lo == 0 { hi += 1 } else if hi == n { lo -= 1 } else if centre - u[lo - 1] <= u[hi] - centre { lo -= 1 } else { hi += 1 }
        }
        return lo..<hi
    }

    /// The σ with (1/K) Σ_k P(|b_k + s·Z| < σ) = `coverage`, Z ~ N(0, 1), by bisection on
    /// [0, max|b_k| + 3s] (the left side rises monotonically in σ, from 0 to ≥ Φ(3) − Φ(−3) =
    /// 0.997 at the top); 40 halvings = 1e-12 of the bracket. s = 0: the quantile of |b_k| itself.
    static func coverageQuantile(errors b: UnsafeBufferPointer<Double>, noise s: Double, coverage: Double) -> Double {
        var hi = 0.0
        for x in b { hi = max(hi, abs(x)) }
        if !(s > 0) {
            let sorted = b.map(abs).sorted()
            return sorted[min(sorted.count - 1, Int((coverage * Double(sorted.count)).rounded(.up)) - 1)]
        }
        hi += 3 * s
        var lo = 0.0
        let scale = 1 / (s * 2.0.squareRoot()), k = Double(b.count)
        for _ in 0..<40 {
            let m = (lo + hi) / 2
            var p = 0.0
            // P(|b + sZ| < m) = Φ((m − b)/s) − Φ((−m − b)/s) = ½[erfc((−m − b)/(s√2)) − erfc((m − b)/(s√2))]
            for x in b { p += erfc((-m - x) * scale) - erfc((m - x) * scale) }
            if p / (2 * k) < coverage { lo = m } else { hi = m }
        }
        return (lo + hi) / 2
    }

    /// The table for `config` (box frames refined with the smooth model; see the type), cached
    /// per config, thickness setting and sample count; samples are shared between
    /// `Parallel.threads` threads with a fixed partition (the answer does not depend on it).
    public static func boxAgainstSmooth(config: DonutConfig, fitThickness: Bool, samples: Int = defaultSamples) -> ModelMismatch {
        let key = MismatchKey(config: config, fitThickness: fitThickness, samples: samples)
        mismatchLock.lock()
        if let cached = mismatchCache[key] { mismatchLock.unlock(); return cached }
        mismatchLock.unlock()
        let r = config.ranges
        let geometry = DiffractionGeometry(config: config)
        // Stratified truths: sample i has χ in the i-th of `samples` equal slices of its range
        // and ω in a shuffled slice, so both tilts are covered evenly and independently.
        var rng = SplitMix64(seed: 0x5EED_B0C5)
        var slices = Array(0..<samples)
        slices.shuffle(using: &rng)
        func slice(_ range: [Double], _ i: Int, _ u: Double) -> Double { range[0] + (range[1] - range[0]) * (Double(i) + u) / Double(samples) }
        let truths = (0..<samples).map { i in
            FrameParameters(strain: rng.uniform(r.strain[0], r.strain[1]), tiltLRDeg: slice(r.tiltLRDeg, slices[i], rng.uniform()),
                            tiltUDDeg: slice(r.tiltUDDeg, i, rng.uniform()),
                            thicknessA: fitThickness ? rng.uniform(r.thicknessA[0], r.thicknessA[1]) : geometry.defaultThicknessA)
        }
        let out = UnsafeMutableBufferPointer<FrameParameters>.allocate(capacity: samples)
        _ = out.initialize(from: truths)
        defer { out.deallocate() }
        let threads = max(1, min(Parallel.threads, samples))
        serialBLAS {
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let refinement = PhysicsRefinement(config: config, fitThickness: fitThickness, maxIterations: 20, modelMismatch: false)
                let box = ForwardModel<Float>(geometry: geometry, profile: .box)
                for i in (t * samples / threads)..<((t + 1) * samples / threads) {
                    out[i] = noiselessEstimate(truths[i], box: box, refinement: refinement, peakPhotons: config.noise.peakPhotons)
                }
            }
        }
        let table = ModelMismatch(truths: truths, estimates: Array(out), fitThickness: fitThickness)
        mismatchLock.lock(); mismatchCache[key] = table; mismatchLock.unlock()
        return table
    }

    /// The smooth model's estimate, started at the truth, of the noiseless box frame of
    /// `truth` scaled to `peakPhotons` at its brightest pixel (the truth itself if the frame is dark).
    static func noiselessEstimate(_ truth: FrameParameters, box: ForwardModel<Float>, refinement: PhysicsRefinement,
                                  peakPhotons: Double) -> FrameParameters {
        var frame = box.patterns([truth])
        let peak = Double(frame.max() ?? 0)
        guard peak > 0 else { return truth }
        let scale = Float(peakPhotons / peak)
        for i in frame.indices { frame[i] *= scale }
        return frame.withUnsafeBufferPointer { refinement.refine($0, from: truth) }.parameters
    }

    struct MismatchKey: Hashable {
        var config: String, fitThickness: Bool, samples: Int
        init(config: DonutConfig, fitThickness: Bool, samples: Int) {
            self.config = "\(config)"; self.fitThickness = fitThickness; self.samples = samples
        }
    }
}

nonisolated(unsafe) private var mismatchCache: [ModelMismatch.MismatchKey: ModelMismatch] = [:]
private let mismatchLock = NSLock()
