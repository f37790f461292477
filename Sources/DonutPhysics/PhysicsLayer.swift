import Foundation
import DonutBLAS

/// The smooth forward model as a differentiable layer over a batch, for training and
/// refinement: `forward` evaluates Î_k = s_k·I(θ_k) and keeps what `backward` needs;
/// `backward` returns ∂L/∂θ_k from ∂L/∂Î_k.
///
/// **Intensity normalisation.** The model's absolute scale is arbitrary (unknown flux,
/// exposure, detector efficiency), so each pattern is scaled to the total counts of the
/// frame it is compared with: s_k = T_k / ΣI(θ_k), T_k = Σ frame_k. Then
///
///     ∂L/∂I_j = (T/S)·(g_j − Σ_i g_i·I_i / S)        S = Σ_i I_i,  g = ∂L/∂Î
///
/// Sum normalisation discards the film's total scattering power, so thickness is learned
/// only from the shape of the Laue fringes along qz (their width ∝ 1/t), not from the
/// brightness. That is what keeps it meaningful when simulated and measured frames are
/// mixed: their absolute scales differ and a thickness that rode on brightness would
/// absorb the difference (the failure the DONUT paper reports).
///
/// The factors are built as in physics refinement (`smoothPatternAndJacobian`): A and its
/// derivatives and [B; B′] (B′ = ∂B/∂qy: ∂B/∂ε = χ·dG/dε·B′, ∂B/∂χ = G·π/180·B′) by recurrences
/// along the zone-plate grid, and the products with the zone-plate mask M as banded GEMMs
/// (`bandedTimesMask`; M is symmetric, so A·Mᵀ = A·M).
///
/// Caches and scratch are allocated once for `capacity` frames; a larger batch is an
/// explicit `reserve`, never an allocation inside a step.
public final class PhysicsLayer<T: GEMMScalar> {
    public let model: ForwardModel<T>
    public private(set) var capacity = 0
    let n: Int, m: Int
    /// Per frame: A (n×m), [∂εA; ∂ωA; ∂tA] (3n×m), [B; B′] (2n×m), B·M (n×m), raw I (n×n).
    var a, dA, bs, bm, raw: UnsafeMutablePointer<T>
    /// Scratch of backward: ∂L/∂A and ∂L/∂B (n×m each), A·Mᵀ (n×m), ∂L/∂I (n×n).
    var gradA, gradB, am, gradRaw: UnsafeMutablePointer<T>
    var sums: [Double] = [], scales: [Double] = []
    /// Per frame, ∂B/∂ε and ∂B/∂χ as multiples of B′: χ·dG/dε and G·π/180.
    var epsilonB: [Double] = [], chiB: [Double] = []
    var batch = 0

    public init(model: ForwardModel<T>, capacity: Int) {
        precondition(model.profile == .smooth, "the physics layer needs the differentiable (smooth) model")
        self.model = model
        n = model.frameSize; m = model.gridSize
        a = .allocate(capacity: 1); dA = .allocate(capacity: 1); bs = .allocate(capacity: 1)
        bm = .allocate(capacity: 1); raw = .allocate(capacity: 1)
        gradA = .allocate(capacity: n * m); gradB = .allocate(capacity: n * m)
        am = .allocate(capacity: n * m); gradRaw = .allocate(capacity: n * n)
        reserve(capacity)
    }
    deinit { for p in [a, dA, bs, bm, raw, gradA, gradB, am, gradRaw] { p.deallocate() } }

    /// Re-plans the caches for batches of up to `count` frames (allocates; call outside steps).
    public func reserve(_ count: Int) {
        guard count > capacity else { return }
        for p in [a, dA, bs, bm, raw] { p.deallocate() }
        a = .allocate(capacity: count * n * m); dA = .allocate(capacity: 3 * count * n * m)
        bs = .allocate(capacity: 2 * count * n * m); bm = .allocate(capacity: count * n * m)
        raw = .allocate(capacity: count * n * n)
        sums = .init(repeating: 0, count: count); scales = sums; epsilonB = sums; chiB = sums
        capacity = count
    }

    /// Î_k (count, n, n) = T_k·I(θ_k)/ΣI(θ_k) for k < count; `targetSums[k]` = T_k (counts).
    public func forward(_ params: UnsafePointer<FrameParameters>, count: Int, targetSums: UnsafePointer<Double>,
                        out: UnsafeMutablePointer<T>) {
        precondition(count <= capacity, "batch \(count) exceeds the planned capacity \(capacity): call reserve first")
        batch = count
        let nm = n * m, np = n * n
        for k in 0..<count {
            let p = params[k]
            model.fillSmoothARecurrence(p, a: a + k * nm, dA: dA + 3 * k * nm, thickness: true)
            model.fillSmoothBRecurrence(p, bs: bs + 2 * k * nm, derivative: true)
            (epsilonB[k], chiB[k]) = model.bPrimeScales(p)
        }
        // B·M for every frame (the B′ rows are not needed forward), then I = B·M·Aᵀ.
        for k in 0..<count {
            model.bandedTimesMask(bs + 2 * k * nm, rows: n, into: bm + k * nm)
            T.gemm(transA: false, transB: true, m: n, n: n, k: m, alpha: 1, a: bm + k * nm, lda: m,
                   b: a + k * nm, ldb: m, beta: 0, c: raw + k * np, ldc: n)
            var s = 0.0
            for i in 0..<np { s += Double(raw[k * np + i]) }
            sums[k] = s
            scales[k] = s > 0 ? targetSums[k] / s : 0
            let scale = T(scales[k]), r = raw + k * np, o = out + k * np
            for i in 0..<np { o[i] = r[i] * scale }
        }
    }

    /// ∂L/∂θ_k (count × 4: ε, ω [deg], χ [deg], t [Å]; written, not added) from
    /// ∂L/∂Î_k (count, n, n), for the batch of the last `forward`.
    public func backward(upstream: UnsafePointer<T>, gradients: UnsafeMutablePointer<Double>) {
        let nm = n * m, np = n * n
        for k in 0..<batch {
            // Through the normalisation: ∂L/∂I_j = (T/S)(g_j − Σ_i g_i I_i / S).
            let g = upstream + k * np, r = raw + k * np
            var gi = 0.0
            for i in 0..<np { gi += Double(g[i]) * Double(r[i]) }
            let s = sums[k], scale = scales[k]
            let shift = s > 0 ? gi / s : 0
            for i in 0..<np { gradRaw[i] = T(scale * (Double(g[i]) - shift)) }
            // ∂L/∂A (x,u) = Σ_y ∂L/∂I(y,x)·BM(y,u);  ∂L/∂B (y,v) = Σ_x ∂L/∂I(y,x)·(A·Mᵀ)(x,v), A·Mᵀ = A·M
            T.gemm(transA: true, transB: false, m: n, n: m, k: n, alpha: 1, a: gradRaw, lda: n,
                   b: bm + k * nm, ldb: m, beta: 0, c: gradA, ldc: m)
            model.bandedTimesMask(a + k * nm, rows: n, into: am)
            T.gemm(transA: false, transB: false, m: n, n: m, k: n, alpha: 1, a: gradRaw, lda: n,
                   b: am, ldb: m, beta: 0, c: gradB, ldc: m)
            let dAk = dA + 3 * k * nm, bPrime = bs + 2 * k * nm + nm
            var ge = 0.0, gw = 0.0, gb = 0.0, gt = 0.0
            for i in 0..<nm {
                let ga = Double(gradA[i])
                ge += ga * Double(dAk[i])
                gw += ga * Double(dAk[nm + i])
                gb += Double(gradB[i]) * Double(bPrime[i])
                gt += ga * Double(dAk[2 * nm + i])
            }
            gradients[4 * k] = ge + epsilonB[k] * gb; gradients[4 * k + 1] = gw
            gradients[4 * k + 2] = chiB[k] * gb; gradients[4 * k + 3] = gt
        }
    }
}
