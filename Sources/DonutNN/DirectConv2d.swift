import DonutBLAS
import DonutKernelsAVX2

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

    /// Threads of the direct path: one image at a time each.
    static func directWorkers(_ s: Conv2dShape) -> Int { max(1, min(Parallel.threads, s.batch)) }

    /// Elements of one worker's scratch: forward, the zero-padded input planes of an image
    /// (inC, H + 2p, W + 2p) and one output plane (the pooled epilogue's); backward, the padded
    /// output-gradient planes (outC, outH + 2q, outW + 2q), q = k − 1 − p.
    static func directWorkerScratch(_ s: Conv2dShape) -> Int {
        let forward = s.inChannels * (s.height + 2 * s.padding) * (s.width + 2 * s.padding) + s.outHeight * s.outWidth
        let backward = s.outChannels * (s.outHeight + 2 * (s.kernelH - 1 - s.padding)) * (s.outWidth + 2 * (s.kernelW - 1 - s.padding))
        return max(forward, backward)
    }

    /// Direct path scratch: one worker scratch per thread, then one weight gradient partial per
    /// image, then the rotated weights (backward).
    static func directScratchCount(_ s: Conv2dShape) -> Int {
        directWorkers(s) * directWorkerScratch(s) + (s.batch + 1) * s.weightCount
    }

    /// The zero-padded plane (h + 2, w + 2) of src (h, w), w even, as its even and odd columns,
    /// rows of w/2 + 1 (`stencil3x3Pool`'s layout): padded column 2j + 1 is src column 2j, 2j
    /// src column 2j − 1.
    static func padPlaneEvenOdd(_ even: UnsafeMutablePointer<Float>, _ odd: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>,
                                _ h: Int, _ w: Int) {
        let xw = w / 2 + 1
        for r in 0..<(h + 2) {
            let e = even + r * xw, o = odd + r * xw
            guard r >= 1 && r <= h else { e.update(repeating: 0, count: xw); o.update(repeating: 0, count: xw); continue }
            UpsampleConv2d.deinterleaveRow(o, e + 1, src + (r - 1) * w, w / 2)
            e[0] = 0; o[w / 2] = 0
        }
    }

    /// dst (h + 2·padY, w + 2·padX) = src (h, w) with a zero border (a negative padding crops).
    @inline(__always)
    static func padPlane<T: GEMMScalar>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, _ h: Int, _ w: Int, padY: Int, padX: Int) {
        let ph = h + 2 * padY, pw = w + 2 * padX
        for y in 0..<ph {
            let row = dst + y * pw, sy = y - padY
            guard sy >= 0 && sy < h else { row.update(repeating: 0, count: pw); continue }
            let lo = min(pw, max(0, padX)), hi = max(lo, min(pw, w + padX))
            let from = src + sy * w - padX
            for x in 0..<lo { row[x] = 0 }
            for x in lo..<hi { row[x] = from[x] }
            for x in hi..<pw { row[x] = 0 }
        }
    }

    /// y (yh, yw) += Σ_{ky < kh, kx < kw} w[ky·kw + kx] · x[oy + ky, ox + kx] (= when not
    /// `accumulate`: the first input plane of a sum needs no zeroed output): the "valid" stencil of
    /// a zero-padded plane x, rows `xw` apart (yh = its height − kh + 1). The forward conv of one
    /// (output, input) plane pair runs it on the input padded by `padding`; its adjoint (the input
    /// gradient) on dy padded by k − 1 − padding with the kernel rotated (`flipped`). Every
    /// pixel takes the 8-wide SIMD loop (scalar tail); 3×3 kernels do all nine taps in one pass.
    /// `avx2` (a path with `ConvolutionPath.usesAVX2`, so T is Float), 3×3 or 2×2:
    /// `StencilAVX2.stencil3x3` / `stencil2x2` (fused multiply-adds, 8 lanes).
    @inline(__always)
    static func stencil<T: GEMMScalar>(_ y: UnsafeMutablePointer<T>, _ yh: Int, _ yw: Int, _ x: UnsafePointer<T>, _ xw: Int,
                                       _ w: UnsafePointer<T>, _ kh: Int, _ kw: Int, accumulate: Bool = true, avx2: Bool) {
        if T.self == Float.self && avx2 {
            if kh == 3 && kw == 3 { StencilAVX2.stencil3x3(y.float, yh, yw, x.float, xw, w.float, accumulate: accumulate); return }
            if kh == 2 && kw == 2 { StencilAVX2.stencil2x2(y.float, yh, yw, x.float, xw, w.float, accumulate: accumulate); return }
        }
        if !accumulate && !(kh == 3 && kw == 3) { y.update(repeating: 0, count: yh * yw) }
        let fresh = !accumulate && kh == 3 && kw == 3
        for oy in 0..<yh {
            let dst = y + oy * yw, top = x + oy * xw
            if kh == 3 && kw == 3 {
                let r0 = top, r1 = top + xw, r2 = top + 2 * xw
                let w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8]
                let v0 = SIMD8<T>(repeating: w0), v1 = SIMD8<T>(repeating: w1), v2 = SIMD8<T>(repeating: w2)
                let v3 = SIMD8<T>(repeating: w3), v4 = SIMD8<T>(repeating: w4), v5 = SIMD8<T>(repeating: w5)
                let v6 = SIMD8<T>(repeating: w6), v7 = SIMD8<T>(repeating: w7), v8 = SIMD8<T>(repeating: w8)
                var ox = 0
                while ox + 8 <= yw {
                    var acc: SIMD8<T> = fresh ? .zero : load8(dst + ox)
                    acc += v0 * load8(r0 + ox); acc += v1 * load8(r0 + ox + 1); acc += v2 * load8(r0 + ox + 2)
                    acc += v3 * load8(r1 + ox); acc += v4 * load8(r1 + ox + 1); acc += v5 * load8(r1 + ox + 2)
                    acc += v6 * load8(r2 + ox); acc += v7 * load8(r2 + ox + 1); acc += v8 * load8(r2 + ox + 2)
                    store8(acc, dst + ox)
                    ox += 8
                }
                while ox < yw {
                    var acc: T = fresh ? 0 : dst[ox]
                    acc += w0 * r0[ox]; acc += w1 * r0[ox + 1]; acc += w2 * r0[ox + 2]
                    acc += w3 * r1[ox]; acc += w4 * r1[ox + 1]; acc += w5 * r1[ox + 2]
                    acc += w6 * r2[ox]; acc += w7 * r2[ox + 1]; acc += w8 * r2[ox + 2]
                    dst[ox] = acc
                    ox += 1
                }
            } else {
                for ky in 0..<kh {
                    for kx in 0..<kw {
                        let src = top + ky * xw + kx, wt = w[ky * kw + kx], vt = SIMD8<T>(repeating: wt)
                        var ox = 0
                        while ox + 8 <= yw { let v: SIMD8<T> = load8(dst + ox) + vt * load8(src + ox); store8(v, dst + ox); ox += 8 }
                        while ox < yw { dst[ox] += wt * src[ox]; ox += 1 }
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

    /// g[ky·kw + kx] = Σ_{oy < yh, ox < yw} dy[oy, ox] · xp[oy + ky, ox + kx] (written): the weight
    /// gradient of one (output plane, input plane) pair, xp the input zero-padded as in the forward
    /// (rows `xw` apart). 3×3 kernels take all nine taps in one pass over dy (nine 8-lane partial
    /// sums, each dy vector loaded once); other kernels one tap at a time (`dot` per row).
    /// `avx2` (Float), 3×3 or 2×2: `StencilAVX2.stencilGradient3x3` / `stencilGradient2x2`.
    @inline(__always)
    static func stencilGradient<T: GEMMScalar>(_ g: UnsafeMutablePointer<T>, _ dy: UnsafePointer<T>, _ yh: Int, _ yw: Int,
                                               _ xp: UnsafePointer<T>, _ xw: Int, _ kh: Int, _ kw: Int, avx2: Bool) {
        if T.self == Float.self && avx2 {
            if kh == 3 && kw == 3 { StencilAVX2.stencilGradient3x3(g.float, dy.float, yh, yw, xp.float, xw); return }
            if kh == 2 && kw == 2 { StencilAVX2.stencilGradient2x2(g.float, dy.float, yh, yw, xp.float, xw); return }
        }
        guard kh == 3 && kw == 3 else {
            for t in 0..<(kh * kw) {
                var total = T(0)
                for oy in 0..<yh { total += dot(dy + oy * yw, xp + (oy + t / kw) * xw + t % kw, yw) }
                g[t] = total
            }
            return
        }
        var a0 = SIMD8<T>.zero, a1 = SIMD8<T>.zero, a2 = SIMD8<T>.zero, a3 = SIMD8<T>.zero, a4 = SIMD8<T>.zero
        var a5 = SIMD8<T>.zero, a6 = SIMD8<T>.zero, a7 = SIMD8<T>.zero, a8 = SIMD8<T>.zero
        var t0 = T(0), t1 = T(0), t2 = T(0), t3 = T(0), t4 = T(0), t5 = T(0), t6 = T(0), t7 = T(0), t8 = T(0)
        for oy in 0..<yh {
            let d = dy + oy * yw, r0 = xp + oy * xw, r1 = r0 + xw, r2 = r1 + xw
            var ox = 0
            while ox + 8 <= yw {
                let v: SIMD8<T> = load8(d + ox)
                a0 += v * load8(r0 + ox); a1 += v * load8(r0 + ox + 1); a2 += v * load8(r0 + ox + 2)
                a3 += v * load8(r1 + ox); a4 += v * load8(r1 + ox + 1); a5 += v * load8(r1 + ox + 2)
                a6 += v * load8(r2 + ox); a7 += v * load8(r2 + ox + 1); a8 += v * load8(r2 + ox + 2)
                ox += 8
            }
            while ox < yw {
                let v = d[ox]
                t0 += v * r0[ox]; t1 += v * r0[ox + 1]; t2 += v * r0[ox + 2]
                t3 += v * r1[ox]; t4 += v * r1[ox + 1]; t5 += v * r1[ox + 2]
                t6 += v * r2[ox]; t7 += v * r2[ox + 1]; t8 += v * r2[ox + 2]
                ox += 1
            }
        }
        g[0] = lanes(a0) + t0; g[1] = lanes(a1) + t1; g[2] = lanes(a2) + t2
        g[3] = lanes(a3) + t3; g[4] = lanes(a4) + t4; g[5] = lanes(a5) + t5
        g[6] = lanes(a6) + t6; g[7] = lanes(a7) + t7; g[8] = lanes(a8) + t8
    }

    /// The sum of v's eight lanes, added pairwise.
    @inline(__always)
    static func lanes<T: GEMMScalar>(_ v: SIMD8<T>) -> T {
        let h = v.lowHalf + v.highHalf, q = h.lowHalf + h.highHalf
        return q[0] + q[1]
    }

    /// Σ a[i]·b[i] over 0..<n: eight-lane SIMD partial sums, lanes added pairwise at the end.
    @inline(__always)
    static func dot<T: GEMMScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ n: Int) -> T {
        var acc = SIMD8<T>(repeating: 0)
        var i = 0
        while i + 8 <= n { acc += load8(a + i) * load8(b + i); i += 8 }
        var tail = T(0)
        while i < n { tail += a[i] * b[i]; i += 1 }
        return lanes(acc) + tail
    }

    /// `forward` on the direct path (same contract), parallel over images: each image's input
    /// planes are zero-padded once into the worker's scratch, then every output plane is a sum
    /// of valid stencils. `path`: `.stencil`, `.stencilAVX2` or `.pooledStencilAVX2` (with `pooled`).
    static func forwardDirect<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        scratch: UnsafeMutablePointer<T>, shape s: Conv2dShape,
        scale: UnsafePointer<T>?, shift: UnsafePointer<T>?, relu: Bool, pooled: UnsafeMutablePointer<T>?,
        statistics: UnsafeMutablePointer<Double>?, path: ConvolutionPath
    ) {
        precondition(path != .pooledStencilAVX2 || (pooled != nil && statistics == nil), "the pooled stencil needs `pooled` and no statistics")
        Parallel.forWorkers(s.batch, workers: directWorkers(s),
                            DirectForward(output: output, input: input, weight: weight, bias: bias, scratch: scratch, shape: s,
                                          scale: scale, shift: shift, relu: relu, pooled: pooled, statistics: statistics,
                                          avx2: path.usesAVX2, pooledStencil: path == .pooledStencilAVX2))
    }

    /// `forwardDirect` on a worker's run of images.
    struct DirectForward<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?
        let scratch: UnsafeMutablePointer<T>, shape: Conv2dShape
        let scale: UnsafePointer<T>?, shift: UnsafePointer<T>?, relu: Bool, pooled: UnsafeMutablePointer<T>?
        let statistics: UnsafeMutablePointer<Double>?
        /// The AVX2 stencils; the pooled stencil (`.pooledStencilAVX2`).
        let avx2: Bool, pooledStencil: Bool

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, plane = s.outHeight * s.outWidth, inPlane = s.height * s.width, taps = s.kernelH * s.kernelW
            let pw = s.width + 2 * s.padding, padded = (s.height + 2 * s.padding) * pw
            let pooledPlane = (s.outHeight / 2) * (s.outWidth / 2)
            let xp = scratch + worker * directWorkerScratch(s), full = xp + s.inChannels * padded
            let evenOdd = T.self == Float.self && pooledStencil
            for n in images {
                if evenOdd, let pooled {
                    // One input plane, pooled epilogue: the conv planes are never stored (`stencil3x3Pool`).
                    let xw = s.width / 2 + 1, even = xp.float, odd = even + (s.height + 2) * xw
                    padPlaneEvenOdd(even, odd, (input + n * inPlane).float, s.height, s.width)
                    for oc in 0..<s.outChannels {
                        let (a, c) = epilogue(channel: oc, bias: bias, scale: scale, shift: shift), q = n * s.outChannels + oc
                        StencilAVX2.stencil3x3Pool((pooled + q * pooledPlane).float, s.outHeight / 2, s.outWidth / 2, even: even, odd: odd, xw,
                                                   (weight + oc * taps).float, lowest: a < 0)
                        affine(pooled + q * pooledPlane, UnsafePointer(pooled + q * pooledPlane), pooledPlane, a, c, relu: relu)
                    }
                    continue
                }
                for ic in 0..<s.inChannels {
                    padPlane(xp + ic * padded, input + (n * s.inChannels + ic) * inPlane, s.height, s.width, padY: s.padding, padX: s.padding)
                }
                for oc in 0..<s.outChannels {
                    let q = n * s.outChannels + oc
                    // With pooling, the full-size plane lives only in this worker's scratch.
                    let y = pooled == nil ? output + q * plane : full
                    for ic in 0..<s.inChannels {
                        stencil(y, s.outHeight, s.outWidth, xp + ic * padded, pw, weight + (oc * s.inChannels + ic) * taps,
                                s.kernelH, s.kernelW, accumulate: ic > 0, avx2: avx2)
                    }
                    finishPlane(y, y, channel: oc, bias: bias, scale: scale, shift: shift, relu: relu,
                                pooled: pooled.map { $0 + q * pooledPlane }, statistics: statistics.map { $0 + 2 * q }, s)
                }
            }
        }
    }

    /// `backward` on the direct path without the bias gradient (same contract otherwise), parallel
    /// over images: input gradients by the adjoint stencil, weight gradients one partial per
    /// image (summed in image order).
    static func backwardDirect<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        scratch: UnsafeMutablePointer<T>, shape s: Conv2dShape, avx2: Bool
    ) {
        let taps = s.kernelH * s.kernelW
        let partials = scratch + directWorkers(s) * directWorkerScratch(s), flips = partials + s.batch * s.weightCount
        if dInput != nil {
            // Rotated kernels, (outC, inC, kH, kW) each flipped in place order: the adjoint stencil's.
            for k in 0..<(s.outChannels * s.inChannels) { flipped(weight + k * taps, count: taps, into: flips + k * taps) }
        }
        Parallel.forWorkers(s.batch, workers: directWorkers(s),
                            DirectBackward(dInput: dInput, partials: partials, dOutput: dOutput, input: input, flips: flips,
                                           scratch: scratch, shape: s, avx2: avx2))
        addPartials(dWeight, partials, count: s.weightCount, partials: s.batch)
    }

    /// `backwardDirect` on a worker's run of images: per image, the weight-gradient partial from
    /// the input padded as in the forward, then (unless first layer) the input gradient, each
    /// input plane the sum of the rotated-kernel stencils of the output-gradient planes padded by
    /// k − 1 − padding.
    struct DirectBackward<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>?, partials: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, flips: UnsafePointer<T>
        let scratch: UnsafeMutablePointer<T>, shape: Conv2dShape
        /// The AVX2 stencils (`.stencilAVX2`).
        let avx2: Bool

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, plane = s.outHeight * s.outWidth, inPlane = s.height * s.width, taps = s.kernelH * s.kernelW
            let work = scratch + worker * directWorkerScratch(s)
            let xw = s.width + 2 * s.padding, xPadded = (s.height + 2 * s.padding) * xw
            let qy = s.kernelH - 1 - s.padding, qx = s.kernelW - 1 - s.padding
            let dyw = s.outWidth + 2 * qx, dyPadded = (s.outHeight + 2 * qy) * dyw
            for n in images {
                for ic in 0..<s.inChannels {
                    padPlane(work + ic * xPadded, input + (n * s.inChannels + ic) * inPlane, s.height, s.width, padY: s.padding, padX: s.padding)
                }
                let g = partials + n * s.weightCount
                for oc in 0..<s.outChannels {
                    for ic in 0..<s.inChannels {
                        stencilGradient(g + (oc * s.inChannels + ic) * taps, dOutput + (n * s.outChannels + oc) * plane,
                                        s.outHeight, s.outWidth, work + ic * xPadded, xw, s.kernelH, s.kernelW, avx2: avx2)
                    }
                }
                guard let dInput else { continue }
                for oc in 0..<s.outChannels {
                    padPlane(work + oc * dyPadded, dOutput + (n * s.outChannels + oc) * plane, s.outHeight, s.outWidth, padY: qy, padX: qx)
                }
                for ic in 0..<s.inChannels {
                    let dx = dInput + (n * s.inChannels + ic) * inPlane
                    for oc in 0..<s.outChannels {
                        stencil(dx, s.height, s.width, work + oc * dyPadded, dyw, flips + (oc * s.inChannels + ic) * taps,
                                s.kernelH, s.kernelW, accumulate: oc > 0, avx2: avx2)
                    }
                }
            }
        }
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
