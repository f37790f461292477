import DonutBLAS

/// Float versions of the epilogue loops with explicit SIMD: comparisons and selects on SIMD
/// vectors compile to vector compares and blends only for concrete scalar types (in generic
/// code, even specialised, they become per-lane loops), and the scalar loops stayed scalar
/// (in place: LLVM's runtime alias check fails; the pool: branches and stride-2 loads).
enum FloatKernels {
    /// dst[i] = src[i]·a + c, then max(·, 0) if relu (NaN passes, as `ReLU`); dst may be src.
    @inline(__always)
    static func affine(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int, _ a: Float, _ c: Float, relu: Bool) {
        let va = SIMD8<Float>(repeating: a), vc = SIMD8<Float>(repeating: c), zero = SIMD8<Float>(repeating: 0)
        var i = 0
        while i + 8 <= n {
            var v = UnsafeRawPointer(src + i).loadUnaligned(as: SIMD8<Float>.self) * va + vc
            if relu { v.replace(with: zero, where: v .< zero) }
            UnsafeMutableRawPointer(dst + i).storeBytes(of: v, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            let v = src[i] * a + c
            dst[i] = relu && v < 0 ? 0 : v
            i += 1
        }
    }

    @inline(__always) static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) static func load4(_ p: UnsafePointer<Float>) -> SIMD4<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self) }
    @inline(__always) static func store4(_ p: UnsafeMutablePointer<Float>, _ v: SIMD4<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self) }
    /// p[2k] = u[k], p[2k + 1] = v[k], k < 4.
    @inline(__always) static func storeInterleaved(_ p: UnsafeMutablePointer<Float>, _ u: SIMD4<Float>, _ v: SIMD4<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: SIMD8(u[0], v[0], u[1], v[1], u[2], v[2], u[3], v[3]), as: SIMD8<Float>.self)
    }

    /// `UpsampleConv2d.interleaveRow` 4 pixel pairs at a time (the affine as `affine`, then an
    /// unpack of the two classes); returns the first j not done.
    @inline(__always)
    static func interleaveRow(_ row: UnsafeMutablePointer<Float>, _ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>,
                              _ w: Int, _ a: Float, _ c: Float, relu: Bool) -> Int {
        let va = SIMD4<Float>(repeating: a), vc = SIMD4<Float>(repeating: c), zero = SIMD4<Float>(repeating: 0)
        var j = 0
        while j + 4 <= w {
            var u = load4(even + j) * va + vc, v = load4(odd + j) * va + vc
            if relu { u.replace(with: zero, where: u .< zero); v.replace(with: zero, where: v .< zero) }
            storeInterleaved(row + 2 * j, u, v)
            j += 4
        }
        return j
    }

    /// `UpsampleConv2d.deinterleaveRow` 4 pixel pairs at a time; returns the first j not done.
    @inline(__always)
    static func deinterleaveRow(_ even: UnsafeMutablePointer<Float>, _ odd: UnsafeMutablePointer<Float>,
                                _ row: UnsafePointer<Float>, _ w: Int) -> Int {
        var j = 0
        while j + 4 <= w {
            let v = load8(row + 2 * j)
            store4(even + j, v.evenHalf); store4(odd + j, v.oddHalf)
            j += 4
        }
        return j
    }

    /// `BatchNorm2d.gradientSums` on one plane in one pass: g = dy, or with y (ReLU fused)
    /// g = dy·[y > 0], stored to dx if given; returns (Σ g, Σ g·(x − μ)) from 16-lane partial sums.
    @inline(__always)
    static func batchNormGradientSums(_ dx: UnsafeMutablePointer<Float>?, _ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>?,
                                      _ x: UnsafePointer<Float>, _ n: Int, _ mu: Float) -> (Float, Float) {
        let zero = SIMD16<Float>(repeating: 0), vmu = SIMD16<Float>(repeating: mu)
        var s = zero, t = zero
        var i = 0
        while i + 16 <= n {
            var g = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD16<Float>.self)
            if let y {
                g = zero.replacing(with: g, where: UnsafeRawPointer(y + i).loadUnaligned(as: SIMD16<Float>.self) .> zero)
                if let dx { UnsafeMutableRawPointer(dx + i).storeBytes(of: g, as: SIMD16<Float>.self) }
            }
            s += g
            t += g * (UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self) - vmu)
            i += 16
        }
        var sTail: Float = 0, tTail: Float = 0
        while i < n {
            var g = dy[i]
            if let y { g = y[i] > 0 ? g : 0; dx?[i] = g }
            sTail += g; tTail += g * (x[i] - mu)
            i += 1
        }
        return (s.sum() + sTail, t.sum() + tTail)
    }

    /// `BatchNorm2d.inputGradient`: dx[i] = k·dy[i] − b − (x[i] − μ)·a (no fused multiply-add, as
    /// the scalar loop: bit-identical); dy may be dx (each block is loaded before it is stored).
    @inline(__always)
    static func batchNormInputGradient(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                                       _ n: Int, _ k: Float, _ b: Float, _ mu: Float, _ a: Float) {
        let vk = SIMD16<Float>(repeating: k), vb = SIMD16<Float>(repeating: b)
        let vmu = SIMD16<Float>(repeating: mu), va = SIMD16<Float>(repeating: a)
        var i = 0
        while i + 16 <= n {
            let g = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD16<Float>.self)
            let v = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(dx + i).storeBytes(of: vk * g - vb - (v - vmu) * va, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n { dx[i] = k * dy[i] - b - (x[i] - mu) * a; i += 1 }
    }

    /// `BatchNormReLUPool.baseGradient`: dx[i] = −b − (x[i] − μ)·a, returns Σ dx (16-lane partial sums).
    @inline(__always)
    static func batchNormBaseGradient(_ dx: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int,
                                      _ b: Float, _ mu: Float, _ a: Float) -> Float {
        let vb = SIMD16<Float>(repeating: b), vmu = SIMD16<Float>(repeating: mu), va = SIMD16<Float>(repeating: a)
        var sum = SIMD16<Float>(repeating: 0)
        var i = 0
        while i + 16 <= n {
            let v = -vb - (UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self) - vmu) * va
            UnsafeMutableRawPointer(dx + i).storeBytes(of: v, as: SIMD16<Float>.self)
            sum += v
            i += 16
        }
        var tail: Float = 0
        while i < n { let v = -b - (x[i] - mu) * a; dx[i] = v; tail += v; i += 1 }
        return sum.sum() + tail
    }

    /// The larger of a and b lane by lane, NaN winning (b replaces a if b > a, or if b is NaN and a is not).
    /// On 4 lanes, the baseline build's vector width: a comparison mask of 8 or 16 Float lanes is
    /// packed and unpacked between the compares and the blend there (three times the instructions).
    @inline(__always)
    static func maxNaN(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> {
        a.replacing(with: b, where: (b .> a) .| ((b .!= b) .& (a .== a)))
    }

    @inline(__always)
    static func maxNaN(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        SIMD8(lowHalf: maxNaN(a.lowHalf, b.lowHalf), highHalf: maxNaN(a.highHalf, b.highHalf))
    }

    @inline(__always)
    static func maxNaN(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        SIMD16(lowHalf: maxNaN(a.lowHalf, b.lowHalf), highHalf: maxNaN(a.highHalf, b.highHalf))
    }

    /// The smaller of a and b lane by lane, NaN winning; 4 lanes at a time as `maxNaN`.
    @inline(__always)
    static func minNaN(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> {
        a.replacing(with: b, where: (b .< a) .| ((b .!= b) .& (a .== a)))
    }

    @inline(__always)
    static func minNaN(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        SIMD8(lowHalf: minNaN(a.lowHalf, b.lowHalf), highHalf: minNaN(a.highHalf, b.highHalf))
    }

    @inline(__always)
    static func minNaN(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        SIMD16(lowHalf: minNaN(a.lowHalf, b.lowHalf), highHalf: minNaN(a.highHalf, b.highHalf))
    }

    /// `MaxPool2d.forward`'s 2×2 stride-2 row in blocks of 8 outputs: d[ox] and argmax[ox] (flat
    /// input index) over input[row0 + 2ox], input[row0 + 2ox + 1], input[row1 + 2ox],
    /// input[row1 + 2ox + 1] in that order, a later element winning only if greater (or NaN over
    /// a number), as the scalar loop; `indexBase` is added to the indices. Returns the first ox not done.
    @inline(__always)
    static func maxPool2ArgmaxRow(_ d: UnsafeMutablePointer<Float>, _ argmax: UnsafeMutablePointer<Int32>, _ input: UnsafePointer<Float>,
                                  row0: Int, row1: Int, outputs: Int, indexBase: Int = 0) -> Int {
        let lanes = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)
        var ox = 0
        while ox + 8 <= outputs {
            let top = UnsafeRawPointer(input + row0 + 2 * ox).loadUnaligned(as: SIMD16<Float>.self)
            let bottom = UnsafeRawPointer(input + row1 + 2 * ox).loadUnaligned(as: SIMD16<Float>.self)
            let i0 = lanes &+ Int32(truncatingIfNeeded: indexBase + row0 + 2 * ox)
            let i1 = lanes &+ Int32(truncatingIfNeeded: indexBase + row1 + 2 * ox)
            var m = top.evenHalf, index = i0
            considerMax(top.oddHalf, i0 &+ 1, &m, &index)
            considerMax(bottom.evenHalf, i1, &m, &index)
            considerMax(bottom.oddHalf, i1 &+ 1, &m, &index)
            UnsafeMutableRawPointer(d + ox).storeBytes(of: m, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(argmax + ox).storeBytes(of: index, as: SIMD8<Int32>.self)
            ox += 8
        }
        return ox
    }

    /// Lanes where v beats the running maximum m (greater, or NaN over a number) take v and its index i.
    /// (Not a local function capturing m: debug builds box captured variables, one allocation each.)
    @inline(__always)
    static func considerMax(_ v: SIMD8<Float>, _ i: SIMD8<Int32>, _ m: inout SIMD8<Float>, _ index: inout SIMD8<Int32>) {
        let take = (v .> m) .| ((v .!= v) .& (m .== m))
        m.replace(with: v, where: take)
        index.replace(with: i, where: take)
    }

    /// `Conv2d.pool2` for an even width w in two flat passes. First each row pair's lane-wise
    /// maximum overwrites row r of src (at r·w: for r ≥ 1 before both rows still to be read, 2r·w ≥
    /// r·w + w); then consecutive pairs of those (h/2)·w values are the windows (w is even, so no
    /// pair straddles two rows): 8 outputs per step whatever w, where pooling row by row left the
    /// network's 8-wide planes (4 outputs a row) to a scalar loop with a branch per element.
    @inline(__always)
    static func pool2Flat(_ d: UnsafeMutablePointer<Float>, _ src: UnsafeMutablePointer<Float>, height: Int, width w: Int, lowest: Bool) {
        @inline(__always) func wins(_ v: Float, _ m: Float) -> Bool { (lowest ? v < m : v > m) || (v.isNaN && !m.isNaN) }
        let oh = height / 2
        for r in 0..<oh {
            let r0 = src + 2 * r * w, r1 = r0 + w, out = src + r * w
            var x = 0
            while x + 16 <= w {
                let top = UnsafeRawPointer(r0 + x).loadUnaligned(as: SIMD16<Float>.self)
                let bottom = UnsafeRawPointer(r1 + x).loadUnaligned(as: SIMD16<Float>.self)
                UnsafeMutableRawPointer(out + x).storeBytes(of: lowest ? minNaN(top, bottom) : maxNaN(top, bottom), as: SIMD16<Float>.self)
                x += 16
            }
            while x + 8 <= w {
                let top = UnsafeRawPointer(r0 + x).loadUnaligned(as: SIMD8<Float>.self)
                let bottom = UnsafeRawPointer(r1 + x).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(out + x).storeBytes(of: lowest ? minNaN(top, bottom) : maxNaN(top, bottom), as: SIMD8<Float>.self)
                x += 8
            }
            while x < w { let v = r1[x], m = r0[x]; out[x] = wins(v, m) ? v : m; x += 1 }
        }
        let n = oh * (w / 2)
        var k = 0
        while k + 8 <= n {
            let v = UnsafeRawPointer(src + 2 * k).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(d + k).storeBytes(of: lowest ? minNaN(v.evenHalf, v.oddHalf) : maxNaN(v.evenHalf, v.oddHalf),
                                                      as: SIMD8<Float>.self)
            k += 8
        }
        while k < n { let v = src[2 * k + 1], m = src[2 * k]; d[k] = wins(v, m) ? v : m; k += 1 }
    }
}

extension UnsafeMutablePointer where Pointee: GEMMScalar {
    /// This pointer as Float (the caller checked Pointee is Float).
    @inline(__always) var float: UnsafeMutablePointer<Float> { UnsafeMutableRawPointer(self).assumingMemoryBound(to: Float.self) }
}

extension UnsafePointer where Pointee: GEMMScalar {
    /// This pointer as Float (the caller checked Pointee is Float).
    @inline(__always) var float: UnsafePointer<Float> { UnsafeRawPointer(self).assumingMemoryBound(to: Float.self) }
}
