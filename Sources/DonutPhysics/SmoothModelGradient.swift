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
