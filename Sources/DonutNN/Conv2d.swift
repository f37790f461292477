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
    var isPointwise: Bool { kernelH == 1 && kernelW == 1 && stride == 1 && padding == 0 }
}

/// 2-D convolution (cross-correlation, as PyTorch's `Conv2d`) by im2col + one GEMM per image:
/// for image n, columns (patchSize, outH·outW) = im2col(x[n]) and
/// y[n] (outC, outH·outW) = weight (outC, patchSize) · columns + bias[oc].
/// The naive 7-loop reference it is checked against lives in the tests (`naiveConv2d`).
public enum Conv2d {
    /// Scratch elements `forward` and `backward` need for the im2col columns of one image:
    /// (inChannels·kernelH·kernelW, outHeight·outWidth); 0 for a pointwise 1×1 stride-1 unpadded conv
    /// (the image itself is the column matrix).
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        s.isPointwise ? 0 : s.patchSize * s.outHeight * s.outWidth
    }

    /// y[n, oc, oy, ox] = bias[oc] + Σ_{ic, ky, kx} weight[oc, ic, ky, kx] · x[n, ic, oy·stride − padding + ky, ox·stride − padding + kx]
    /// (x = 0 outside the image).
    /// - output (batch, outC, outH, outW): written.
    /// - input (batch, inC, H, W).
    /// - weight (outC, inC, kH, kW); bias (outC) or nil.
    /// - columns: scratch of `scratchCount(shape)` elements (overwritten; nothing is cached for
    ///   backward, which re-forms the columns from the input).
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        columns: UnsafeMutablePointer<T>, shape s: Conv2dShape
    ) {
        let plane = s.outHeight * s.outWidth
        let inImage = s.inChannels * s.height * s.width, outImage = s.outChannels * plane
        for n in 0..<s.batch {
            let x = input + n * inImage, y = output + n * outImage
            let cols: UnsafePointer<T>
            if s.isPointwise { cols = x } else { im2col(columns, x, s); cols = UnsafePointer(columns) }
            T.gemm(transA: false, transB: false, m: s.outChannels, n: plane, k: s.patchSize,
                   alpha: 1, a: weight, lda: s.patchSize, b: cols, ldb: plane, beta: 0, c: y, ldc: plane)
            if let bias {
                for oc in 0..<s.outChannels {
                    let b = bias[oc], row = y + oc * plane
                    for i in 0..<plane { row[i] += b }
                }
            }
        }
    }

    /// Gradients of `forward`, given dOutput = ∂L/∂y:
    /// - dInput (batch, inC, H, W): **written** (=) with col2im(weightᵀ · dOutput[n]); nil to skip
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
        let plane = s.outHeight * s.outWidth
        let inImage = s.inChannels * s.height * s.width, outImage = s.outChannels * plane
        for n in 0..<s.batch {
            let x = input + n * inImage, dy = dOutput + n * outImage
            if let dBias {
                for oc in 0..<s.outChannels {
                    let row = dy + oc * plane
                    var sum = T(0)
                    for i in 0..<plane { sum += row[i] }
                    dBias[oc] += sum
                }
            }
            // dW (outC, patch) += dY (outC, plane) · colsᵀ (plane, patch)
            let cols: UnsafePointer<T>
            if s.isPointwise { cols = x } else { im2col(columns, x, s); cols = UnsafePointer(columns) }
            T.gemm(transA: false, transB: true, m: s.outChannels, n: s.patchSize, k: plane,
                   alpha: 1, a: dy, lda: plane, b: cols, ldb: plane, beta: 1, c: dWeight, ldc: s.patchSize)
            guard let dInput else { continue }
            // dCols (patch, plane) = Wᵀ (patch, outC) · dY (outC, plane), then col2im.
            let dx = dInput + n * inImage
            if s.isPointwise {
                T.gemm(transA: true, transB: false, m: s.patchSize, n: plane, k: s.outChannels,
                       alpha: 1, a: weight, lda: s.patchSize, b: dy, ldb: plane, beta: 0, c: dx, ldc: plane)
            } else {
                T.gemm(transA: true, transB: false, m: s.patchSize, n: plane, k: s.outChannels,
                       alpha: 1, a: weight, lda: s.patchSize, b: dy, ldb: plane, beta: 0, c: columns, ldc: plane)
                dx.update(repeating: 0, count: inImage)
                col2im(dx, UnsafePointer(columns), s)
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
    /// (0 outside). One image; columns (patchSize, outH·outW) written.
    static func im2col<T: GEMMScalar>(_ columns: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ s: Conv2dShape) {
        let oh = s.outHeight, ow = s.outWidth, plane = oh * ow
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

    /// The adjoint of `im2col`: dx[ic, iy, ix] += every columns entry that copied x[ic, iy, ix]. One image.
    static func col2im<T: GEMMScalar>(_ dx: UnsafeMutablePointer<T>, _ columns: UnsafePointer<T>, _ s: Conv2dShape) {
        let oh = s.outHeight, ow = s.outWidth, plane = oh * ow
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
