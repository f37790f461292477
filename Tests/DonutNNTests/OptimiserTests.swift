import XCTest
import Foundation
import DonutBLAS
import DonutNN

final class AdamWTests: XCTestCase {
    /// Three scalars in two groups, declared interleaved (decay, no-decay, decay), three steps with
    /// given gradients. The expected trajectory is computed here from the textbook AdamW
    /// (Loshchilov & Hutter; PyTorch's documented algorithm), scalar by scalar, without the optimiser.
    func testThreeStepTrajectoryByHand() {
        let start = [1.0, -0.5, 2.0]
        let lr = [0.1, 0.05, 0.1], wd = [0.01, 0.0, 0.01]    // per scalar, from its group
        let gradients: [[Double]] = [[0.1, -0.2, 0.3], [-0.05, 0.1, 0.3], [0.2, 0.0, -0.1]]
        let beta1 = 0.9, beta2 = 0.999, eps = 1e-8

        var theta = start, m = [0.0, 0, 0], v = [0.0, 0, 0]
        var trajectory: [[Double]] = []
        for t in 1...3 {
            for i in 0..<3 {
                let g = gradients[t - 1][i]
                theta[i] -= lr[i] * wd[i] * theta[i]                 // decoupled decay first
                m[i] = beta1 * m[i] + (1 - beta1) * g
                v[i] = beta2 * v[i] + (1 - beta2) * g * g
                let mHat = m[i] / (1 - pow(beta1, Double(t)))
                let vHat = v[i] / (1 - pow(beta2, Double(t)))
                theta[i] -= lr[i] * mHat / (vHat.squareRoot() + eps)
            }
            trajectory.append(theta)
        }
        // Step 1 in closed form (m̂ = g, v̂ = g²): θ(1 − lr·wd) − lr·g/(|g| + ε).
        XCTAssertEqual(trajectory[0][0], 1 * (1 - 0.1 * 0.01) - 0.1 * 0.1 / (0.1 + 1e-8), accuracy: 1e-15)
        XCTAssertEqual(trajectory[0][1], -0.5 + 0.05 * 0.2 / (0.2 + 1e-8), accuracy: 1e-15)

        // Double: same formulas, different association (PyTorch's step size / denominator form): 1e-12 relative.
        run(Double.self, start: start, gradients: gradients, expected: trajectory, rtol: 1e-12, atol: 1e-14)
        // Float: ~1e-7 per operation over three steps, on values ≈ 1: 1e-5.
        run(Float.self, start: start, gradients: gradients, expected: trajectory, rtol: 1e-5, atol: 1e-6)
    }

    private func run<T: GEMMScalar>(_: T.Type, start: [Double], gradients: [[Double]], expected: [[Double]], rtol: Double, atol: Double) {
        let store = ParameterStore<T>()
        let decay = store.addGroup(name: "weights", learningRate: 0.1, weightDecay: 0.01)
        let plain = store.addGroup(name: "norms", learningRate: 0.05, weightDecay: 0)
        let a = store.add(name: "a", shape: [1], group: decay)
        let b = store.add(name: "b", shape: [1], group: plain)
        let c = store.add(name: "c", shape: [1], group: decay)
        store.finalize()
        let views = [a, b, c]
        for i in 0..<3 { store.parameter(views[i]).pointee = T(start[i]) }
        var adam = AdamW()
        for t in 0..<3 {
            store.zeroGradients()
            for i in 0..<3 { store.gradient(views[i]).pointee += T(gradients[t][i]) }
            adam.step(store)
            let observed = views.map { store.parameter($0).pointee }
            assertClose(observed, expected[t], atol: atol, rtol: rtol, "AdamW \(T.self) after step \(t + 1)")
        }
        XCTAssertEqual(adam.stepCount, 3)
    }

    /// A learning rate changed between steps is used by the next step (schedules).
    func testChangedLearningRateApplies() {
        let store = ParameterStore<Double>()
        let group = store.addGroup(name: "all", learningRate: 0.1, weightDecay: 0)
        let p = store.add(name: "p", shape: [1], group: group)
        store.finalize()
        store.setHyperparameters(group, learningRate: 0.02)
        store.gradient(p).pointee = -3
        var adam = AdamW()
        adam.step(store)
        XCTAssertEqual(store.parameter(p).pointee, 0.02 * 3 / (3 + 1e-8), accuracy: 1e-15)   // step 1 moves by lr·sign(g)
    }
}

final class ParameterStoreTests: XCTestCase {
    /// A small conv/BN/linear model's tensors in three groups.
    static func makeStore(seed: UInt64) -> ParameterStore<Float> {
        let store = ParameterStore<Float>()
        let weights = store.addGroup(name: "weights", learningRate: 1e-3, weightDecay: 1e-2)
        let norms = store.addGroup(name: "norms", learningRate: 1e-3, weightDecay: 0)
        let head = store.addGroup(name: "head", learningRate: 1e-4, weightDecay: 1e-2)
        let c1w = store.add(name: "conv1.weight", shape: [8, 1, 3, 3], group: weights)
        let c1b = store.add(name: "conv1.bias", shape: [8], group: norms)
        let bng = store.add(name: "bn1.gamma", shape: [8], group: norms)
        let bnb = store.add(name: "bn1.beta", shape: [8], group: norms)
        let c2w = store.add(name: "conv2.weight", shape: [16, 8, 3, 3], group: weights)
        let fcw = store.add(name: "fc.weight", shape: [4, 16 * 5 * 7], group: head)
        let fcb = store.add(name: "fc.bias", shape: [4], group: head)
        store.finalize()
        var rng = SplitMix64(seed: seed)
        store.initializePyTorchDefault(weight: c1w, bias: c1b, rng: &rng)
        store.initializeBatchNorm(gamma: bng, beta: bnb)
        store.initializePyTorchDefault(weight: c2w, bias: nil, rng: &rng)
        store.initializePyTorchDefault(weight: fcw, bias: fcb, rng: &rng)
        return store
    }

    func testViewsTileTheFlatBufferWithoutOverlap() {
        let store = Self.makeStore(seed: 1)
        XCTAssertEqual(store.tensors.map(\.name), ["conv1.weight", "conv1.bias", "bn1.gamma", "bn1.beta", "conv2.weight", "fc.weight", "fc.bias"])
        XCTAssertEqual(store.tensor(named: "conv2.weight")?.shape, [16, 8, 3, 3])
        XCTAssertEqual(store.tensor(named: "fc.weight")?.count, 4 * 560)
        XCTAssertNil(store.tensor(named: "missing"))
        let expectedCount = 72 + 8 + 8 + 8 + 1152 + 2240 + 4
        XCTAssertEqual(store.count, expectedCount)
        // Every element belongs to exactly one view.
        var owner = [Int](repeating: -1, count: store.count)
        for (t, view) in store.tensors.enumerated() {
            XCTAssertEqual(view.count, view.shape.reduce(1, *), view.name)
            for i in view.offset..<(view.offset + view.count) {
                XCTAssertEqual(owner[i], -1, "\(view.name) overlaps \(owner[i] >= 0 ? store.tensors[owner[i]].name : "")")
                owner[i] = t
            }
            XCTAssertEqual(store.parameter(view), store.parameters + view.offset)
            XCTAssertEqual(store.gradient(view), store.gradients + view.offset)
        }
        XCTAssertFalse(owner.contains(-1), "the views cover the buffer")
        // Writing through one view leaves its neighbours alone.
        let bias = store.tensor(named: "conv1.bias")!
        let before = Array(UnsafeBufferPointer(start: store.parameters, count: store.count))
        store.parameter(bias).update(repeating: 42, count: bias.count)
        for i in 0..<store.count where owner[i] != 1 { XCTAssertEqual(store.parameters[i], before[i]) }
    }

    func testZeroGradientsZeroesEverythingAndNothingElse() {
        let store = Self.makeStore(seed: 2)
        for i in 0..<store.count { store.gradients[i] = Float(i % 7) + 1; store.firstMoments[i] = 3 }
        let params = Array(UnsafeBufferPointer(start: store.parameters, count: store.count))
        store.zeroGradients()
        XCTAssertTrue((0..<store.count).allSatisfy { store.gradients[$0] == 0 })
        XCTAssertTrue((0..<store.count).allSatisfy { store.firstMoments[$0] == 3 })
        XCTAssertEqual(Array(UnsafeBufferPointer(start: store.parameters, count: store.count)), params)
    }

    /// Same seed → the same parameters bit for bit; another seed → others. PyTorch's bounds:
    /// |w|, |b| ≤ 1/√fanIn with fanIn = inC·kH·kW (conv) or in (linear); BN γ = 1, β = 0.
    func testSeededInitialisationIsDeterministicAndWithinPyTorchBounds() {
        let a = Self.makeStore(seed: 7), b = Self.makeStore(seed: 7), c = Self.makeStore(seed: 8)
        let pa = Array(UnsafeBufferPointer(start: a.parameters, count: a.count))
        XCTAssertEqual(pa, Array(UnsafeBufferPointer(start: b.parameters, count: b.count)))
        XCTAssertNotEqual(pa, Array(UnsafeBufferPointer(start: c.parameters, count: c.count)))
        let bounds = ["conv1.weight": 1 / 3.0, "conv1.bias": 1 / 3.0, "conv2.weight": 1 / 72.0.squareRoot(),
                      "fc.weight": 1 / 560.0.squareRoot(), "fc.bias": 1 / 560.0.squareRoot()]
        for (name, bound) in bounds {
            let v = a.tensor(named: name)!
            let values = (0..<v.count).map { Double(a.parameter(v)[$0]) }
            XCTAssertLessThanOrEqual(values.map(abs).max()!, bound * (1 + 1e-6), name)
            // Uniform on [−bound, bound): the largest |value| of n ≥ 8 draws is near the bound.
            XCTAssertGreaterThan(values.map(abs).max()!, bound * 0.5, "\(name) fills its range")
        }
        let gamma = a.tensor(named: "bn1.gamma")!, beta = a.tensor(named: "bn1.beta")!
        XCTAssertTrue((0..<8).allSatisfy { a.parameter(gamma)[$0] == 1 && a.parameter(beta)[$0] == 0 })
        XCTAssertEqual(ParameterStore<Float>.fanIn([16, 8, 3, 3]), 72)
        XCTAssertEqual(ParameterStore<Float>.fanIn([4, 560]), 560)
        XCTAssertEqual(a.groups.map(\.name), ["weights", "norms", "head"])
        XCTAssertEqual(a.tensor(named: "bn1.beta")?.group, a.tensor(named: "conv1.bias")?.group)
    }
}
