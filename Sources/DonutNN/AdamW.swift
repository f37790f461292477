import DonutBLAS
import Foundation

/// AdamW with PyTorch's semantics (`torch.optim.AdamW`, amsgrad off), per parameter group
/// (learning rate lr, weight decay wd from `ParameterStore.groups`). At step t (1-based):
///
///     θ ← θ − lr·wd·θ                       (decoupled weight decay, before the Adam update)
///     m ← β1·m + (1 − β1)·g
///     v ← β2·v + (1 − β2)·g²
///     θ ← θ − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)
///
/// computed as PyTorch does: step size lr/(1 − β1^t), denominator √v/√(1 − β2^t) + ε.
/// The moments live in the store's flat buffers; the step counter lives here (checkpoint it).
public struct AdamW: Sendable, Hashable {
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    /// Steps taken so far (t of the last step); restore it from a checkpoint with the moments.
    public var stepCount: Int

    public init(beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8, stepCount: Int = 0) {
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon; self.stepCount = stepCount
    }

    /// One update of every parameter from the gradients in `store` (one loop over the flat buffers,
    /// run by run of consecutive tensors sharing a group). Does not zero the gradients.
    public mutating func step<T: GEMMScalar>(_ store: ParameterStore<T>) {
        stepCount += 1
        let t = Double(stepCount)
        let bc1 = 1 - pow(beta1, t), bc2 = 1 - pow(beta2, t)
        let p = store.parameters, g = store.gradients, m = store.firstMoments, v = store.secondMoments
        // By index: iterating an array of tuples unspecialised (debug builds) allocates per element.
        for r in store.runs.indices {
            let run = store.runs[r], group = store.groups[run.group]
            let update = AdamWUpdate(parameters: p + run.offset, gradients: g + run.offset, firstMoments: m + run.offset,
                                     secondMoments: v + run.offset, beta1: T(beta1), beta2: T(beta2), c1: T(1 - beta1), c2: T(1 - beta2), epsilon: T(epsilon),
                                     invSqrtBc2: T(1 / bc2.squareRoot()), decay: T(1 - group.learningRate * group.weightDecay),
                                     stepSize: T(group.learningRate / bc1))
            Parallel.forRanges(run.count, work: 4 * run.count, update)
        }
    }
}

/// The AdamW update of elements `items` of one run of parameters sharing a group (element-wise:
/// the same result on any number of threads).
struct AdamWUpdate<T: GEMMScalar>: ParallelLoop {
    let parameters: UnsafeMutablePointer<T>, gradients: UnsafePointer<T>
    let firstMoments: UnsafeMutablePointer<T>, secondMoments: UnsafeMutablePointer<T>
    let beta1: T, beta2: T, c1: T, c2: T, epsilon: T, invSqrtBc2: T, decay: T, stepSize: T

    @_specialize(where T == Float)
    func run(_ items: Range<Int>, worker: Int) {
        let p = parameters, g = gradients, m = firstMoments, v = secondMoments
        for i in items {
            let gi = g[i]
            let mi = beta1 * m[i] + c1 * gi
            let vi = beta2 * v[i] + c2 * gi * gi
            m[i] = mi; v[i] = vi
            p[i] = p[i] * decay - stepSize * mi / (vi.squareRoot() * invSqrtBc2 + epsilon)
        }
    }
}
