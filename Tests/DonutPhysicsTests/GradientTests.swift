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

    /// Adjoint identity: ⟨∂L/∂I, ∂I/∂θ⟩ from the Jacobian equals the pullback's ∂L/∂θ, per
    /// parameter, for random ∂L/∂I. Relative 1e-10 (same Double sums, different order).
    func testPullbackIsTheJacobianTranspose() {
        var rng = TestRNG(state: 3)
        let np = 4096
        var pattern = [Double](repeating: 0, count: np), jac = [Double](repeating: 0, count: 4 * np)
        var pbPattern = [Double](repeating: 0, count: np)
        for p in Self.randomPoints(20, seed: 9) {
            let upstream = (0..<np).map { _ in rng.uniform(-1, 1) }
            model.jacobian(p, pattern: &pattern, jacobian: &jac)
            let grad = upstream.withUnsafeBufferPointer { model.pullback(p, upstream: $0.baseAddress!, pattern: &pbPattern) }
            let peak = pattern.max()!
            XCTAssertLessThanOrEqual(zip(pbPattern, pattern).map { abs($0 - $1) }.max()!, 1e-12 * peak, "pullback pattern at \(p)")
            for axis in ParameterAxis.allCases {
                var dot = 0.0, mag = 0.0
                for i in 0..<np {
                    dot += upstream[i] * jac[axis.rawValue * np + i]
                    mag += abs(upstream[i] * jac[axis.rawValue * np + i])
                }
                XCTAssertEqual(grad[axis.rawValue], dot, accuracy: 1e-10 * mag, "\(axis) at \(p)")
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
