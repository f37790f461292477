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
/// fewer), and an input transform 4× the input's size instead of the 9× im2col. Forward only:
/// the backward's products stay im2col + GEMM. Its input gradient is the same kind of conv (of dY,
/// kernels rotated, inC and outC swapped) and its weight gradient is F(3×3, 2×2) with the same
/// input transform, but both were measured slower in a training step on the encoder's shapes
/// (16 GEMMs with inC ≤ 64 as M or N and a 4× transform of dY, against one GEMM with M = 9·inC).
///
/// The transforms only add (and halve, for U), so results differ from the direct sum by rounding
/// alone; the tests check the forward against the naive loops in Double and in Float. Every
/// chunk is computed the same way by whichever thread takes it (chunks as `Conv2d.chunkSize`),
/// so results do not depend on the thread count.
extension Conv2d {
    /// Whether `forward` takes the `Winograd` path for `s`: 3×3, stride 1, padding 1, even height
    /// and width, and not the direct path (one input or output plane).
    public static func usesWinograd(_ s: Conv2dShape) -> Bool {
        s.kernelH == 3 && s.kernelW == 3 && s.stride == 1 && s.padding == 1
            && s.height % 2 == 0 && s.width % 2 == 0 && !usesDirect(s)
    }
}

enum Winograd {
    /// 2×2 output tiles of one plane.
    static func tiles(_ s: Conv2dShape) -> Int { (s.height / 2) * (s.width / 2) }

    /// Per-worker scratch beyond `Conv2d`'s columns and block: a chunk's products M (16, outC,
    /// G·tiles) and `transformInput`'s row buffer. V (16·inC·G·tiles = 4·inC·G·plane) fits in
    /// the columns (9·inC·G·plane).
    static func workerScratch(_ s: Conv2dShape) -> Int {
        16 * s.outChannels * Conv2d.chunkSize(s) * tiles(s) + rowScratch(width: s.width)
    }

    /// Elements of `transformInput`'s row buffer: four rows of Bᵀ d split into odd and even columns, and a zero row.
    static func rowScratch(width w: Int) -> Int { 4 * w + w }

    /// Elements of the transformed weights U (16, outC, inC).
    static func weightCount(_ s: Conv2dShape) -> Int { 16 * s.inChannels * s.outChannels }

    /// U[ξ][oc, ic] = (G g Gᵀ)[ξ] for every kernel g = weight[oc, ic] (outC, inC, 3, 3). Parallel over oc.
    static func transformWeights<T: GEMMScalar>(_ u: UnsafeMutablePointer<T>, _ weight: UnsafePointer<T>, _ s: Conv2dShape) {
        Parallel.forRanges(s.outChannels, work: 16 * weightCount(s), WeightTransform(u: u, weight: weight, shape: s))
    }

    struct WeightTransform<T: GEMMScalar>: ParallelLoop {
        let u: UnsafeMutablePointer<T>, weight: UnsafePointer<T>, shape: Conv2dShape
        @_specialize(where T == Float)
        func run(_ rows: Range<Int>, worker: Int) {
            let ic = shape.inChannels, stride = ic * shape.outChannels
            for oc in rows {
                for c in 0..<ic {
                    // G applied down each kernel column, then along each of the 4 rows (·Gᵀ).
                    let g = weight + (oc * ic + c) * 9
                    let c0 = filter(g[0], g[3], g[6]), c1 = filter(g[1], g[4], g[7]), c2 = filter(g[2], g[5], g[8])
                    let out = u + oc * ic + c
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

    /// V[ξ][c, offset + t] = (Bᵀ d B)[i, j] (ξ = 4i + j) for channel c's plane of x (channels, h, w)
    /// and its tile t = ty·(w/2) + tx, d the 4×4 patch at rows 2ty − 1 …, columns 2tx − 1 … (0
    /// outside). V's rows are `rowStride` long, its ξ blocks channels·rowStride apart. `rows`:
    /// scratch of `rowScratch(width: w)` elements.
    ///
    /// Per tile row, Bᵀ d first along the whole rows, split into odd columns e[k] = column 2k + 1
    /// and even ones o[k] = column 2k; then · B per tile, whose patch columns are e[tx − 1], o[tx],
    /// e[tx], o[tx + 1]. The second pass loads e and o only where the first stored them, the
    /// shifted runs built from those in registers: a load straddling two recent stores stalls
    /// (store-to-load forwarding fails), which took half of this function's time.
    static func transformInput<T: GEMMScalar>(_ v: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, channels: Int, height h: Int, width w: Int,
                                              rowStride n: Int, offset: Int, rows: UnsafeMutablePointer<T>) {
        let tw = w / 2, th = h / 2, block = channels * n
        let e = rows, o = rows + 4 * tw, zero = rows + 8 * tw   // row i of Bᵀ d: e + i·tw, o + i·tw
        zero.update(repeating: 0, count: w)
        for c in 0..<channels {
            let plane = x + c * h * w
            for ty in 0..<th {
                let r1 = plane + 2 * ty * w, r2 = r1 + w
                let r0 = ty > 0 ? r1 - w : UnsafePointer(zero), r3 = ty < th - 1 ? r2 + w : UnsafePointer(zero)
                var k = 0
                if T.self == Float.self { k = FloatKernels.winogradRows(e.float, o.float, r0.float, r1.float, r2.float, r3.float, tw) }
                while k < tw {
                    let (a0, a1, a2, a3) = (r0[2 * k], r1[2 * k], r2[2 * k], r3[2 * k])
                    o[k] = a0 - a2; o[tw + k] = a1 + a2; o[2 * tw + k] = a2 - a1; o[3 * tw + k] = a1 - a3
                    let (b0, b1, b2, b3) = (r0[2 * k + 1], r1[2 * k + 1], r2[2 * k + 1], r3[2 * k + 1])
                    e[k] = b0 - b2; e[tw + k] = b1 + b2; e[2 * tw + k] = b2 - b1; e[3 * tw + k] = b1 - b3
                    k += 1
                }
                let dst = v + c * n + offset + ty * tw
                for i in 0..<4 { transformColumns(dst + 4 * i * block, e + i * tw, o + i * tw, tw, block) }
            }
        }
    }

    /// out[j·stride + tx] = (r · B)[j] of tile tx's row r = (e[tx − 1], o[tx], e[tx], o[tx + 1])
    /// (0 past either end): (r0 − r2, r1 + r2, r2 − r1, r1 − r3), for tiles tx < tw.
    @inline(__always)
    static func transformColumns<T: GEMMScalar>(_ out: UnsafeMutablePointer<T>, _ e: UnsafePointer<T>, _ o: UnsafePointer<T>, _ tw: Int, _ stride: Int) {
        var tx = 0
        if T.self == Float.self { tx = FloatKernels.winogradColumns(out.float, e.float, o.float, tw, stride) }
        while tx < tw {
            let (d0, d1, d2, d3) = (tx > 0 ? e[tx - 1] : 0, o[tx], e[tx], tx + 1 < tw ? o[tx + 1] : 0)
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

    /// For each ξ: M_ξ (rows, n) = U_ξ (rows, k) · V_ξ (k, n), 16 single-threaded GEMMs.
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
    /// `Winograd.transformInput`'s Bᵀ d on columns 2k … 2k + 7 of the four patch rows, k from 0
    /// in steps of 4: even columns to o_i[k …], odd ones to e_i[k …] (row i at + i·tw). Returns
    /// the first k not done.
    @inline(__always)
    static func winogradRows(_ e: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ r0: UnsafePointer<Float>, _ r1: UnsafePointer<Float>,
                             _ r2: UnsafePointer<Float>, _ r3: UnsafePointer<Float>, _ tw: Int) -> Int {
        var k = 0
        while k + 4 <= tw {
            let a0 = load8(r0 + 2 * k), a1 = load8(r1 + 2 * k), a2 = load8(r2 + 2 * k), a3 = load8(r3 + 2 * k)
            let t0 = a0 - a2, t1 = a1 + a2, t2 = a2 - a1, t3 = a1 - a3
            store4(o + k, t0.evenHalf); store4(o + tw + k, t1.evenHalf); store4(o + 2 * tw + k, t2.evenHalf); store4(o + 3 * tw + k, t3.evenHalf)
            store4(e + k, t0.oddHalf); store4(e + tw + k, t1.oddHalf); store4(e + 2 * tw + k, t2.oddHalf); store4(e + 3 * tw + k, t3.oddHalf)
            k += 4
        }
        return k
    }

    /// `Winograd.transformColumns` 4 tiles at a time. e and o are loaded only in the 4-element
    /// runs `winogradRows` stored; e[tx − 1] and o[tx + 4] come in as single elements (a load
    /// inside one store forwards). Returns the first tile not done.
    @inline(__always)
    static func winogradColumns(_ out: UnsafeMutablePointer<Float>, _ e: UnsafePointer<Float>, _ o: UnsafePointer<Float>, _ tw: Int, _ stride: Int) -> Int {
        var tx = 0
        while tx + 4 <= tw {
            let ev = load4(e + tx), ov = load4(o + tx)
            let before: Float = tx > 0 ? e[tx - 1] : 0, after: Float = tx + 4 < tw ? o[tx + 4] : 0
            let d0 = SIMD4(before, ev[0], ev[1], ev[2]), d3 = SIMD4(ov[1], ov[2], ov[3], after)
            store4(out + tx, d0 - ev); store4(out + stride + tx, ov + ev); store4(out + 2 * stride + tx, ev - ov); store4(out + 3 * stride + tx, ov - d3)
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
}
