import Foundation
import DonutBLAS

/// Order of parameters in gradients and Jacobians: (ε, ω [deg], χ [deg], t [Å]).
public enum ParameterAxis: Int, CaseIterable, Sendable {
    case strain, tiltLR, tiltUD, thickness
}

/// Analytic derivatives of the smooth model, in the same separable shape as the model:
///
///     ∂I/∂θ = (∂B/∂θ)·M·Aᵀ + B·M·(∂A/∂θ)ᵀ
///
/// with, for s = sinc(t·qz/2π) = sin(a)/a, a = t·qz/2, P = exp(−qx²/σ²), G = G0/(1+ε),
/// dG/dε = −G/(1+ε):
///
///     ∂A/∂qx = −2qx/σ²·A            ∂A/∂qz = t²·s·s′·P            ∂A/∂t|q = s²P + t·s·s′·qz·P
///     ∂A/∂ε  = ∂A/∂qx·ω·dG/dε − ∂A/∂qz·dG/dε                    ∂A/∂ω = ∂A/∂qx·G·π/180
///     ∂B/∂qy = −2qy/σ²·B            ∂B/∂ε = ∂B/∂qy·χ·dG/dε        ∂B/∂χ = ∂B/∂qy·G·π/180
///
/// (ω, χ in degrees in the parameters, radians inside q). Only the smooth profile has them.
extension ForwardModel {
    /// Smooth A(x,u) and ∂A/∂ε, ∂A/∂ω, ∂A/∂t, each n × m, `dA` holding the three stacked.
    func fillSmoothA(_ p: FrameParameters, a: UnsafeMutablePointer<T>, dA: UnsafeMutablePointer<T>) {
        let g = geometry, n = frameSize, m = gridSize
        let gs = g.g(strain: p.strain), dG = -gs / (1 + p.strain)
        let omega = p.tiltLRDeg * .pi / 180, t = p.thicknessA
        let invSigma2 = 1 / (g.smoothSigma * g.smoothSigma)
        let dEps = dA, dOmega = dA + n * m, dThick = dA + 2 * n * m
        for x in 0..<n {
            let qx0 = g.detectorQx[x] + gs * omega, qz0 = g.detectorQz[x] - gs
            for u in 0..<m {
                let i = x * m + u
                let qx = qx0 - g.opticsQx[u]
                let r2 = qx * qx * invSigma2
                if r2 > smoothCutoffSquared {
                    a[i] = 0; dEps[i] = 0; dOmega[i] = 0; dThick[i] = 0
                    continue
                }
                let qz = qz0 - g.opticsQz[u]
                let px = exp(-r2)
                let (s, ds) = sincAndDerivative(t * qz / 2)
                let value = t * s * s * px
                let dQx = -2 * qx * invSigma2 * value
                let dQz = t * t * s * ds * px
                a[i] = T(value)
                dEps[i] = T(dQx * omega * dG - dQz * dG)
                dOmega[i] = T(dQx * gs * .pi / 180)
                dThick[i] = T(s * s * px + t * s * ds * qz * px)
            }
        }
    }

    /// Smooth B(y,v) and ∂B/∂ε, ∂B/∂χ stacked after it: `bs` is (3n × m) = [B; ∂B/∂ε; ∂B/∂χ].
    func fillSmoothB(_ p: FrameParameters, bs: UnsafeMutablePointer<T>) {
        let g = geometry, n = frameSize, m = gridSize
        let gs = g.g(strain: p.strain), dG = -gs / (1 + p.strain)
        let chi = p.tiltUDDeg * .pi / 180
        let invSigma2 = 1 / (g.smoothSigma * g.smoothSigma)
        for y in 0..<n {
            let qy0 = g.detectorQy[y] + gs * chi
            for v in 0..<m {
                let i = y * m + v
                let qy = qy0 - g.opticsQy[v]
                let r2 = qy * qy * invSigma2
                if r2 > smoothCutoffSquared {
                    bs[i] = 0; bs[n * m + i] = 0; bs[2 * n * m + i] = 0
                    continue
                }
                let b = exp(-r2)
                let dQy = -2 * qy * invSigma2 * b
                bs[i] = T(b)
                bs[n * m + i] = T(dQy * chi * dG)
                bs[2 * n * m + i] = T(dQy * gs * .pi / 180)
            }
        }
    }

    /// Pattern I (n × n) and Jacobian ∂I/∂(ε, ω, χ, t) (4, n, n) of the smooth model.
    /// Four GEMMs: [B; ∂B]·M, then ·Aᵀ and B·M·[∂A]ᵀ.
    public func jacobian(_ p: FrameParameters, pattern: UnsafeMutablePointer<T>, jacobian: UnsafeMutablePointer<T>) {
        precondition(profile == .smooth, "analytic gradients exist for the smooth model only")
        let n = frameSize, m = gridSize, w = gradientScratch
        fillSmoothA(p, a: w.a, dA: w.dA)
        fillSmoothB(p, bs: w.bs)
        T.gemm(transA: false, transB: false, m: 3 * n, n: m, k: m, alpha: 1,
               a: w.bs, lda: m, b: maskPointer, ldb: m, beta: 0, c: w.bms, ldc: m)
        // r1 = [BM; ∂εB·M; ∂χB·M]·Aᵀ   (3n × n)
        T.gemm(transA: false, transB: true, m: 3 * n, n: n, k: m, alpha: 1,
               a: w.bms, lda: m, b: w.a, ldb: m, beta: 0, c: w.r1, ldc: n)
        // r2 = BM·[∂εA; ∂ωA; ∂tA]ᵀ     (n × 3n)
        T.gemm(transA: false, transB: true, m: n, n: 3 * n, k: m, alpha: 1,
               a: w.bms, lda: m, b: w.dA, ldb: m, beta: 0, c: w.r2, ldc: 3 * n)
        let np = n * n
        for y in 0..<n {
            for x in 0..<n {
                let i = y * n + x
                pattern[i] = w.r1[i]
                jacobian[i] = w.r1[np + i] + w.r2[y * 3 * n + x]
                jacobian[np + i] = w.r2[y * 3 * n + n + x]
                jacobian[2 * np + i] = w.r1[2 * np + i]
                jacobian[3 * np + i] = w.r2[y * 3 * n + 2 * n + x]
            }
        }
    }
}

/// Indices i (a superset, one extra on each side) where |q0 − offsets[i]| ≤ 6·width, for
/// `offsets` linear in i (the zone-plate grid's OQx, OQy): the only elements of a row of A
/// or B inside the smooth profile's cutoff.
@inline(__always)
func candidates(_ q0: Double, _ offsets: [Double], width: Double) -> Range<Int> {
    let m = offsets.count, step = offsets[1] - offsets[0], reach = smoothCutoffSquared.squareRoot() * width
    let i0 = (q0 - reach - offsets[0]) / step, i1 = (q0 + reach - offsets[0]) / step
    guard i0.isFinite, i1.isFinite, abs(i0) < 1e9, abs(i1) < 1e9 else { return 0..<m }
    let lo = max(0, Int(min(i0, i1).rounded(.down)) - 1), hi = min(m, Int(max(i0, i1).rounded(.up)) + 2)
    return lo < hi ? lo..<hi : 0..<0
}

/// sinc(z)=sin(a)/a at a = πz and its derivative d/da, with the series near 0 where the
/// closed form (a·cos a − sin a)/a² cancels.
@inline(__always)
func sincAndDerivative(_ a: Double) -> (Double, Double) {
    if abs(a) < 1e-3 {
        let a2 = a * a
        return (1 - a2 / 6 + a2 * a2 / 120, -a / 3 + a * a2 / 30)
    }
    let s = sin(a) / a
    return (s, (cos(a) - s) / a)
}

/// Fixed scratch of the Jacobian (one frame), allocated with the model on first use.
final class GradientScratch<T: GEMMScalar> {
    let a, dA, bs, bms, r1, r2: UnsafeMutablePointer<T>
    init(frameSize n: Int, gridSize m: Int) {
        a = .allocate(capacity: n * m); dA = .allocate(capacity: 3 * n * m)
        bs = .allocate(capacity: 3 * n * m); bms = .allocate(capacity: 3 * n * m)
        r1 = .allocate(capacity: 3 * n * n); r2 = .allocate(capacity: 3 * n * n)
    }
    deinit { for p in [a, dA, bs, bms, r1, r2] { p.deallocate() } }
}

// MARK: - Fast path (physics refinement)

/// The same pattern and Jacobian as `jacobian(_:pattern:jacobian:)`, built with less work:
///
/// * Along a row of A (fixed x), qx(u) and qz(u) are linear in u (OQx, OQz are), so the
///   Gaussian and the sinc's sine need no per-element exp/sin/cos:
///
///       P(u+1) = P(u)·R(u),  R(u+1) = R(u)·C,  R(u) = exp(−(2·qx(u)·h + h²)/σ²),  C = exp(−2h²/σ²)
///       (sin, cos)(α + Δ) = (sin α·cos Δ + cos α·sin Δ, cos α·cos Δ − sin α·sin Δ)
///
///   (h the step of qx, Δ = t·(step of qz)/2), started directly at the first u inside the
///   6σ cutoff: a handful of transcendental calls per row instead of three per element.
///   Each step adds ~1 ulp (Double) of relative error; rows have ≤ m steps.
/// * ∂B/∂ε = χ·dG/dε·B′ and ∂B/∂χ = G·π/180·B′ share B′ = ∂B/∂qy, so the B side is [B; B′]
///   (2n rows, not 3n) and the two derivatives are scalings of one product B′·M·Aᵀ.
/// * ∂/∂t is skipped when thickness is not a free parameter; `jacobian == nil` gives the
///   pattern alone (two GEMMs, for trial steps).
extension ForwardModel {
    /// Rows of A (and ∂A/∂ε, ∂A/∂ω[, ∂A/∂t] stacked in `dA` when given) by recurrences.
    func fillSmoothARecurrence(_ p: FrameParameters, a: UnsafeMutablePointer<T>, dA: UnsafeMutablePointer<T>?, thickness: Bool) {
        let g = geometry, n = frameSize, m = gridSize
        precondition(m >= 2, "the recurrences need a zone-plate grid of at least 2 points")
        let gs = g.g(strain: p.strain), dG = -gs / (1 + p.strain)
        let omega = p.tiltLRDeg * .pi / 180, t = p.thicknessA
        let invSigma2 = 1 / (g.smoothSigma * g.smoothSigma)
        let hx = g.opticsQx[0] - g.opticsQx[1], hz = g.opticsQz[0] - g.opticsQz[1]
        let c = exp(-2 * hx * hx * invSigma2)
        let delta = t * hz / 2, sinDelta = sin(delta), cosDelta = cos(delta)
        let dEps = dA, dOmega = dA.map { $0 + n * m }, dThick = dA.map { $0 + 2 * n * m }
        let omegaScale = gs * .pi / 180
        let slices = dA == nil ? 1 : (thickness ? 4 : 3)
        for x in 0..<n {
            let qx0 = g.detectorQx[x] + gs * omega, qz0 = g.detectorQz[x] - gs
            let row = x * m
            for k in 0..<slices { (k == 0 ? a + row : dA! + (k - 1) * n * m + row).update(repeating: 0, count: m) }
            var started = false
            var px = 0.0, r = 0.0, sn = 0.0, cs = 0.0
            for u in candidates(qx0, g.opticsQx, width: g.smoothSigma) {
                let i = row + u
                let qx = qx0 - g.opticsQx[u]
                let r2 = qx * qx * invSigma2
                if r2 > smoothCutoffSquared { continue }
                let qz = qz0 - g.opticsQz[u]
                let half = t * qz / 2
                if !started {
                    px = exp(-r2); r = exp(-(2 * qx * hx + hx * hx) * invSigma2)
                    sn = sin(half); cs = cos(half)
                    started = true
                } else {
                    px *= r; r *= c
                    (sn, cs) = (sn * cosDelta + cs * sinDelta, cs * cosDelta - sn * sinDelta)
                }
                let s: Double, ds: Double
                if abs(half) < 1e-3 {
                    let a2 = half * half
                    s = 1 - a2 / 6 + a2 * a2 / 120; ds = -half / 3 + half * a2 / 30
                } else {
                    let inverse = 1 / half
                    s = sn * inverse; ds = (cs - s) * inverse
                }
                let value = t * s * s * px
                a[i] = T(value)
                guard let dEps, let dOmega else { continue }
                let dQx = -2 * qx * invSigma2 * value
                let dQz = t * t * s * ds * px
                dEps[i] = T(dQx * omega * dG - dQz * dG)
                dOmega[i] = T(dQx * omegaScale)
                if thickness, let dThick { dThick[i] = T(s * s * px + t * s * ds * qz * px) }
            }
        }
    }

    /// [B; B′] (2n × m), B′ = ∂B/∂qy, by the Gaussian recurrence; B alone when `derivative` is false.
    func fillSmoothBRecurrence(_ p: FrameParameters, bs: UnsafeMutablePointer<T>, derivative: Bool) {
        let g = geometry, n = frameSize, m = gridSize
        precondition(m >= 2, "the recurrences need a zone-plate grid of at least 2 points")
        let gs = g.g(strain: p.strain), chi = p.tiltUDDeg * .pi / 180
        let invSigma2 = 1 / (g.smoothSigma * g.smoothSigma)
        let h = g.opticsQy[0] - g.opticsQy[1], c = exp(-2 * h * h * invSigma2)
        for y in 0..<n {
            let qy0 = g.detectorQy[y] + gs * chi
            (bs + y * m).update(repeating: 0, count: m)
            if derivative { (bs + n * m + y * m).update(repeating: 0, count: m) }
            var started = false, b = 0.0, r = 0.0
            for v in candidates(qy0, g.opticsQy, width: g.smoothSigma) {
                let i = y * m + v
                let qy = qy0 - g.opticsQy[v]
                let r2 = qy * qy * invSigma2
                if r2 > smoothCutoffSquared { continue }
                if !started {
                    b = exp(-r2); r = exp(-(2 * qy * h + h * h) * invSigma2); started = true
                } else {
                    b *= r; r *= c
                }
                bs[i] = T(b)
                if derivative { bs[n * m + i] = T(-2 * qy * invSigma2 * b) }
            }
        }
    }

    /// ∂B/∂ε and ∂B/∂χ as multiples of B′ = ∂B/∂qy at p: χ·dG/dε (χ in radians, dG/dε = −G/(1 + ε))
    /// and G·π/180 (per degree of χ).
    func bPrimeScales(_ p: FrameParameters) -> (epsilon: Double, chi: Double) {
        let gs = geometry.g(strain: p.strain)
        return (p.tiltUDDeg * .pi / 180 * (-gs / (1 + p.strain)), gs * .pi / 180)
    }

    /// out = rows·M for `rows` (count × m) whose non-zeros are a short run per row that moves
    /// along with the row (B and B′: ~14 of 128 points inside the 6σ cutoff, shifted by the
    /// upsampling per detector row). Groups of 8 rows are one GEMM over the union of their
    /// runs (8 × ~28 · ~28 × m): ~1/4 of the dense product's multiply-adds, still in BLAS.
    func bandedTimesMask(_ rows: UnsafeMutablePointer<T>, rows count: Int, into out: UnsafeMutablePointer<T>) {
        let m = gridSize, group = 8
        for g0 in stride(from: 0, to: count, by: group) {
            let g1 = min(g0 + group, count)
            var lo = m, hi = 0
            // Plain loops: `first(where:)` allocated per element in debug builds, and the physics
            // layer runs this inside training steps (AllocationTests).
            for y in g0..<g1 {
                let row = rows + y * m
                var first = 0
                while first < m && row[first] == 0 { first += 1 }
                guard first < m else { continue }
                var last = m - 1
                while row[last] == 0 { last -= 1 }
                lo = min(lo, first); hi = max(hi, last + 1)
            }
            guard lo < hi else { (out + g0 * m).update(repeating: 0, count: (g1 - g0) * m); continue }
            T.gemm(transA: false, transB: false, m: g1 - g0, n: m, k: hi - lo, alpha: 1,
                   a: rows + g0 * m + lo, lda: m, b: maskPointer + lo * m, ldb: m, beta: 0, c: out + g0 * m, ldc: m)
        }
    }

    /// Pattern I (n × n) and, when `jacobian` is given, ∂I/∂(ε, ω, χ[, t]) in the layout of
    /// `jacobian(_:pattern:jacobian:)` ((4, n, n); the t slice is left untouched when
    /// `thickness` is false). [B; B′]·M as a banded product, then two GEMMs (·Aᵀ and
    /// B·M·[∂A]ᵀ), one for the pattern alone.
    public func smoothPatternAndJacobian(_ p: FrameParameters, pattern: UnsafeMutablePointer<T>,
                                         jacobian: UnsafeMutablePointer<T>?, thickness: Bool) {
        precondition(profile == .smooth, "analytic gradients exist for the smooth model only")
        let n = frameSize, m = gridSize, w = gradientScratch, np = n * n
        let withJacobian = jacobian != nil
        fillSmoothARecurrence(p, a: w.a, dA: withJacobian ? w.dA : nil, thickness: thickness)
        fillSmoothBRecurrence(p, bs: w.bs, derivative: withJacobian)
        bandedTimesMask(w.bs, rows: withJacobian ? 2 * n : n, into: w.bms)
        guard let jacobian else {
            T.gemm(transA: false, transB: true, m: n, n: n, k: m, alpha: 1,
                   a: w.bms, lda: m, b: w.a, ldb: m, beta: 0, c: pattern, ldc: n)
            return
        }
        // r1 = [BM; B′M]·Aᵀ (2n × n): the pattern and B′·M·Aᵀ.
        T.gemm(transA: false, transB: true, m: 2 * n, n: n, k: m, alpha: 1,
               a: w.bms, lda: m, b: w.a, ldb: m, beta: 0, c: w.r1, ldc: n)
        // r2 = BM·[∂εA; ∂ωA[; ∂tA]]ᵀ (n × kn)
        let k = thickness ? 3 : 2
        T.gemm(transA: false, transB: true, m: n, n: k * n, k: m, alpha: 1,
               a: w.bms, lda: m, b: w.dA, ldb: m, beta: 0, c: w.r2, ldc: k * n)
        let scales = bPrimeScales(p), epsB = T(scales.epsilon), chiB = T(scales.chi)
        for y in 0..<n {
            for x in 0..<n {
                let i = y * n + x, row = y * k * n
                let bPrime = w.r1[np + i]
                pattern[i] = w.r1[i]
                jacobian[i] = epsB * bPrime + w.r2[row + x]
                jacobian[np + i] = w.r2[row + n + x]
                jacobian[2 * np + i] = chiB * bPrime
                if thickness { jacobian[3 * np + i] = w.r2[row + 2 * n + x] }
            }
        }
    }
}
