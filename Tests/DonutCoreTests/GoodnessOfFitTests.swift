import XCTest
import DonutNN
import DonutPhysics
@testable import DonutCore

final class GoodnessOfFitTests: XCTestCase {
    let config = DonutConfig.srio3LSAT002

    /// Random parameters inside the published ranges (away from their edges).
    func randomParameters(_ rng: inout SplitMix64) -> FrameParameters {
        FrameParameters(strain: rng.uniform(-0.004, 0.004), tiltLRDeg: rng.uniform(-0.04, 0.04),
                        tiltUDDeg: rng.uniform(-0.08, 0.08), thicknessA: 117)
    }

    /// Poisson frames of `profile` at `truth`, brightest pixel `peak` photons × monitor.
    func frames(_ truth: [FrameParameters], profile: Profile = .smooth, peak: Double = 7, monitor: [Double]? = nil, seed: UInt64 = 1) -> [Float] {
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: profile)
        var out = model.patterns(truth)
        for f in truth.indices {
            let frame = out[(f * 4096)..<((f + 1) * 4096)]
            let scale = peak * (monitor?[f] ?? 1) / Double(frame.max()!)
            var rng = SplitMix64.seeded(seed, stream: UInt64(f))
            for i in frame.indices { out[i] = Float(rng.poisson(Double(out[i]) * scale)) }
        }
        return out
    }

    /// e(μ) (exact pmf sum) against the Monte Carlo mean of d(k; μ) over 400,000 Poisson
    /// draws, within 5 standard errors — an independent check of the formula.
    func testExpectedDevianceMatchesMonteCarlo() {
        var rng = SplitMix64(seed: 3)
        for mu in [0.003, 0.05, 0.4, 1.0, 3.0, 12.0, 80.0] {
            var s = 0.0, s2 = 0.0
            let n = 400_000
            for _ in 0..<n {
                let k = rng.poisson(mu)
                let d = 2 * ((k > 0 ? k * log(k / mu) : 0) - (k - mu))
                s += d; s2 += d * d
            }
            let mean = s / Double(n), se = ((s2 / Double(n) - mean * mean) / Double(n)).squareRoot()
            XCTAssertEqual(PoissonDevianceExpectation.exact(mu), mean, accuracy: 5 * se, "μ = \(mu)")
            XCTAssertEqual(PoissonDevianceExpectation.value(mu), mean, accuracy: 5 * se, "μ = \(mu) (table/asymptote)")
        }
    }

    /// The table and the asymptotes agree with the exact sum across the whole range.
    func testTableAndAsymptotesMatchTheExactSum() {
        var rng = SplitMix64(seed: 9)
        for _ in 0..<400 {
            let mu = exp(rng.uniform(log(1e-7), log(400)))
            let exact = PoissonDevianceExpectation.exact(mu)
            XCTAssertEqual(PoissonDevianceExpectation.value(mu), exact, accuracy: 2e-5 * max(exact, 1e-3), "μ = \(mu)")
        }
        XCTAssertEqual(PoissonDevianceExpectation.value(0), 0)
    }

    /// Frames simulated from the smooth model and judged at their true parameters give gof ≈ 1
    /// (mean within ±0.05 over 40 frames at 7 photons; every frame below the threshold); the
    /// same with the box model (the model mismatch of a box-model scan) stays below it.
    func testGoodnessIsOneForFramesTheModelExplains() {
        var rng = SplitMix64(seed: 5)
        let truth = (0..<40).map { _ in randomParameters(&rng) }
        let gof = GoodnessOfFit(config: config)
        for profile in [Profile.smooth, .box] {
            let block = FrameBlock(first: 0, count: 40, pixelCount: 4096, counts: frames(truth, profile: profile))
            let fits = gof.evaluate(block, frames: Array(0..<40), estimates: truth)
            let mean = fits.reduce(0) { $0 + $1.goodness } / 40
            if profile == .smooth { XCTAssertEqual(mean, 1, accuracy: 0.05, "mean gof of smooth frames") }
            for (f, fit) in fits.enumerated() {
                XCTAssertLessThan(fit.goodness, GoodnessOfFit.defaultThreshold, "\(profile) frame \(f)")
                XCTAssertEqual(fit.measuredPixels, 4096)
            }
        }
    }

    /// An unmasked hot pixel makes gof ≫ 1 and is named as the worst pixel; masked (weight 0)
    /// the frame is back to gof ≈ 1, equal to the deviance computed by brute force over the
    /// other pixels only. Counts scaled by 2 (divided by a monitor of 0.5: not Poisson) give gof ≈ 2.
    func testHotPixelsAndNonPoissonCountsAreCaught() {
        var rng = SplitMix64(seed: 11)
        let truth = (0..<8).map { _ in randomParameters(&rng) }
        let clean = frames(truth, peak: 30)
        let gof = GoodnessOfFit(config: config)
        var hot = clean, weights = [Float](repeating: 1, count: clean.count)
        let hotPixel = 37 * 64 + 21
        for f in 0..<8 { hot[f * 4096 + hotPixel] = 1e6; weights[f * 4096 + hotPixel] = 0 }
        let unmasked = gof.evaluate(FrameBlock(first: 0, count: 8, pixelCount: 4096, counts: hot), frames: Array(0..<8), estimates: truth)
        var maskedCounts = hot
        for f in 0..<8 { maskedCounts[f * 4096 + hotPixel] = 0 }
        let masked = gof.evaluate(FrameBlock(first: 0, count: 8, pixelCount: 4096, counts: maskedCounts, weights: weights),
                                  frames: Array(0..<8), estimates: truth)
        let doubled = gof.evaluate(FrameBlock(first: 0, count: 8, pixelCount: 4096, counts: clean.map { $0 * 2 }),
                                   frames: Array(0..<8), estimates: truth)
        let model = ForwardModel<Double>(geometry: DiffractionGeometry(config: config), profile: .smooth)
        for f in 0..<8 {
            XCTAssertGreaterThan(unmasked[f].goodness, 100, "frame \(f) with a hot pixel")
            XCTAssertEqual(unmasked[f].worstPixel, hotPixel)
            XCTAssertGreaterThan(unmasked[f].worstShare, 0.5)
            XCTAssertLessThan(masked[f].goodness, 1.4, "frame \(f) with the hot pixel masked")
            XCTAssertEqual(masked[f].measuredPixels, 4095)
            XCTAssertEqual(doubled[f].goodness, 2, accuracy: 0.4, "frame \(f) with counts × 2")
            // Brute force over the 4095 other pixels, in Double, from the model's pattern.
            let i = model.patterns([truth[f]])
            var sk = 0.0, si = 0.0
            for p in 0..<4096 where p != hotPixel { sk += Double(clean[f * 4096 + p]); si += i[p] }
            var d = 0.0, e = 0.0
            for p in 0..<4096 where p != hotPixel {
                let mu = sk / si * i[p] + gof.floor, k = Double(clean[f * 4096 + p])
                d += 2 * ((k > 0 ? k * log(k / mu) : 0) - (k - mu)); e += PoissonDevianceExpectation.exact(mu)
            }
            XCTAssertEqual(masked[f].deviance, d, accuracy: 1e-3 * d)
            XCTAssertEqual(masked[f].expected, e, accuracy: 1e-3 * e)
        }
    }

    /// The monitor cancels from gof (the scale is free per frame): frames taken at monitors
    /// 0.8 and 1.2 have gof ≈ 1 with their monitor given.
    func testMonitorScalesTheModel() {
        var rng = SplitMix64(seed: 13)
        let truth = (0..<10).map { _ in randomParameters(&rng) }
        let monitor = (0..<10).map { 0.8 + 0.4 * Double($0) / 9 }
        let counts = frames(truth, peak: 20, monitor: monitor)
        let fits = GoodnessOfFit(config: config).evaluate(FrameBlock(first: 0, count: 10, pixelCount: 4096, counts: counts, monitor: monitor),
                                                          frames: Array(0..<10), estimates: truth)
        XCTAssertEqual(fits.reduce(0) { $0 + $1.goodness } / 10, 1, accuracy: 0.06)
    }

    /// `fill` writes gof for valid frames, sets valid = 0 above the threshold, and the verdict
    /// warns naming the scan, the fraction and the pixel; below 2 % it stays silent.
    func testFillAndVerdict() {
        var rng = SplitMix64(seed: 17)
        let truth = (0..<50).map { _ in randomParameters(&rng) }
        var counts = frames(truth)
        let hotPixel = 10 * 64 + 50
        for f in 0..<5 { counts[f * 4096 + hotPixel] = 4_294_967_295 }   // the uint32 sentinel, unmasked
        let block = FrameBlock(first: 100, count: 50, pixelCount: 4096, counts: counts)
        var results = FrameResults(frameRange: 100..<150)
        for (i, p) in truth.enumerated() {
            results.strain[i] = p.strain; results.tiltLRDeg[i] = p.tiltLRDeg; results.tiltUDDeg[i] = p.tiltUDDeg; results.valid[i] = 1
        }
        results.valid[49] = 0   // a bad frame: no gof
        let gof = GoodnessOfFit(config: config)
        let fits = gof.fill(&results, block: block)
        XCTAssert(results.goodnessOfFit![49].isNaN)
        XCTAssertNil(fits[49])
        for f in 0..<5 { XCTAssertEqual(results.valid[f], 0, "hot frame \(f)"); XCTAssertGreaterThan(results.goodnessOfFit![f], 1000) }
        for f in 5..<49 { XCTAssertEqual(results.valid[f], 1, "clean frame \(f)") }
        var verdict = ScanVerdict(pixelCount: 4096)
        verdict.add(block, results: results, fits: fits, usable: (0..<50).map { $0 != 49 }, threshold: gof.threshold)
        XCTAssertEqual(verdict.flagged, 5); XCTAssertEqual(verdict.unusable, 1); XCTAssertEqual(verdict.judged, 49)
        // Rebuilt from its sums (the allreduce path), the same verdict.
        XCTAssertEqual(ScanVerdict(sums: verdict.sums, pixelCount: 4096), verdict)
        let text = verdict.warning(scan: "raw/eiger_0001.h5", ranges: config.ranges, threshold: gof.threshold)
        XCTAssertNotNil(text)
        XCTAssert(text!.contains("raw/eiger_0001.h5") && text!.contains("5 of 50") && text!.contains("y = 10, x = 50"), text!)
        var quiet = ScanVerdict(pixelCount: 4096)
        quiet.add(block, results: results, fits: fits.enumerated().map { $0.offset < 5 ? nil : $0.element }, usable: (0..<50).map { $0 >= 5 && $0 != 49 },
                  threshold: gof.threshold)
        XCTAssertNil(quiet.warning(scan: "x", ranges: config.ranges, threshold: gof.threshold), "no flagged frames, maps vary")
    }

    /// Maps that are all (nearly) constant while the frames differ are flagged; the same
    /// constant maps from frames that are all alike (a uniform film) are not.
    func testConstantMapsFromDifferentFramesAreFlagged() {
        var rng = SplitMix64(seed: 19)
        let varied = (0..<40).map { _ in randomParameters(&rng) }
        let same = [FrameParameters](repeating: varied[0], count: 40)
        for (truth, expectWarning) in [(varied, true), (same, false)] {
            let block = FrameBlock(first: 0, count: 40, pixelCount: 4096, counts: frames(truth))
            var results = FrameResults(frameRange: 0..<40)
            for i in 0..<40 { results.strain[i] = 1e-3; results.tiltLRDeg[i] = 0.01; results.tiltUDDeg[i] = -0.02; results.valid[i] = 1 }
            let fits = (0..<40).map { _ in FrameFit(goodness: 1, deviance: 1, expected: 1, worstPixel: 0, worstShare: 0, measuredPixels: 4096) }
            var verdict = ScanVerdict(pixelCount: 4096)
            verdict.add(block, results: results, fits: fits, usable: .init(repeating: true, count: 40), threshold: 3)
            let text = verdict.warning(scan: "s", ranges: config.ranges, threshold: 3)
            XCTAssertEqual(text != nil, expectWarning, "centroid spread ratio \(verdict.centroidSpreadRatio): \(text ?? "no warning")")
            if expectWarning { XCTAssert(text!.contains("nearly constant"), text!) }
        }
    }
}
