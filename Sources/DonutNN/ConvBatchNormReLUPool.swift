import DonutBLAS
import DonutKernelsAVX2

/// A whole encoder block in training, conv → BatchNorm → ReLU → MaxPool2d(2, 2), for a conv with
/// a small patch whose input gradient is not needed (the network's first block: one input
/// channel, 3×3). Same function and gradients as `Conv2d.forward(planeStatistics:)` →
/// `BatchNormReLUPool` and back, without the block's largest arrays, the conv output x and its
/// gradient (4 MB each at batch 16, which the layer pair writes and reads back every step).
///
/// Everything the batch statistics and the weight gradient need of x comes from the moments of
/// the conv's input patches c_p (patch values at output pixel p, zero outside; P pixels):
/// S = Σ_p c_p and the centred Gram matrix Gc = Σ_p (c_p − c̄)(c_p − c̄)ᵀ (`PatchMoments`). With
/// x_p = W·c_p + bias:
///
///     Σ_p x_p = W·S + P·bias,  Σ_p (x_p − μ)² = W·Gc·Wᵀ + P·(x̄ − μ)²        (forward)
///
/// so the forward computes x one plane at a time in L1 (`Conv2d.stencil`; one input plane with
/// AVX2: 8 pooled outputs at a time in registers, `StencilAVX2.stencil3x3PoolArgmax`) and
/// normalises, rectifies and pools it at once. Backward, with `BatchNormReLUPool`'s dx_p = k·g_p − b − (x_p − μ)·a
/// (g_p nonzero only at the window maxima):
///
///     dW[oc, t] = Σ_p dx_p·c_p[t] = k·H[oc, t] − b·S[t] − a·(W·Gc + (x̄ − μ)·Sᵀ)[oc, t]
///     dbias[oc] = Σ_p dx_p       = k·Σ_p g_p − b·P − a·P·(x̄ − μ)
///
/// with H[oc, t] = Σ_windows g·c_argmax[t], one patch gathered per window maximum. Checked against
/// the layer pair in Double (1e-10) and Float, and with synchronised replicas; on `.moments` and
/// `.momentsAVX2` in Float against Double within bounds derived from Float rounding (`FusedBlockFloatTests`).
public enum ConvBatchNormReLUPool {
    /// Patches at most this long: the Gram matrix costs patch² products per pixel (the encoder's
    /// first conv: 9).
    public static let maximumPatch = 16

    /// Whether a block whose conv has shape `s` can take this path: stride 1, same-size output,
    /// a patch of at most `maximumPatch` values, even planes (the 2×2 pool).
    public static func applies(_ s: Conv2dShape) -> Bool {
        s.isSameSizeStride1 && s.patchSize <= maximumPatch && s.height % 2 == 0 && s.width % 2 == 0
    }

    /// The zero-padded input planes, batch·inC·(H + kH − 1)·(W + kW − 1), and 4 elements of slack
    /// (the 3×3 gather reads 4-wide rows): written by the forward, read by the backward.
    public static func paddedCount(_ s: Conv2dShape) -> Int {
        s.batch * s.inChannels * (s.height + s.kernelH - 1) * (s.width + s.kernelW - 1) + 4
    }

    /// T scratch, per thread: one image's centred padded input planes, or one output plane and a
    /// row pair, or one padded plane split into its even and odd columns (as many elements). Depends on `Parallel.threads`, as `Conv2d.scratchCount`.
    public static func scratchCount(_ s: Conv2dShape) -> Int { Parallel.threads * workerScratch(s) }

    static func workerScratch(_ s: Conv2dShape) -> Int {
        max(s.inChannels * (s.height + s.kernelH - 1) * (s.width + s.kernelW - 1), s.height * s.width + 2 * s.width)
    }

    /// Offset of patch value t from a pixel's top-left patch corner in the padded planes: tap t
    /// reads input plane t / (kH·kW) at (ky, kx) = ((t mod kH·kW) / kW, t mod kW).
    @inline(__always)
    static func tapOffset(_ t: Int, _ s: Conv2dShape) -> Int {
        let taps = s.kernelH * s.kernelW, tap = t % taps, pw = s.width + s.kernelW - 1
        return (t / taps) * (s.height + s.kernelH - 1) * pw + (tap / s.kernelW) * pw + tap % s.kernelW
    }

    /// x̄ = W·S/P + bias: the mean conv output of channel c over the P pixels whose patches sum to S.
    @inline(__always)
    static func meanOutput<T: GEMMScalar>(channel c: Int, weight: UnsafePointer<T>, bias: UnsafePointer<T>,
                                          patchSums: UnsafePointer<Double>, pixels: Double, patch: Int) -> Double {
        var sum = pixels * Double(bias[c])
        for t in 0..<patch { sum += Double(weight[c * patch + t]) * patchSums[t] }
        return sum / pixels
    }

    /// Double storage, written by the forward and read by the backward: per image and for the
    /// batch, S (patch) and a Gram matrix (patch²); per channel H (patch) and the sums.
    public static func momentsCount(_ s: Conv2dShape) -> Int {
        (s.batch + 1) * s.patchSize * (s.patchSize + 1) + s.outChannels * (s.patchSize + 3) + 1
    }

    /// - pooled (batch, outC, H/2, W/2), argmax, pooledInput, mean, invStd, runningMean, runningVar:
    ///   as `BatchNormReLUPool.forwardTraining` (argmax indexes a (batch, outC, H, W) x never stored).
    /// - input (batch, inC, H, W), weight, bias, gamma, beta: the block's input and parameters.
    /// - padded (`paddedCount`), moments (`momentsCount`): written, **kept for backward**;
    ///   scratch: `scratchCount` elements.
    public static func forwardTraining<T: GEMMScalar>(
        pooled: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>, pooledInput: UnsafeMutablePointer<T>,
        mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
        runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        shape s: Conv2dShape, padded: UnsafeMutablePointer<T>, moments: UnsafeMutablePointer<Double>, scratch: UnsafeMutablePointer<T>,
        epsilon: Double = BatchNorm2d.defaultEpsilon, momentum: Double = BatchNorm2d.defaultMomentum,
        synchronise reduce: BatchNorm2d.Reducer? = nil, path planned: ConvolutionPath? = nil
    ) {
        precondition(applies(s))
        precondition(s.outputCount <= Int(Int32.max), "argmax indices are Int32")
        let path = planned ?? path(s, target: .native(T.self))!
        precondition((path == .moments || path == .momentsAVX2) && (!path.usesAVX2 || T.self == Float.self), "\(path) cannot run \(s)")
        let patch = s.patchSize, m = patch * (patch + 1), plane = s.height * s.width
        // Input moments per image (parallel), then the batch's S and centred Gram in image order.
        serialBLAS {
            Parallel.forRanges(s.batch, work: s.batch * plane * patch,
                               PatchMoments(moments: moments, padded: padded, scratch: scratch, input: input, shape: s,
                                            avx2: path.usesAVX2))
        }
        let sTotal = moments + s.batch * m, gram = sTotal + patch, pixels = Double(s.batch * plane)
        sTotal.update(repeating: 0, count: patch)
        for n in 0..<s.batch {
            for t in 0..<patch { sTotal[t] += moments[n * m + t] }
        }
        // Σ_p (c − c̄)(c − c̄)ᵀ = Σ_n [G_n + P_n·(c̄_n − c̄)(c̄_n − c̄)ᵀ], G_n centred on image n's mean c̄_n.
        gram.update(repeating: 0, count: patch * patch)
        for n in 0..<s.batch {
            let image = moments + n * m, g = image + patch, count = Double(plane)
            for t in 0..<patch {
                let dt = image[t] / count - sTotal[t] / pixels
                for u in 0..<patch {
                    gram[t * patch + u] += g[t * patch + u] + count * dt * (image[u] / count - sTotal[u] / pixels)
                }
            }
        }
        // Σ x = P·x̄ = W·S + P·bias; Σ (x − μ)² = W·Gc·Wᵀ + P·(x̄ − μ)².
        func xMean(_ c: Int) -> Double {
            meanOutput(channel: c, weight: weight, bias: bias, patchSums: sTotal, pixels: pixels, patch: patch)
        }
        BatchNormReLUPool.batchStatistics(
            mean: mean, invStd: invStd, runningMean: runningMean, runningVar: runningVar, channels: s.outChannels,
            count: pixels, epsilon: epsilon, momentum: momentum, synchronise: reduce, sum: { c in pixels * xMean(c) },
            squares: { c, mu in
                let w = weight + c * patch
                var quadratic = 0.0
                for t in 0..<patch {
                    var row = 0.0
                    for u in 0..<patch { row += gram[t * patch + u] * Double(w[u]) }
                    quadratic += Double(w[t]) * row
                }
                let offset = xMean(c) - mu
                return quadratic + pixels * offset * offset
            })
        Parallel.forRanges(s.batch * s.outChannels, work: s.batch * s.outChannels * plane * (patch + 2),
                           ConvNormaliseReLUPool(avx2: path.usesAVX2, pooled: pooled, argmax: argmax, pooledInput: pooledInput, padded: padded,
                                                 weight: weight, bias: bias, gamma: gamma, beta: beta, mean: mean, invStd: invStd,
                                                 scratch: scratch, shape: s))
    }

    /// The forward's pass on planes `planes` (q = n·outC + c): x = bias + Σ_ic stencil of the padded
    /// input plane into the worker's scratch, then `BatchNormReLUPool.poolRowPair` row pair by row
    /// pair; or, on `.momentsAVX2` where `Conv2d.pooledStencilFits`, `StencilAVX2.stencil3x3PoolArgmax` at once.
    struct ConvNormaliseReLUPool<T: GEMMScalar>: ParallelLoop {
        /// The AVX2 stencils (`.momentsAVX2`).
        let avx2: Bool
        let pooled: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>, pooledInput: UnsafeMutablePointer<T>
        let padded: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>
        let gamma: UnsafePointer<T>, beta: UnsafePointer<T>, mean: UnsafePointer<T>, invStd: UnsafePointer<T>
        let scratch: UnsafeMutablePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ planes: Range<Int>, worker: Int) {
            let s = shape, w = s.width, plane = s.height * w, oh = s.height / 2, ow = w / 2, taps = s.kernelH * s.kernelW
            let pw = w + s.kernelW - 1, paddedPlane = (s.height + s.kernelH - 1) * pw
            let x = scratch + worker * workerScratch(s), rows = x + plane
            if T.self == Float.self && avx2 && Conv2d.pooledStencilFits(s) {
                // One input plane: the stencil, normalisation and pooling in registers
                // (`StencilAVX2.stencil3x3PoolArgmax`) on the image's padded plane split into even
                // and odd columns (the worker's scratch, redone when the image changes).
                let xw = w / 2 + 1, even = x.float, odd = even + (s.height + 2) * xw
                var image = -1
                for q in planes {
                    let n = q / s.outChannels, c = q % s.outChannels
                    if n != image {
                        image = n
                        for r in 0..<(s.height + 2) {
                            UpsampleConv2d.deinterleaveRow(even + r * xw, odd + r * xw, (padded + n * paddedPlane + r * pw).float, xw)
                        }
                    }
                    let scale = gamma[c] * invStd[c], shift = beta[c] - mean[c] * scale, o = q * oh * ow
                    StencilAVX2.stencil3x3PoolArgmax((pooled + o).float, argmax + o, (pooledInput + o).float, oh, ow, even: even, odd: odd, xw,
                                                     (weight + c * taps).float, bias: Float(bias[c]), scale: Float(scale),
                                                     shift: Float(shift), indexBase: q * plane, width: w)
                }
                return
            }
            for q in planes {
                let n = q / s.outChannels, c = q % s.outChannels
                x.update(repeating: bias[c], count: plane)
                for ic in 0..<s.inChannels {
                    Conv2d.stencil(x, s.height, w, padded + (n * s.inChannels + ic) * paddedPlane, pw,
                                   weight + (c * s.inChannels + ic) * taps, s.kernelH, s.kernelW, accumulate: true, avx2: avx2)
                }
                // As BatchNorm2d.forwardTraining: y = x·scale + shift, then ReLU.
                let scale = gamma[c] * invStd[c], shift = beta[c] - mean[c] * scale
                for oy in 0..<oh {
                    let o = (q * oh + oy) * ow
                    BatchNormReLUPool.poolRowPair(pooled + o, argmax + o, pooledInput + o, x + 2 * oy * w, rows, scale, shift,
                                                  width: w, indexBase: q * plane + 2 * oy * w)
                }
            }
        }
    }

    /// - dWeight (outC, inC, kH, kW), dBias, dGamma, dBeta (outC): **add** (+=), as the two layers' backwards.
    /// - dPooled: ∂L/∂pooled; pooled, argmax, pooledInput, mean, invStd, padded, moments: from
    ///   `forwardTraining` (moments: its per-channel part is overwritten); weight, bias, gamma: the block's.
    /// - synchronise: the forward's reducer (Σ g and Σ g·(x − μ) over every replica's batch).
    public static func backwardTraining<T: GEMMScalar>(
        dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dPooled: UnsafePointer<T>, pooled: UnsafePointer<T>, argmax: UnsafePointer<Int32>, pooledInput: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>, gamma: UnsafePointer<T>, mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
        shape s: Conv2dShape, padded: UnsafePointer<T>, moments: UnsafeMutablePointer<Double>,
        synchronise reduce: BatchNorm2d.Reducer? = nil, path planned: ConvolutionPath? = nil
    ) {
        precondition(applies(s))
        // The backward's kernels (window gathers, Double sums) are the same on both paths; the
        // path is checked so that a plan and its layer cannot disagree.
        let path = planned ?? path(s, target: .native(T.self))!
        precondition(path == .moments || path == .momentsAVX2, "\(path) cannot run \(s)")
        let patch = s.patchSize, m = patch * (patch + 1), channels = s.outChannels, plane = s.height * s.width
        let sTotal = moments + s.batch * m, gram = sTotal + patch, h = sTotal + m, sums = h + channels * patch
        let pixels = Double(s.batch * plane)
        // Per channel: Σ g, Σ g·(x − μ) (the BatchNorm sums) and H.
        let gradients = WindowGradients(h: h, sums: sums, dPooled: dPooled, pooled: pooled, argmax: argmax, pooledInput: pooledInput,
                                        mean: mean, padded: padded, shape: s)
        Parallel.forRanges(channels, work: s.batch * channels * plane / 4 * (patch + 3), gradients)
        for c in 0..<channels {
            BatchNorm2d.addAffineGradients(dGamma, dBeta, channel: c, sumDy: sums[c], sumDyXc: sums[channels + c], invStd: invStd[c])
        }
        let localG = sums + 2 * channels   // this replica's Σ g, kept for the bias gradient
        localG.update(from: sums, count: channels)
        var total = pixels
        if let reduce {
            let shared = reduce.buffer(2 * channels + 1)
            shared.update(from: sums, count: 2 * channels)
            shared[2 * channels] = total
            reduce(shared, 2 * channels + 1)
            sums.update(from: shared, count: 2 * channels)
            total = shared[2 * channels]
        }
        for c in 0..<channels {
            let (k, a, b) = BatchNorm2d.inputGradientCoefficients(gamma: gamma[c], invStd: invStd[c], sumDy: sums[c],
                                                                 sumDyXc: sums[channels + c], total: total)
            let w = weight + c * patch, kd = Double(k), ad = Double(a), bd = Double(b)
            let offset = meanOutput(channel: c, weight: weight, bias: bias, patchSums: sTotal, pixels: pixels, patch: patch)
                - Double(mean[c])
            for t in 0..<patch {
                var wg = 0.0
                for u in 0..<patch { wg += Double(w[u]) * gram[u * patch + t] }
                dWeight[c * patch + t] += T(kd * h[c * patch + t] - bd * sTotal[t] - ad * (wg + offset * sTotal[t]))
            }
            dBias[c] += T(kd * localG[c] - bd * pixels - ad * pixels * offset)
        }
    }

    /// Per image n of `images`: its input planes zero-padded into `padded` (kept for the planes'
    /// convolution and the backward's window gathers), then moments[n] = (S_n (patch), G_n
    /// (patch × patch)): the sums of its patches and their Gram matrix about the image's mean
    /// patch m_n. The products are taken about the image's mean pixel a (close to m_n, so Float
    /// accumulation does not cancel), as 45 dot products over the centred padded planes, then
    /// moved to m_n by the parallel-axis rule G_n = G(a) − P·(m_n − a)(m_n − a)ᵀ in Double;
    /// `forwardTraining` recombines the images the same way about the batch mean.
    struct PatchMoments<T: GEMMScalar>: ParallelLoop {
        let moments: UnsafeMutablePointer<Double>, padded: UnsafeMutablePointer<T>, scratch: UnsafeMutablePointer<T>
        let input: UnsafePointer<T>, shape: Conv2dShape
        /// `StencilAVX2.dot` for the Gram matrix (`.momentsAVX2`).
        let avx2: Bool

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, patch = s.patchSize, m = patch * (patch + 1), taps = s.kernelH * s.kernelW, plane = s.height * s.width
            let pw = s.width + s.kernelW - 1, paddedPlane = (s.height + s.kernelH - 1) * pw, pixels = Double(plane)
            // A tap's window, read as one run of the padded plane: its H rows of W plus the pw − W
            // columns between rows (not the last row's), subtracted again below.
            let run = (s.height - 1) * pw + s.width, extra = pw - s.width
            let centred = scratch + worker * workerScratch(s)
            // Each input channel's mean pixel, for S_n below.
            withUnsafeTemporaryAllocation(of: T.self, capacity: s.inChannels) { meanPixel in
                for n in images {
                    let planes = padded + n * s.inChannels * paddedPlane, out = moments + n * m
                    for ic in 0..<s.inChannels {
                        let x = input + (n * s.inChannels + ic) * plane
                        Conv2d.padPlane(planes + ic * paddedPlane, x, s.height, s.width, padY: s.padding, padX: s.padding)
                        // Centred on the image's mean pixel a (the zero border too: a patch value 0 becomes −a).
                        let a = Parallel.sum(x, plane) / T(plane), q = centred + ic * paddedPlane, p = planes + ic * paddedPlane
                        meanPixel[ic] = a
                        for i in 0..<paddedPlane { q[i] = p[i] - a }
                    }
                    func between(_ t: Int, _ u: Int) -> T {   // the products of the skipped columns between rows
                        let a = centred + tapOffset(t, s) + s.width, b = centred + tapOffset(u, s) + s.width
                        var sum = T(0)
                        for y in 0..<(s.height - 1) { for k in 0..<extra { sum += a[y * pw + k] * b[y * pw + k] } }
                        return sum
                    }
                    for t in 0..<patch {
                        let ones = centred + tapOffset(t, s)
                        var sum = Parallel.sum(ones, run)
                        for y in 0..<(s.height - 1) { for k in 0..<extra { sum -= ones[y * pw + s.width + k] } }
                        out[t] = Double(sum)   // Σ (c_t − a) for now
                        for u in t..<patch {
                            let g = Double(dot(ones, centred + tapOffset(u, s), run, avx2: avx2) - between(t, u))
                            out[patch + t * patch + u] = g; out[patch + u * patch + t] = g
                        }
                    }
                    // About the image's own mean patch m_n = a + Σ(c − a)/P: G −= P·(m_n − a)(m_n − a)ᵀ; S_n = Σ c.
                    for t in 0..<patch {
                        for u in 0..<patch { out[patch + t * patch + u] -= out[t] * out[u] / pixels }
                    }
                    for t in 0..<patch { out[t] += Double(meanPixel[t / taps]) * pixels }
                }
            }
        }
    }

    /// One plane's windows for a one-channel 3×3 conv: Σ g·(its maximum's patch) as three 4-wide
    /// rows (the 4th lane unused), Σ g and Σ g·(x − μ), in Float lanes. Branch-free: a shut window
    /// (pooled ≤ 0 or NaN) adds g = 0, and the maximum's row within its window is a select — both
    /// are coin flips that a branch mispredicted half the time. `plane`: the padded input plane
    /// (width + 2), `base`: the flat index of the conv output plane that argmax indexes into.
    @inline(__always)
    static func gather3x3(dPooled: UnsafePointer<Float>, pooled: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                          pooledInput: UnsafePointer<Float>, mu: Float, plane: UnsafePointer<Float>, base: Int, width w: Int,
                          height: Int) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, Float, Float) {
        let pw = w + 2, ow = w / 2, oh = height / 2
        var r0 = SIMD4<Float>(), r1 = SIMD4<Float>(), r2 = SIMD4<Float>(), sg: Float = 0, sgx: Float = 0
        for oy in 0..<oh {
            let o = oy * ow, top = base + 2 * oy * w, corners = UnsafeRawPointer(plane + 2 * oy * pw)
            for ox in 0..<ow {
                let i = o &+ ox
                let open: UInt32 = pooled[i] > 0 ? ~0 : 0   // a mask, not a branch
                let g = Float(bitPattern: dPooled[i].bitPattern & open)
                sg += g; sgx += g * (pooledInput[i] - mu)
                // Offset within the window's two rows, then the padded-plane offset of the patch corner.
                let r = Int(argmax[i]) &- top, down = r >= w ? pw &- w : 0
                let f = corners + 4 * (r &+ down), gf = SIMD4<Float>(repeating: g)
                r0 += gf * f.loadUnaligned(as: SIMD4<Float>.self)
                r1 += gf * f.loadUnaligned(fromByteOffset: 4 * pw, as: SIMD4<Float>.self)
                r2 += gf * f.loadUnaligned(fromByteOffset: 8 * pw, as: SIMD4<Float>.self)
            }
        }
        return (r0, r1, r2, sg, sgx)
    }

    /// Σ a[i]·b[i] over n values: `StencilAVX2.dot` (four FMA chains) if `avx2` (Float), else `Conv2d.dot`.
    @inline(__always)
    static func dot<T: GEMMScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ n: Int, avx2: Bool) -> T {
        if T.self == Float.self && avx2 { return T(StencilAVX2.dot(a.float, b.float, n)) }
        return Conv2d.dot(a, b, n)
    }

    /// Per channel c of `channels`, over every image: sums[c] = Σ g, sums[channels + c] =
    /// Σ g·(x − μ) (g = dPooled·[pooled > 0], x = pooledInput, as `BatchNormReLUPool`) and
    /// h[c, t] = Σ g·c_argmax[t], gathering each maximum's patch from the padded planes.
    struct WindowGradients<T: GEMMScalar>: ParallelLoop {
        let h: UnsafeMutablePointer<Double>, sums: UnsafeMutablePointer<Double>
        let dPooled: UnsafePointer<T>, pooled: UnsafePointer<T>, argmax: UnsafePointer<Int32>, pooledInput: UnsafePointer<T>
        let mean: UnsafePointer<T>, padded: UnsafePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            let s = shape, patch = s.patchSize, taps = s.kernelH * s.kernelW, channels = s.outChannels
            let w = s.width, plane = s.height * w, ow = w / 2, oh = s.height / 2
            let pw = w + s.kernelW - 1, paddedPlane = (s.height + s.kernelH - 1) * pw
            withUnsafeTemporaryAllocation(of: Double.self, capacity: patch) { acc in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: patch) { offsets in
                    for t in 0..<patch { offsets[t] = tapOffset(t, s) }
                    for c in range {
                        let mu = mean[c]
                        var sumG = 0.0, sumGX = 0.0
                        acc.initialize(repeating: 0)
                        for n in 0..<s.batch {
                            let q = n * channels + c, base = q * plane, planes = padded + n * s.inChannels * paddedPlane
                            var sg = T(0), sgx = T(0)
                            if T.self == Float.self && patch == 9 && taps == 9 {
                                let o = q * oh * ow
                                let (r0, r1, r2, g, gx) = gather3x3(dPooled: (dPooled + o).float, pooled: (pooled + o).float, argmax: argmax + o,
                                                                    pooledInput: (pooledInput + o).float, mu: Float(mu), plane: planes.float,
                                                                    base: base, width: w, height: s.height)
                                for kx in 0..<3 {
                                    acc[kx] += Double(r0[kx]); acc[3 + kx] += Double(r1[kx]); acc[6 + kx] += Double(r2[kx])
                                }
                                sg = T(g); sgx = T(gx)
                            } else {
                                // Each open window: g, and its maximum's patch from the padded planes.
                                for oy in 0..<oh {
                                    let o = (q * oh + oy) * ow, secondRow = base + (2 * oy + 1) * w
                                    for ox in 0..<ow {
                                        guard pooled[o + ox] > 0 else { continue }
                                        let g = dPooled[o + ox], index = Int(argmax[o + ox])
                                        sg += g; sgx += g * (pooledInput[o + ox] - mu)
                                        let y = index >= secondRow ? 2 * oy + 1 : 2 * oy, x = index - base - y * w
                                        let corner = planes + y * pw + x, gd = Double(g)
                                        for t in 0..<patch { acc[t] += gd * Double(corner[offsets[t]]) }
                                    }
                                }
                            }
                            sumG += Double(sg); sumGX += Double(sgx)
                        }
                        for t in 0..<patch { h[c * patch + t] = acc[t] }
                        sums[c] = sumG; sums[channels + c] = sumGX
                    }
                }
            }
        }
    }
}
