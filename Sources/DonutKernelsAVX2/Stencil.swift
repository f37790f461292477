/// The direct convolution's 3×3 stencils (and `UpsampleConv2d`'s 2×2 ones) in Float, compiled for AVX2 + FMA (this module alone
/// is built with `-target-cpu haswell`; see Package.swift). Swift has no per-function target
/// attribute, so the wide-vector code lives in its own module and `DonutNN` calls it only when
/// the CPU has AVX2 and FMA (`DonutNN.CPUFeatures`, from CPUID); elsewhere the baseline x86-64
/// build (SSE2: 4 lanes, no fused multiply-add) runs the generic kernels in `DirectConv2d`.
/// The entry points are `@inline(never)`: inlined into a caller, the body would be compiled with
/// the caller's baseline flags.
///
/// Same contracts as `Conv2d.stencil` / `Conv2d.stencilGradient` for a 3×3 (2×2) kernel; fused
/// multiply-adds (one rounding instead of two) and, in the forward, the kernel rows summed
/// separately, so results agree with the generic kernels to Float rounding, not bit for bit.
public enum StencilAVX2 {
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }

    /// y (yh, yw) += Σ_{ky, kx < 3} w[3ky + kx] · x[oy + ky, ox + kx] (= when not `accumulate`), x zero-padded
    /// with rows `xw` apart.
    @inline(never)
    public static func stencil3x3(_ y: UnsafeMutablePointer<Float>, _ yh: Int, _ yw: Int, _ x: UnsafePointer<Float>, _ xw: Int,
                                  _ w: UnsafePointer<Float>, accumulate: Bool) {
        let v0 = SIMD8<Float>(repeating: w[0]), v1 = SIMD8<Float>(repeating: w[1]), v2 = SIMD8<Float>(repeating: w[2])
        let v3 = SIMD8<Float>(repeating: w[3]), v4 = SIMD8<Float>(repeating: w[4]), v5 = SIMD8<Float>(repeating: w[5])
        let v6 = SIMD8<Float>(repeating: w[6]), v7 = SIMD8<Float>(repeating: w[7]), v8 = SIMD8<Float>(repeating: w[8])
        // Each kernel row its own chain of three fused multiply-adds, 16 outputs per step: six
        // independent chains instead of one of nine (the FMA latency, not its rate, bound the
        // single chain).
        @inline(__always) func row(_ r: UnsafePointer<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) -> SIMD8<Float> {
            var t = a * load(r)
            t.addProduct(b, load(r + 1)); t.addProduct(c, load(r + 2))
            return t
        }
        for oy in 0..<yh {
            let dst = y + oy * yw, r0 = x + oy * xw, r1 = r0 + xw, r2 = r1 + xw
            var ox = 0
            while ox + 16 <= yw {
                let p = row(r0 + ox, v0, v1, v2), q = row(r1 + ox, v3, v4, v5), r = row(r2 + ox, v6, v7, v8)
                let p2 = row(r0 + ox + 8, v0, v1, v2), q2 = row(r1 + ox + 8, v3, v4, v5), r2v = row(r2 + ox + 8, v6, v7, v8)
                var acc = p + (q + r), acc2 = p2 + (q2 + r2v)
                if accumulate { acc += load(dst + ox); acc2 += load(dst + ox + 8) }
                UnsafeMutableRawPointer(dst + ox).storeBytes(of: acc, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(dst + ox + 8).storeBytes(of: acc2, as: SIMD8<Float>.self)
                ox += 16
            }
            while ox + 8 <= yw {
                var acc = row(r0 + ox, v0, v1, v2) + (row(r1 + ox, v3, v4, v5) + row(r2 + ox, v6, v7, v8))
                if accumulate { acc += load(dst + ox) }
                UnsafeMutableRawPointer(dst + ox).storeBytes(of: acc, as: SIMD8<Float>.self)
                ox += 8
            }
            while ox < yw {
                var acc: Float = accumulate ? dst[ox] : 0
                acc.addProduct(w[0], r0[ox]); acc.addProduct(w[1], r0[ox + 1]); acc.addProduct(w[2], r0[ox + 2])
                acc.addProduct(w[3], r1[ox]); acc.addProduct(w[4], r1[ox + 1]); acc.addProduct(w[5], r1[ox + 2])
                acc.addProduct(w[6], r2[ox]); acc.addProduct(w[7], r2[ox + 1]); acc.addProduct(w[8], r2[ox + 2])
                dst[ox] = acc
                ox += 1
            }
        }
    }

    /// g[3ky + kx] = Σ_{oy < yh, ox < yw} dy[oy, ox] · xp[oy + ky, ox + kx] (written): the weight gradient
    /// of one (output, input) plane pair, nine 8-lane partial sums, dy loaded once per vector.
    @inline(never)
    public static func stencilGradient3x3(_ g: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ yh: Int, _ yw: Int,
                                          _ xp: UnsafePointer<Float>, _ xw: Int) {
        var a0 = SIMD8<Float>.zero, a1 = SIMD8<Float>.zero, a2 = SIMD8<Float>.zero, a3 = SIMD8<Float>.zero, a4 = SIMD8<Float>.zero
        var a5 = SIMD8<Float>.zero, a6 = SIMD8<Float>.zero, a7 = SIMD8<Float>.zero, a8 = SIMD8<Float>.zero
        var t0: Float = 0, t1: Float = 0, t2: Float = 0, t3: Float = 0, t4: Float = 0, t5: Float = 0, t6: Float = 0, t7: Float = 0, t8: Float = 0
        for oy in 0..<yh {
            let d = dy + oy * yw, r0 = xp + oy * xw, r1 = r0 + xw, r2 = r1 + xw
            var ox = 0
            while ox + 8 <= yw {
                let v = load(d + ox)
                a0.addProduct(v, load(r0 + ox)); a1.addProduct(v, load(r0 + ox + 1)); a2.addProduct(v, load(r0 + ox + 2))
                a3.addProduct(v, load(r1 + ox)); a4.addProduct(v, load(r1 + ox + 1)); a5.addProduct(v, load(r1 + ox + 2))
                a6.addProduct(v, load(r2 + ox)); a7.addProduct(v, load(r2 + ox + 1)); a8.addProduct(v, load(r2 + ox + 2))
                ox += 8
            }
            while ox < yw {
                let v = d[ox]
                t0.addProduct(v, r0[ox]); t1.addProduct(v, r0[ox + 1]); t2.addProduct(v, r0[ox + 2])
                t3.addProduct(v, r1[ox]); t4.addProduct(v, r1[ox + 1]); t5.addProduct(v, r1[ox + 2])
                t6.addProduct(v, r2[ox]); t7.addProduct(v, r2[ox + 1]); t8.addProduct(v, r2[ox + 2])
                ox += 1
            }
        }
        g[0] = lanes(a0) + t0; g[1] = lanes(a1) + t1; g[2] = lanes(a2) + t2
        g[3] = lanes(a3) + t3; g[4] = lanes(a4) + t4; g[5] = lanes(a5) + t5
        g[6] = lanes(a6) + t6; g[7] = lanes(a7) + t7; g[8] = lanes(a8) + t8
    }

    /// y (yh, yw) += Σ_{a, b < 2} w[2a + b] · x[oy + a, ox + b] (= when not `accumulate`), rows of x
    /// `xw` apart: the 2×2 stencil of `UpsampleConv2d`'s direct path (one sub-pixel class). The
    /// two kernel rows are separate chains, 16 outputs per step.
    @inline(never)
    public static func stencil2x2(_ y: UnsafeMutablePointer<Float>, _ yh: Int, _ yw: Int, _ x: UnsafePointer<Float>, _ xw: Int,
                                  _ w: UnsafePointer<Float>, accumulate: Bool) {
        let v0 = SIMD8<Float>(repeating: w[0]), v1 = SIMD8<Float>(repeating: w[1])
        let v2 = SIMD8<Float>(repeating: w[2]), v3 = SIMD8<Float>(repeating: w[3])
        @inline(__always) func row(_ r: UnsafePointer<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
            var t = a * load(r)
            t.addProduct(b, load(r + 1))
            return t
        }
        for oy in 0..<yh {
            let dst = y + oy * yw, r0 = x + oy * xw, r1 = r0 + xw
            var ox = 0
            while ox + 16 <= yw {
                var acc = row(r0 + ox, v0, v1) + row(r1 + ox, v2, v3)
                var acc2 = row(r0 + ox + 8, v0, v1) + row(r1 + ox + 8, v2, v3)
                if accumulate { acc += load(dst + ox); acc2 += load(dst + ox + 8) }
                UnsafeMutableRawPointer(dst + ox).storeBytes(of: acc, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(dst + ox + 8).storeBytes(of: acc2, as: SIMD8<Float>.self)
                ox += 16
            }
            while ox + 8 <= yw {
                var acc = row(r0 + ox, v0, v1) + row(r1 + ox, v2, v3)
                if accumulate { acc += load(dst + ox) }
                UnsafeMutableRawPointer(dst + ox).storeBytes(of: acc, as: SIMD8<Float>.self)
                ox += 8
            }
            while ox < yw {
                var acc: Float = accumulate ? dst[ox] : 0
                acc.addProduct(w[0], r0[ox]); acc.addProduct(w[1], r0[ox + 1])
                acc.addProduct(w[2], r1[ox]); acc.addProduct(w[3], r1[ox + 1])
                dst[ox] = acc
                ox += 1
            }
        }
    }

    /// g[2a + b] = Σ_{oy < yh, ox < yw} dy[oy, ox] · xp[oy + a, ox + b] (written): the weight gradient
    /// of one 2×2 stencil, four 8-lane partial sums per half of a 16-output step.
    @inline(never)
    public static func stencilGradient2x2(_ g: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ yh: Int, _ yw: Int,
                                          _ xp: UnsafePointer<Float>, _ xw: Int) {
        var a0 = SIMD8<Float>.zero, a1 = SIMD8<Float>.zero, a2 = SIMD8<Float>.zero, a3 = SIMD8<Float>.zero
        var b0 = SIMD8<Float>.zero, b1 = SIMD8<Float>.zero, b2 = SIMD8<Float>.zero, b3 = SIMD8<Float>.zero
        var t0: Float = 0, t1: Float = 0, t2: Float = 0, t3: Float = 0
        for oy in 0..<yh {
            let d = dy + oy * yw, r0 = xp + oy * xw, r1 = r0 + xw
            var ox = 0
            while ox + 16 <= yw {
                let v = load(d + ox), u = load(d + ox + 8)
                a0.addProduct(v, load(r0 + ox)); a1.addProduct(v, load(r0 + ox + 1))
                a2.addProduct(v, load(r1 + ox)); a3.addProduct(v, load(r1 + ox + 1))
                b0.addProduct(u, load(r0 + ox + 8)); b1.addProduct(u, load(r0 + ox + 9))
                b2.addProduct(u, load(r1 + ox + 8)); b3.addProduct(u, load(r1 + ox + 9))
                ox += 16
            }
            while ox + 8 <= yw {
                let v = load(d + ox)
                a0.addProduct(v, load(r0 + ox)); a1.addProduct(v, load(r0 + ox + 1))
                a2.addProduct(v, load(r1 + ox)); a3.addProduct(v, load(r1 + ox + 1))
                ox += 8
            }
            while ox < yw {
                let v = d[ox]
                t0.addProduct(v, r0[ox]); t1.addProduct(v, r0[ox + 1]); t2.addProduct(v, r1[ox]); t3.addProduct(v, r1[ox + 1])
                ox += 1
            }
        }
        g[0] = lanes(a0 + b0) + t0; g[1] = lanes(a1 + b1) + t1; g[2] = lanes(a2 + b2) + t2; g[3] = lanes(a3 + b3) + t3
    }

    /// pooled (ph, pw) = the 2×2 stride-2 maximum (the minimum if `lowest`; NaN winning, as
    /// `Conv2d.pool2`) of the 3×3 stencil y[oy, ox] = Σ w[3ky + kx]·x[oy + ky, ox + kx] of a
    /// zero-padded plane x of 2ph + 2 rows, y never stored: the inference path of a first conv
    /// (one input channel) with its pooled epilogue, which wrote and re-read y once per output
    /// channel. x comes as its even and odd columns, rows `xw` apart (even[r·xw + j] = x[r, 2j],
    /// odd[r·xw + j] = x[r, 2j + 1], j ≤ pw): y's even columns read (even[j], odd[j], even[j + 1]),
    /// its odd ones (odd[j], even[j + 1], odd[j + 1]), all plain loads, and a pooling window's four
    /// values are one lane of four vectors. Each y vector is `stencil3x3`'s vector arithmetic and
    /// the window is reduced in `pool2Flat`'s order (rows, then columns): the same bits as those
    /// two wherever `stencil3x3` takes its vector loop. pw ≥ 8; a last partial block is
    /// recomputed overlapping the previous one.
    @inline(never)
    public static func stencil3x3Pool(_ pooled: UnsafeMutablePointer<Float>, _ ph: Int, _ pw: Int,
                                      even: UnsafePointer<Float>, odd: UnsafePointer<Float>, _ xw: Int,
                                      _ w: UnsafePointer<Float>, lowest: Bool) {
        precondition(pw >= 8)
        let stencil = EvenOddStencil(w, even: even, odd: odd, xw)
        /// The planes with P's NaN-winning maximum or minimum, chosen once (a branch per window
        /// measured slower).
        @inline(__always) func pool<P: WindowPick>(_: P.Type) {
            for i in 0..<ph {
                let dst = pooled + i * pw
                var j = 0
                while j < pw {
                    if j + 8 > pw { j = pw - 8 }
                    let evenColumns = P.pick(stencil.conv(2 * i, j, oddColumns: false), stencil.conv(2 * i + 1, j, oddColumns: false))
                    let oddColumns = P.pick(stencil.conv(2 * i, j, oddColumns: true), stencil.conv(2 * i + 1, j, oddColumns: true))
                    UnsafeMutableRawPointer(dst + j).storeBytes(of: P.pick(evenColumns, oddColumns), as: SIMD8<Float>.self)
                    j += 8
                }
            }
        }
        if lowest { pool(PickSmaller.self) } else { pool(PickGreater.self) }
    }

    /// The training forward's variant of `stencil3x3Pool` (`ConvBatchNormReLUPool`, one input
    /// plane): x = the stencil + bias (`stencil3x3` accumulating onto a plane of the bias),
    /// y = max(x·scale + shift, 0) (`FloatKernels.affine`: a product, then a sum), and per window
    /// the first maximum of y in window order — top left, top right, bottom left, bottom right; a
    /// NaN over a number (`FloatKernels.maxPool2ArgmaxRow`). Writes the pooled y, its argmax
    /// (the pixel's index in a plane `width` wide, plus indexBase) and x there (pooledInput);
    /// the plane, its normalised rows and the gather of x at the argmax (the previous passes)
    /// are never stored. Layout and overlapped last block as `stencil3x3Pool`.
    @inline(never)
    public static func stencil3x3PoolArgmax(_ pooled: UnsafeMutablePointer<Float>, _ argmax: UnsafeMutablePointer<Int32>,
                                            _ pooledInput: UnsafeMutablePointer<Float>, _ ph: Int, _ pw: Int,
                                            even: UnsafePointer<Float>, odd: UnsafePointer<Float>, _ xw: Int, _ w: UnsafePointer<Float>,
                                            bias: Float, scale: Float, shift: Float, indexBase: Int, width: Int) {
        precondition(pw >= 8)
        let stencil = EvenOddStencil(w, even: even, odd: odd, xw)
        let vb = SIMD8<Float>(repeating: bias), va = SIMD8<Float>(repeating: scale), vc = SIMD8<Float>(repeating: shift)
        let zero = SIMD8<Float>(repeating: 0), lanes = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
        /// x = the stencil + bias (the bias last, as `stencil3x3` accumulating onto it).
        @inline(__always) func conv(_ oy: Int, _ j: Int, oddColumns: Bool) -> SIMD8<Float> {
            var x = stencil.conv(oy, j, oddColumns: oddColumns)
            x += vb
            return x
        }
        @inline(__always) func normalised(_ x: SIMD8<Float>) -> SIMD8<Float> {
            var y = x * va + vc
            y.replace(with: zero, where: y .< zero)
            return y
        }
        for i in 0..<ph {
            var j = 0
            while j < pw {
                if j + 8 > pw { j = pw - 8 }
                let top = Int32(truncatingIfNeeded: indexBase + 2 * i * width + 2 * j), bottom = top &+ Int32(truncatingIfNeeded: width)
                var x = conv(2 * i, j, oddColumns: false), m = normalised(x), index = lanes &+ top
                let topOdd = conv(2 * i, j, oddColumns: true), bottomEven = conv(2 * i + 1, j, oddColumns: false)
                let bottomOdd = conv(2 * i + 1, j, oddColumns: true)
                consider(topOdd, normalised(topOdd), lanes &+ (top &+ 1), &x, &m, &index)
                consider(bottomEven, normalised(bottomEven), lanes &+ bottom, &x, &m, &index)
                consider(bottomOdd, normalised(bottomOdd), lanes &+ (bottom &+ 1), &x, &m, &index)
                let o = i * pw + j
                UnsafeMutableRawPointer(pooled + o).storeBytes(of: m, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(argmax + o).storeBytes(of: index, as: SIMD8<Int32>.self)
                UnsafeMutableRawPointer(pooledInput + o).storeBytes(of: x, as: SIMD8<Float>.self)
                j += 8
            }
        }
    }

    /// Lanes where y beats the running maximum m (greater, or NaN over a number) take y, its
    /// index k and its x v (`FloatKernels.considerMax`; not a local function capturing m: debug
    /// builds box captured variables, one allocation each).
    @inline(__always)
    static func consider(_ v: SIMD8<Float>, _ y: SIMD8<Float>, _ k: SIMD8<Int32>,
                         _ x: inout SIMD8<Float>, _ m: inout SIMD8<Float>, _ index: inout SIMD8<Int32>) {
        let take = (y .> m) .| ((y .!= y) .& (m .== m))
        m.replace(with: y, where: take); index.replace(with: k, where: take); x.replace(with: v, where: take)
    }

    /// Σ a[i]·b[i] over n values: four 8-lane fused multiply-add chains, then the tail
    /// (`ConvBatchNormReLUPool`'s patch Gram matrix).
    @inline(never)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = SIMD8<Float>(), s1 = s0, s2 = s0, s3 = s0
        var i = 0
        while i + 32 <= n {
            s0.addProduct(load(a + i), load(b + i)); s1.addProduct(load(a + i + 8), load(b + i + 8))
            s2.addProduct(load(a + i + 16), load(b + i + 16)); s3.addProduct(load(a + i + 24), load(b + i + 24))
            i += 32
        }
        while i + 8 <= n { s0.addProduct(load(a + i), load(b + i)); i += 8 }
        var tail: Float = 0
        while i < n { tail += a[i] * b[i]; i += 1 }
        return lanes((s0 + s1) + (s2 + s3)) + tail
    }

    /// The sum of v's eight lanes, added pairwise (as `Conv2d.lanes`).
    @inline(__always)
    static func lanes(_ v: SIMD8<Float>) -> Float {
        let h = v.lowHalf + v.highHalf, q = h.lowHalf + h.highHalf
        return q[0] + q[1]
    }
}

/// A pooling window's winner of two 8-lane values: a, or b where b wins (`Conv2d.pool2`'s rule:
/// greater, or smaller for a minimum; a NaN b beats a number, a NaN a stays).
protocol WindowPick { static func pick(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> }

enum PickGreater: WindowPick {
    @inline(__always)
    static func pick(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: (b .> a) .| ((b .!= b) .& (a .== a))) }
}

enum PickSmaller: WindowPick {
    @inline(__always)
    static func pick(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: (b .< a) .| ((b .!= b) .& (a .== a))) }
}

/// A 3×3 kernel's taps as 8-lane broadcasts over a padded plane given as its even and odd columns
/// (`StencilAVX2.stencil3x3Pool`'s layout): y at row oy, columns 2(j + l) + parity, l < 8, with
/// `stencil3x3`'s vector arithmetic (each kernel row a product and two fused multiply-adds, the
/// rows summed as p + (q + r)).
struct EvenOddStencil {
    let v0: SIMD8<Float>, v1: SIMD8<Float>, v2: SIMD8<Float>, v3: SIMD8<Float>, v4: SIMD8<Float>
    let v5: SIMD8<Float>, v6: SIMD8<Float>, v7: SIMD8<Float>, v8: SIMD8<Float>
    let even: UnsafePointer<Float>, odd: UnsafePointer<Float>, xw: Int

    @inline(__always)
    init(_ w: UnsafePointer<Float>, even: UnsafePointer<Float>, odd: UnsafePointer<Float>, _ xw: Int) {
        v0 = SIMD8(repeating: w[0]); v1 = SIMD8(repeating: w[1]); v2 = SIMD8(repeating: w[2])
        v3 = SIMD8(repeating: w[3]); v4 = SIMD8(repeating: w[4]); v5 = SIMD8(repeating: w[5])
        v6 = SIMD8(repeating: w[6]); v7 = SIMD8(repeating: w[7]); v8 = SIMD8(repeating: w[8])
        self.even = even; self.odd = odd; self.xw = xw
    }

    @inline(__always)
    func row(_ x0: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, _ x2: UnsafePointer<Float>,
             _ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) -> SIMD8<Float> {
        var t = a * StencilAVX2.load(x0)
        t.addProduct(b, StencilAVX2.load(x1)); t.addProduct(c, StencilAVX2.load(x2))
        return t
    }

    /// Even columns read (even[j], odd[j], even[j + 1]) of each row, odd ones (odd[j], even[j + 1], odd[j + 1]).
    @inline(__always)
    func conv(_ oy: Int, _ j: Int, oddColumns: Bool) -> SIMD8<Float> {
        let e = even + oy * xw + j, o = odd + oy * xw + j
        let x0 = oddColumns ? o : e, x1 = oddColumns ? e + 1 : o, x2 = oddColumns ? o + 1 : e + 1
        let p = row(x0, x1, x2, v0, v1, v2), q = row(x0 + xw, x1 + xw, x2 + xw, v3, v4, v5)
        let r = row(x0 + 2 * xw, x1 + 2 * xw, x2 + 2 * xw, v6, v7, v8)
        return p + (q + r)
    }
}
