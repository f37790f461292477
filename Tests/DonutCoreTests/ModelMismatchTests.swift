import XCTest
import DonutNN
import DonutPhysics
@testable import DonutCore

/// The table of the smooth model's systematic error on box frames and the σ built from it
/// (`ModelMismatch`, issue 16.10).
final class ModelMismatchTests: XCTestCase {
    let config = DonutConfig.srio3LSAT002

    /// Every tabulated estimate is what an independent refinement finds on the noiseless box
    /// frame of its truth (the box pattern from the Double model, a fresh refinement), the truths
    /// cover the ranges, and the tabulated errors are those estimates minus their truths, sorted
    /// by the coordinate u = χ̂/(1+ε̂) (χ) or ω̂/(1+ε̂) (ε, ω).
    func testTableHoldsTheErrorOfNoiselessBoxFrames() {
        let samples = 64
        let table = ModelMismatch.boxAgainstSmooth(config: config, fitThickness: false, samples: samples)
        XCTAssertEqual(table.truths.count, samples)
        let box = ForwardModel<Double>(geometry: DiffractionGeometry(config: config), profile: .box)
        let refine = PhysicsRefinement(config: config, fitThickness: false, maxIterations: 20, modelMismatch: false)
        for k in stride(from: 0, to: samples, by: 7) {
            let truth = table.truths[k]
            let i = box.patterns([truth]), scale = config.noise.peakPhotons / i.max()!
            let x = i.map { Float($0 * scale) }
            let r = x.withUnsafeBufferPointer { refine.refine($0, from: truth) }
            // 2 % of the Fisher σ at 7 photons (8e-5, 2e-4°, 4e-4°).
            XCTAssertEqual(table.estimates[k].strain, r.parameters.strain, accuracy: 2e-6, "sample \(k)")
            XCTAssertEqual(table.estimates[k].tiltLRDeg, r.parameters.tiltLRDeg, accuracy: 4e-6, "sample \(k)")
            XCTAssertEqual(table.estimates[k].tiltUDDeg, r.parameters.tiltUDDeg, accuracy: 8e-6, "sample \(k)")
        }
        // χ stratified: one truth in each 1/64 of the range; ω a permutation of the same slices.
        let r = config.ranges
        let chiSlices = table.truths.map { Int(Double(samples) * ($0.tiltUDDeg - r.tiltUDDeg[0]) / (r.tiltUDDeg[1] - r.tiltUDDeg[0])) }
        let omegaSlices = table.truths.map { Int(Double(samples) * ($0.tiltLRDeg - r.tiltLRDeg[0]) / (r.tiltLRDeg[1] - r.tiltLRDeg[0])) }
        XCTAssertEqual(chiSlices, Array(0..<samples))
        XCTAssertEqual(omegaSlices.sorted(), Array(0..<samples))
        // Sorted coordinates, errors = estimate − truth of the sample at that coordinate.
        for j in 0..<3 {
            XCTAssertEqual(table.coordinates[j], table.coordinates[j].sorted(), "parameter \(j)")
            for (u, e) in zip(table.coordinates[j], table.errors[j]) {
                let k = table.estimates.firstIndex { ModelMismatch.coordinate(j, $0) == u }!
                let est = table.estimates[k], truth = table.truths[k]
                let expected = [est.strain - truth.strain, est.tiltLRDeg - truth.tiltLRDeg, est.tiltUDDeg - truth.tiltUDDeg][j]
                XCTAssertEqual(e, expected, "parameter \(j), u = \(u)")
            }
        }
        // The bias is real: χ's RMS error is well above its Fisher σ at 7 photons (4.2e-4°).
        let chiRMS = (table.errors[2].map { $0 * $0 }.reduce(0, +) / Double(samples)).squareRoot()
        XCTAssertGreaterThan(chiRMS, 8e-4)
    }

    /// With thickness fitted, truths spread over the thickness range, the tabulated thickness
    /// errors are the estimates' minus the truths' (not the 0 of a fixed thickness), and σ_t is
    /// finite and at least its statistical σ.
    func testThicknessIsTabulatedWhenFitted() {
        let table = ModelMismatch.boxAgainstSmooth(config: config, fitThickness: true, samples: 16)
        let r = config.ranges.thicknessA
        XCTAssert(table.truths.allSatisfy { (r[0]...r[1]).contains($0.thicknessA) })
        XCTAssertGreaterThan(Set(table.truths.map(\.thicknessA)).count, 8, "thickness varies between samples")
        let expected = zip(table.estimates, table.truths).map { $0.thicknessA - $1.thicknessA }.sorted()
        XCTAssertEqual(table.errors[3].sorted(), expected)
        XCTAssert(table.errors[3].contains { $0 != 0 })
        let s = SIMD4<Double>(1e-4, 2e-4, 4e-4, 2)
        let sigma = table.sigma(statistical: s, at: table.estimates[3])
        for j in 0..<4 { XCTAssert(sigma[j].isFinite && sigma[j] >= s[j], "parameter \(j): σ \(sigma[j]) vs σ_s \(s[j])") }
    }

    /// The σ from a set of errors b_k holds `coverage` of b_k + s·Z (checked by sampling),
    /// equals s when every b_k = 0, and is the quantile of |b_k| when s = 0.
    func testCoverageQuantileHoldsTheWantedFraction() {
        func quantile(_ b: [Double], _ s: Double) -> Double {
            b.withUnsafeBufferPointer { ModelMismatch.coverageQuantile(errors: $0, noise: s, coverage: ModelMismatch.coverage) }
        }
        let b = [0, 0.5, -1.2, 2.0, 0.3], s = 0.4
        let sigma = quantile(b, s)
        var rng = SplitMix64(seed: 5)
        var inside = 0
        let draws = 200_000
        for i in 0..<draws where abs(b[i % b.count] + s * rng.normal()) < sigma { inside += 1 }
        // ±5 binomial standard deviations of 200,000 draws: 0.0052.
        XCTAssertEqual(Double(inside) / Double(draws), 0.6827, accuracy: 0.0052)
        XCTAssertEqual(quantile([0, 0, 0], s), s, accuracy: 1e-10)
        XCTAssertGreaterThan(sigma, s, "a spread of errors only widens σ")
        XCTAssertEqual(quantile([1, -2, 3, -4, 5, -6, 7, -8, 9, -10], 0), 7, "7 of 10 |b| ≤ 7")
    }

    /// σ follows the errors tabulated near the estimate: a synthetic table whose χ errors are 0
    /// below χ̂ = 0.005° and 1e-3° above gives σ = σ_s far below and b + 0.47523·σ_s far above
    /// (Φ(0.47523) = 0.6827: all of the window on one side), and uses at least the 16 nearest.
    func testSigmaFollowsTheErrorsNearTheEstimate() {
        var truths: [FrameParameters] = [], estimates: [FrameParameters] = []
        for k in 0..<40 {
            let chi = 0.01 * Double(k) / 40
            let error = chi < 0.005 ? 0 : 1e-3
            estimates.append(FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: chi, thicknessA: 117))
            truths.append(FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: chi - error, thicknessA: 117))
        }
        let table = ModelMismatch(truths: truths, estimates: estimates, fitThickness: false)
        let s = SIMD4<Double>(1e-5, 1e-4, 1e-4, .nan)
        let low = table.sigma(statistical: s, at: FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: 0.001, thicknessA: 117))
        XCTAssertEqual(low[2], 1e-4, accuracy: 1e-12)
        XCTAssert(low[3].isNaN, "t not fitted: σ stays NaN")
        let high = table.sigma(statistical: s, at: FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: 0.0095, thicknessA: 117))
        XCTAssertEqual(high[2], 1e-3 + 0.47523 * 1e-4, accuracy: 1e-9)
        // Window of ±2σ_s = ±2e-4° holds 1 sample (spacing 2.5e-4°): the 16 nearest are used.
        let near = table.neighbours(2, of: FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: 0.005, thicknessA: 117), halfWidth: 2e-4)
        XCTAssertEqual(near.count, ModelMismatch.minimumNeighbours)
        XCTAssertEqual(near, 12..<28)
        // A wide window takes every sample inside it.
        XCTAssertEqual(table.neighbours(2, of: FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: 0.005, thicknessA: 117), halfWidth: 0.006), 0..<40)
    }
}
