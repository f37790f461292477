import DonutBLAS

/// Nearest ×2 up-sampling followed by a 3×3, stride-1, padding-1 convolution (the decoder's
/// `Upsample2d` → `Conv2d`), computed on the low-resolution input by sub-pixel decomposition.
///
/// Output pixel (2i + py, 2j + px) of the up-sampled conv reads up-sampled rows 2i + py − 1 + ky,
/// ky < 3, i.e. low-resolution rows i − 1 + py + a with a = (ky + 1 − py)/2 ∈ {0, 1} (and the same
/// for columns): for each parity class (py, px) the layer is a 2×2 convolution of the low-res
/// image with folded weights
///
///     W'[py, px][oc, ic, a, b] = Σ_{ky: (ky+1−py)/2 = a} Σ_{kx: (kx+1−px)/2 = b} W[oc, ic, ky, kx],
///
///     y[n, oc, 2i + py, 2j + px] = bias[oc] + Σ_{ic, a, b} W'[py, px][oc, ic, a, b] · x[n, ic, i − 1 + py + a, j − 1 + px + b]
///
/// (x = 0 outside; the up-sampled image's zero border maps to the low-res one's). Four GEMMs with
/// K = 4·inC on a quarter of the pixels: 4/9 of the FLOPs of the up-sampled conv and of its im2col,
/// and no up-sampled activation. The weights stay the 3×3 ones (checkpoints unchanged); the
/// gradient folds back: dW[oc, ic, ky, kx] = Σ_classes dW'[py, px][oc, ic, a(py, ky), a(px, kx)].
///
/// `shape` is the conv's on the up-sampled image (height, width even); inputs and input
/// gradients are (batch, inC, height/2, width/2). Threading and determinism as `Conv2d`: chunks
/// of images fixed by the shape, one weight-gradient partial per chunk summed in chunk order.
/// Checked against `Upsample2d` → `Conv2d` in the tests.
public enum UpsampleConv2d {
    /// Whether `s` (the conv on the up-sampled image) takes this path: 3×3, stride 1, padding 1,
    /// even size and not one of `Conv2d`'s direct shapes (one input or output channel).
    public static func fuses(_ s: Conv2dShape) -> Bool {
        s.kernelH == 3 && s.kernelW == 3 && s.stride == 1 && s.padding == 1 && s.height % 2 == 0 && s.width % 2 == 0
            && !Conv2d.usesDirect(s)
    }

    /// The low-resolution 3×3 shape whose chunking (`Conv2d.chunkSize`) this path uses: its
    /// columns (9·inC rows) bound ours (4·inC) from above.
    static func lowShape(_ s: Conv2dShape) -> Conv2dShape {
        Conv2dShape(batch: s.batch, inChannels: s.inChannels, height: s.height / 2, width: s.width / 2,
                    outChannels: s.outChannels, kernelH: 3, kernelW: 3, stride: 1, padding: 1)
    }

    /// Rows of one class's columns and elements of one class's folded kernel.
    static func classPatch(_ s: Conv2dShape) -> Int { 4 * s.inChannels }

    /// One worker's scratch: a chunk's class columns (4·inC, G·planeL), its output block
    /// (outC, G·planeL) and one class weight-gradient partial (outC, 4·inC).
    static func workerScratch(_ s: Conv2dShape) -> Int {
        let width = Conv2d.chunkSize(lowShape(s)) * (s.height / 2) * (s.width / 2)
        return width * (classPatch(s) + s.outChannels) + s.outChannels * classPatch(s)
    }

    /// Scratch elements `forward` and `backward` need: a worker scratch per thread, the four
    /// folded kernels, then one 3×3 weight-gradient partial per chunk.
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        let low = lowShape(s)
        return Conv2d.workerCount(low) * workerScratch(s) + 4 * s.outChannels * classPatch(s) + Conv2d.chunkCount(low) * s.weightCount
    }

    /// a(p, k): the low-res offset (0 or 1) that tap k reads for output parity p.
    @inline(__always)
    static func offset(parity p: Int, tap k: Int) -> Int { (k + 1 - p) / 2 }

    /// folded[cls] (outC, inC, 2, 2) = W' of class cls = 2·py + px, from weight (outC, inC, 3, 3).
    static func foldWeights<T: GEMMScalar>(_ folded: UnsafeMutablePointer<T>, _ weight: UnsafePointer<T>, _ s: Conv2dShape) {
        let pairs = s.outChannels * s.inChannels, perClass = 4 * pairs
        folded.update(repeating: 0, count: 4 * perClass)
        for cls in 0..<4 {
            let py = cls / 2, px = cls % 2
            for q in 0..<pairs {
                let w = weight + 9 * q, f = folded + cls * perClass + 4 * q
                for ky in 0..<3 {
                    for kx in 0..<3 { f[2 * offset(parity: py, tap: ky) + offset(parity: px, tap: kx)] += w[3 * ky + kx] }
                }
            }
        }
    }

    /// columns (4·inC rows, `rowStride` apart) of one image for class (py, px): row (ic, a, b) is
    /// x[ic] shifted by (py + a − 1, px + b − 1), zero outside (`Conv2d.copyShifted`).
    static func classColumns<T: GEMMScalar>(_ columns: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, inChannels: Int,
                                            height h: Int, width w: Int, py: Int, px: Int, rowStride: Int) {
        for ic in 0..<inChannels {
            for a in 0..<2 {
                for b in 0..<2 {
                    Conv2d.copyShifted(columns + ((ic * 2 + a) * 2 + b) * rowStride, x + ic * h * w, height: h, width: w,
                                       dy: py + a - 1, dx: px + b - 1)
                }
            }
        }
    }

    /// y (batch, outC, H, W) = the up-sampled conv of input (batch, inC, H/2, W/2) plus bias, with
    /// `Conv2d.forward`'s optional epilogue y ← max(scale·y + shift, 0) (eval BatchNorm + ReLU).
    /// columns: `scratchCount(shape)` elements.
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape,
        scale: UnsafePointer<T>? = nil, shift: UnsafePointer<T>? = nil, relu: Bool = false
    ) {
        precondition(fuses(s) && (scale == nil) == (shift == nil))
        let low = lowShape(s), folded = columns + Conv2d.workerCount(low) * workerScratch(s)
        foldWeights(folded, weight, s)
        let loop = ForwardChunks(output: output, input: input, folded: folded, bias: bias, columns: columns, shape: s,
                                 scale: scale, shift: shift, relu: relu)
        serialBLAS { Parallel.forWorkers(Conv2d.chunkCount(low), workers: Conv2d.workerCount(low), loop) }
    }

    /// `forward` on a worker's run of chunks: per class, the chunk's columns, one GEMM, the
    /// block scattered to the class's pixels with the epilogue.
    struct ForwardChunks<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, folded: UnsafePointer<T>, bias: UnsafePointer<T>?
        let columns: UnsafeMutablePointer<T>, shape: Conv2dShape
        let scale: UnsafePointer<T>?, shift: UnsafePointer<T>?, relu: Bool

        @_specialize(where T == Float)
        func run(_ chunks: Range<Int>, worker: Int) {
            let s = shape, h = s.height / 2, w = s.width / 2, planeL = h * w, plane = s.height * s.width
            let g = Conv2d.chunkSize(lowShape(s)), patch = classPatch(s), inImage = s.inChannels * planeL
            let cols = columns + worker * workerScratch(s), block = cols + g * planeL * patch
            for chunk in chunks {
                let n0 = chunk * g, count = min(g, s.batch - n0), width = count * planeL
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    for j in 0..<count {
                        classColumns(cols + j * planeL, input + (n0 + j) * inImage, inChannels: s.inChannels,
                                     height: h, width: w, py: py, px: px, rowStride: width)
                    }
                    T.gemm(transA: false, transB: false, m: s.outChannels, n: width, k: patch, alpha: 1,
                           a: folded + cls * s.outChannels * patch, lda: patch, b: cols, ldb: width, beta: 0, c: block, ldc: width)
                    for j in 0..<count {
                        for oc in 0..<s.outChannels {
                            let (a, c) = Conv2d.epilogue(channel: oc, bias: bias, scale: scale, shift: shift)
                            let src = block + oc * width + j * planeL
                            let dst = output + ((n0 + j) * s.outChannels + oc) * plane + py * s.width + px
                            for i in 0..<h {
                                let sr = src + i * w, dr = dst + 2 * i * s.width
                                for jj in 0..<w {
                                    let v = sr[jj] * a + c
                                    dr[2 * jj] = relu && v < 0 ? 0 : v
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Gradients of `forward` (no epilogue), given dOutput (batch, outC, H, W):
    /// - dInput (batch, inC, H/2, W/2): **written**; nil to skip.
    /// - dWeight (outC, inC, 3, 3), dBias (outC): **add**, as `Conv2d.backward`.
    /// - input: the forward's low-res input; columns: `scratchCount(shape)` elements.
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape
    ) {
        precondition(fuses(s))
        let low = lowShape(s), folded = columns + Conv2d.workerCount(low) * workerScratch(s)
        let partials = folded + 4 * s.outChannels * classPatch(s)
        if let dBias {
            Parallel.forRanges(s.outChannels, work: s.outputCount, Conv2d.BiasGradient(dBias: dBias, dOutput: dOutput, shape: s))
        }
        foldWeights(folded, weight, s)
        let loop = BackwardChunks(dInput: dInput, partials: partials, dOutput: dOutput, input: input, folded: folded,
                                  columns: columns, shape: s)
        serialBLAS { Parallel.forWorkers(Conv2d.chunkCount(low), workers: Conv2d.workerCount(low), loop) }
        Conv2d.addPartials(dWeight, partials, count: s.weightCount, partials: Conv2d.chunkCount(low))
    }

    /// `backward` on a worker's run of chunks: per class, the class's output gradients gathered
    /// into a block, its weight-gradient partial folded back to 3×3 into the chunk's partial,
    /// and (unless skipped) its input gradient added by the adjoint of `classColumns`.
    struct BackwardChunks<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>?, partials: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, folded: UnsafePointer<T>
        let columns: UnsafeMutablePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ chunks: Range<Int>, worker: Int) {
            let s = shape, h = s.height / 2, w = s.width / 2, planeL = h * w, plane = s.height * s.width
            let g = Conv2d.chunkSize(lowShape(s)), patch = classPatch(s), inImage = s.inChannels * planeL
            let cols = columns + worker * workerScratch(s), block = cols + g * planeL * patch
            let classPartial = block + g * planeL * s.outChannels, pairs = s.outChannels * s.inChannels
            for chunk in chunks {
                let n0 = chunk * g, count = min(g, s.batch - n0), width = count * planeL
                let partial = partials + chunk * s.weightCount
                partial.update(repeating: 0, count: s.weightCount)
                if let dInput { (dInput + n0 * inImage).update(repeating: 0, count: count * inImage) }
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    for j in 0..<count {
                        for oc in 0..<s.outChannels {
                            let src = dOutput + ((n0 + j) * s.outChannels + oc) * plane + py * s.width + px
                            let dst = block + oc * width + j * planeL
                            for i in 0..<h {
                                let sr = src + 2 * i * s.width, dr = dst + i * w
                                for jj in 0..<w { dr[jj] = sr[2 * jj] }
                            }
                        }
                        classColumns(cols + j * planeL, input + (n0 + j) * inImage, inChannels: s.inChannels,
                                     height: h, width: w, py: py, px: px, rowStride: width)
                    }
                    // dW' (outC, 4·inC) = dY_class (outC, G·planeL) · colsᵀ, folded back onto the 3×3 taps.
                    T.gemm(transA: false, transB: true, m: s.outChannels, n: patch, k: width, alpha: 1,
                           a: block, lda: width, b: cols, ldb: width, beta: 0, c: classPartial, ldc: patch)
                    for q in 0..<pairs {
                        let f = classPartial + 4 * q, d = partial + 9 * q
                        for ky in 0..<3 {
                            for kx in 0..<3 { d[3 * ky + kx] += f[2 * offset(parity: py, tap: ky) + offset(parity: px, tap: kx)] }
                        }
                    }
                    guard let dInput else { continue }
                    // dCols (4·inC, G·planeL) = W'ᵀ · dY_class, added back to the low-res pixels it read.
                    T.gemm(transA: true, transB: false, m: patch, n: width, k: s.outChannels, alpha: 1,
                           a: folded + cls * s.outChannels * patch, lda: patch, b: block, ldb: width, beta: 0, c: cols, ldc: width)
                    for j in 0..<count {
                        let dx = dInput + (n0 + j) * inImage
                        for ic in 0..<s.inChannels {
                            for a in 0..<2 {
                                for b in 0..<2 {
                                    Conv2d.addShifted(dx + ic * planeL, cols + ((ic * 2 + a) * 2 + b) * width + j * planeL,
                                                      height: h, width: w, dy: py + a - 1, dx: px + b - 1)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
