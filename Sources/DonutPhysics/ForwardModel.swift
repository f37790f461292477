import Foundation
import DonutBLAS

/// The momentum-transfer profile of the film's rocking curve in x and y.
public enum Profile: String, Sendable, CaseIterable {
    /// Published library model: Px = [|qx| < h], Py = [|qy| < h] (strict <).
    case box
    /// Differentiable model of DONUT: Px = exp(−qx²/σ²), Py = exp(−qy²/σ²).
    case smooth
}

/// The smooth profile exp(−r²), r = q/σ, is set to exactly 0 beyond |r| = 6, where it is
/// below 2.4e-16 of its peak: under Float resolution (and Double's for the sums it enters),
/// so patterns and gradients are unchanged, while most exp/sin evaluations are skipped
/// (σ spans ~1 zone-plate step in qy and ~4 in qx, so 6σ keeps ~14 and ~49 of 128 columns).
let smoothCutoffSquared = 36.0

/// Nanobeam diffraction pattern of a thin film under a zone-plate-focused beam.
///
///     qx(x,u) = DQx(x) + G·ω − OQx(u)     qy(y,v) = DQy(y) + G·χ − OQy(v)
///     qz(x,u) = DQz(x) − G − OQz(u)       G = G0/(1+ε)
///     I(y,x)  = Σ_{u,v} t·sinc²(t·qz/2π)·Px(qx)·Py(qy)·M(v,u)
///
/// Every term depends on (x,u) or on (y,v) only, so a frame is two matrix products:
///
///     A(x,u) = t·sinc²(t·qz/2π)·Px(qx)     B(y,v) = Py(qy)     I = B·M·Aᵀ
///
/// A and B are evaluated in Double (the box edges are decided there too) and stored in
/// `T`; the products run in `T` through BLAS. ω, χ are in degrees, t in Å, I in the
/// model's arbitrary units (t·sinc² is the film's structure factor squared, unscaled).
///
/// Not thread-safe: it owns scratch buffers sized for `frameSize`, `gridSize` and the
/// largest batch seen so far (a larger batch re-plans them once, never per frame).
public final class ForwardModel<T: GEMMScalar> {
    public let geometry: DiffractionGeometry
    public let profile: Profile
    /// Detector pixels per side (n) and zone-plate grid points per side (m).
    public let frameSize: Int
    public let gridSize: Int
    /// M(v,u) in `T`, m × m.
    private let mask: UnsafeMutableBufferPointer<T>
    private var scratch = Scratch<T>()
    /// Single-frame buffers of the gradient paths, allocated on first use.
    lazy var gradientScratch = GradientScratch<T>(frameSize: frameSize, gridSize: gridSize)
    var maskPointer: UnsafeMutablePointer<T> { mask.baseAddress! }

    public init(geometry: DiffractionGeometry, profile: Profile) {
        self.geometry = geometry; self.profile = profile
        frameSize = geometry.frameSize; gridSize = geometry.gridSize
        mask = .allocate(capacity: gridSize * gridSize)
        for i in 0..<mask.count { mask[i] = T(geometry.zonePlateMask[i]) }
    }
    deinit { mask.deallocate(); scratch.free() }

    public var pixelCount: Int { frameSize * frameSize }

    // MARK: Separable factors

    /// Px(q) or Py(q) for this model's profile.
    @inline(__always) private func profileValue(_ q: Double) -> Double {
        switch profile {
        case .box: return abs(q) < geometry.boxHalfWidth ? 1 : 0
        case .smooth: let r = q / geometry.smoothSigma; return r * r > smoothCutoffSquared ? 0 : exp(-r * r)
        }
    }

    /// A(x,u) = t·sinc²(t·qz/2π)·Px(qx), row-major n × m, into `a`.
    public func fillA(_ p: FrameParameters, into a: UnsafeMutablePointer<T>) {
        let g = geometry, n = frameSize, m = gridSize
        let gStrained = g.g(strain: p.strain)
        let shiftX = gStrained * p.tiltLRDeg * .pi / 180
        let t = p.thicknessA
        for x in 0..<n {
            let qx0 = g.detectorQx[x] + shiftX, qz0 = g.detectorQz[x] - gStrained
            let row = a + x * m
            for u in 0..<m {
                let px = profileValue(qx0 - g.opticsQx[u])
                if px == 0 { row[u] = 0; continue }
                let half = t * (qz0 - g.opticsQz[u]) / 2   // π·(t·qz/2π)
                let sinc = half == 0 ? 1 : sin(half) / half
                row[u] = T(t * sinc * sinc * px)
            }
        }
    }

    /// B(y,v) = Py(qy), row-major n × m, into `b`.
    public func fillB(_ p: FrameParameters, into b: UnsafeMutablePointer<T>) {
        let g = geometry, n = frameSize, m = gridSize
        let shiftY = g.g(strain: p.strain) * p.tiltUDDeg * .pi / 180
        for y in 0..<n {
            let qy0 = g.detectorQy[y] + shiftY
            let row = b + y * m
            for v in 0..<m { row[v] = T(profileValue(qy0 - g.opticsQy[v])) }
        }
    }

    // MARK: Patterns

    /// Patterns I = B·M·Aᵀ for a batch of parameter sets, into `out` (N, n, n) row-major.
    /// One GEMM stacks every B against M; then one small GEMM per pattern.
    public func patterns(_ params: [FrameParameters], into out: UnsafeMutableBufferPointer<T>) {
        let n = frameSize, m = gridSize, batch = params.count
        precondition(out.count >= batch * n * n, "output holds \(out.count) values, batch needs \(batch * n * n)")
        guard batch > 0 else { return }
        scratch.reserve(aRows: batch * n, bRows: batch * n, gridSize: m)
        for (i, p) in params.enumerated() {
            fillA(p, into: scratch.a + i * n * m)
            fillB(p, into: scratch.b + i * n * m)
        }
        T.gemm(transA: false, transB: false, m: batch * n, n: m, k: m, alpha: 1,
               a: scratch.b, lda: m, b: mask.baseAddress!, ldb: m, beta: 0, c: scratch.bm, ldc: m)
        for i in 0..<batch {
            T.gemm(transA: false, transB: true, m: n, n: n, k: m, alpha: 1,
                   a: scratch.bm + i * n * m, lda: m, b: scratch.a + i * n * m, ldb: m,
                   beta: 0, c: out.baseAddress! + i * n * n, ldc: n)
        }
    }

    /// Convenience: patterns as a new array (N·n·n values).
    public func patterns(_ params: [FrameParameters]) -> [T] {
        var out = [T](repeating: 0, count: params.count * pixelCount)
        out.withUnsafeMutableBufferPointer { patterns(params, into: $0) }
        return out
    }

    /// Library entries `entries` (flat indices of `grid`) into `out` (entries.count, n, n).
    ///
    /// Uses the grid's structure: B depends on (ε, χ), A on (ε, ω, t). For each strain ε
    /// and thickness t, C = M·[A_ω₁ᵀ … A_ωₖᵀ] is one GEMM, and the patterns of all χ at
    /// one ω are one more, [B_χ₁; …; B_χⱼ]·C_ω, written straight into place when the
    /// layout allows (no thickness axis and the whole χ run inside `entries`).
    public func library(_ grid: LibraryGrid, entries: Range<Int>, into out: UnsafeMutableBufferPointer<T>) {
        let n = frameSize, m = gridSize, np = n * n
        let ne = grid.strain.count, nw = grid.tiltLRDeg.count, nc = grid.tiltUDDeg.count, nt = grid.thicknessA.count
        precondition(entries.lowerBound >= 0 && entries.upperBound <= grid.count, "entries \(entries) outside the library's 0..<\(grid.count)")
        precondition(out.count >= entries.count * np, "output holds \(out.count) values, \(entries.count) entries need \(entries.count * np)")
        guard !entries.isEmpty else { return }
        scratch.reserve(aRows: nw * n, bRows: nc * n, gridSize: m, cColumns: nw * n, patterns: nc * np)
        let perStrain = nw * nc * nt
        let firstStrain = entries.lowerBound / perStrain, lastStrain = (entries.upperBound - 1) / perStrain
        for ie in firstStrain...lastStrain {
            for ic in 0..<nc {
                fillB(FrameParameters(strain: grid.strain[ie], tiltLRDeg: 0, tiltUDDeg: grid.tiltUDDeg[ic],
                                      thicknessA: 0), into: scratch.b + ic * n * m)
            }
            for it in 0..<nt {
                // Which ω of this (ε, t) have any χ inside `entries`?
                let flat = { (iw: Int, ic: Int) in ((ie * nw + iw) * nc + ic) * nt + it }
                let wanted = (0..<nw).filter { iw in
                    flat(iw, 0) < entries.upperBound && flat(iw, nc - 1) >= entries.lowerBound
                }
                guard let w0 = wanted.first, let w1 = wanted.last else { continue }
                for iw in w0...w1 {
                    fillA(FrameParameters(strain: grid.strain[ie], tiltLRDeg: grid.tiltLRDeg[iw], tiltUDDeg: 0,
                                          thicknessA: grid.thicknessA[it]), into: scratch.a + (iw - w0) * n * m)
                }
                let kw = w1 - w0 + 1
                // C (m × kw·n) = M (m × m) · Aᵀ, A stacked (kw·n × m).
                T.gemm(transA: false, transB: true, m: m, n: kw * n, k: m, alpha: 1,
                       a: mask.baseAddress!, lda: m, b: scratch.a, ldb: m, beta: 0, c: scratch.c, ldc: kw * n)
                for iw in w0...w1 {
                    let first = flat(iw, 0), last = flat(iw, nc - 1)
                    let direct = nt == 1 && first >= entries.lowerBound && last < entries.upperBound
                    let target = direct ? out.baseAddress! + (first - entries.lowerBound) * np : scratch.patterns
                    T.gemm(transA: false, transB: false, m: nc * n, n: n, k: m, alpha: 1,
                           a: scratch.b, lda: m, b: scratch.c + (iw - w0) * n, ldb: kw * n,
                           beta: 0, c: target, ldc: n)
                    if direct { continue }
                    for ic in 0..<nc where entries.contains(flat(iw, ic)) {
                        (out.baseAddress! + (flat(iw, ic) - entries.lowerBound) * np)
                            .update(from: scratch.patterns + ic * np, count: np)
                    }
                }
            }
        }
    }
}

/// Scratch buffers of a forward model; grown explicitly by `reserve`, never inside a frame loop.
struct Scratch<T: GEMMScalar> {
    var a = UnsafeMutablePointer<T>.allocate(capacity: 1), aCap = 1
    var b = UnsafeMutablePointer<T>.allocate(capacity: 1), bCap = 1
    var bm = UnsafeMutablePointer<T>.allocate(capacity: 1), bmCap = 1
    var c = UnsafeMutablePointer<T>.allocate(capacity: 1), cCap = 1
    var patterns = UnsafeMutablePointer<T>.allocate(capacity: 1), patternsCap = 1

    private static func grow(_ p: inout UnsafeMutablePointer<T>, _ cap: inout Int, _ need: Int) {
        guard need > cap else { return }
        p.deallocate(); p = .allocate(capacity: need); cap = need
    }
    mutating func reserve(aRows: Int, bRows: Int, gridSize m: Int, cColumns: Int = 0, patterns np: Int = 0) {
        Self.grow(&a, &aCap, aRows * m)
        Self.grow(&b, &bCap, bRows * m)
        Self.grow(&bm, &bmCap, bRows * m)
        Self.grow(&c, &cCap, m * cColumns)
        Self.grow(&patterns, &patternsCap, np)
    }
    func free() { a.deallocate(); b.deallocate(); bm.deallocate(); c.deallocate(); patterns.deallocate() }
}
