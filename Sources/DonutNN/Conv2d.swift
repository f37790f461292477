import DonutBLAS

/// Sizes of one 2-D convolution over a batch: input (batch, inChannels, height, width) NCHW,
/// weight (outChannels, inChannels, kernelH, kernelW), output (batch, outChannels, outHeight, outWidth)
/// with outHeight = (height + 2·padding − kernelH) / stride + 1 (floor, as PyTorch), zero padding.
public struct Conv2dShape: Sendable, Hashable {
    public var batch: Int
    public var inChannels: Int
    public var height: Int
    public var width: Int
    public var outChannels: Int
    public var kernelH: Int
    public var kernelW: Int
    public var stride: Int
    public var padding: Int

    /// Stride 1 and output the size of the input (padding (k − 1)/2, as the network's 3×3
    /// convs): im2col and col2im are then one shifted copy per kernel tap.
    var isSameSizeStride1: Bool {
        stride == 1 && outHeight == height && outWidth == width && padding < height && padding < width
    }

    public init(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int,
                kernelH: Int, kernelW: Int, stride: Int = 1, padding: Int = 0) {
        precondition(batch > 0 && inChannels > 0 && outChannels > 0 && kernelH > 0 && kernelW > 0 && stride > 0 && padding >= 0)
        precondition(height + 2 * padding >= kernelH && width + 2 * padding >= kernelW, "kernel larger than the padded input")
        self.batch = batch; self.inChannels = inChannels; self.height = height; self.width = width
        self.outChannels = outChannels; self.kernelH = kernelH; self.kernelW = kernelW
        self.stride = stride; self.padding = padding
    }

    public var outHeight: Int { (height + 2 * padding - kernelH) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernelW) / stride + 1 }
    /// Rows of the im2col matrix: inChannels·kernelH·kernelW (the GEMM's inner dimension).
    public var patchSize: Int { inChannels * kernelH * kernelW }
    /// Elements of the input (batch, inChannels, height, width).
    public var inputCount: Int { batch * inChannels * height * width }
    /// Elements of the output (batch, outChannels, outHeight, outWidth).
    public var outputCount: Int { batch * outChannels * outHeight * outWidth }
    /// Elements of the weight (outChannels, inChannels, kernelH, kernelW).
    public var weightCount: Int { outChannels * patchSize }
    /// A 1×1, stride-1, unpadded convolution is a plain GEMM on the image: no im2col needed.
}

/// 2-D convolution (cross-correlation, as PyTorch's `Conv2d`) by im2col + GEMM over chunks of
/// images: for G images at once, columns (patchSize, G·outH·outW) hold every image's patches
/// side by side and one GEMM gives Y (outC, G·outH·outW) = weight (outC, patchSize) · columns,
/// scattered to NCHW with the bias added. The forward of 3×3, padding-1 convs on even planes
/// (the encoder's blocks after the first) forms the same block by `Winograd` F(2×2, 3×3)
/// instead: 16 GEMMs with 2.25× fewer multiply–adds in all and no 9× im2col.
///
/// Threading: the chunks are fixed by the shape alone (`chunkSize`); the cores take contiguous
/// runs of chunks, each core with its own columns and a single-threaded GEMM (`serialBLAS`).
/// Threaded OpenBLAS on these small GEMMs left a worker spinning through everything between
/// them. Every chunk is computed the same way whatever thread runs it, and the weight gradient
/// is one partial per chunk summed in chunk order, so results are bit-identical for any thread
/// count. The naive 7-loop reference it is checked against lives in the tests (`naiveConv2d`).
public enum Conv2d {
    /// Column scratch per chunk is capped at this many elements (1 MB of Float): a chunk's
    /// columns and output block stay near a core's 2 MB L2.
    public static let columnBudget = 1 << 18

    /// Images per chunk for `s`: as many as fit the column budget (at least 1), then evened out
    /// so that the chunk count is a multiple of 4 where the batch allows (balanced on 2 or 4
    /// cores). Depends on the shape only, never on the thread count.
    public static func chunkSize(_ s: Conv2dShape) -> Int {
        let most = max(1, min(s.batch, columnBudget / max(1, s.patchSize * s.outHeight * s.outWidth)))
        let chunks = min(s.batch, ((s.batch + most - 1) / most + 3) / 4 * 4)
        return (s.batch + chunks - 1) / chunks
    }

    /// Number of chunks of `chunkSize(s)` images (the last may be shorter).
    public static func chunkCount(_ s: Conv2dShape) -> Int { (s.batch + chunkSize(s) - 1) / chunkSize(s) }

    /// Threads `forward` and `backward` use for `s`: `Parallel.threads`, at most one per chunk.
    static func workerCount(_ s: Conv2dShape) -> Int { max(1, min(Parallel.threads, chunkCount(s))) }

    /// Scratch of one worker: a chunk's columns (patchSize, G·plane) and output block (outC, G·plane),
    /// then, where `Winograd` applies, its transformed operand and row buffer.
    static func workerScratch(_ s: Conv2dShape) -> Int {
        chunkSize(s) * s.outHeight * s.outWidth * (s.patchSize + s.outChannels) + (usesWinograd(s) ? Winograd.workerScratch(s) : 0)
    }

    /// Where the transformed weights of the `Winograd` path live in the scratch: after the
    /// workers' scratch and the weight-gradient partials.
    static func winogradWeights<T>(_ columns: UnsafeMutablePointer<T>, _ s: Conv2dShape) -> UnsafeMutablePointer<T> {
        columns + workerCount(s) * workerScratch(s) + chunkCount(s) * s.weightCount
    }

    /// Scratch elements `forward` and `backward` need: one worker scratch per thread, then one
    /// weight-gradient partial (outC·patchSize) per chunk. Depends on `Parallel.threads`: size it
    /// under the thread count it will run with.
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        if usesDirect(s) { return directScratchCount(s) }
        return workerCount(s) * workerScratch(s) + chunkCount(s) * s.weightCount + (usesWinograd(s) ? Winograd.weightCount(s) : 0)
    }

    /// y[n, oc, oy, ox] = bias[oc] + Σ_{ic, ky, kx} weight[oc, ic, ky, kx] · x[n, ic, oy·stride − padding + ky, ox·stride − padding + kx]
    /// (x = 0 outside the image).
    /// - output (batch, outC, outH, outW): written.
    /// - input (batch, inC, H, W).
    /// - weight (outC, inC, kH, kW); bias (outC) or nil.
    /// - columns: scratch of `scratchCount(shape)` elements (overwritten; nothing is cached for
    ///   backward, which re-forms the columns from the input).
    /// - scale, shift (outC) and relu: an optional fused per-channel epilogue (eval-mode
    ///   BatchNorm then ReLU): y ← max(scale[oc]·y + shift[oc], 0), computed as
    ///   conv·scale + (bias·scale + shift) in the pass that scatters the GEMM block to NCHW.
    ///   Checked against Conv2d → BatchNorm2d.forwardEval → ReLU in the tests.
    /// - pooled (batch, outC, outH/2, outW/2) or nil: if given, a 2×2 stride-2 max pool
    ///   (`MaxPool2d`, no argmax: inference only) of the result is written here instead and
    ///   `output` is not touched; the full-size result only passes through the cached GEMM block.
    /// - planeStatistics (batch·outC·2) or nil: for each output plane q = n·outC + oc, written
    ///   while the plane is in cache: [2q] = Σ y, [2q + 1] = Σ (y − ȳ)² (`BatchNorm2d.planeStatistics`),
    ///   what a training BatchNorm after the conv needs instead of two passes of its own. Not with `pooled`.
    /// - path: the kernel (`forwardPath`; a network passes its plan's); nil decides it here,
    ///   for this shape, T and this CPU.
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape,
        scale: UnsafePointer<T>? = nil, shift: UnsafePointer<T>? = nil, relu: Bool = false,
        pooled: UnsafeMutablePointer<T>? = nil, planeStatistics: UnsafeMutablePointer<Double>? = nil,
        path planned: ConvolutionPath? = nil
    ) {
        precondition((scale == nil) == (shift == nil), "scale and shift come together")
        precondition(pooled == nil || planeStatistics == nil, "plane statistics need the full-size output")
        let path = planned ?? forwardPath(s, target: .native(T.self), pooled: pooled != nil)
        precondition(admits(path, s, forward: true) && (!path.usesAVX2 || T.self == Float.self), "\(path) cannot run the forward of \(s)")
        switch path {
        case .stencil, .stencilAVX2, .pooledStencilAVX2:
            forwardDirect(output: output, input: input, weight: weight, bias: bias, scratch: columns, shape: s,
                          scale: scale, shift: shift, relu: relu, pooled: pooled, statistics: planeStatistics, path: path)
        default:
            let winograd = path == .winograd
            if winograd { Winograd.transformWeights(winogradWeights(columns, s), weight, s) }
            let loop = ForwardChunks(output: output, input: input, weight: weight, bias: bias, columns: columns, shape: s,
                                     scale: scale, shift: shift, relu: relu, pooled: pooled, statistics: planeStatistics,
                                     winograd: winograd)
            serialBLAS { Parallel.forWorkers(chunkCount(s), workers: workerCount(s), loop) }
        }
    }

    /// `forward` on a worker's run of chunks: im2col of the chunk's images into the worker's
    /// columns, one GEMM, then the epilogue scatters the block to NCHW.
    struct ForwardChunks<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?
        let columns: UnsafeMutablePointer<T>, shape: Conv2dShape
        let scale: UnsafePointer<T>?, shift: UnsafePointer<T>?, relu: Bool, pooled: UnsafeMutablePointer<T>?
        let statistics: UnsafeMutablePointer<Double>?
        /// The `Winograd` transforms instead of im2col (`.winograd`).
        let winograd: Bool

        @_specialize(where T == Float)
        func run(_ chunks: Range<Int>, worker: Int) {
            let s = shape, plane = s.outHeight * s.outWidth, g = chunkSize(s)
            let inImage = s.inChannels * s.height * s.width, outImage = s.outChannels * plane
            let cols = columns + worker * workerScratch(s), chunkBlock = cols + g * plane * s.patchSize
            let tiles = Winograd.tiles(s), extra = chunkBlock + g * plane * s.outChannels
            for chunk in chunks {
                let n0 = chunk * g, count = min(g, s.batch - n0), width = count * plane
                // One image without pooling: the GEMM block is the image's NCHW output itself.
                let block = count == 1 && pooled == nil ? output + n0 * outImage : chunkBlock
                if winograd {
                    // V (16, inC, G·tiles) in the columns, M (16, outC, G·tiles) after the block.
                    let n = count * tiles, rows = extra + Winograd.workerScratch(s) - Winograd.rowScratch(width: s.width)
                    for j in 0..<count {
                        Winograd.transformInput(cols, input + (n0 + j) * inImage, channels: s.inChannels, height: s.height, width: s.width,
                                                rowStride: n, offset: j * tiles, rows: rows)
                    }
                    Winograd.products(extra, winogradWeights(columns, s), cols, rows: s.outChannels, k: s.inChannels, n: n)
                    for j in 0..<count {
                        Winograd.transformOutput(block + j * plane, channelStride: width, extra + j * tiles, channels: s.outChannels,
                                                 rowStride: n, height: s.height, width: s.width)
                    }
                } else {
                    for j in 0..<count { im2col(cols + j * plane, input + (n0 + j) * inImage, s, rowStride: width) }
                    T.gemm(transA: false, transB: false, m: s.outChannels, n: width, k: s.patchSize,
                           alpha: 1, a: weight, lda: s.patchSize, b: cols, ldb: width, beta: 0, c: block, ldc: width)
                }
                // Scatter (outC, G·plane) → NCHW with the epilogue, plane by plane. With pooling,
                // the epilogue runs in place in the block and the pool reads it back.
                for j in 0..<count {
                    for oc in 0..<s.outChannels {
                        let src = block + oc * width + j * plane, image = (n0 + j) * s.outChannels + oc
                        finishPlane(pooled == nil ? output + image * plane : src, src, channel: oc, bias: bias,
                                    scale: scale, shift: shift, relu: relu, pooled: pooled.map { $0 + image * (s.outHeight / 2) * (s.outWidth / 2) },
                                    statistics: statistics.map { $0 + 2 * image }, s)
                    }
                }
            }
        }
    }

    /// The epilogue of one output plane (channel oc): dst = src + bias[oc], or with the eval
    /// BatchNorm affine (scale, shift) src·scale[oc] + (bias[oc]·scale[oc] + shift[oc]); then
    /// max(·, 0) if relu. With `pooled` (that plane's (outH/2, outW/2) slot) the plane's 2×2 max
    /// pool of that is written there instead, dst untouched, computed pool first: the affine map
    /// and ReLU are monotone in src (non-decreasing for a scale ≥ 0; non-increasing for a scale
    /// < 0, where the window's minimum maps to its maximum), and so is their rounding, so pooling
    /// src and finishing the quarter-size plane gives the same values with a quarter of the work.
    /// dst may be src; with `pooled`, src is scratch (`pool2` overwrites it). `statistics` (2
    /// values): the plane statistics of dst (`BatchNorm2d.planeStatistics`).
    @inline(__always)
    static func finishPlane<T: GEMMScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafeMutablePointer<T>, channel oc: Int,
                                           bias: UnsafePointer<T>?, scale: UnsafePointer<T>?, shift: UnsafePointer<T>?,
                                           relu: Bool, pooled: UnsafeMutablePointer<T>?, statistics: UnsafeMutablePointer<Double>?,
                                           _ s: Conv2dShape) {
        let plane = s.outHeight * s.outWidth, (a, c) = epilogue(channel: oc, bias: bias, scale: scale, shift: shift)
        guard let pooled else {
            affine(dst, UnsafePointer(src), plane, a, c, relu: relu)
            if let statistics { (statistics[0], statistics[1]) = BatchNorm2d.planeStatistics(UnsafePointer(dst), plane) }
            return
        }
        pool2(pooled, src, height: s.outHeight, width: s.outWidth, lowest: a < 0)
        affine(pooled, UnsafePointer(pooled), (s.outHeight / 2) * (s.outWidth / 2), a, c, relu: relu)
    }

    /// The epilogue of channel oc as y ← a·y + c: (1, bias[oc]), or with the eval BatchNorm affine
    /// (scale[oc], bias[oc]·scale[oc] + shift[oc]).
    @inline(__always)
    static func epilogue<T: GEMMScalar>(channel oc: Int, bias: UnsafePointer<T>?, scale: UnsafePointer<T>?,
                                        shift: UnsafePointer<T>?) -> (T, T) {
        let b = bias?[oc] ?? 0
        guard let scale, let shift else { return (1, b) }
        return (scale[oc], b * scale[oc] + shift[oc])
    }

    /// dst (h/2, w/2) = 2×2 stride-2 max of src (h, w), or the minimum if `lowest`; NaN winning
    /// as in `MaxPool2d.forward`. src is scratch: in Float with w even, `FloatKernels.pool2Flat`
    /// overwrites its first (h/2)·w elements.
    @inline(__always)
    static func pool2<T: GEMMScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafeMutablePointer<T>, height: Int, width: Int, lowest: Bool) {
        if T.self == Float.self && width % 2 == 0 {
            FloatKernels.pool2Flat(dst.float, src.float, height: height, width: width, lowest: lowest)
            return
        }
        let oh = height / 2, ow = width / 2
        @inline(__always) func wins(_ v: T, _ m: T) -> Bool { (lowest ? v < m : v > m) || (v.isNaN && !m.isNaN) }
        for oy in 0..<oh {
            let r0 = src + 2 * oy * width, r1 = r0 + width, d = dst + oy * ow
            for ox in 0..<ow {
                var m = r0[2 * ox]
                var v = r0[2 * ox + 1]; if wins(v, m) { m = v }
                v = r1[2 * ox]; if wins(v, m) { m = v }
                v = r1[2 * ox + 1]; if wins(v, m) { m = v }
                d[ox] = m
            }
        }
    }

    /// dst[i] = src[i]·a + c (then max(·, 0) if relu); the multiply is skipped for a = 1.
    /// dst may be src.
    @inline(__always)
    static func affine<T: GEMMScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, _ n: Int, _ a: T, _ c: T, relu: Bool) {
        if T.self == Float.self {
            FloatKernels.affine(dst.float, src.float, n, Float(a), Float(c), relu: relu)
            return
        }
        let zero = T(0)
        switch (a == 1, relu) {
        case (true, false): for i in 0..<n { dst[i] = src[i] + c }
        case (true, true): for i in 0..<n { let v = src[i] + c; dst[i] = zero > v ? zero : v }
        case (false, false): for i in 0..<n { dst[i] = src[i] * a + c }
        case (false, true): for i in 0..<n { let v = src[i] * a + c; dst[i] = zero > v ? zero : v }
        }
    }

    /// Gradients of `forward`, given dOutput = ∂L/∂y:
    /// - dInput (batch, inC, H, W): **written** (=) with col2im(weightᵀ · dOutput); nil to skip
    ///   (first layer).
    /// - dWeight (outC, inC, kH, kW): **adds** (+=) Σ_n dOutput[n] · im2col(x[n])ᵀ, as one partial
    ///   per chunk (beta 0) added in chunk order.
    /// - dBias (outC): **adds** (+=) Σ_{n, oy, ox} dOutput[n, oc, oy, ox]; nil if the conv has no bias.
    /// - dOutput (batch, outC, outH, outW); input (batch, inC, H, W); weight (outC, inC, kH, kW).
    /// - columns: scratch of `scratchCount(shape)` elements (overwritten).
    /// - path: the kernel (`backwardPath`; a network passes its plan's); nil decides it here.
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape, path planned: ConvolutionPath? = nil
    ) {
        let path = planned ?? backwardPath(s, target: .native(T.self))
        precondition(admits(path, s, forward: false) && (!path.usesAVX2 || T.self == Float.self), "\(path) cannot run the backward of \(s)")
        let partials = columns + workerCount(s) * workerScratch(s)
        if let dBias { Parallel.forRanges(s.outChannels, work: s.outputCount, BiasGradient(dBias: dBias, dOutput: dOutput, shape: s)) }
        if path != .gemm {
            backwardDirect(dInput: dInput, dWeight: dWeight, dOutput: dOutput, input: input, weight: weight, scratch: columns, shape: s,
                           avx2: path.usesAVX2)
            return
        }
        let loop = BackwardChunks(dInput: dInput, partials: partials, dOutput: dOutput, input: input, weight: weight, columns: columns, shape: s)
        serialBLAS { Parallel.forWorkers(chunkCount(s), workers: workerCount(s), loop) }
        addTransposedPartials(dWeight, partials, rows: s.outChannels, columns: s.patchSize, partials: chunkCount(s))
    }

    /// dBias[oc] += Σ_{n, oy, ox} dOutput[n, oc, oy, ox] for channels `channels`: each plane summed
    /// in T (eight partial sums), planes totalled in Double.
    struct BiasGradient<T: GEMMScalar>: ParallelLoop {
        let dBias: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, shape: Conv2dShape
        @_specialize(where T == Float)
        func run(_ channels: Range<Int>, worker: Int) {
            let plane = shape.outHeight * shape.outWidth, outImage = shape.outChannels * plane
            for oc in channels {
                var total = 0.0
                for n in 0..<shape.batch { total += Double(Parallel.sum(dOutput + n * outImage + oc * plane, plane)) }
                dBias[oc] += T(total)
            }
        }
    }

    /// `backward` (GEMM path) on a worker's run of chunks: the chunk's weight-gradient partial
    /// (beta 0, transposed: (patch, outC)) and, unless first layer, its input gradient by col2im.
    struct BackwardChunks<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>?, partials: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>
        let columns: UnsafeMutablePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ chunks: Range<Int>, worker: Int) {
            let s = shape, plane = s.outHeight * s.outWidth, g = chunkSize(s)
            let inImage = s.inChannels * s.height * s.width, outImage = s.outChannels * plane
            let cols = columns + worker * workerScratch(s), chunkBlock = cols + g * plane * s.patchSize
            for chunk in chunks {
                let n0 = chunk * g, count = min(g, s.batch - n0), width = count * plane
                // dY of the chunk as (outC, G·plane), the GEMM's layout (one image: dOutput itself).
                var block = dOutput + n0 * outImage
                if count > 1 {
                    for j in 0..<count {
                        let dy = dOutput + (n0 + j) * outImage
                        for oc in 0..<s.outChannels { (chunkBlock + oc * width + j * plane).update(from: dy + oc * plane, count: plane) }
                    }
                    block = UnsafePointer(chunkBlock)
                }
                for j in 0..<count { im2col(cols + j * plane, input + (n0 + j) * inImage, s, rowStride: width) }
                // dWᵀ partial (patch, outC) = cols (patch, G·plane) · dYᵀ (G·plane, outC). OpenBLAS
                // runs this orientation 10–25 % faster than dY · colsᵀ on the encoder's shapes
                // (patch ≫ outC); `addTransposedPartials` turns it back.
                T.gemm(transA: false, transB: true, m: s.patchSize, n: s.outChannels, k: width,
                       alpha: 1, a: cols, lda: width, b: block, ldb: width, beta: 0,
                       c: partials + chunk * s.weightCount, ldc: s.outChannels)
                if let dInput {
                    // dCols (patch, G·plane) = Wᵀ (patch, outC) · dY (outC, G·plane), then col2im per image.
                    T.gemm(transA: true, transB: false, m: s.patchSize, n: width, k: s.outChannels,
                           alpha: 1, a: weight, lda: s.patchSize, b: block, ldb: width, beta: 0, c: cols, ldc: width)
                    for j in 0..<count { col2im(dInput + (n0 + j) * inImage, cols + j * plane, s, rowStride: width) }
                }
            }
        }
    }

    /// total[i] += Σ_c partials[c·count + i], the partials added in order c = 0, 1, … (the
    /// deterministic reduction of per-chunk gradients), parallel over i.
    static func addPartials<T: GEMMScalar>(_ total: UnsafeMutablePointer<T>, _ partials: UnsafePointer<T>, count: Int, partials n: Int) {
        Parallel.forRanges(count, work: n * count, AddPartials(total: total, partials: partials, count: count, partialCount: n))
    }

    /// total (rows, columns) += Σ_c partials[c]ᵀ, each partial (columns, rows), added in order
    /// c = 0, 1, … as `addPartials`, parallel over blocks of `transposeBlock` columns of total.
    static func addTransposedPartials<T: GEMMScalar>(_ total: UnsafeMutablePointer<T>, _ partials: UnsafePointer<T>,
                                                     rows: Int, columns: Int, partials n: Int) {
        Parallel.forRanges((columns + transposeBlock - 1) / transposeBlock, work: n * rows * columns,
                           AddTransposedPartials(total: total, partials: partials, rows: rows, columns: columns, partialCount: n))
    }

    /// Columns of total per block of `addTransposedPartials`: a block reads one contiguous run of
    /// each partial (block × rows) and updates rows × block elements of total, 64-byte runs that
    /// stay in L1 while the partials stream past. (Walking total in order instead read every
    /// partial with a stride of `rows` elements, a cache line per element: 2 % of a training step.)
    static let transposeBlock = 16

    /// `addTransposedPartials` on column blocks `items` of total.
    struct AddTransposedPartials<T: GEMMScalar>: ParallelLoop {
        let total: UnsafeMutablePointer<T>, partials: UnsafePointer<T>, rows: Int, columns: Int, partialCount: Int
        @_specialize(where T == Float)
        func run(_ items: Range<Int>, worker: Int) {
            let count = rows * columns
            for block in items {
                let first = block * transposeBlock, end = min(columns, first + transposeBlock)
                for c in 0..<partialCount {
                    let p = partials + c * count
                    for column in first..<end {
                        let source = p + column * rows, destination = total + column
                        for row in 0..<rows { destination[row * columns] += source[row] }
                    }
                }
            }
        }
    }

    /// `addPartials` on elements `items`.
    struct AddPartials<T: GEMMScalar>: ParallelLoop {
        let total: UnsafeMutablePointer<T>, partials: UnsafePointer<T>, count: Int, partialCount: Int
        @_specialize(where T == Float)
        func run(_ items: Range<Int>, worker: Int) {
            for c in 0..<partialCount {
                let p = partials + c * count
                for i in items { total[i] += p[i] }
            }
        }
    }

    /// Output indices o in [lo, hi) whose input index o·stride + offset lies in [0, size), o < count.
    @inline(__always)
    static func validRange(offset: Int, stride: Int, size: Int, count: Int) -> (Int, Int) {
        let lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride
        let hi = size - offset <= 0 ? 0 : min(count, (size - offset - 1) / stride + 1)
        return (min(lo, hi), hi)
    }

    /// columns[(ic·kH + ky)·kW + kx, oy·outW + ox] = x[ic, oy·stride − padding + ky, ox·stride − padding + kx]
    /// (0 outside). One image: rows of outH·outW entries, `rowStride` apart (its group's width).
    static func im2col<T: GEMMScalar>(_ columns: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ s: Conv2dShape, rowStride plane: Int) {
        let oh = s.outHeight, ow = s.outWidth
        if s.isSameSizeStride1 {
            im2colSameSize(columns, x, s, rowStride: plane)
            return
        }
        for ic in 0..<s.inChannels {
            let xc = x + ic * s.height * s.width
            for ky in 0..<s.kernelH {
                let (yLo, yHi) = validRange(offset: ky - s.padding, stride: s.stride, size: s.height, count: oh)
                for kx in 0..<s.kernelW {
                    let row = columns + ((ic * s.kernelH + ky) * s.kernelW + kx) * plane
                    let xOff = kx - s.padding
                    let (xLo, xHi) = validRange(offset: xOff, stride: s.stride, size: s.width, count: ow)
                    for oy in 0..<oh {
                        let r = row + oy * ow
                        guard oy >= yLo && oy < yHi else { r.update(repeating: 0, count: ow); continue }
                        // src[ox·stride] = x[ic, iy, ox·stride + xOff]; only read for ox in [xLo, xHi).
                        // No index arithmetic in the copy loops (overflow checks kept them scalar).
                        let src = xc + (oy * s.stride - s.padding + ky) * s.width + xOff
                        for ox in 0..<xLo { r[ox] = 0 }
                        if s.stride == 1 {
                            for ox in xLo..<xHi { r[ox] = src[ox] }
                        } else {
                            for ox in xLo..<xHi { r[ox] = src[ox &* s.stride] }
                        }
                        for ox in xHi..<ow { r[ox] = 0 }
                    }
                }
            }
        }
    }

    /// `im2col` for a stride-1 conv whose output has the input's size (padding (k − 1)/2, the
    /// network's 3×3 pad 1): the row of tap (ky, kx) is the whole image shifted by
    /// (ky − p)·W + (kx − p) in flat index, one contiguous copy, then the columns that wrapped
    /// around a row edge are zeroed. Per-row loops of 4–32 elements were mostly overhead.
    static func im2colSameSize<T: GEMMScalar>(_ columns: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ s: Conv2dShape, rowStride plane: Int) {
        let h = s.height, w = s.width
        for ic in 0..<s.inChannels {
            for ky in 0..<s.kernelH {
                for kx in 0..<s.kernelW {
                    copyShifted(columns + ((ic * s.kernelH + ky) * s.kernelW + kx) * plane, x + ic * h * w, height: h, width: w,
                                dy: ky - s.padding, dx: kx - s.padding)
                }
            }
        }
    }

    /// row[y·w + x] = plane[(y + dy)·w + x + dx] where that pixel is inside the (h, w) plane, else 0:
    /// one contiguous copy shifted by dy·w + dx in flat index, then the entries that wrapped
    /// around a row edge zeroed. A row of the same-size im2col (and of `UpsampleConv2d`'s).
    @inline(__always)
    static func copyShifted<T: GEMMScalar>(_ row: UnsafeMutablePointer<T>, _ plane: UnsafePointer<T>, height h: Int, width w: Int, dy: Int, dx: Int) {
        let n = h * w, shift = dy * w + dx
        let lo = min(n, max(0, -shift)), hi = max(lo, min(n, n - shift))
        let src = plane + shift
        for i in 0..<lo { row[i] = 0 }
        for i in lo..<hi { row[i] = src[i] }
        for i in hi..<n { row[i] = 0 }
        zeroWrapped(row, height: h, width: w, dx: dx)
    }

    /// The adjoint of `copyShifted`: plane[(y + dy)·w + x + dx] += row[y·w + x] for the pixels
    /// inside; row is scratch (its wrapped-around entries are zeroed first).
    @inline(__always)
    static func addShifted<T: GEMMScalar>(_ plane: UnsafeMutablePointer<T>, _ row: UnsafeMutablePointer<T>, height h: Int, width w: Int, dy: Int, dx: Int) {
        zeroWrapped(row, height: h, width: w, dx: dx)
        let n = h * w, shift = dy * w + dx
        let lo = min(n, max(0, -shift)), hi = max(lo, min(n, n - shift))
        let dst = plane + shift
        for i in lo..<hi { dst[i] += row[i] }
    }

    /// Zeroes, in each of the h rows (w wide) of a shifted tap row, the |dx| entries at the left
    /// (dx < 0) or right (dx > 0) edge that wrapped around to a neighbouring image row. For the
    /// 3×3 convs that is one element per row: a plain strided store (a memset call per row cost
    /// more than the zeroing).
    @inline(__always)
    static func zeroWrapped<T: GEMMScalar>(_ row: UnsafeMutablePointer<T>, height h: Int, width w: Int, dx: Int) {
        guard dx != 0 else { return }
        let first = dx < 0 ? 0 : w - dx, count = abs(dx)
        if count == 1 {
            for oy in 0..<h { row[oy * w + first] = 0 }   // a strided store, not a memset idiom
        } else {
            for oy in 0..<h { (row + oy * w + first).update(repeating: 0, count: count) }
        }
    }

    /// The adjoint of `im2colSameSize`, **writing** dx: the centre tap (no shift, nothing
    /// wrapped) is copied, then each other tap's row, its wrapped-around entries (which copied a
    /// neighbouring row's pixel) zeroed, is added shifted back, one contiguous loop.
    static func col2imSameSize<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ columns: UnsafeMutablePointer<T>, _ s: Conv2dShape, rowStride plane: Int) {
        let h = s.height, w = s.width, n = h * w, taps = s.kernelH * s.kernelW
        let centre = s.padding * s.kernelW + s.padding
        for ic in 0..<s.inChannels {
            let dxc = dx + ic * n
            dxc.update(from: columns + (ic * taps + centre) * plane, count: n)
            for ky in 0..<s.kernelH {
                for kx in 0..<s.kernelW where ky * s.kernelW + kx != centre {
                    addShifted(dxc, columns + (ic * taps + ky * s.kernelW + kx) * plane, height: h, width: w,
                               dy: ky - s.padding, dx: kx - s.padding)
                }
            }
        }
    }

    /// The adjoint of `im2col`, **writing** dx (one image): dx[ic, iy, ix] = Σ of every columns
    /// entry that copied x[ic, iy, ix]. Rows `rowStride` apart. The columns are scratch: the
    /// same-size path zeroes their wrapped-around entries.
    static func col2im<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ columns: UnsafeMutablePointer<T>, _ s: Conv2dShape, rowStride plane: Int) {
        let oh = s.outHeight, ow = s.outWidth
        if s.isSameSizeStride1 {
            col2imSameSize(dx, columns, s, rowStride: plane)
            return
        }
        dx.update(repeating: 0, count: s.inChannels * s.height * s.width)
        for ic in 0..<s.inChannels {
            let dxc = dx + ic * s.height * s.width
            for ky in 0..<s.kernelH {
                let (yLo, yHi) = validRange(offset: ky - s.padding, stride: s.stride, size: s.height, count: oh)
                for kx in 0..<s.kernelW {
                    let row = columns + ((ic * s.kernelH + ky) * s.kernelW + kx) * plane
                    let xOff = kx - s.padding
                    let (xLo, xHi) = validRange(offset: xOff, stride: s.stride, size: s.width, count: ow)
                    for oy in yLo..<yHi {
                        let r = row + oy * ow
                        let dst = dxc + (oy * s.stride - s.padding + ky) * s.width + xOff
                        if s.stride == 1 {
                            for ox in xLo..<xHi { dst[ox] += r[ox] }
                        } else {
                            for ox in xLo..<xHi { dst[ox &* s.stride] += r[ox] }
                        }
                    }
                }
            }
        }
    }
}
