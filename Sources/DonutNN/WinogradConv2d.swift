import DonutBLAS

/// Winograd minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional
/// Neural Networks", CVPR 2016) for `Conv2d`'s 3×3, stride-1, padding-1 convs on even-sized
/// planes (the encoder's blocks after the first). Each 2×2 output tile is
///
///     Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A,     Bᵀ = ⎡1  0 −1  0⎤   G = ⎡ 1   0   0⎤   Aᵀ = ⎡1 1  1  0⎤
///                                              ⎢0  1  1  0⎥       ⎢ ½   ½   ½⎥        ⎣0 1 −1 −1⎦
///                                              ⎢0 −1  1  0⎥       ⎢ ½  −½   ½⎥
///                                              ⎣0  1  0 −1⎦       ⎣ 0   0   1⎦
///
/// of its 4×4 input patch d (rows 2ty − 1 … 2ty + 2, columns 2tx − 1 … 2tx + 2, zero outside)
/// and the 3×3 kernel g: the cross-correlation `Conv2d` computes. Summed over input channels,
/// the products ⊙ become 16 GEMMs per chunk of images, one per position ξ = 4i + j of the 4×4
/// transformed tile:
///
///     M_ξ (outC, tiles) = U_ξ (outC, inC) · V_ξ (inC, tiles),   U = G g Gᵀ,  V = Bᵀ d B,
///
/// 16·inC·outC multiply–adds per tile of 4 outputs against im2col + GEMM's 36·inC·outC (2.25×
/// fewer), and an input transform 4× the input's size instead of the 9× im2col. The input
/// gradient of such a conv is the same kind of conv of dY (kernels flipped, inC and outC
/// swapped: dx[ic] = Σ_oc corr(dy[oc], rot180(w[oc, ic]))), so `Conv2d.backward` forms it this
/// way too (`adjoint` weights); the weight gradient stays im2col + GEMM.
///
/// The transforms only add (and halve, for U), so results differ from the direct sum by rounding
/// alone; the tests check the forward and the input gradient against the naive loops in Double
/// and in Float. Every chunk is computed the same way by whichever thread takes it (chunks as
/// `Conv2d.chunkSize`), so results do not depend on the thread count.
extension Conv2d {
    /// Whether `forward` and `backward`'s input gradient take the `Winograd` path for `s`: 3×3,
    /// stride 1, padding 1, even height and width, and not the direct path (one input or output plane).
    public static func usesWinograd(_ s: Conv2dShape) -> Bool {
        s.kernelH == 3 && s.kernelW == 3 && s.stride == 1 && s.padding == 1
            && s.height % 2 == 0 && s.width % 2 == 0 && !usesDirect(s)
    }
}

enum Winograd {
    /// 2×2 output tiles of one plane.
    static func tiles(_ s: Conv2dShape) -> Int { (s.height / 2) * (s.width / 2) }

    /// Per-worker scratch beyond `Conv2d`'s columns: one transformed operand of the larger channel
    /// side (16·max(inC, outC) rows of a chunk's tiles; the other operand lives in the columns,
    /// 16·c·tiles = 4·c·plane ≤ 9·c·plane) and the row buffer of `transformInput`.
    static func workerScratch(_ s: Conv2dShape) -> Int {
        16 * max(s.inChannels, s.outChannels) * Conv2d.chunkSize(s) * tiles(s) + rowScratch(width: s.width)
    }

    /// Elements of `transformInput`'s row buffer: four rows split into two halves of w/2 + 1, and one zero row.
    static func rowScratch(width w: Int) -> Int { 8 * (w / 2 + 1) + w }

    /// Elements of the transformed weights U (16, outC, inC).
    static func weightCount(_ s: Conv2dShape) -> Int { 16 * s.inChannels * s.outChannels }

    /// U[ξ][r, c] = (G g Gᵀ)[ξ] for every kernel: forward, g = weight[r, c] (r < outC, c < inC);
    /// `adjoint`, g = weight[c, r] rotated by 180° (r < inC, c < outC), the kernels of the input
    /// gradient. weight (outC, inC, 3, 3). Parallel over r.
    static func transformWeights<T: GEMMScalar>(_ u: UnsafeMutablePointer<T>, _ weight: UnsafePointer<T>, _ s: Conv2dShape, adjoint: Bool) {
        let rows = adjoint ? s.inChannels : s.outChannels
        Parallel.forRanges(rows, work: 16 * weightCount(s), WeightTransform(u: u, weight: weight, shape: s, adjoint: adjoint))
    }

    struct WeightTransform<T: GEMMScalar>: ParallelLoop {
        let u: UnsafeMutablePointer<T>, weight: UnsafePointer<T>, shape: Conv2dShape, adjoint: Bool
        @_specialize(where T == Float)
        func run(_ rows: Range<Int>, worker: Int) {
            let (ic, oc) = (shape.inChannels, shape.outChannels)
            let columns = adjoint ? oc : ic, stride = ic * oc
            for r in rows {
                for c in 0..<columns {
                    let g = weight + (adjoint ? c * ic + r : r * ic + c) * 9
                    // G applied down each kernel column, then along each of the 4 rows (·Gᵀ).
                    let c0 = filter(tap(g, 0, 0, adjoint), tap(g, 1, 0, adjoint), tap(g, 2, 0, adjoint))
                    let c1 = filter(tap(g, 0, 1, adjoint), tap(g, 1, 1, adjoint), tap(g, 2, 1, adjoint))
                    let c2 = filter(tap(g, 0, 2, adjoint), tap(g, 1, 2, adjoint), tap(g, 2, 2, adjoint))
                    let out = u + r * columns + c
                    store(out, filter(c0.0, c1.0, c2.0), stride)
                    store(out + 4 * stride, filter(c0.1, c1.1, c2.1), stride)
                    store(out + 8 * stride, filter(c0.2, c1.2, c2.2), stride)
                    store(out + 12 * stride, filter(c0.3, c1.3, c2.3), stride)
                }
            }
        }
    }

    /// G·(g0, g1, g2)ᵀ: (g0, (g0 + g1 + g2)/2, (g0 − g1 + g2)/2, g2).
    @inline(__always)
    static func filter<T: GEMMScalar>(_ g0: T, _ g1: T, _ g2: T) -> (T, T, T, T) {
        let half = T(1) / 2
        return (g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2)
    }

    @inline(__always)
    static func store<T: GEMMScalar>(_ p: UnsafeMutablePointer<T>, _ v: (T, T, T, T), _ stride: Int) {
        p[0] = v.0; p[stride] = v.1; p[2 * stride] = v.2; p[3 * stride] = v.3
    }

    /// Kernel entry (ky, kx) of the 3×3 kernel g, or of g rotated by 180° (`rotated`).
    @inline(__always)
    static func tap<T: GEMMScalar>(_ g: UnsafePointer<T>, _ ky: Int, _ kx: Int, _ rotated: Bool) -> T {
        rotated ? g[(2 - ky) * 3 + 2 - kx] : g[ky * 3 + kx]
    }

    /// V[ξ][c, offset + t] = (Bᵀ d B)[i, j] (ξ = 4i + j) for channel c's plane of x (channels, h, w)
    /// and its tile t = ty·(w/2) + tx, d the 4×4 patch at rows 2ty − 1 …, columns 2tx − 1 … (0
    /// outside). V's rows are `rowStride` long, its ξ blocks channels·rowStride apart. `rows`:
    /// scratch of `rowScratch(width: w)` elements. Bᵀ d first along whole rows, split into the
    /// columns 2k − 1 (e) and 2k (o), k = 0 … w/2, so that · B per tile reads contiguous runs:
    /// tile tx's patch columns are e[tx], o[tx], e[tx + 1], o[tx + 1].
    static func transformInput<T: GEMMScalar>(_ v: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, channels: Int, height h: Int, width w: Int,
                                              rowStride n: Int, offset: Int, rows: UnsafeMutablePointer<T>) {
        let tw = w / 2, th = h / 2, block = channels * n, p = tw + 1
        let e = rows, o = rows + 4 * p, zero = rows + 8 * p   // e_i = e + i·p, o_i = o + i·p
        for i in 0..<4 { e[i * p] = 0; o[i * p + tw] = 0 }     // columns −1 and w
        zero.update(repeating: 0, count: w)
        for c in 0..<channels {
            let plane = x + c * h * w
            for ty in 0..<th {
                let r1 = plane + 2 * ty * w, r2 = r1 + w
                let r0 = ty > 0 ? r1 - w : UnsafePointer(zero), r3 = ty < th - 1 ? r2 + w : UnsafePointer(zero)
                var m = 0
                if T.self == Float.self { m = FloatKernels.winogradRows(e.float, o.float, r0.float, r1.float, r2.float, r3.float, tw, p) }
                while m < tw {
                    let (a0, a1, a2, a3) = (r0[2 * m], r1[2 * m], r2[2 * m], r3[2 * m])
                    o[m] = a0 - a2; o[p + m] = a1 + a2; o[2 * p + m] = a2 - a1; o[3 * p + m] = a1 - a3
                    let (b0, b1, b2, b3) = (r0[2 * m + 1], r1[2 * m + 1], r2[2 * m + 1], r3[2 * m + 1])
                    e[m + 1] = b0 - b2; e[p + m + 1] = b1 + b2; e[2 * p + m + 1] = b2 - b1; e[3 * p + m + 1] = b1 - b3
                    m += 1
                }
                let dst = v + c * n + offset + ty * tw
                for i in 0..<4 { transformColumns(dst + 4 * i * block, e + i * p, o + i * p, tw, block) }
            }
        }
    }

    /// out[j·stride + tx] = (r · B)[j] of tile tx's row r = (e[tx], o[tx], e[tx + 1], o[tx + 1]):
    /// (r0 − r2, r1 + r2, r2 − r1, r1 − r3), for tiles tx < tw.
    @inline(__always)
    static func transformColumns<T: GEMMScalar>(_ out: UnsafeMutablePointer<T>, _ e: UnsafePointer<T>, _ o: UnsafePointer<T>, _ tw: Int, _ stride: Int) {
        var tx = 0
        if T.self == Float.self { tx = FloatKernels.winogradColumns(out.float, e.float, o.float, tw, stride) }
        while tx < tw {
            let (d0, d1, d2, d3) = (e[tx], o[tx], e[tx + 1], o[tx + 1])
            out[tx] = d0 - d2; out[stride + tx] = d1 + d2; out[2 * stride + tx] = d2 - d1; out[3 * stride + tx] = d1 - d3
            tx += 1
        }
    }

    /// y[c][(2ty + a)·w + 2tx + b] = (Aᵀ m A)[a, b] for the 4×4 m[i, j] = M[ξ = 4i + j][c, t]
    /// (t = ty·(w/2) + tx) of each channel c < channels: M's rows `rowStride` long, its ξ blocks
    /// channels·rowStride apart; y's planes `channelStride` apart.
    static func transformOutput<T: GEMMScalar>(_ y: UnsafeMutablePointer<T>, channelStride: Int, _ m: UnsafePointer<T>, channels: Int,
                                               rowStride n: Int, height h: Int, width w: Int) {
        let tw = w / 2, th = h / 2, xi = channels * n
        for c in 0..<channels {
            for ty in 0..<th {
                let src = m + c * n + ty * tw, y0 = y + c * channelStride + 2 * ty * w, y1 = y0 + w
                var tx = 0
                if T.self == Float.self { tx = FloatKernels.winogradOutputRows(y0.float, y1.float, src.float, xi, tw) }
                while tx < tw {
                    let s = src + tx
                    // Aᵀ m: rows (m0 + m1 + m2, m1 − m2 − m3), column j; then · A along the row.
                    let a0 = s[0] + s[4 * xi] + s[8 * xi], b0 = s[4 * xi] - s[8 * xi] - s[12 * xi]
                    let a1 = s[xi] + s[5 * xi] + s[9 * xi], b1 = s[5 * xi] - s[9 * xi] - s[13 * xi]
                    let a2 = s[2 * xi] + s[6 * xi] + s[10 * xi], b2 = s[6 * xi] - s[10 * xi] - s[14 * xi]
                    let a3 = s[3 * xi] + s[7 * xi] + s[11 * xi], b3 = s[7 * xi] - s[11 * xi] - s[15 * xi]
                    y0[2 * tx] = a0 + a1 + a2; y0[2 * tx + 1] = a1 - a2 - a3
                    y1[2 * tx] = b0 + b1 + b2; y1[2 * tx + 1] = b1 - b2 - b3
                    tx += 1
                }
            }
        }
    }

    /// y (rows, tiles) for each ξ: M_ξ = U_ξ (rows, k) · V_ξ (k, n), 16 single-threaded GEMMs.
    @inline(__always)
    static func products<T: GEMMScalar>(_ m: UnsafeMutablePointer<T>, _ u: UnsafePointer<T>, _ v: UnsafePointer<T>, rows: Int, k: Int, n: Int) {
        for xi in 0..<16 {
            T.gemm(transA: false, transB: false, m: rows, n: n, k: k, alpha: 1, a: u + xi * rows * k, lda: k,
                   b: v + xi * k * n, ldb: n, beta: 0, c: m + xi * rows * n, ldc: n)
        }
    }
}

/// The Winograd transforms' loops 4 tiles at a time (see `FloatKernels`).
extension FloatKernels {
    /// `Winograd.transformInput`'s Bᵀ d for columns 2m, 2m + 1 (m from 0 in steps of 4 while the
    /// 8 columns are inside the row): o_i[m] and e_i[m + 1] (e_i = e + i·p); returns the first m not done.
    @inline(__always)
    static func winogradRows(_ e: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ r0: UnsafePointer<Float>, _ r1: UnsafePointer<Float>,
                             _ r2: UnsafePointer<Float>, _ r3: UnsafePointer<Float>, _ tw: Int, _ p: Int) -> Int {
        var m = 0
        while m + 4 <= tw {
            let a0 = UnsafeRawPointer(r0 + 2 * m).loadUnaligned(as: SIMD8<Float>.self), a1 = UnsafeRawPointer(r1 + 2 * m).loadUnaligned(as: SIMD8<Float>.self)
            let a2 = UnsafeRawPointer(r2 + 2 * m).loadUnaligned(as: SIMD8<Float>.self), a3 = UnsafeRawPointer(r3 + 2 * m).loadUnaligned(as: SIMD8<Float>.self)
            let t0 = a0 - a2, t1 = a1 + a2, t2 = a2 - a1, t3 = a1 - a3
            store4(o + m, t0.evenHalf); store4(o + p + m, t1.evenHalf); store4(o + 2 * p + m, t2.evenHalf); store4(o + 3 * p + m, t3.evenHalf)
            store4(e + m + 1, t0.oddHalf); store4(e + p + m + 1, t1.oddHalf); store4(e + 2 * p + m + 1, t2.oddHalf); store4(e + 3 * p + m + 1, t3.oddHalf)
            m += 4
        }
        return m
    }

    /// `Winograd.transformColumns` 4 tiles at a time; returns the first tile not done.
    @inline(__always)
    static func winogradColumns(_ out: UnsafeMutablePointer<Float>, _ e: UnsafePointer<Float>, _ o: UnsafePointer<Float>, _ tw: Int, _ stride: Int) -> Int {
        var tx = 0
        while tx + 4 <= tw {
            let d0 = load4(e + tx), d1 = load4(o + tx), d2 = load4(e + tx + 1), d3 = load4(o + tx + 1)
            store4(out + tx, d0 - d2); store4(out + stride + tx, d1 + d2); store4(out + 2 * stride + tx, d2 - d1); store4(out + 3 * stride + tx, d1 - d3)
            tx += 4
        }
        return tx
    }

    /// `Winograd.transformOutput` for output rows y0, y1 of 4 tiles at a time (the 16 M values of
    /// tile tx at src[ξ·xi + tx]); returns the first tile not done.
    @inline(__always)
    static func winogradOutputRows(_ y0: UnsafeMutablePointer<Float>, _ y1: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ xi: Int, _ tw: Int) -> Int {
        var tx = 0
        while tx + 4 <= tw {
            let s = src + tx
            let a0 = load4(s) + load4(s + 4 * xi) + load4(s + 8 * xi), b0 = load4(s + 4 * xi) - load4(s + 8 * xi) - load4(s + 12 * xi)
            let a1 = load4(s + xi) + load4(s + 5 * xi) + load4(s + 9 * xi), b1 = load4(s + 5 * xi) - load4(s + 9 * xi) - load4(s + 13 * xi)
            let a2 = load4(s + 2 * xi) + load4(s + 6 * xi) + load4(s + 10 * xi), b2 = load4(s + 6 * xi) - load4(s + 10 * xi) - load4(s + 14 * xi)
            let a3 = load4(s + 3 * xi) + load4(s + 7 * xi) + load4(s + 11 * xi), b3 = load4(s + 7 * xi) - load4(s + 11 * xi) - load4(s + 15 * xi)
            storeInterleaved(y0 + 2 * tx, a0 + a1 + a2, a1 - a2 - a3)
            storeInterleaved(y1 + 2 * tx, b0 + b1 + b2, b1 - b2 - b3)
            tx += 4
        }
        return tx
    }

    @inline(__always) static func load4(_ p: UnsafePointer<Float>) -> SIMD4<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self) }
    @inline(__always) static func store4(_ p: UnsafeMutablePointer<Float>, _ v: SIMD4<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self) }
    /// p[2k] = u[k], p[2k + 1] = v[k], k < 4.
    @inline(__always) static func storeInterleaved(_ p: UnsafeMutablePointer<Float>, _ u: SIMD4<Float>, _ v: SIMD4<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: SIMD8(u[0], v[0], u[1], v[1], u[2], v[2], u[3], v[3]), as: SIMD8<Float>.self)
    }
}
