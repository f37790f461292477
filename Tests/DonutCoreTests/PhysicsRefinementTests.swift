import XCTest
import DonutNN
import DonutPhysics
@testable import DonutCore

final class PhysicsRefinementTests: XCTestCase {
    let config = DonutConfig.srio3LSAT002

    func frame(_ p: FrameParameters, peak: Double, noise: Bool, seed: UInt64) -> [Float] {
        let model = ForwardModel<Double>(geometry: DiffractionGeometry(config: config), profile: .smooth)
        let i = model.patterns([p])
        let scale = peak / i.max()!
        var rng = SplitMix64.seeded(seed, stream: 1)
        return i.map { Float(noise ? rng.poisson($0 * scale + 1e-3) : $0 * scale + 1e-3) }
    }

    /// A noiseless frame (λ itself) is recovered from a start half a range-quarter away.
    func testRecoversTheTruthOfANoiselessFrame() {
        let refine = PhysicsRefinement(config: config, fitThickness: true, maxIterations: 30, modelMismatch: false)   // σ not checked
        let truth = FrameParameters(strain: 0.0013, tiltLRDeg: -0.012, tiltUDDeg: 0.031, thicknessA: 131)
        let f = frame(truth, peak: 200, noise: false, seed: 0)
        let start = FrameParameters(strain: 0.0005, tiltLRDeg: -0.002, tiltUDDeg: 0.045, thicknessA: 110)
        let r = f.withUnsafeBufferPointer { refine.refine($0, from: start) }
        XCTAssertEqual(r.parameters.strain, truth.strain, accuracy: 1e-6)
        XCTAssertEqual(r.parameters.tiltLRDeg, truth.tiltLRDeg, accuracy: 1e-5)
        XCTAssertEqual(r.parameters.tiltUDDeg, truth.tiltUDDeg, accuracy: 1e-5)
        XCTAssertEqual(r.parameters.thicknessA, truth.thicknessA, accuracy: 0.05)
        XCTAssertLessThan(r.residual, 1e-3, "λ reproduced")
    }

    /// σ from the Fisher information is calibrated: over 60 Poisson frames (peak 30 photons)
    /// and 3 parameters, ~68 % of errors fall within 1σ and ~95 % within 2σ. Bounds are
    /// ±4 binomial standard deviations for 180 samples.
    func testSigmaIsCalibrated() {
        let refine = PhysicsRefinement(config: config, fitThickness: false, maxIterations: 10, modelMismatch: false)
        var rng = SplitMix64(seed: 17)
        var within1 = 0, within2 = 0, total = 0
        for f in 0..<60 {
            let truth = FrameParameters(strain: rng.uniform(-0.003, 0.003), tiltLRDeg: rng.uniform(-0.03, 0.03),
                                        tiltUDDeg: rng.uniform(-0.06, 0.06), thicknessA: 117)
            let x = frame(truth, peak: 30, noise: true, seed: UInt64(f))
            let start = FrameParameters(strain: truth.strain + 2e-4, tiltLRDeg: truth.tiltLRDeg - 0.002,
                                        tiltUDDeg: truth.tiltUDDeg + 0.004, thicknessA: 117)
            let r = x.withUnsafeBufferPointer { refine.refine($0, from: start) }
            let errors = [r.parameters.strain - truth.strain, r.parameters.tiltLRDeg - truth.tiltLRDeg, r.parameters.tiltUDDeg - truth.tiltUDDeg]
            for (e, s) in zip(errors, [r.sigma[0], r.sigma[1], r.sigma[2]]) {
                XCTAssert(s.isFinite && s > 0, "σ of frame \(f)")
                if abs(e) < s { within1 += 1 }
                if abs(e) < 2 * s { within2 += 1 }
                total += 1
            }
        }
        let f1 = Double(within1) / Double(total), f2 = Double(within2) / Double(total)
        XCTAssert((0.55...0.81).contains(f1), "fraction within 1σ: \(f1) (expected ≈ 0.68)")
        XCTAssert((0.88...0.99).contains(f2), "fraction within 2σ: \(f2) (expected ≈ 0.95)")
    }

    func testSolvesSmallSystems() {
        // [[4, 2], [2, 3]]·x = [2, 1] → x = [0.5, 0]
        let x = solve([4, 2, 2, 3], [2, 1], 2)!
        XCTAssertEqual(x[0], 0.5, accuracy: 1e-14); XCTAssertEqual(x[1], 0, accuracy: 1e-14)
        XCTAssertNil(solve([1, 2, 2, 1], [1, 1], 2), "indefinite matrix refused")
    }
}
