import DonutBLAS

/// Batch normalisation over (N, H, W) per channel, as PyTorch's `BatchNorm2d(C, eps: 1e-5, momentum: 0.1)`.
/// input and output (batch, channels, height, width); gamma, beta, runningMean, runningVar, mean,
/// invStd (channels). M = batch·height·width values per channel.
///
/// Training: μ = (1/M) Σ x, σ² = (1/M) Σ (x − μ)² (biased, used to normalise),
/// y = γ·(x − μ)/√(σ² + ε) + β; the running statistics move by
/// running ← (1 − momentum)·running + momentum·batch with the **unbiased** variance σ²·M/(M − 1)
/// (PyTorch's convention). Eval: y = γ·(x − runningMean)/√(runningVar + ε) + β.
///
/// The running statistics are buffers, not trainable parameters: the caller keeps them (and
/// checkpoints them) beside the `ParameterStore`.
public enum BatchNorm2d {
    /// Sums `count` Doubles over the data-parallel replicas in place (`sum`: an MPI
    /// allreduce-sum, wired by the caller: DonutNN knows nothing of MPI). Given to the training
    /// forward and backward, it makes BatchNorm **synchronised**: statistics over the global batch.
    ///
    /// It also owns the buffer those sums travel in (2·channels + 1 Doubles per layer), grown to
    /// the widest layer on the first step: a temporary of that size leaves the stack from 64
    /// channels on (`withUnsafeTemporaryAllocation` keeps at most 1 KB there), which was a heap
    /// allocation per synchronised layer per step. One reducer per network (not shared by
    /// threads); the layers use its buffer one at a time.
    public final class Reducer {
        public let sum: (UnsafeMutablePointer<Double>, Int) -> Void
        private var storage: UnsafeMutablePointer<Double>
        private var capacity = 0

        public init(_ sum: @escaping (UnsafeMutablePointer<Double>, Int) -> Void) {
            self.sum = sum
            storage = .allocate(capacity: 1)
        }

        deinit { storage.deallocate() }

        /// Sums `count` Doubles at p over the replicas, in place.
        @inline(__always)
        public func callAsFunction(_ p: UnsafeMutablePointer<Double>, _ count: Int) { sum(p, count) }

        /// The reducer's buffer, at least `count` Doubles (contents undefined); valid until the next call.
        func buffer(_ count: Int) -> UnsafeMutablePointer<Double> {
            if count > capacity {
                storage.deallocate()
                storage = .allocate(capacity: count)
                capacity = count
            }
            return storage
        }
    }
    public static let defaultEpsilon = 1e-5
    public static let defaultMomentum = 0.1

    /// Training-mode forward.
    /// - output (batch, channels, height, width): written; must not alias input. With `relu`,
    ///   max(y, 0) is written instead (BatchNorm → ReLU fused; ReLU's backward needs only this output).
    /// - mean, invStd (channels): written, **cached for backward**: batch mean μ and 1/√(σ² + ε).
    /// - runningMean, runningVar (channels): updated in place (momentum, unbiased variance).
    /// - Requires M = batch·height·width > 1 (PyTorch refuses one value per channel too).
    /// - synchronise: nil, this batch's statistics; a `Reducer`, the statistics of every
    ///   replica's batch together (`forwardSynchronised`; M is then the total over replicas).
    /// Statistics: two passes (mean, then squared deviations from it). Each plane (height·width
    /// values, ≤ 4096 here) is summed in T with eight partial sums, relative error ~√(plane/8)·ulp
    /// ≈ 1e-6 for Float, and the per-plane sums are totalled in Double, so the batch statistics
    /// keep the accuracy of a Double accumulation to ~1e-6 relative while the inner loops
    /// vectorise. Channels run in parallel (each channel whole on one thread: bit-identical).
    public static func forwardTraining<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
        runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int,
        epsilon: Double = defaultEpsilon, momentum: Double = defaultMomentum, relu: Bool = false,
        synchronise reduce: Reducer? = nil
    ) {
        let plane = height * width, m = batch * plane
        if let reduce {
            forwardSynchronised(output: output, mean: mean, invStd: invStd, runningMean: runningMean, runningVar: runningVar,
                                input: input, gamma: gamma, beta: beta, batch: batch, channels: channels, plane: plane,
                                epsilon: epsilon, momentum: momentum, relu: relu, reduce: reduce)
            return
        }
        precondition(m > 1, "BatchNorm2d training needs more than one value per channel")
        Parallel.forRanges(channels, work: 3 * batch * channels * plane,
                           TrainingForward(output: output, mean: mean, invStd: invStd, runningMean: runningMean, runningVar: runningVar,
                                           input: input, gamma: gamma, beta: beta, batch: batch, channels: channels, plane: plane,
                                           epsilon: epsilon, momentum: momentum, relu: relu))
    }

    /// `forwardTraining` (one replica) on channels `channels`: statistics, running statistics, output.
    struct TrainingForward<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>
        let runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>
        let input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>
        let batch: Int, channels: Int, plane: Int, epsilon: Double, momentum: Double, relu: Bool

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            let m = batch * plane
            for c in range {
                var sum = 0.0
                for n in 0..<batch { sum += Double(Parallel.sum(input + (n * channels + c) * plane, plane)) }
                let mu = sum / Double(m), muT = T(mu)
                var sq = 0.0
                for n in 0..<batch { sq += Double(Parallel.sumSquares(input + (n * channels + c) * plane, plane, minus: muT)) }
                // Σ(x − μ_T)² = Σ(x − μ)² + M·(μ − μ_T)²: remove the rounding of μ to T.
                let dm = mu - Double(muT)
                sq = max(0, sq - Double(m) * dm * dm)
                let variance = sq / Double(m)
                let inv = 1 / (variance + epsilon).squareRoot()
                mean[c] = muT; invStd[c] = T(inv)
                runningMean[c] = T((1 - momentum) * Double(runningMean[c]) + momentum * mu)
                runningVar[c] = T((1 - momentum) * Double(runningVar[c]) + momentum * sq / Double(m - 1))
                let scale = gamma[c] * T(inv), shift = beta[c] - muT * scale
                for n in 0..<batch {
                    let o = (n * channels + c) * plane
                    Conv2d.affine(output + o, input + o, plane, scale, shift, relu: relu)
                }
            }
        }
    }

    /// (Σ y, Σ (y − ȳ)²) of one plane of n values, ȳ = Σ y / n: the statistics a conv's epilogue
    /// writes per output plane while it is in cache (`Conv2d.forward(planeStatistics:)`), from
    /// which the batch statistics follow exactly (`channelSum`, `channelSquares`) without passes of their own.
    /// Sums in T with eight partial sums, totalled in Double, as `forwardTraining`; the squares
    /// about the plane mean rounded to T, corrected: Σ(y − ȳ_T)² = Σ(y − ȳ)² + n·(ȳ − ȳ_T)².
    @inline(__always)
    public static func planeStatistics<T: GEMMScalar>(_ y: UnsafePointer<T>, _ n: Int) -> (sum: Double, squares: Double) {
        let sum = Double(Parallel.sum(y, n)), mean = sum / Double(n), meanT = T(mean)
        let d = mean - Double(meanT)
        return (sum, max(0, Double(Parallel.sumSquares(y, n, minus: meanT)) - Double(n) * d * d))
    }

    /// Channel c's Σ y over the batch from its planes' `planeStatistics` (stats[2q] for plane
    /// q = n·channels + c).
    @inline(__always)
    static func channelSum(_ stats: UnsafePointer<Double>, channel c: Int, batch: Int, channels: Int) -> Double {
        var sum = 0.0
        for n in 0..<batch { sum += stats[2 * (n * channels + c)] }
        return sum
    }

    /// Channel c's Σ (y − μ)² over the batch from its planes' `planeStatistics` (stats[2q],
    /// stats[2q + 1], `plane` values each): Chan et al.'s pairwise update Σ_q [Q_q + m·(S_q/m − μ)²].
    @inline(__always)
    static func channelSquares(_ stats: UnsafePointer<Double>, channel c: Int, batch: Int, channels: Int, plane: Int,
                               about mu: Double) -> Double {
        let m = Double(plane)
        var squares = 0.0
        for n in 0..<batch {
            let q = n * channels + c, d = stats[2 * q] / m - mu
            squares += stats[2 * q + 1] + m * d * d
        }
        return squares
    }

    /// The eval-mode transform as y = scale·x + shift per channel: scale = γ/√(runningVar + ε),
    /// shift = β − runningMean·scale. scale, shift (channels) written.
    public static func evalAffine<T: GEMMScalar>(
        scale: UnsafeMutablePointer<T>, shift: UnsafeMutablePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>, channels: Int, epsilon: Double = defaultEpsilon
    ) {
        for c in 0..<channels {
            let inv = T(1 / (Double(runningVar[c]) + epsilon).squareRoot())
            scale[c] = gamma[c] * inv; shift[c] = beta[c] - runningMean[c] * scale[c]
        }
    }

    /// Eval-mode forward with the running statistics: output written (may alias input); with
    /// `relu`, max(y, 0). Nothing cached.
    public static func forwardEval<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, epsilon: Double = defaultEpsilon, relu: Bool = false
    ) {
        let plane = height * width
        Parallel.forRanges(batch * channels, work: batch * channels * plane,
                           NormalisePlanes(output: output, input: input, gamma: gamma, beta: beta, mean: runningMean,
                                       variance: runningVar, invStd: nil, channels: channels, plane: plane, epsilon: epsilon, relu: relu))
    }

    /// y = γ·(x − μ)·s + β on planes `planes` (index n·channels + c), with s = invStd[c], or
    /// 1/√(variance[c] + ε) when invStd is nil (eval: the running statistics); max(·, 0) if relu.
    struct NormalisePlanes<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>
        let mean: UnsafePointer<T>, variance: UnsafePointer<T>?, invStd: UnsafePointer<T>?
        let channels: Int, plane: Int, epsilon: Double, relu: Bool

        @_specialize(where T == Float)
        func run(_ planes: Range<Int>, worker: Int) {
            for q in planes {
                let c = q % channels
                let inv = invStd?[c] ?? T(1 / (Double(variance![c]) + epsilon).squareRoot())
                let scale = gamma[c] * inv, shift = beta[c] - mean[c] * scale
                Conv2d.affine(output + q * plane, input + q * plane, plane, scale, shift, relu: relu)
            }
        }
    }

    /// Training-mode backward, through the batch mean and variance. With x̂ = (x − μ)·invStd and
    /// g = dOutput·γ: dx = invStd · (g − mean(g) − x̂ · mean(g · x̂)) (means over the M values of a channel).
    /// - dInput (batch, channels, height, width): **written** (=).
    /// - dGamma (channels) += Σ dOutput · x̂; dBeta (channels) += Σ dOutput: **add**.
    /// - mean, invStd: the cache `forwardTraining` wrote.
    /// - reluOutput: when the forward was fused with ReLU, its output y; dOutput is then taken
    ///   as ∂L/∂(ReLU output) and gated by [y > 0] first (ReLU.backward fused). nil: no ReLU.
    /// - synchronise: the reducer the forward used (`backwardSynchronised`), or nil.
    /// Sums per plane in T (eight partial sums), totalled in Double; channels in parallel.
    public static func backwardTraining<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>,
        mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, reluOutput: UnsafePointer<T>? = nil,
        synchronise reduce: Reducer? = nil
    ) {
        let plane = height * width, m = batch * plane
        if let reduce {
            backwardSynchronised(dInput: dInput, dGamma: dGamma, dBeta: dBeta, dOutput: dOutput, input: input, gamma: gamma,
                                 mean: mean, invStd: invStd, batch: batch, channels: channels, plane: plane,
                                 reluOutput: reluOutput, reduce: reduce)
            return
        }
        Parallel.forRanges(channels, work: 3 * batch * channels * plane,
                           TrainingBackward(dInput: dInput, dGamma: dGamma, dBeta: dBeta, dOutput: dOutput, input: input, gamma: gamma,
                                            mean: mean, invStd: invStd, reluOutput: reluOutput, stats: nil, total: Double(m),
                                            batch: batch, channels: channels, plane: plane))
    }

    /// The training backward on channels `channels`. With `stats` nil (one replica): the sums
    /// (`GradientSums`) then dx. With `stats` (synchronised): Σ dy at stats[c] and Σ dy·(x − μ)
    /// at stats[channels + c] over every replica, `total` values; the ReLU gate is already in dInput.
    struct TrainingBackward<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>
        let mean: UnsafePointer<T>, invStd: UnsafePointer<T>, reluOutput: UnsafePointer<T>?
        let stats: UnsafePointer<Double>?, total: Double
        let batch: Int, channels: Int, plane: Int

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for c in range {
                let mu = mean[c], inv = invStd[c]
                let sumDy: Double, sumDyXc: Double
                if let stats {
                    (sumDy, sumDyXc) = (stats[c], stats[channels + c])
                } else {
                    (sumDy, sumDyXc) = gradientSums(dInput: dInput, dOutput: dOutput, input: input, reluOutput: reluOutput,
                                                    mu: mu, channel: c, batch: batch, channels: channels, plane: plane)
                    addAffineGradients(dGamma, dBeta, channel: c, sumDy: sumDy, sumDyXc: sumDyXc, invStd: inv)
                }
                let (k, a, b) = BatchNorm2d.inputGradientCoefficients(gamma: gamma[c], invStd: inv, sumDy: sumDy,
                                                                     sumDyXc: sumDyXc, total: total)
                for n in 0..<batch {
                    let o = (n * channels + c) * plane
                    inputGradient(dInput + o, reluOutput == nil ? dOutput + o : UnsafePointer(dInput + o), input + o, plane, k, b, mu, a)
                }
            }
        }
    }

    /// dγ[c] += Σ dy·(x − μ)·inv, dβ[c] += Σ dy: a channel's affine gradients from the sums its
    /// training backward forms (this replica's, before any reduction).
    @inline(__always)
    static func addAffineGradients<T: GEMMScalar>(_ dGamma: UnsafeMutablePointer<T>, _ dBeta: UnsafeMutablePointer<T>, channel c: Int,
                                                  sumDy: Double, sumDyXc: Double, invStd: T) {
        dGamma[c] += T(sumDyXc * Double(invStd))
        dBeta[c] += T(sumDy)
    }

    /// (k, a, b) of the training backward's dx = k·dy − b − (x − μ)·a for one channel:
    /// dx = γ·inv·(dy − mean(dy) − x̂·mean(dy·x̂)), so k = γ·inv, b = k·Σdy/M, a = k·inv·(Σ dy·(x − μ))·inv/M
    /// (M = `total` values, inv = 1/√(σ² + ε)).
    @inline(__always)
    static func inputGradientCoefficients<T: GEMMScalar>(gamma: T, invStd inv: T, sumDy: Double, sumDyXc: Double,
                                                         total: Double) -> (k: T, a: T, b: T) {
        let k = gamma * inv
        return (k, k * T(sumDyXc * Double(inv) / total) * inv, k * T(sumDy / total))
    }

    /// (Σ dy, Σ dy·(x − μ)) over channel c of the batch, each plane summed in T (four partial sums;
    /// Float: sixteen, the gate in the same pass, `FloatKernels`) and totalled in Double. With `reluOutput`, dy is first gated by [y > 0] into dInput (ReLU's
    /// backward fused; dInput is written anyway by the last pass).
    @inline(__always)
    static func gradientSums<T: GEMMScalar>(dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, input: UnsafePointer<T>,
                                            reluOutput: UnsafePointer<T>?, mu: T, channel c: Int,
                                            batch: Int, channels: Int, plane: Int) -> (Double, Double) {
        var sumDy = 0.0, sumDyXc = 0.0
        if T.self == Float.self {
            for n in 0..<batch {
                let o = (n * channels + c) * plane
                let (s, t) = FloatKernels.batchNormGradientSums((dInput + o).float, (dOutput + o).float, reluOutput.map { ($0 + o).float },
                                                                (input + o).float, plane, Float(mu))
                sumDy += Double(s); sumDyXc += Double(t)
            }
            return (sumDy, sumDyXc)
        }
        for n in 0..<batch {
            let o = (n * channels + c) * plane
            var s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0), t0 = T(0), t1 = T(0), t2 = T(0), t3 = T(0)
            if let y = reluOutput.map({ $0 + o }) {
                let dx = dInput + o
                reluGate(dx, dOutput + o, y, plane)
                sums(UnsafePointer(dx), input + o, plane, mu, &s0, &s1, &s2, &s3, &t0, &t1, &t2, &t3)
            } else {
                sums(dOutput + o, input + o, plane, mu, &s0, &s1, &s2, &s3, &t0, &t1, &t2, &t3)
            }
            sumDy += Double((s0 + s1) + (s2 + s3)); sumDyXc += Double((t0 + t1) + (t2 + t3))
        }
        return (sumDy, sumDyXc)
    }

    /// dx[i] = dy[i]·[y[i] > 0] over n values (ReLU's backward fused; NaN in y gates to 0).
    /// Generic path only: in Float, `FloatKernels.batchNormGradientSums` gates in its summing pass.
    @inline(__always)
    static func reluGate<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ dy: UnsafePointer<T>, _ y: UnsafePointer<T>, _ n: Int) {
        for i in 0..<n { dx[i] = y[i] > 0 ? dy[i] : 0 }
    }

    /// dx[i] = k·dy[i] − b − (x[i] − μ)·a over n values, the last pass of the training backward;
    /// dy may be dx (the ReLU-gated gradient is kept in dInput). Float: `FloatKernels`, 16 lanes
    /// (the aliasing keeps the scalar loop from vectorising), the same operations lane by lane.
    @inline(__always)
    static func inputGradient<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int,
                                             _ k: T, _ b: T, _ mu: T, _ a: T) {
        if T.self == Float.self {
            FloatKernels.batchNormInputGradient(dx.float, dy.float, x.float, n, Float(k), Float(b), Float(mu), Float(a))
            return
        }
        for i in 0..<n { dx[i] = k * dy[i] - b - (x[i] - mu) * a }
    }

    // MARK: Synchronised BatchNorm (data-parallel replicas)

    /// Training forward with the statistics of the batch of **every replica**: the per-channel
    /// Σx and the local count M_r are summed over replicas (`reduce`), giving μ = Σ_r Σx / Σ_r M_r;
    /// then Σ(x − μ)² likewise, giving σ² = Σ_r Σ(x − μ)² / M. Two passes as on one replica
    /// (same accuracy), two reductions of `channels`(+1) Doubles. Every replica then holds the
    /// same μ, 1/√(σ² + ε) and running statistics, exactly the statistics one replica would
    /// compute over the concatenated batch (to the summation order).
    static func forwardSynchronised<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
        runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        batch: Int, channels: Int, plane: Int, epsilon: Double, momentum: Double, relu: Bool, reduce: Reducer
    ) {
        let m = batch * plane
        let stats = reduce.buffer(2 * channels + 1)
        Parallel.forRanges(channels, work: batch * channels * plane,
                           ChannelSums(stats: stats, input: input, mean: nil, batch: batch, channels: channels, plane: plane))
        stats[channels] = Double(m)
        reduce(stats, channels + 1)
        let total = stats[channels]
        precondition(total > 1, "BatchNorm2d training needs more than one value per channel")
        for c in 0..<channels {
            let mu = stats[c] / total
            mean[c] = T(mu)
            runningMean[c] = T((1 - momentum) * Double(runningMean[c]) + momentum * mu)
        }
        // Σ(x − μ_T)² = Σ(x − μ)² + M_r·(μ − μ_T)²: remove the rounding of μ to T (local count).
        for c in 0..<channels { let dm = stats[c] / total - Double(mean[c]); stats[channels + 1 + c] = Double(m) * dm * dm }
        Parallel.forRanges(channels, work: batch * channels * plane,
                           ChannelSums(stats: stats, input: input, mean: mean, batch: batch, channels: channels, plane: plane))
        for c in 0..<channels { stats[c] -= stats[channels + 1 + c] }
        reduce(stats, channels)
        for c in 0..<channels {
            let sq = max(0, stats[c])
            let inv = 1 / (sq / total + epsilon).squareRoot()
            invStd[c] = T(inv)
            runningVar[c] = T((1 - momentum) * Double(runningVar[c]) + momentum * sq / (total - 1))
        }
        Parallel.forRanges(batch * channels, work: batch * channels * plane,
                           NormalisePlanes(output: output, input: input, gamma: gamma, beta: beta, mean: mean, variance: nil,
                                       invStd: invStd, channels: channels, plane: plane, epsilon: 0, relu: relu))
    }

    /// Training backward through the statistics of every replica's batch: Σ dy and Σ dy·(x − μ)
    /// per channel and the count are summed over replicas (one reduction of 2·channels + 1
    /// Doubles) for dx = invStd·(g − mean(g) − x̂·mean(g·x̂)). dGamma and dBeta get this
    /// replica's **own** sums: the caller's gradient reduction adds the replicas' shares.
    static func backwardSynchronised<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>,
        mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
        batch: Int, channels: Int, plane: Int, reluOutput: UnsafePointer<T>?, reduce: Reducer
    ) {
        let stats = reduce.buffer(2 * channels + 1)
        Parallel.forRanges(channels, work: 2 * batch * channels * plane,
                           ReplicaGradientSums(stats: stats, dGamma: dGamma, dBeta: dBeta, dInput: dInput, dOutput: dOutput, input: input,
                                               mean: mean, invStd: invStd, reluOutput: reluOutput, batch: batch, channels: channels, plane: plane))
        stats[2 * channels] = Double(batch * plane)
        reduce(stats, 2 * channels + 1)
        Parallel.forRanges(channels, work: batch * channels * plane,
                           TrainingBackward(dInput: dInput, dGamma: dGamma, dBeta: dBeta, dOutput: dOutput, input: input, gamma: gamma,
                                            mean: mean, invStd: invStd, reluOutput: reluOutput, stats: stats, total: stats[2 * channels],
                                            batch: batch, channels: channels, plane: plane))
    }

    /// Per channel of `channels`: stats[c] = Σ x (mean nil) or Σ (x − mean[c])², each plane in T
    /// (eight partial sums), totalled in Double.
    struct ChannelSums<T: GEMMScalar>: ParallelLoop {
        let stats: UnsafeMutablePointer<Double>, input: UnsafePointer<T>, mean: UnsafePointer<T>?
        let batch: Int, channels: Int, plane: Int
        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for c in range {
                var total = 0.0
                for n in 0..<batch {
                    let x = input + (n * channels + c) * plane
                    total += Double(mean.map { Parallel.sumSquares(x, plane, minus: $0[c]) } ?? Parallel.sum(x, plane))
                }
                stats[c] = total
            }
        }
    }

    /// This replica's gradient sums per channel of `channels` (`gradientSums`): dGamma, dBeta
    /// added, Σ dy → stats[c] and Σ dy·(x − μ) → stats[channels + c] for the reduction.
    struct ReplicaGradientSums<T: GEMMScalar>: ParallelLoop {
        let stats: UnsafeMutablePointer<Double>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>
        let dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, input: UnsafePointer<T>
        let mean: UnsafePointer<T>, invStd: UnsafePointer<T>, reluOutput: UnsafePointer<T>?
        let batch: Int, channels: Int, plane: Int
        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for c in range {
                let (sumDy, sumDyXc) = gradientSums(dInput: dInput, dOutput: dOutput, input: input, reluOutput: reluOutput,
                                                    mu: mean[c], channel: c, batch: batch, channels: channels, plane: plane)
                addAffineGradients(dGamma, dBeta, channel: c, sumDy: sumDy, sumDyXc: sumDyXc, invStd: invStd[c])
                stats[c] = sumDy; stats[channels + c] = sumDyXc
            }
        }
    }

    /// Σ dy and Σ dy·(x − μ) over n values, four partial sums each.
    @inline(__always)
    static func sums<T: GEMMScalar>(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int, _ mu: T,
                                    _ s0: inout T, _ s1: inout T, _ s2: inout T, _ s3: inout T,
                                    _ t0: inout T, _ t1: inout T, _ t2: inout T, _ t3: inout T) {
        var i = 0
        while i + 4 <= n {
            s0 += dy[i]; s1 += dy[i + 1]; s2 += dy[i + 2]; s3 += dy[i + 3]
            t0 += dy[i] * (x[i] - mu); t1 += dy[i + 1] * (x[i + 1] - mu)
            t2 += dy[i + 2] * (x[i + 2] - mu); t3 += dy[i + 3] * (x[i + 3] - mu)
            i += 4
        }
        while i < n { s0 += dy[i]; t0 += dy[i] * (x[i] - mu); i += 1 }
    }

    /// Eval-mode backward (statistics are constants): dx = dOutput·γ/√(runningVar + ε) **written** (=);
    /// dGamma += Σ dOutput·x̂ with x̂ = (x − runningMean)/√(runningVar + ε), dBeta += Σ dOutput: **add**.
    public static func backwardEval<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, epsilon: Double = defaultEpsilon
    ) {
        let plane = height * width
        for c in 0..<channels {
            let inv = T(1 / (Double(runningVar[c]) + epsilon).squareRoot())
            let mu = runningMean[c], k = gamma[c] * inv
            var sumDy = T(0), sumDyXhat = T(0)
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane, dy = dOutput + (n * channels + c) * plane
                let dx = dInput + (n * channels + c) * plane
                for i in 0..<plane {
                    let g = dy[i]
                    sumDy += g
                    sumDyXhat += g * (x[i] - mu) * inv
                    dx[i] = g * k
                }
            }
            dGamma[c] += sumDyXhat
            dBeta[c] += sumDy
        }
    }
}
