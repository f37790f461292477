import DonutBLAS

/// Training-mode BatchNorm2d → ReLU → MaxPool2d(2, 2) as one layer: the tail of an encoder
/// block, after its conv. The same function as `BatchNorm2d.forwardTraining(relu: true)` then
/// `MaxPool2d.forward`, with their backwards (`MaxPool2d.backward` then
/// `BatchNorm2d.backwardTraining(reluOutput:)`) and the conv's bias gradient Σ dx, in fewer
/// passes over the largest activations of the network:
///
/// Forward. The batch statistics come from the per-plane statistics the conv wrote with its
/// output (`Conv2d.forward(planeStatistics:)`, `BatchNorm2d.channelSum`/`channelSquares`): no pass of
/// their own. Then one pass per plane: y = max(scale·x + shift, 0) two rows at a time into a
/// stack buffer, pooled with argmax straight from there. The ReLU output is never stored.
///
/// Backward, from ∂L/∂pooled: the pool routes each window's gradient to its argmax and ReLU
/// keeps it where the pooled value is > 0, so what reaches BatchNorm is g = ∂L/∂pooled·[pooled > 0]
/// at the argmax positions and 0 elsewhere. Σ g and Σ g·(x − μ) are sums over the pooled
/// positions (a quarter of the plane), and dx = k·g − b − (x − μ)·a (`BatchNorm2d.backwardTraining`)
/// is one pass over x, −b − (x − μ)·a, then k·g added at the argmax positions.
///
/// Checked against the layer sequence in Double (to 1e-12) and Float (`BatchNormReLUPoolTests`), and
/// in Float against Double within bounds derived from Float rounding (`FusedBlockFloatTests`).
public enum BatchNormReLUPool {
    /// - pooled (batch, channels, height/2, width/2), argmax, pooledInput (same): written; argmax is
    ///   the flat index into `input` of each window's maximum of the ReLU output (first on ties, NaN
    ///   wins: `MaxPool2d.forward`), pooledInput the conv output x there; both **cached for
    ///   backward** with mean and invStd (channels): the backward's sums then stream through
    ///   quarter-size arrays instead of gathering x from a plane out of cache.
    /// - runningMean, runningVar (channels): updated (`BatchNorm2d.forwardTraining`'s rules).
    /// - input (batch, channels, height, width): the conv output x; planeStatistics (batch·channels·2)
    ///   its `BatchNorm2d.planeStatistics` per plane.
    /// - synchronise: a `BatchNorm2d.Reducer` for the statistics of every replica's batch, or nil.
    public static func forwardTraining<T: GEMMScalar>(
        pooled: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>, pooledInput: UnsafeMutablePointer<T>,
        mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
        runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, planeStatistics stats: UnsafePointer<Double>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int,
        epsilon: Double = BatchNorm2d.defaultEpsilon, momentum: Double = BatchNorm2d.defaultMomentum,
        synchronise reduce: BatchNorm2d.Reducer? = nil
    ) {
        precondition(height >= 2 && width >= 2, "a 2×2 pool needs planes of at least 2×2")
        precondition(batch * channels * height * width <= Int(Int32.max), "argmax indices are Int32")
        let plane = height * width
        batchStatistics(mean: mean, invStd: invStd, runningMean: runningMean, runningVar: runningVar, channels: channels,
                        count: Double(batch * plane), epsilon: epsilon, momentum: momentum, synchronise: reduce,
                        sum: { c in BatchNorm2d.channelSum(stats, channel: c, batch: batch, channels: channels) },
                        squares: { c, mu in BatchNorm2d.channelSquares(stats, channel: c, batch: batch, channels: channels, plane: plane, about: mu) })
        Parallel.forRanges(batch * channels, work: batch * channels * plane,
                           NormaliseReLUPool(pooled: pooled, argmax: argmax, pooledInput: pooledInput, input: input, gamma: gamma, beta: beta,
                                             mean: mean, invStd: invStd, channels: channels, height: height, width: width))
    }

    /// The training statistics of every channel from this replica's sums: Σ x (`sum(c)`, over
    /// `count` values) and Σ (x − μ)² about the batch mean μ (`squares(c, μ)`), both totalled over
    /// every replica when synchronised (`reduce`). Writes mean and invStd = 1/√(σ² + ε) (biased σ²)
    /// and updates the running statistics (unbiased variance, `BatchNorm2d.forwardTraining`'s rules).
    @inline(__always)
    static func batchStatistics<T: GEMMScalar>(
        mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>, runningMean: UnsafeMutablePointer<T>,
        runningVar: UnsafeMutablePointer<T>, channels: Int, count: Double, epsilon: Double, momentum: Double,
        synchronise reduce: BatchNorm2d.Reducer?, sum: (Int) -> Double, squares: (Int, Double) -> Double
    ) {
        // Sums (channels + 1: the count last) and squares (channels), reduced in place when synchronised.
        func statistics(_ sums: UnsafeMutablePointer<Double>, _ sq: UnsafeMutablePointer<Double>) {
            for c in 0..<channels { sums[c] = sum(c) }
            sums[channels] = count
            reduce?(sums, channels + 1)
            let total = sums[channels]
            precondition(total > 1, "BatchNorm2d training needs more than one value per channel")
            for c in 0..<channels { sq[c] = squares(c, sums[c] / total) }
            reduce?(sq, channels)
            for c in 0..<channels {
                let mu = sums[c] / total, v = max(0, sq[c])
                let inv = 1 / (v / total + epsilon).squareRoot()
                mean[c] = T(mu); invStd[c] = T(inv)
                runningMean[c] = T((1 - momentum) * Double(runningMean[c]) + momentum * mu)
                runningVar[c] = T((1 - momentum) * Double(runningVar[c]) + momentum * v / (total - 1))
            }
        }
        if let reduce {
            let buffer = reduce.buffer(2 * channels + 1)
            statistics(buffer, buffer + channels + 1)
        } else {
            // Two buffers, not one of 2·channels + 1: each stays under the 1 KB that
            // withUnsafeTemporaryAllocation keeps on the stack (up to 127 channels).
            withUnsafeTemporaryAllocation(of: Double.self, capacity: channels + 1) { sums in
                withUnsafeTemporaryAllocation(of: Double.self, capacity: channels) { sq in
                    statistics(sums.baseAddress!, sq.baseAddress!)
                }
            }
        }
    }

    /// The forward's pass on planes `planes` (q = n·channels + c).
    struct NormaliseReLUPool<T: GEMMScalar>: ParallelLoop {
        let pooled: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>, pooledInput: UnsafeMutablePointer<T>
        let input: UnsafePointer<T>
        let gamma: UnsafePointer<T>, beta: UnsafePointer<T>, mean: UnsafePointer<T>, invStd: UnsafePointer<T>
        let channels: Int, height: Int, width: Int

        @_specialize(where T == Float)
        func run(_ planes: Range<Int>, worker: Int) {
            let w = width, oh = height / 2, ow = width / 2
            withUnsafeTemporaryAllocation(of: T.self, capacity: 2 * w) { buffer in
                let rows = buffer.baseAddress!
                for q in planes {
                    let c = q % channels
                    // As BatchNorm2d.forwardTraining: y = x·scale + shift, then ReLU.
                    let scale = gamma[c] * invStd[c], shift = beta[c] - mean[c] * scale
                    for oy in 0..<oh {
                        let top = q * height * w + 2 * oy * w, o = (q * oh + oy) * ow
                        poolRowPair(pooled + o, argmax + o, pooledInput + o, input + top, rows, scale, shift, width: w, indexBase: top)
                    }
                }
            }
        }
    }

    /// One row pair of the forward: y = max(x·scale + shift, 0) of rows x (2·width, contiguous)
    /// into `rows`, then width/2 pooled maxima with their argmax (indexBase + offset in the pair)
    /// and x there (pooledInput).
    @inline(__always)
    static func poolRowPair<T: GEMMScalar>(_ pooled: UnsafeMutablePointer<T>, _ argmax: UnsafeMutablePointer<Int32>,
                                           _ pooledInput: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ rows: UnsafeMutablePointer<T>,
                                           _ scale: T, _ shift: T, width w: Int, indexBase top: Int) {
        let ow = w / 2
        Conv2d.affine(rows, x, 2 * w, scale, shift, relu: true)
        var start = 0
        if T.self == Float.self {
            start = FloatKernels.maxPool2ArgmaxRow(pooled.float, argmax, UnsafePointer(rows.float),
                                                   row0: 0, row1: w, outputs: ow, indexBase: top)
        }
        for ox in start..<ow {
            let (value, index) = MaxPool2d.windowMax2(UnsafePointer(rows), 2 * ox, rowStride: w)
            pooled[ox] = value
            argmax[ox] = Int32(truncatingIfNeeded: top + index)
        }
        for ox in 0..<ow { pooledInput[ox] = x[Int(argmax[ox]) - top] }   // rows still in L1
    }

    /// - dInput (batch, channels, height, width): **written** (=), ∂L/∂x.
    /// - dGamma, dBeta (channels): **add** (+=) this replica's Σ g·x̂ and Σ g.
    /// - dInputSums (channels) or nil: **adds** Σ dx per channel: the bias gradient of the conv
    ///   that produced x (its own pass over dx is then not needed).
    /// - dPooled (batch, channels, height/2, width/2): ∂L/∂pooled; pooled, argmax, pooledInput, mean,
    ///   invStd: from `forwardTraining`; input: the conv output x; synchronise: the forward's reducer.
    public static func backwardTraining<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dInputSums: UnsafeMutablePointer<T>?,
        dPooled: UnsafePointer<T>, pooled: UnsafePointer<T>, argmax: UnsafePointer<Int32>, pooledInput: UnsafePointer<T>,
        input: UnsafePointer<T>, gamma: UnsafePointer<T>, mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, synchronise reduce: BatchNorm2d.Reducer? = nil
    ) {
        let plane = height * width
        var loop = Backward(dInput: dInput, dGamma: dGamma, dBeta: dBeta, dInputSums: dInputSums, dPooled: dPooled, pooled: pooled,
                            argmax: argmax, pooledInput: pooledInput, input: input, gamma: gamma, mean: mean, invStd: invStd, stats: nil, total: Double(batch * plane),
                            batch: batch, channels: channels, plane: plane, pooledPlane: (height / 2) * (width / 2))
        guard let reduce else {
            Parallel.forRanges(channels, work: 2 * batch * channels * plane, loop)
            return
        }
        // Synchronised: every replica's Σ g, Σ g·(x − μ) and count, then dx with the totals.
        let stats = reduce.buffer(2 * channels + 1)
        Parallel.forRanges(channels, work: batch * channels * plane / 2, ReplicaSums(backward: loop, stats: stats))
        stats[2 * channels] = Double(batch * plane)
        reduce(stats, 2 * channels + 1)
        loop.stats = UnsafePointer(stats); loop.total = stats[2 * channels]
        Parallel.forRanges(channels, work: 2 * batch * channels * plane, loop)
    }

    /// The backward on channels `channels`: with `stats` nil, this batch's sums (and dGamma,
    /// dBeta), else the replicas' totals at stats[c], stats[channels + c]; then dx.
    struct Backward<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>
        let dInputSums: UnsafeMutablePointer<T>?
        let dPooled: UnsafePointer<T>, pooled: UnsafePointer<T>, argmax: UnsafePointer<Int32>, pooledInput: UnsafePointer<T>
        let input: UnsafePointer<T>, gamma: UnsafePointer<T>, mean: UnsafePointer<T>, invStd: UnsafePointer<T>
        var stats: UnsafePointer<Double>?, total: Double
        let batch: Int, channels: Int, plane: Int, pooledPlane: Int

        /// (Σ g, Σ g·(x − μ)) of channel c, g = dPooled·[pooled > 0] and x = pooledInput: each
        /// plane in T (Float: 16 lanes, `FloatKernels.batchNormGradientSums`; else four partial
        /// sums), planes totalled in Double.
        @inline(__always)
        func gradientSums(channel c: Int) -> (Double, Double) {
            let mu = mean[c]
            var sumG = 0.0, sumGX = 0.0
            for n in 0..<batch {
                let o = (n * channels + c) * pooledPlane
                if T.self == Float.self {
                    let (s, t) = FloatKernels.batchNormGradientSums(nil, (dPooled + o).float, (pooled + o).float,
                                                                    (pooledInput + o).float, pooledPlane, Float(mu))
                    sumG += Double(s); sumGX += Double(t)
                    continue
                }
                var s0 = T(0), s1 = T(0), t0 = T(0), t1 = T(0)
                var i = o
                while i + 2 <= o + pooledPlane {
                    let g0 = pooled[i] > 0 ? dPooled[i] : 0, g1 = pooled[i + 1] > 0 ? dPooled[i + 1] : 0
                    s0 += g0; t0 += g0 * (pooledInput[i] - mu)
                    s1 += g1; t1 += g1 * (pooledInput[i + 1] - mu)
                    i += 2
                }
                if i < o + pooledPlane {
                    let g = pooled[i] > 0 ? dPooled[i] : 0
                    s0 += g; t0 += g * (pooledInput[i] - mu)
                }
                sumG += Double(s0 + s1); sumGX += Double(t0 + t1)
            }
            return (sumG, sumGX)
        }

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for c in range {
                let mu = mean[c], inv = invStd[c]
                let sumG: Double, sumGX: Double
                if let stats {
                    (sumG, sumGX) = (stats[c], stats[channels + c])
                } else {
                    (sumG, sumGX) = gradientSums(channel: c)
                    BatchNorm2d.addAffineGradients(dGamma, dBeta, channel: c, sumDy: sumG, sumDyXc: sumGX, invStd: inv)
                }
                // dx = k·g − b − (x − μ)·a, as BatchNorm2d.backwardTraining.
                let (k, a, b) = BatchNorm2d.inputGradientCoefficients(gamma: gamma[c], invStd: inv, sumDy: sumG,
                                                                     sumDyXc: sumGX, total: total)
                var sumDx = 0.0
                for n in 0..<batch {
                    let q = n * channels + c, o = q * pooledPlane
                    sumDx += Double(BatchNormReLUPool.baseGradient(dInput + q * plane, input + q * plane, plane, b, mu, a))
                    // k·g at each window's maximum (adding 0 where the gate is shut: no branch).
                    var added = T(0)
                    for i in o..<(o + pooledPlane) {
                        let kg = pooled[i] > 0 ? k * dPooled[i] : 0
                        dInput[Int(argmax[i])] += kg; added += kg
                    }
                    sumDx += Double(added)
                }
                dInputSums?[c] += T(sumDx)
            }
        }
    }

    /// The synchronised backward's first pass: this replica's sums per channel of `channels` into
    /// stats[c], stats[channels + c]; dGamma and dBeta get them (the gradient reduction adds the
    /// replicas' shares).
    struct ReplicaSums<T: GEMMScalar>: ParallelLoop {
        let backward: Backward<T>, stats: UnsafeMutablePointer<Double>
        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for c in range {
                let (sumG, sumGX) = backward.gradientSums(channel: c)
                BatchNorm2d.addAffineGradients(backward.dGamma, backward.dBeta, channel: c, sumDy: sumG, sumDyXc: sumGX,
                                               invStd: backward.invStd[c])
                stats[c] = sumG; stats[backward.channels + c] = sumGX
            }
        }
    }

    /// dx[i] = −b − (x[i] − μ)·a over n values (the gradient where no window's maximum is);
    /// returns Σ dx (T, eight partial sums; Float: 16 lanes, `FloatKernels`).
    @inline(__always)
    static func baseGradient<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ n: Int, _ b: T, _ mu: T, _ a: T) -> T {
        if T.self == Float.self {
            return T(FloatKernels.batchNormBaseGradient(dx.float, x.float, n, Float(b), Float(mu), Float(a)))
        }
        for i in 0..<n { dx[i] = -b - (x[i] - mu) * a }
        return Parallel.sum(UnsafePointer(dx), n)
    }
}
