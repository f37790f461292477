import DonutBLAS

/// A parameter group: the tensors the optimiser steps with one learning rate and weight decay
/// (as one entry of PyTorch's `param_groups`), e.g. weights with decay and BN/bias without.
public struct ParameterGroup: Sendable, Hashable {
    public let name: String
    public var learningRate: Double
    public var weightDecay: Double
}

/// Index of a group in `ParameterStore.groups`.
public struct ParameterGroupID: Sendable, Hashable {
    public let index: Int
}

/// A named tensor carved out of the store's flat buffers: elements [offset, offset + count) of
/// parameters, gradients and both moments, with its shape (row-major; e.g. (outC, inC, kH, kW)).
public struct TensorView: Sendable, Hashable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public let count: Int
    public let group: ParameterGroupID
}

/// All trainable parameters of a model in four flat buffers (llm.c style): parameters, gradients
/// and AdamW's first and second moments, each `count` elements, one allocation each in `finalize()`.
/// A model declares groups and tensors (`addGroup`, `add`), finalises once, then reaches its tensors
/// through `parameter(view)` / `gradient(view)` pointers. Checkpoints list `tensors` (names,
/// shapes, offsets) and write the flat buffers as they are.
///
/// Not thread-safe; the buffers are owned by the store and freed with it — pointers taken from it
/// must not outlive it.
public final class ParameterStore<T: GEMMScalar> {
    public private(set) var groups: [ParameterGroup] = []
    /// Tensors in declaration order, back to back: tensors[i].offset = Σ_{j<i} tensors[j].count.
    public private(set) var tensors: [TensorView] = []
    /// Total number of scalars (each buffer's length).
    public private(set) var count = 0
    public private(set) var isFinalized = false

    private var params: UnsafeMutablePointer<T>?
    private var grads: UnsafeMutablePointer<T>?
    private var moment1: UnsafeMutablePointer<T>?
    private var moment2: UnsafeMutablePointer<T>?
    /// Maximal runs of consecutive tensors of one group: (offset, count, group), for the optimiser.
    private(set) var runs: [(offset: Int, count: Int, group: Int)] = []

    public init() {}

    deinit {
        params?.deallocate(); grads?.deallocate(); moment1?.deallocate(); moment2?.deallocate()
    }

    /// Declares a parameter group (before `finalize`).
    public func addGroup(name: String, learningRate: Double, weightDecay: Double) -> ParameterGroupID {
        precondition(!isFinalized, "groups are declared before finalize()")
        precondition(!groups.contains { $0.name == name }, "duplicate parameter group \(name)")
        groups.append(ParameterGroup(name: name, learningRate: learningRate, weightDecay: weightDecay))
        return ParameterGroupID(index: groups.count - 1)
    }

    /// Changes a group's learning rate (schedules) or weight decay between steps.
    public func setHyperparameters(_ group: ParameterGroupID, learningRate: Double? = nil, weightDecay: Double? = nil) {
        if let learningRate { groups[group.index].learningRate = learningRate }
        if let weightDecay { groups[group.index].weightDecay = weightDecay }
    }

    /// Declares a tensor of `shape` (row-major, every extent > 0) in `group`; its place in the flat
    /// buffers is fixed now, its memory exists after `finalize()`. Names are unique.
    public func add(name: String, shape: [Int], group: ParameterGroupID) -> TensorView {
        precondition(!isFinalized, "tensors are declared before finalize()")
        precondition(!shape.isEmpty && shape.allSatisfy { $0 > 0 }, "tensor \(name): bad shape \(shape)")
        precondition(group.index >= 0 && group.index < groups.count, "tensor \(name): unknown group")
        precondition(tensor(named: name) == nil, "duplicate tensor name \(name)")
        let n = shape.reduce(1, *)
        let view = TensorView(name: name, shape: shape, offset: count, count: n, group: group)
        tensors.append(view)
        count += n
        if let last = runs.last, last.group == group.index {
            runs[runs.count - 1].count += n
        } else {
            runs.append((offset: view.offset, count: n, group: group.index))
        }
        return view
    }

    /// Allocates the four buffers once, all zero (parameters are then set by the init helpers).
    public func finalize() {
        precondition(!isFinalized, "finalize() once")
        isFinalized = true
        let n = max(count, 1)
        func zeroed() -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        params = zeroed(); grads = zeroed(); moment1 = zeroed(); moment2 = zeroed()
    }

    public func tensor(named name: String) -> TensorView? { tensors.first { $0.name == name } }

    /// The flat buffers (count elements each); valid after `finalize()`.
    public var parameters: UnsafeMutablePointer<T> { guard let params else { fatalError("ParameterStore not finalized") }; return params }
    public var gradients: UnsafeMutablePointer<T> { guard let grads else { fatalError("ParameterStore not finalized") }; return grads }
    public var firstMoments: UnsafeMutablePointer<T> { guard let moment1 else { fatalError("ParameterStore not finalized") }; return moment1 }
    public var secondMoments: UnsafeMutablePointer<T> { guard let moment2 else { fatalError("ParameterStore not finalized") }; return moment2 }

    /// The view's `count` parameters (shape `view.shape`).
    public func parameter(_ view: TensorView) -> UnsafeMutablePointer<T> { parameters + view.offset }
    /// The view's `count` gradients; backward passes add into them.
    public func gradient(_ view: TensorView) -> UnsafeMutablePointer<T> { gradients + view.offset }
    public func firstMoment(_ view: TensorView) -> UnsafeMutablePointer<T> { firstMoments + view.offset }
    public func secondMoment(_ view: TensorView) -> UnsafeMutablePointer<T> { secondMoments + view.offset }

    /// Zeroes every gradient (one loop over the flat buffer): once per step, before the backward pass.
    public func zeroGradients() {
        gradients.update(repeating: 0, count: count)
    }

    // MARK: Initialisation (seeded, deterministic: same seed and declaration order → same parameters)

    /// fan_in as PyTorch computes it: the product of every extent after the first
    /// ((outC, inC, kH, kW) → inC·kH·kW; (out, in) → in).
    public static func fanIn(_ shape: [Int]) -> Int { shape.dropFirst().reduce(1, *) }

    /// Every element uniform in [−bound, bound), drawn in element order.
    public func initializeUniform(_ view: TensorView, bound: Double, rng: inout SplitMix64) {
        let p = parameter(view)
        for i in 0..<view.count { p[i] = T(rng.uniform(-bound, bound)) }
    }

    public func initializeConstant(_ view: TensorView, _ value: Double) {
        parameter(view).update(repeating: T(value), count: view.count)
    }

    /// Kaiming (He) uniform: U(−gain·√(3/fanIn), gain·√(3/fanIn)); gain √2 for ReLU.
    public func initializeKaimingUniform(_ view: TensorView, gain: Double, rng: inout SplitMix64) {
        initializeUniform(view, bound: gain * (3 / Double(Self.fanIn(view.shape))).squareRoot(), rng: &rng)
    }

    /// PyTorch's default `reset_parameters()` for Conv2d and Linear: weight kaiming_uniform(a = √5),
    /// i.e. gain √(1/3), bound 1/√fanIn; bias U(−1/√fanIn, 1/√fanIn) with the weight's fanIn.
    /// Weight drawn first, then bias.
    public func initializePyTorchDefault(weight: TensorView, bias: TensorView?, rng: inout SplitMix64) {
        let bound = 1 / Double(Self.fanIn(weight.shape)).squareRoot()
        initializeUniform(weight, bound: bound, rng: &rng)
        if let bias { initializeUniform(bias, bound: bound, rng: &rng) }
    }

    /// BatchNorm affine parameters as PyTorch: γ = 1, β = 0.
    public func initializeBatchNorm(gamma: TensorView, beta: TensorView) {
        initializeConstant(gamma, 1)
        initializeConstant(beta, 0)
    }
}
