import XCTest
import DonutPhysics

final class GradientTests: XCTestCase {
    let model = ForwardModel<Double>(geometry: DiffractionGeometry(config: .srio3LSAT002), profile: .smooth)

    static func randomPoints(_ count: Int, seed: UInt64) -> [FrameParameters] {
        var rng = TestRNG(state: seed)
        return (0..<count).map { _ in
            FrameParameters(strain: rng.uniform(-0.005, 0.005), tiltLRDeg: rng.uniform(-0.05, 0.05),
                            tiltUDDeg: rng.uniform(-0.1, 0.1), thicknessA: rng.uniform(80, 160))
        }
    }

    func perturbed(_ p: FrameParameters, _ axis: ParameterAxis, _ h: Double) -> FrameParameters {
        var q = p
        switch axis {
        case .strain: q.strain += h
        case .tiltLR: q.tiltLRDeg += h
        case .tiltUD: q.tiltUDDeg += h
        case .thickness: q.thicknessA += h
        }
        return q
    }

    /// Analytic Jacobian vs central finite differences in Double, element-wise, at 24
    /// random points. Steps are ~1e-4 of each parameter's range so the O(h²) truncation
    /// error (~1e-8 relative) sits far below the tolerance; tolerance is relative to each
    /// pixel plus 1e-6 of the largest |∂I/∂θ| of that axis (pixels where ∂I/∂θ crosses 0).
    func testJacobianMatchesCentralDifferences() {
        let steps: [ParameterAxis: Double] = [.strain: 1e-7, .tiltLR: 1e-5, .tiltUD: 2e-5, .thickness: 1e-3]
        let np = 4096
        var pattern = [Double](repeating: 0, count: np), jac = [Double](repeating: 0, count: 4 * np)
        for p in Self.randomPoints(24, seed: 42) {
            model.jacobian(p, pattern: &pattern, jacobian: &jac)
            let direct = model.patterns([p])
            let peak = direct.max()!
            let worst = zip(pattern, direct).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(worst, 1e-12 * peak, "pattern from the Jacobian path vs the forward path at \(p)")
            for axis in ParameterAxis.allCases {
                let h = steps[axis]!
                let plus = model.patterns([perturbed(p, axis, h)]), minus = model.patterns([perturbed(p, axis, -h)])
                let analytic = jac[(axis.rawValue * np)..<((axis.rawValue + 1) * np)]
                let scale = analytic.map(abs).max()!
                XCTAssertGreaterThan(scale, 0, "\(axis) has no effect at \(p)")
                for i in 0..<np {
                    let fd = (plus[i] - minus[i]) / (2 * h)
                    let a = analytic[analytic.startIndex + i]
                    let tol = 1e-5 * abs(fd) + 1e-6 * scale
                    if abs(a - fd) > tol {
                        XCTFail("∂I/∂\(axis) at \(p), pixel (y \(i / 64), x \(i % 64)): analytic \(a), central difference \(fd), tolerance \(tol)")
                        return
                    }
                }
            }
        }
    }

    /// The batched physics layer (sum-normalised to target totals) against central
    /// differences of L = Σ g ⊙ Î(θ) in Double, per frame and parameter, batch of 5.
    func testPhysicsLayerGradientMatchesCentralDifferences() {
        var rng = TestRNG(state: 21)
        let layer = PhysicsLayer<Double>(model: model, capacity: 5)
        let params = Self.randomPoints(5, seed: 77)
        let targets = (0..<5).map { _ in rng.uniform(500, 3000) }
        let np = 4096
        let g = (0..<(5 * np)).map { _ in rng.uniform(-1, 1) }
        var out = [Double](repeating: 0, count: 5 * np), grad = [Double](repeating: 0, count: 20)
        layer.forward(params, count: 5, targetSums: targets, out: &out)
        for k in 0..<5 {
            XCTAssertEqual(out[(k * np)..<((k + 1) * np)].reduce(0, +), targets[k], accuracy: 1e-9 * targets[k], "normalised total of frame \(k)")
        }
        layer.backward(upstream: g, gradients: &grad)
        func loss(_ p: [FrameParameters]) -> Double {
            let probe = PhysicsLayer<Double>(model: model, capacity: 5)
            var o = [Double](repeating: 0, count: 5 * np)
            probe.forward(p, count: 5, targetSums: targets, out: &o)
            return zip(g, o).map { $0 * $1 }.reduce(0, +)
        }
        let steps: [ParameterAxis: Double] = [.strain: 1e-7, .tiltLR: 1e-5, .tiltUD: 2e-5, .thickness: 1e-3]
        for k in 0..<5 {
            for axis in ParameterAxis.allCases {
                var plus = params, minus = params
                plus[k] = perturbed(params[k], axis, steps[axis]!); minus[k] = perturbed(params[k], axis, -steps[axis]!)
                let fd = (loss(plus) - loss(minus)) / (2 * steps[axis]!)
                let analytic = grad[4 * k + axis.rawValue]
                // Random g makes L a sum of ±terms; 1e-5 relative to the larger of |fd| and
                // the magnitude scale of L's terms (the FD truncation error is ~1e-8 of it).
                XCTAssertEqual(analytic, fd, accuracy: 1e-5 * max(abs(fd), abs(analytic)) + 1e-9 * targets[k],
                               "∂L/∂\(axis) of frame \(k) at \(params[k])")
            }
        }
    }

    /// Adjoint identity: the layer's backward equals ⟨∂L/∂I, ∂I/∂θ⟩ with the Jacobian,
    /// ∂L/∂I taken through the normalisation formula. Relative 1e-9.
    func testPhysicsLayerBackwardIsTheJacobianTranspose() {
        var rng = TestRNG(state: 3)
        let np = 4096
        let layer = PhysicsLayer<Double>(model: model, capacity: 1)
        var pattern = [Double](repeating: 0, count: np), jac = [Double](repeating: 0, count: 4 * np)
        for p in Self.randomPoints(10, seed: 9) {
            let g = (0..<np).map { _ in rng.uniform(-1, 1) }
            let target = 1000.0
            var out = [Double](repeating: 0, count: np), grad = [Double](repeating: 0, count: 4)
            layer.forward([p], count: 1, targetSums: [target], out: &out)
            layer.backward(upstream: g, gradients: &grad)
            model.jacobian(p, pattern: &pattern, jacobian: &jac)
            let s = pattern.reduce(0, +)
            let gi = zip(g, pattern).map { $0 * $1 }.reduce(0, +)
            let dLdI = g.map { target / s * ($0 - gi / s) }
            for axis in ParameterAxis.allCases {
                var dot = 0.0, mag = 0.0
                for i in 0..<np { dot += dLdI[i] * jac[axis.rawValue * np + i]; mag += abs(dLdI[i] * jac[axis.rawValue * np + i]) }
                XCTAssertEqual(grad[axis.rawValue], dot, accuracy: 1e-9 * mag, "\(axis) at \(p)")
            }
        }
    }

    /// The Float gradient path agrees with the Double one to Float precision.
    func testFloatJacobianTracksDouble() {
        let f = ForwardModel<Float>(geometry: DiffractionGeometry(config: .srio3LSAT002), profile: .smooth)
        let np = 4096
        var pd = [Double](repeating: 0, count: np), jd = [Double](repeating: 0, count: 4 * np)
        var pf = [Float](repeating: 0, count: np), jf = [Float](repeating: 0, count: 4 * np)
        for p in Self.randomPoints(3, seed: 5) {
            model.jacobian(p, pattern: &pd, jacobian: &jd)
            f.jacobian(p, pattern: &pf, jacobian: &jf)
            for axis in 0..<4 {
                let scale = jd[(axis * np)..<((axis + 1) * np)].map(abs).max()!
                for i in 0..<np {
                    XCTAssertEqual(Double(jf[axis * np + i]), jd[axis * np + i], accuracy: 1e-4 * scale, "axis \(axis) pixel \(i)")
                }
            }
        }
    }
}
