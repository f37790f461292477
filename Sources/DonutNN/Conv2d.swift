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

/// 2-D convolution (cross-correlation, as PyTorch's `Conv2d`) by im2col + GEMM over groups of
/// images: for G images at once, columns (patchSize, G·outH·outW) hold every image's patches
/// side by side and one GEMM gives Y (outC, G·outH·outW) = weight (outC, patchSize) · columns,
/// scattered to NCHW with the bias added. One GEMM per group instead of per image keeps BLAS's
/// threads busy (per-image GEMMs spent ~40 % of a training step in thread hand-offs).
/// The naive 7-loop reference it is checked against lives in the tests (`naiveConv2d`).
public enum Conv2d {
    /// Column scratch is capped at this many elements per group (16 MB of Float).
    public static let columnBudget = 1 << 22

    /// Images per GEMM for `s`: as many as fit the column budget, at least 1.
    public static func groupSize(_ s: Conv2dShape) -> Int {
        max(1, min(s.batch, columnBudget / max(1, s.patchSize * s.outHeight * s.outWidth)))
    }

    /// Scratch elements `forward` and `backward` need: the columns of one group
    /// (patchSize, G·outH·outW) and its output block (outC, G·outH·outW).
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        groupSize(s) * s.outHeight * s.outWidth * (s.patchSize + s.outChannels)
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
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape,
        scale: UnsafePointer<T>? = nil, shift: UnsafePointer<T>? = nil, relu: Bool = false,
        pooled: UnsafeMutablePointer<T>? = nil
    ) {
        precondition((scale == nil) == (shift == nil), "scale and shift come together")
        let plane = s.outHeight * s.outWidth, g = groupSize(s)
        let inImage = s.inChannels * s.height * s.width, outImage = s.outChannels * plane
        var n0 = 0
        while n0 < s.batch {
            let count = min(g, s.batch - n0), width = count * plane
            let cols = columns, block = columns + g * plane * s.patchSize
            Parallel.forRanges(count, work: width * s.patchSize) { r in
                for j in r { im2col(cols + j * plane, input + (n0 + j) * inImage, s, rowStride: width) }
            }
            T.gemm(transA: false, transB: false, m: s.outChannels, n: width, k: s.patchSize,
                   alpha: 1, a: weight, lda: s.patchSize, b: cols, ldb: width, beta: 0, c: block, ldc: width)
            // Scatter (outC, G·plane) → NCHW with the epilogue, parallel over (image, channel) planes.
            Parallel.forRanges(count * s.outChannels, work: count * outImage) { r in
                for q in r {
                    let j = q / s.outChannels, oc = q % s.outChannels
                    let src = UnsafePointer(block + oc * width + j * plane)
                    // With pooling, the epilogue runs in place in the block and the pool reads it back.
                    let dst = pooled == nil ? output + (n0 + j) * outImage + oc * plane : block + oc * width + j * plane
                    let b = bias?[oc] ?? 0
                    defer {
                        if let pooled {
                            let ph = s.outHeight / 2, pw = s.outWidth / 2
                            maxPool2(pooled + ((n0 + j) * s.outChannels + oc) * ph * pw, UnsafePointer(dst), height: s.outHeight, width: s.outWidth)
                        }
                    }
                    if let scale, let shift {
                        let a = scale[oc], c = b * a + shift[oc]
                        affine(dst, src, plane, a, c, relu: relu)
                    } else {
                        affine(dst, src, plane, 1, b, relu: relu)
                    }
                }
            }
            n0 += count
        }
    }

    /// dst (h/2, w/2) = 2×2 stride-2 max of src (h, w), NaN winning as in `MaxPool2d.forward`.
    @inline(__always)
    static func maxPool2<T: GEMMScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, height: Int, width: Int) {
        let oh = height / 2, ow = width / 2
        for oy in 0..<oh {
            let r0 = src + 2 * oy * width, r1 = r0 + width, d = dst + oy * ow
            for ox in 0..<ow {
                var m = r0[2 * ox]
                var v = r0[2 * ox + 1]; if v > m || (v.isNaN && !m.isNaN) { m = v }
                v = r1[2 * ox]; if v > m || (v.isNaN && !m.isNaN) { m = v }
                v = r1[2 * ox + 1]; if v > m || (v.isNaN && !m.isNaN) { m = v }
                d[ox] = m
            }
        }
    }

    /// dst[i] = src[i]·a + c (then max(·, 0) if relu); the multiply is skipped for a = 1.
    @inline(__always)
    static func affine<T: GEMMScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, _ n: Int, _ a: T, _ c: T, relu: Bool) {
        switch (a == 1, relu) {
        case (true, false): for i in 0..<n { dst[i] = src[i] + c }
        case (true, true): for i in 0..<n { let v = src[i] + c; dst[i] = v < 0 ? 0 : v }
        case (false, false): for i in 0..<n { dst[i] = src[i] * a + c }
        case (false, true): for i in 0..<n { let v = src[i] * a + c; dst[i] = v < 0 ? 0 : v }
        }
    }

    /// Gradients of `forward`, given dOutput = ∂L/∂y:
    /// - dInput (batch, inC, H, W): **written** (=) with col2im(weightᵀ · dOutput); nil to skip
    ///   (first layer).
    /// - dWeight (outC, inC, kH, kW): **adds** (+=) Σ_n dOutput[n] · im2col(x[n])ᵀ.
    /// - dBias (outC): **adds** (+=) Σ_{n, oy, ox} dOutput[n, oc, oy, ox]; nil if the conv has no bias.
    /// - dOutput (batch, outC, outH, outW); input (batch, inC, H, W); weight (outC, inC, kH, kW).
    /// - columns: scratch of `scratchCount(shape)` elements (overwritten).
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape
    ) {
        let plane = s.outHeight * s.outWidth, g = groupSize(s)
        let inImage = s.inChannels * s.height * s.width, outImage = s.outChannels * plane
        if let dBias {
            // Per channel: each plane summed in T (eight partial sums), planes totalled in Double.
            Parallel.forRanges(s.outChannels, work: s.outputCount) { r in
                for oc in r {
                    var total = 0.0
                    for n in 0..<s.batch { total += Double(Parallel.sum(dOutput + n * outImage + oc * plane, plane)) }
                    dBias[oc] += T(total)
                }
            }
        }
        var n0 = 0
        while n0 < s.batch {
            let count = min(g, s.batch - n0), width = count * plane
            let cols = columns, block = columns + g * plane * s.patchSize
            // dY of the group as (outC, G·plane), the GEMM's layout; and the columns of x.
            Parallel.forRanges(count, work: width * (s.patchSize + s.outChannels)) { r in
                for j in r {
                    let dy = dOutput + (n0 + j) * outImage
                    for oc in 0..<s.outChannels { (block + oc * width + j * plane).update(from: dy + oc * plane, count: plane) }
                    im2col(cols + j * plane, input + (n0 + j) * inImage, s, rowStride: width)
                }
            }
            // dW (outC, patch) += dY (outC, G·plane) · colsᵀ (G·plane, patch)
            T.gemm(transA: false, transB: true, m: s.outChannels, n: s.patchSize, k: width,
                   alpha: 1, a: block, lda: width, b: cols, ldb: width, beta: 1, c: dWeight, ldc: s.patchSize)
            if let dInput {
                // dCols (patch, G·plane) = Wᵀ (patch, outC) · dY (outC, G·plane), then col2im per image.
                T.gemm(transA: true, transB: false, m: s.patchSize, n: width, k: s.outChannels,
                       alpha: 1, a: weight, lda: s.patchSize, b: block, ldb: width, beta: 0, c: cols, ldc: width)
                Parallel.forRanges(count, work: width * s.patchSize) { r in
                    for j in r {
                        let dx = dInput + (n0 + j) * inImage
                        dx.update(repeating: 0, count: inImage)
                        col2im(dx, UnsafePointer(cols + j * plane), s, rowStride: width)
                    }
                }
            }
            n0 += count
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
                        let src = xc + (oy * s.stride - s.padding + ky) * s.width
                        for ox in 0..<xLo { r[ox] = 0 }
                        if s.stride == 1 {
                            for ox in xLo..<xHi { r[ox] = src[ox + xOff] }
                        } else {
                            for ox in xLo..<xHi { r[ox] = src[ox * s.stride + xOff] }
                        }
                        for ox in xHi..<ow { r[ox] = 0 }
                    }
                }
            }
        }
    }

    /// The adjoint of `im2col`: dx[ic, iy, ix] += every columns entry that copied x[ic, iy, ix].
    /// One image, rows `rowStride` apart.
    static func col2im<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ columns: UnsafePointer<T>, _ s: Conv2dShape, rowStride plane: Int) {
        let oh = s.outHeight, ow = s.outWidth
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
                        let dst = dxc + (oy * s.stride - s.padding + ky) * s.width
                        if s.stride == 1 {
                            for ox in xLo..<xHi { dst[ox + xOff] += r[ox] }
                        } else {
                            for ox in xLo..<xHi { dst[ox * s.stride + xOff] += r[ox] }
                        }
                    }
                }
            }
        }
    }
}
