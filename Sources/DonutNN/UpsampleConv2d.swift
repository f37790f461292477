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
/// One output channel (the decoder's last block) takes a direct path instead: per class a 2×2
/// stencil of the zero-padded low-res planes (`usesDirect`), as `Conv2d`'s direct path.
///
/// `shape` is the conv's on the up-sampled image (height, width even); inputs and input
/// gradients are (batch, inC, height/2, width/2). Threading and determinism as `Conv2d`: chunks
/// of images fixed by the shape, one weight-gradient partial per chunk summed in chunk order
/// (direct path: images, one partial per image).
/// Checked against `Upsample2d` → `Conv2d` in the tests.
public enum UpsampleConv2d {
    /// Whether `s` (the conv on the up-sampled image) takes this path: 3×3, stride 1, padding 1,
    /// even size, and either one output channel (the direct path, `usesDirect`) or more than one
    /// input channel (the class GEMMs; one input channel would make them K = 4 products).
    public static func fuses(_ s: Conv2dShape) -> Bool {
        s.kernelH == 3 && s.kernelW == 3 && s.stride == 1 && s.padding == 1 && s.height % 2 == 0 && s.width % 2 == 0
            && (usesDirect(s) || s.inChannels > 1)
    }

    /// One output channel (the decoder's last conv): each class is a 2×2 stencil of the zero-padded
    /// low-res planes (`Conv2d.stencil`), summed over the input channels; the class GEMMs would be
    /// M = 1 products over 4·inC-row columns.
    public static func usesDirect(_ s: Conv2dShape) -> Bool { s.outChannels == 1 }

    /// The low-resolution 3×3 shape whose chunking (`Conv2d.chunkSize`) this path uses: its
    /// columns (9·inC rows) bound ours (4·inC) from above.
    static func lowShape(_ s: Conv2dShape) -> Conv2dShape {
        Conv2dShape(batch: s.batch, inChannels: s.inChannels, height: s.height / 2, width: s.width / 2,
                    outChannels: s.outChannels, kernelH: 3, kernelW: 3, stride: 1, padding: 1)
    }

    /// Rows of one class's columns and elements of one class's folded kernel.
    static func classPatch(_ s: Conv2dShape) -> Int { 4 * s.inChannels }

    /// One worker's scratch: a chunk's class columns (4·inC, G·planeL), then the forward's four
    /// class output blocks (4, outC, G·planeL) or the backward's 4×4 columns of the output
    /// gradient (16·outC, G·planeL, `gradientColumns`), and one class weight-gradient partial
    /// (4·inC, outC).
    static func workerScratch(_ s: Conv2dShape) -> Int {
        let width = Conv2d.chunkSize(lowShape(s)) * (s.height / 2) * (s.width / 2)
        return width * (classPatch(s) + 16 * s.outChannels) + s.outChannels * classPatch(s)
    }

    /// Output row 2i + py of a plane from its classes (py, 0) and (py, 1), rows `even` and `odd`
    /// (w low-res pixels each): row[2j] = f(even[j]), row[2j + 1] = f(odd[j]), f(v) = v·a + c, then
    /// max(·, 0) if relu (`Conv2d.affine`'s arithmetic).
    @inline(__always)
    static func interleaveRow<T: GEMMScalar>(_ row: UnsafeMutablePointer<T>, _ even: UnsafePointer<T>, _ odd: UnsafePointer<T>,
                                             _ w: Int, _ a: T, _ c: T, relu: Bool) {
        var j = 0
        if T.self == Float.self { j = FloatKernels.interleaveRow(row.float, even.float, odd.float, w, Float(a), Float(c), relu: relu) }
        while j < w {
            let u = even[j] * a + c, v = odd[j] * a + c
            row[2 * j] = relu && u < 0 ? 0 : u
            row[2 * j + 1] = relu && v < 0 ? 0 : v
            j += 1
        }
    }

    /// The adjoint split of a row of 2w pixels into its classes: even[j] = row[2j], odd[j] = row[2j + 1].
    @inline(__always)
    static func deinterleaveRow<T: GEMMScalar>(_ even: UnsafeMutablePointer<T>, _ odd: UnsafeMutablePointer<T>, _ row: UnsafePointer<T>, _ w: Int) {
        var j = 0
        if T.self == Float.self { j = FloatKernels.deinterleaveRow(even.float, odd.float, row.float, w) }
        while j < w { even[j] = row[2 * j]; odd[j] = row[2 * j + 1]; j += 1 }
    }

    /// Scratch elements `forward` and `backward` need: a worker scratch per thread, the four
    /// folded kernels (the forward's) or the adjoint's 4×4 kernel (the backward's; as many
    /// elements), then one 3×3 weight-gradient partial per chunk.
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        if usesDirect(s) { return directScratchCount(s) }
        let low = lowShape(s)
        return Conv2d.workerCount(low) * workerScratch(s) + 4 * s.outChannels * classPatch(s) + Conv2d.chunkCount(low) * s.weightCount
    }

    /// a(p, k): the low-res offset (0 or 1) that tap k reads for output parity p.
    @inline(__always)
    static func offset(parity p: Int, tap k: Int) -> Int { (k + 1 - p) / 2 }

    /// d[3·ky + kx] += f[(2·a(py, ky) + a(px, kx))·stride] for the nine taps: a class's 2×2 weight
    /// gradient (elements `stride` apart) folded back onto the 3×3 kernel, the adjoint of `foldWeights`.
    @inline(__always)
    static func addUnfolded<T: GEMMScalar>(_ d: UnsafeMutablePointer<T>, _ f: UnsafePointer<T>, stride: Int, py: Int, px: Int) {
        for ky in 0..<3 {
            for kx in 0..<3 { d[3 * ky + kx] += f[(2 * offset(parity: py, tap: ky) + offset(parity: px, tap: kx)) * stride] }
        }
    }

    /// folded[cls] (outC, inC, 2, 2) = W' of class cls = 2·py + px, from weight (outC, inC, 3, 3);
    /// the (oc, ic) pairs split over the cores (`FoldWeights`). Done serially before every
    /// forward, it kept one core waiting for ~0.5 % of a training step.
    static func foldWeights<T: GEMMScalar>(_ folded: UnsafeMutablePointer<T>, _ weight: UnsafePointer<T>, _ s: Conv2dShape) {
        let pairs = s.outChannels * s.inChannels
        Parallel.forRanges(pairs, work: 40 * pairs, FoldWeights(folded: folded, weight: weight, pairs: pairs))
    }

    /// `foldWeights` on the (oc, ic) pairs `range`: each class's 2×2 kernel summed from zero in
    /// tap order (ky, then kx).
    struct FoldWeights<T: GEMMScalar>: ParallelLoop {
        let folded: UnsafeMutablePointer<T>, weight: UnsafePointer<T>, pairs: Int

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for q in range {
                let w = weight + 9 * q
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    var f = SIMD4<T>.zero
                    for ky in 0..<3 {
                        for kx in 0..<3 { f[2 * offset(parity: py, tap: ky) + offset(parity: px, tap: kx)] += w[3 * ky + kx] }
                    }
                    let out = folded + cls * 4 * pairs + 4 * q
                    out[0] = f[0]; out[1] = f[1]; out[2] = f[2]; out[3] = f[3]
                }
            }
        }
    }

    /// The adjoint's kernel (inC, outC, 4, 4): the input gradient is a stride-2 correlation of dY
    /// with it, dx[ic, u, v] = Σ_{oc, r, c} K[ic, oc, r, c] · dY[oc, 2u − 1 + r, 2v − 1 + c]. Row
    /// r = 3 − py − 2a of the 4×4 window is output parity py read at low-res offset a (each (py, a)
    /// once), so K[ic, oc, r, c] = W'[py(r), px(c)][oc, ic, a(r), b(c)] with py(r) = (r + 1) mod 2,
    /// a(r) = (3 − py(r) − r)/2 — the folded kernels transposed and regrouped. The input channels
    /// split over the cores (`FoldAdjointWeights`), as `foldWeights`.
    static func foldAdjointWeights<T: GEMMScalar>(_ kernel: UnsafeMutablePointer<T>, _ weight: UnsafePointer<T>, _ s: Conv2dShape) {
        Parallel.forRanges(s.inChannels, work: 160 * s.inChannels * s.outChannels,
                           FoldAdjointWeights(kernel: kernel, weight: weight, inChannels: s.inChannels, outChannels: s.outChannels))
    }

    /// `foldAdjointWeights` on the input channels `range`: each 4×4 kernel summed from zero in
    /// tap order (ky, kx, py, px).
    struct FoldAdjointWeights<T: GEMMScalar>: ParallelLoop {
        let kernel: UnsafeMutablePointer<T>, weight: UnsafePointer<T>, inChannels: Int, outChannels: Int

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for ic in range {
                for oc in 0..<outChannels {
                    let w = weight + 9 * (oc * inChannels + ic)
                    var k = SIMD16<T>.zero
                    for ky in 0..<3 {
                        for kx in 0..<3 {
                            for py in 0..<2 {
                                for px in 0..<2 { k[4 * windowTap(parity: py, tap: ky) + windowTap(parity: px, tap: kx)] += w[3 * ky + kx] }
                            }
                        }
                    }
                    UnsafeMutableRawPointer(kernel + 16 * (ic * outChannels + oc)).storeBytes(of: k, as: SIMD16<T>.self)
                }
            }
        }
    }

    /// r = 3 − p − 2·a(p, k): the row (column) of the adjoint's 4×4 window that 3×3 tap k lands on
    /// for output parity p.
    @inline(__always)
    static func windowTap(parity p: Int, tap k: Int) -> Int { 3 - p - 2 * offset(parity: p, tap: k) }

    /// The 4×4 columns of one image's output gradient for the adjoint: row (oc, r, c) (rows
    /// `rowStride` apart, 16 per channel) holds dY[oc, 2u − 1 + r, 2v − 1 + c] at low-res pixel
    /// (u, v), zero outside. Rows (oc, py + 1, px + 1) are the class blocks dY[oc, 2u + py, 2v + px].
    static func gradientColumns<T: GEMMScalar>(_ columns: UnsafeMutablePointer<T>, _ dy: UnsafePointer<T>, outChannels: Int,
                                               height h: Int, width w: Int, rowStride: Int) {
        let wide = 2 * w
        for oc in 0..<outChannels {
            let plane = dy + oc * 4 * h * w
            for r in 0..<4 {
                let base = columns + (16 * oc + 4 * r) * rowStride
                for u in 0..<h {
                    let c0 = base + u * w, c1 = c0 + rowStride, c2 = c1 + rowStride, c3 = c2 + rowStride
                    let y = 2 * u - 1 + r
                    guard y >= 0 && y < 2 * h else {
                        c0.update(repeating: 0, count: w); c1.update(repeating: 0, count: w)
                        c2.update(repeating: 0, count: w); c3.update(repeating: 0, count: w)
                        continue
                    }
                    // c = 1, 2: columns 2v, 2v + 1; c = 0: 2v − 1 (the odd ones a step right); c = 3: 2v + 2.
                    deinterleaveRow(c1, c2, plane + y * wide, w)
                    c0[0] = 0
                    (c0 + 1).update(from: c2, count: w - 1)
                    c3.update(from: c1 + 1, count: w - 1)
                    c3[w - 1] = 0
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
    /// columns: `scratchCount(shape)` elements. path: the kernel (`path(_:target:)`; a network
    /// passes its plan's); nil decides it here.
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape,
        scale: UnsafePointer<T>? = nil, shift: UnsafePointer<T>? = nil, relu: Bool = false, path planned: ConvolutionPath? = nil
    ) {
        precondition(fuses(s) && (scale == nil) == (shift == nil))
        let path = planned ?? path(s, target: .native(T.self))!
        precondition(admits(path, s) && (!path.usesAVX2 || T.self == Float.self), "\(path) cannot run the up-sampling conv \(s)")
        if path != .subPixelGEMM {
            let folded = columns + Conv2d.directWorkers(s) * directWorkerScratch(s)
            foldWeights(folded, weight, s)
            Parallel.forWorkers(s.batch, workers: Conv2d.directWorkers(s),
                                DirectForward(output: output, input: input, folded: folded, bias: bias, scratch: columns, shape: s,
                                              scale: scale, shift: shift, relu: relu, avx2: path.usesAVX2))
            return
        }
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
            let cols = columns + worker * workerScratch(s), blocks = cols + g * planeL * patch
            for chunk in chunks {
                let n0 = chunk * g, count = min(g, s.batch - n0), width = count * planeL, classBlock = s.outChannels * width
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    for j in 0..<count {
                        classColumns(cols + j * planeL, input + (n0 + j) * inImage, inChannels: s.inChannels,
                                     height: h, width: w, py: py, px: px, rowStride: width)
                    }
                    T.gemm(transA: false, transB: false, m: s.outChannels, n: width, k: patch, alpha: 1,
                           a: folded + cls * s.outChannels * patch, lda: patch, b: cols, ldb: width, beta: 0,
                           c: blocks + cls * classBlock, ldc: width)
                }
                // The four classes interleaved into the output rows, one contiguous row at a time.
                for j in 0..<count {
                    for oc in 0..<s.outChannels {
                        let (a, c) = Conv2d.epilogue(channel: oc, bias: bias, scale: scale, shift: shift)
                        let src = blocks + oc * width + j * planeL, dst = output + ((n0 + j) * s.outChannels + oc) * plane
                        for i in 0..<h {
                            for py in 0..<2 {
                                let even = src + 2 * py * classBlock + i * w
                                interleaveRow(dst + (2 * i + py) * s.width, even, even + classBlock, w, a, c, relu: relu)
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
    /// - path: as `forward`'s.
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape, path planned: ConvolutionPath? = nil
    ) {
        precondition(fuses(s))
        let path = planned ?? path(s, target: .native(T.self))!
        precondition(admits(path, s) && (!path.usesAVX2 || T.self == Float.self), "\(path) cannot run the up-sampling conv \(s)")
        if let dBias {
            Parallel.forRanges(s.outChannels, work: s.outputCount, Conv2d.BiasGradient(dBias: dBias, dOutput: dOutput, shape: s))
        }
        if path != .subPixelGEMM {
            backwardDirect(dInput: dInput, dWeight: dWeight, dOutput: dOutput, input: input, weight: weight, scratch: columns, shape: s,
                           avx2: path.usesAVX2)
            return
        }
        let low = lowShape(s), kernel = columns + Conv2d.workerCount(low) * workerScratch(s)
        let partials = kernel + 4 * s.outChannels * classPatch(s)
        if dInput != nil { foldAdjointWeights(kernel, weight, s) }
        let loop = BackwardChunks(dInput: dInput, partials: partials, dOutput: dOutput, input: input, kernel: kernel,
                                  columns: columns, shape: s)
        serialBLAS { Parallel.forWorkers(Conv2d.chunkCount(low), workers: Conv2d.workerCount(low), loop) }
        Conv2d.addPartials(dWeight, partials, count: s.weightCount, partials: Conv2d.chunkCount(low))
    }

    /// `backward` on a worker's run of chunks: the output gradients' 4×4 columns
    /// (`gradientColumns`), per class the weight-gradient partial (its class block is every 16th
    /// row of them) folded back to 3×3 into the chunk's partial, and (unless skipped) the input
    /// gradient as one GEMM with the adjoint's kernel (`foldAdjointWeights`), K = 16·outC.
    struct BackwardChunks<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>?, partials: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, kernel: UnsafePointer<T>
        let columns: UnsafeMutablePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ chunks: Range<Int>, worker: Int) {
            let s = shape, h = s.height / 2, w = s.width / 2, planeL = h * w
            let g = Conv2d.chunkSize(lowShape(s)), patch = classPatch(s), inImage = s.inChannels * planeL
            let cols = columns + worker * workerScratch(s), dyColumns = cols + g * planeL * patch
            let classPartial = dyColumns + 16 * g * planeL * s.outChannels, pairs = s.outChannels * s.inChannels
            for chunk in chunks {
                let n0 = chunk * g, count = min(g, s.batch - n0), width = count * planeL
                let partial = partials + chunk * s.weightCount
                partial.update(repeating: 0, count: s.weightCount)
                for j in 0..<count {
                    gradientColumns(dyColumns + j * planeL, dOutput + (n0 + j) * s.outChannels * 4 * planeL,
                                    outChannels: s.outChannels, height: h, width: w, rowStride: width)
                }
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    for j in 0..<count {
                        classColumns(cols + j * planeL, input + (n0 + j) * inImage, inChannels: s.inChannels,
                                     height: h, width: w, py: py, px: px, rowStride: width)
                    }
                    // dW'ᵀ (4·inC, outC) = cols · dY_classᵀ (the faster orientation, as `Conv2d.backward`),
                    // dY_class being rows (oc, py + 1, px + 1) of the 4×4 columns; folded back onto the 3×3
                    // taps: row (ic, a, b), column oc.
                    T.gemm(transA: false, transB: true, m: patch, n: s.outChannels, k: width, alpha: 1,
                           a: cols, lda: width, b: dyColumns + (4 * (py + 1) + px + 1) * width, ldb: 16 * width,
                           beta: 0, c: classPartial, ldc: s.outChannels)
                    for q in 0..<pairs {
                        let oc = q / s.inChannels, ic = q % s.inChannels
                        addUnfolded(partial + 9 * q, classPartial + 4 * ic * s.outChannels + oc, stride: s.outChannels, py: py, px: px)
                    }
                }
                guard let dInput else { continue }
                // dx (inC, G·planeL) = K (inC, 16·outC) · the 4×4 columns, then each image's planes to their place.
                let dx = count == 1 ? dInput + n0 * inImage : cols
                T.gemm(transA: false, transB: false, m: s.inChannels, n: width, k: 16 * s.outChannels, alpha: 1,
                       a: kernel, lda: 16 * s.outChannels, b: dyColumns, ldb: width, beta: 0, c: dx, ldc: width)
                guard count > 1 else { continue }
                for j in 0..<count {
                    for ic in 0..<s.inChannels {
                        (dInput + (n0 + j) * inImage + ic * planeL).update(from: cols + ic * width + j * planeL, count: planeL)
                    }
                }
            }
        }
    }

    // MARK: Direct path (one output channel)

    /// Elements of one direct-path worker's scratch: the zero-padded low-res input planes
    /// (inC, h + 2, w + 2), then forward the four class planes (h, w), backward the four class
    /// planes of the output gradient, unpadded and padded, and the 2×2 gradient of one class.
    static func directWorkerScratch(_ s: Conv2dShape) -> Int {
        let h = s.height / 2, w = s.width / 2, padded = (h + 2) * (w + 2)
        return s.inChannels * padded + 4 * h * w + 4 * padded + 4
    }

    /// Direct path scratch: a worker scratch per thread, the four folded kernels, the four
    /// rotated folded kernels (the adjoint's), one 3×3 weight-gradient partial per image.
    static func directScratchCount(_ s: Conv2dShape) -> Int {
        Conv2d.directWorkers(s) * directWorkerScratch(s) + 8 * s.outChannels * classPatch(s) + s.batch * s.weightCount
    }

    /// `forward` on the direct path for a worker's run of images: the image's low-res planes
    /// padded once, each class z (h, w) = Σ_ic 2×2 stencil of input plane ic at offset (py, px)
    /// (padded indices), then the classes interleaved into the output plane with the epilogue.
    struct DirectForward<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, folded: UnsafePointer<T>, bias: UnsafePointer<T>?
        let scratch: UnsafeMutablePointer<T>, shape: Conv2dShape
        let scale: UnsafePointer<T>?, shift: UnsafePointer<T>?, relu: Bool
        /// `StencilAVX2.stencil2x2` (`.subPixelStencilAVX2`).
        let avx2: Bool

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, h = s.height / 2, w = s.width / 2, planeL = h * w, pw = w + 2, padded = (h + 2) * pw
            let perClass = classPatch(s)   // outC = 1: a class's folded kernel is (inC, 2, 2)
            let xp = scratch + worker * directWorkerScratch(s), z = xp + s.inChannels * padded
            let (a, c) = Conv2d.epilogue(channel: 0, bias: bias, scale: scale, shift: shift)
            for n in images {
                for ic in 0..<s.inChannels {
                    Conv2d.padPlane(xp + ic * padded, input + (n * s.inChannels + ic) * planeL, h, w, padY: 1, padX: 1)
                }
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    for ic in 0..<s.inChannels {
                        Conv2d.stencil(z + cls * planeL, h, w, xp + ic * padded + py * pw + px, pw, folded + cls * perClass + 4 * ic,
                                       2, 2, accumulate: ic > 0, avx2: avx2)
                    }
                }
                let y = output + n * s.height * s.width
                for i in 0..<h {
                    for py in 0..<2 {
                        let even = z + 2 * py * planeL + i * w
                        interleaveRow(y + (2 * i + py) * s.width, even, even + planeL, w, a, c, relu: relu)
                    }
                }
            }
        }
    }

    /// `backward` on the direct path without the bias gradient (same contract): per image the
    /// output gradient split into its four classes, each class's 2×2 weight gradient folded back
    /// onto the 3×3 taps into the image's partial (summed in image order), and the input gradient
    /// as the sum of the classes' adjoint stencils (rotated folded kernels on the padded classes).
    static func backwardDirect<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, input: UnsafePointer<T>,
        weight: UnsafePointer<T>, scratch: UnsafeMutablePointer<T>, shape s: Conv2dShape, avx2: Bool
    ) {
        let folded = scratch + Conv2d.directWorkers(s) * directWorkerScratch(s), kernels = 4 * classPatch(s)
        let rotated = folded + kernels, partials = rotated + kernels
        foldWeights(folded, weight, s)
        for k in 0..<(kernels / 4) { Conv2d.flipped(folded + 4 * k, count: 4, into: rotated + 4 * k) }
        Parallel.forWorkers(s.batch, workers: Conv2d.directWorkers(s),
                            DirectBackward(dInput: dInput, partials: partials, dOutput: dOutput, input: input, rotated: rotated,
                                           scratch: scratch, shape: s, avx2: avx2))
        Conv2d.addPartials(dWeight, partials, count: s.weightCount, partials: s.batch)
    }

    /// `backwardDirect` on a worker's run of images.
    struct DirectBackward<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>?, partials: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, rotated: UnsafePointer<T>
        let scratch: UnsafeMutablePointer<T>, shape: Conv2dShape
        let avx2: Bool

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, h = s.height / 2, w = s.width / 2, planeL = h * w, pw = w + 2, padded = (h + 2) * pw
            let perClass = classPatch(s)
            let xp = scratch + worker * directWorkerScratch(s), dz = xp + s.inChannels * padded
            let dzp = dz + 4 * planeL, g4 = dzp + 4 * padded
            for n in images {
                for ic in 0..<s.inChannels {
                    Conv2d.padPlane(xp + ic * padded, input + (n * s.inChannels + ic) * planeL, h, w, padY: 1, padX: 1)
                }
                let dy = dOutput + n * s.height * s.width
                for i in 0..<h {
                    for py in 0..<2 {
                        let even = dz + 2 * py * planeL + i * w
                        deinterleaveRow(even, even + planeL, dy + (2 * i + py) * s.width, w)
                    }
                }
                let partial = partials + n * s.weightCount
                partial.update(repeating: 0, count: s.weightCount)
                for cls in 0..<4 {
                    let py = cls / 2, px = cls % 2
                    for ic in 0..<s.inChannels {
                        Conv2d.stencilGradient(g4, dz + cls * planeL, h, w, xp + ic * padded + py * pw + px, pw, 2, 2, avx2: avx2)
                        addUnfolded(partial + 9 * ic, g4, stride: 1, py: py, px: px)
                    }
                }
                guard let dInput else { continue }
                for cls in 0..<4 { Conv2d.padPlane(dzp + cls * padded, dz + cls * planeL, h, w, padY: 1, padX: 1) }
                for ic in 0..<s.inChannels {
                    let dx = dInput + (n * s.inChannels + ic) * planeL
                    for cls in 0..<4 {
                        let py = cls / 2, px = cls % 2
                        Conv2d.stencil(dx, h, w, dzp + cls * padded + (1 - py) * pw + (1 - px), pw, rotated + cls * perClass + 4 * ic,
                                       2, 2, accumulate: cls > 0, avx2: avx2)
                    }
                }
            }
        }
    }
}
