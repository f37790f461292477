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

/// The scan-level decision whether σ carries the model-mismatch term (`MismatchEvidence`,
/// `PhysicsRefinement.finishSigmas`): the sign test of each frame's goodness of fit against a
/// parametric-bootstrap replicate.
final class ScanSigmaModelTests: XCTestCase {
    let config = DonutConfig.srio3LSAT002

    /// z = (n₋ − n₊)/√(n₋ + n₊) for each test; |z| > 3 for either widens; fewer pairs than the
    /// floor (2,048; 32 here) widen: too few to clear the scan.
    func testSignTestDecision() {
        typealias Count = MismatchEvidence.SignCount
        func evidence(_ g: (UInt64, UInt64), _ c: (UInt64, UInt64)) -> MismatchEvidence {
            MismatchEvidence(goodness: Count(below: g.0, above: g.1), contrast: Count(below: c.0, above: c.1))
        }
        XCTAssertEqual(Count(below: 150, above: 50).z, 100 / 200.0.squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(Count(below: 50, above: 150).z, -100 / 200.0.squareRoot(), accuracy: 1e-12)
        XCTAssert(Count().z.isNaN)
        func widen(_ e: MismatchEvidence) -> Bool { e.decision(minimumFrames: 32).widen }
        XCTAssertFalse(widen(evidence((110, 90), (95, 105))))            // z = 1.41, −0.71
        XCTAssertFalse(widen(evidence((121, 79), (79, 121))))            // z = ±2.97
        XCTAssert(widen(evidence((122, 78), (100, 100))))                // goodness z = 3.11
        XCTAssert(widen(evidence((100, 100), (78, 122))), "contrast z = −3.11: flatter or sharper than the model")
        XCTAssert(widen(evidence((16, 15), (15, 16))), "31 pairs: too few to test")
        XCTAssert(evidence((16, 15), (15, 16)).decision(minimumFrames: 32).sentence.contains("too few frames"))
        XCTAssertEqual(MismatchEvidence.minimumFrames, 2048)
        XCTAssert(evidence((1010, 1010), (1010, 1010)).decision.widen, "2,020 pairs, z = 0: below the floor of 2,048")
        XCTAssertFalse(evidence((1030, 1030), (1030, 1030)).decision.widen, "2,060 pairs, z = 0")
        XCTAssertEqual(evidence((1, 2), (3, 4)).counts, [1, 2, 3, 4])
        XCTAssertEqual(MismatchEvidence(counts: [1, 2, 3, 4]), evidence((1, 2), (3, 4)))
        var c = Count()
        c.add(0.9, 1.0); c.add(1.1, 1.0); c.add(1.0, 1.0); c.add(.nan, 1.0); c.add(1.0, .infinity)
        XCTAssertEqual(c, Count(below: 1, above: 1), "ties and non-finite pairs are left out")
    }

    /// A 32×32 `domains` scan at 7 photons refined from its truth: made with the smooth model
    /// (the refinement's own), the tests accept it and σ stays the statistical σ; made with the box
    /// model (the published library's), the contrast test rejects it (measured z = +9.2) and every σ becomes `ModelMismatch.sigma` of the statistical σ at
    /// the frame's estimate (the floor of frames lowered to 1,024 for this scan). Refined as two blocks (two ranks) whose evidence is summed, the σ
    /// maps are identical to the single block's.
    func testScanLevelTestWidensSigmaOnlyUnderMismatch() throws {
        let maps = Phantom.domains.maps(rows: 32, cols: 32, config: config, seed: 3)
        let n = maps.count, np = config.model.frameSize * config.model.frameSize
        func frames(_ profile: Profile) -> [Float] {
            var out = [Float](repeating: 0, count: n * np)
            out.withUnsafeMutableBufferPointer {
                ScanSimulation.frames(of: maps, range: 0..<n, model: ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: profile),
                                      peakPhotons: config.noise.peakPhotons, seed: 17, into: $0)
            }
            return out
        }
        func start(_ range: Range<Int>) -> FrameResults {
            var r = FrameResults(frameRange: range)
            r.strain = range.map { maps.strain[$0] }; r.tiltLRDeg = range.map { maps.tiltLRDeg[$0] }
            r.tiltUDDeg = range.map { maps.tiltUDDeg[$0] }; r.valid = .init(repeating: 1, count: range.count)
            return r
        }
        /// Refines `range` of `x`; returns the results before and after `finishSigmas` (with `other` added to the evidence).
        func refine(_ x: [Float], _ range: Range<Int>, other: () -> MismatchEvidence) -> (PhysicsRefinement, FrameResults, FrameResults) {
            let refinement = PhysicsRefinement(config: config, fitThickness: false)
            var r = start(range)
            refinement.refine(&r, readFrames: { Array(x[($0.lowerBound * np)..<($0.upperBound * np)]) })
            let before = r
            refinement.finishSigmas(&r, minimumFrames: 1024, allreduceSum: { $0 = zip($0, other().counts).map { $0 + $1 } })
            return (refinement, before, r)
        }
        let names = ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"]

        let (smooth, smoothBefore, smoothAfter) = refine(frames(.smooth), 0..<n, other: { MismatchEvidence() })
        XCTAssertEqual(smooth.evidence.pairs, UInt64(n / MismatchEvidence.stride), "every frame is replicated")
        XCTAssertLessThan(abs(smooth.evidence.contrast.z), MismatchEvidence.threshold, "the model that made the frames is accepted")
        XCTAssertLessThan(abs(smooth.evidence.goodness.z), MismatchEvidence.threshold, "the model that made the frames is accepted")
        XCTAssert(smoothAfter.sigmaModel?.hasPrefix("Fisher σ × √max(gof, 1): the smooth model explains") ?? false, smoothAfter.sigmaModel ?? "nil")
        for name in names { XCTAssertEqual(smoothAfter.sigmas[name], smoothBefore.sigmas[name], name) }

        let box = frames(.box)
        let (whole, before, after) = refine(box, 0..<n, other: { MismatchEvidence() })
        XCTAssertGreaterThan(whole.evidence.contrast.z, 6, "box frames' contrast score sits below their smooth-model replicates'")
        XCTAssert(after.sigmaModel?.contains("does not explain the frames") ?? false, after.sigmaModel ?? "nil")
        let table = try XCTUnwrap(whole.mismatch)
        var widened = 0
        for i in 0..<n {
            let s = SIMD4(before.sigmas[names[0]]![i], before.sigmas[names[1]]![i], before.sigmas[names[2]]![i], .nan)
            let expected = table.sigma(statistical: s, at: FrameParameters(strain: after.strain[i], tiltLRDeg: after.tiltLRDeg[i],
                                                                          tiltUDDeg: after.tiltUDDeg[i], thicknessA: 117))
            for (j, name) in names.enumerated() {
                XCTAssertEqual(after.sigmas[name]![i], expected[j], "frame \(i) \(name)")
                if after.sigmas[name]![i] > 1.01 * s[j] { widened += 1 }
            }
        }
        XCTAssertGreaterThan(widened, n, "the mismatch term widens σ on most frames")

        // Two "ranks": each block's evidence plus the other's.
        let half = n / 2 + 3   // not a multiple of the stride: the replicated frames are chosen by scan index
        var firstEvidence = MismatchEvidence(), secondEvidence = MismatchEvidence()
        let first = PhysicsRefinement(config: config, fitThickness: false), second = PhysicsRefinement(config: config, fitThickness: false)
        var a = start(0..<half), b = start(half..<n)
        first.refine(&a, readFrames: { Array(box[($0.lowerBound * np)..<($0.upperBound * np)]) })
        second.refine(&b, readFrames: { Array(box[($0.lowerBound * np)..<($0.upperBound * np)]) })
        firstEvidence = first.evidence; secondEvidence = second.evidence
        XCTAssertEqual(zip(firstEvidence.counts, secondEvidence.counts).map { $0 + $1 }, whole.evidence.counts)
        first.finishSigmas(&a, minimumFrames: 1024, allreduceSum: { $0 = zip($0, secondEvidence.counts).map { $0 + $1 } })
        second.finishSigmas(&b, minimumFrames: 1024, allreduceSum: { $0 = zip($0, firstEvidence.counts).map { $0 + $1 } })
        XCTAssertEqual(a.sigmaModel, after.sigmaModel)
        for name in names { XCTAssertEqual(a.sigmas[name]! + b.sigmas[name]!, after.sigmas[name]!, name) }
    }
}
