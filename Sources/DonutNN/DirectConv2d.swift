import DonutBLAS

/// Direct (stencil) convolution for the shapes where im2col + GEMM is a poor fit: stride 1 with
/// one input channel (the encoder's first conv: a K = 9 GEMM) or one output channel (the
/// decoder's last: an M = 1 GEMM over 144-row columns, ~38 MB of im2col per pass at batch 16).
/// Each tap (ky, kx) is a shifted plane added with one weight, a contiguous row loop that
/// vectorises (`stencil`); planes stay in L1. Same results as `Conv2d`'s GEMM path up to summation order,
/// and the same determinism rules: every plane is computed whole by one thread, the weight
/// gradient is one partial per image summed in image order.
extension Conv2d {
    /// Whether `forward`/`backward` take the direct path for `s`.
    public static func usesDirect(_ s: Conv2dShape) -> Bool {
        s.stride == 1 && (s.inChannels == 1 || s.outChannels == 1)
    }

    /// Direct path scratch: one output plane per thread (the pooled epilogue), then one weight
    /// gradient partial per image, then the rotated weights (backward).
    static func directScratchCount(_ s: Conv2dShape) -> Int {
        max(1, min(Parallel.threads, s.batch * s.outChannels)) * s.outHeight * s.outWidth + (s.batch + 1) * s.weightCount
    }

    /// y (yh, yw) += Σ_{ky < kh, kx < kw} w[ky·kw + kx] · x[oy − padY + ky, ox − padX + kx], x (xh, xw)
    /// zero outside. The forward conv of one (output, input) plane pair is
    /// `stencil(y, outH, outW, x, H, W, w, padding, padding)`; its adjoint (the input gradient) is
    /// the same stencil of dy with the kernel flipped and padding k − 1 − padding (`flipped`).
    /// Interior pixels (every tap inside x) take an 8-wide SIMD loop, 3×3 kernels all nine taps
    /// in one pass; border pixels a scalar loop with bounds checks.
    @inline(__always)
    static func stencil<T: GEMMScalar>(_ y: UnsafeMutablePointer<T>, _ yh: Int, _ yw: Int,
                                       _ x: UnsafePointer<T>, _ xh: Int, _ xw: Int,
                                       _ w: UnsafePointer<T>, _ kh: Int, _ kw: Int, padY: Int, padX: Int) {
        let rowLo = min(yh, max(0, padY)), rowHi = max(rowLo, min(yh, xh - kh + 1 + padY))
        let colLo = min(yw, max(0, padX)), colHi = max(colLo, min(yw, xw - kw + 1 + padX))
        @inline(__always) func border(_ oy: Int, _ ox: Int) {
            var acc = y[oy * yw + ox]
            for ky in 0..<kh {
                let iy = oy - padY + ky
                guard iy >= 0 && iy < xh else { continue }
                for kx in 0..<kw {
                    let ix = ox - padX + kx
                    if ix >= 0 && ix < xw { acc += w[ky * kw + kx] * x[iy * xw + ix] }
                }
            }
            y[oy * yw + ox] = acc
        }
        for oy in 0..<yh {
            guard oy >= rowLo && oy < rowHi else {
                for ox in 0..<yw { border(oy, ox) }
                continue
            }
            for ox in 0..<colLo { border(oy, ox) }
            for ox in colHi..<yw { border(oy, ox) }
            // Interior: x row pointers already shifted by the tap offsets.
            let dst = y + oy * yw, top = x + (oy - padY) * xw - padX
            if kh == 3 && kw == 3 {
                let r0 = top, r1 = top + xw, r2 = top + 2 * xw
                let w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8]
                let v0 = SIMD8<T>(repeating: w0), v1 = SIMD8<T>(repeating: w1), v2 = SIMD8<T>(repeating: w2)
                let v3 = SIMD8<T>(repeating: w3), v4 = SIMD8<T>(repeating: w4), v5 = SIMD8<T>(repeating: w5)
                let v6 = SIMD8<T>(repeating: w6), v7 = SIMD8<T>(repeating: w7), v8 = SIMD8<T>(repeating: w8)
                var ox = colLo
                while ox + 8 <= colHi {
                    var acc: SIMD8<T> = load8(dst + ox)
                    acc += v0 * load8(r0 + ox); acc += v1 * load8(r0 + ox + 1); acc += v2 * load8(r0 + ox + 2)
                    acc += v3 * load8(r1 + ox); acc += v4 * load8(r1 + ox + 1); acc += v5 * load8(r1 + ox + 2)
                    acc += v6 * load8(r2 + ox); acc += v7 * load8(r2 + ox + 1); acc += v8 * load8(r2 + ox + 2)
                    store8(acc, dst + ox)
                    ox += 8
                }
                while ox < colHi {
                    var acc: T = dst[ox]
                    acc += w0 * r0[ox]; acc += w1 * r0[ox + 1]; acc += w2 * r0[ox + 2]
                    acc += w3 * r1[ox]; acc += w4 * r1[ox + 1]; acc += w5 * r1[ox + 2]
                    acc += w6 * r2[ox]; acc += w7 * r2[ox + 1]; acc += w8 * r2[ox + 2]
                    dst[ox] = acc
                    ox += 1
                }
            } else {
                for ky in 0..<kh {
                    for kx in 0..<kw {
                        let src = top + ky * xw + kx, wt = w[ky * kw + kx]
                        var ox = colLo
                        let vt = SIMD8<T>(repeating: wt)
                        while ox + 8 <= colHi { let v: SIMD8<T> = load8(dst + ox) + vt * load8(src + ox); store8(v, dst + ox); ox += 8 }
                        while ox < colHi { dst[ox] += wt * src[ox]; ox += 1 }
                    }
                }
            }
        }
    }

    /// The kernel (kh, kw) rotated by 180° into `into`: the adjoint stencil's weights.
    @inline(__always)
    static func flipped<T: GEMMScalar>(_ w: UnsafePointer<T>, count: Int, into: UnsafeMutablePointer<T>) {
        for i in 0..<count { into[i] = w[count - 1 - i] }
    }

    /// g[ky, kx] += Σ_{oy, ox} dy[oy, ox] · x[oy + ky − padding, ox + kx − padding]: the weight
    /// gradient of one (output plane, input plane) pair; each row a dot product with SIMD partial sums.
    @inline(__always)
    static func addStencilGradient<T: GEMMScalar>(_ g: UnsafeMutablePointer<T>, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ s: Conv2dShape) {
        for ky in 0..<s.kernelH {
            let (yLo, yHi) = validRange(offset: ky - s.padding, stride: 1, size: s.height, count: s.outHeight)
            for kx in 0..<s.kernelW {
                let (xLo, xHi) = validRange(offset: kx - s.padding, stride: 1, size: s.width, count: s.outWidth)
                var total = T(0)
                for oy in yLo..<yHi {
                    total += dot(dy + oy * s.outWidth + xLo, x + (oy - s.padding + ky) * s.width + (kx - s.padding) + xLo, xHi - xLo)
                }
                g[ky * s.kernelW + kx] += total
            }
        }
    }

    /// Σ a[i]·b[i] over 0..<n: eight-lane SIMD partial sums, lanes added pairwise at the end.
    @inline(__always)
    static func dot<T: GEMMScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ n: Int) -> T {
        var acc = SIMD8<T>(repeating: 0)
        var i = 0
        while i + 8 <= n { acc += load8(a + i) * load8(b + i); i += 8 }
        var tail = T(0)
        while i < n { tail += a[i] * b[i]; i += 1 }
        let h = acc.lowHalf + acc.highHalf, q = h.lowHalf + h.highHalf
        return (q[0] + q[1]) + tail
    }

    /// `forward` on the direct path (same contract), parallel over output planes (image, channel).
    static func forwardDirect<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        scratch: UnsafeMutablePointer<T>, shape s: Conv2dShape,
        scale: UnsafePointer<T>?, shift: UnsafePointer<T>?, relu: Bool, pooled: UnsafeMutablePointer<T>?
    ) {
        let plane = s.outHeight * s.outWidth, inPlane = s.height * s.width, taps = s.kernelH * s.kernelW
        let planes = s.batch * s.outChannels, pooledPlane = (s.outHeight / 2) * (s.outWidth / 2)
        Parallel.forWorkers(planes, workers: Parallel.threads) { worker, range in
            for q in range {
                let n = q / s.outChannels, oc = q % s.outChannels
                // With pooling, the full-size plane lives only in this worker's scratch.
                let y = pooled == nil ? output + q * plane : scratch + worker * plane
                y.update(repeating: 0, count: plane)
                for ic in 0..<s.inChannels {
                    stencil(y, s.outHeight, s.outWidth, input + (n * s.inChannels + ic) * inPlane, s.height, s.width,
                            weight + (oc * s.inChannels + ic) * taps, s.kernelH, s.kernelW, padY: s.padding, padX: s.padding)
                }
                finishPlane(y, UnsafePointer(y), channel: oc, bias: bias, scale: scale, shift: shift, relu: relu,
                            pooled: pooled.map { $0 + q * pooledPlane }, s)
            }
        }
    }

    /// `backward` on the direct path without the bias gradient (same contract otherwise): input
    /// gradients parallel over input planes, weight gradients one partial per image.
    static func backwardDirect<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        scratch: UnsafeMutablePointer<T>, shape s: Conv2dShape
    ) {
        let plane = s.outHeight * s.outWidth, inPlane = s.height * s.width, taps = s.kernelH * s.kernelW
        let partials = scratch + max(1, min(Parallel.threads, s.batch * s.outChannels)) * plane
        if let dInput {
            // Rotated kernels, (outC, inC, kH, kW) each flipped in place order: the adjoint stencil's.
            let flips = partials + s.batch * s.weightCount
            for k in 0..<(s.outChannels * s.inChannels) { flipped(weight + k * taps, count: taps, into: flips + k * taps) }
            Parallel.forWorkers(s.batch * s.inChannels, workers: Parallel.threads) { _, range in
                for q in range {
                    let n = q / s.inChannels, ic = q % s.inChannels, dx = dInput + q * inPlane
                    dx.update(repeating: 0, count: inPlane)
                    for oc in 0..<s.outChannels {
                        stencil(dx, s.height, s.width, dOutput + (n * s.outChannels + oc) * plane, s.outHeight, s.outWidth,
                                flips + (oc * s.inChannels + ic) * taps, s.kernelH, s.kernelW,
                                padY: s.kernelH - 1 - s.padding, padX: s.kernelW - 1 - s.padding)
                    }
                }
            }
        }
        Parallel.forWorkers(s.batch, workers: Parallel.threads) { _, range in
            for n in range {
                let g = partials + n * s.weightCount
                g.update(repeating: 0, count: s.weightCount)
                for oc in 0..<s.outChannels {
                    for ic in 0..<s.inChannels {
                        addStencilGradient(g + (oc * s.inChannels + ic) * taps, dOutput + (n * s.outChannels + oc) * plane,
                                           input + (n * s.inChannels + ic) * inPlane, s)
                    }
                }
            }
        }
        addPartials(dWeight, partials, count: s.weightCount, partials: s.batch)
    }
}

/// 8 consecutive elements from p (unaligned).
@inline(__always)
func load8<T: GEMMScalar>(_ p: UnsafePointer<T>) -> SIMD8<T> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<T>.self) }

/// Stores v to 8 consecutive elements at p (unaligned).
@inline(__always)
func store8<T: GEMMScalar>(_ v: SIMD8<T>, _ p: UnsafeMutablePointer<T>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<T>.self) }

@inline(__always)
func load8<T: GEMMScalar>(_ p: UnsafeMutablePointer<T>) -> SIMD8<T> { load8(UnsafePointer(p)) }
