import XCTest
import DonutNN
import DonutPhysics
import DonutCore

final class SimulationTests: XCTestCase {
    /// Mean and variance of the Poisson sampler on both branches (Knuth < 30 ≤ PTRS),
    /// within 6 standard errors of the exact moments (λ and λ).
    func testPoissonMomentsOnBothBranches() {
        var rng = SplitMix64(seed: 11)
        let n = 200_000
        for lambda in [0.2, 3.0, 7.0, 29.5, 30.0, 120.0, 5000.0] {
            var sum = 0.0, sum2 = 0.0
            for _ in 0..<n { let k = rng.poisson(lambda); XCTAssertEqual(k, k.rounded()); sum += k; sum2 += k * k }
            let mean = sum / Double(n), variance = sum2 / Double(n) - mean * mean
            XCTAssertEqual(mean, lambda, accuracy: 6 * (lambda / Double(n)).squareRoot(), "mean at λ = \(lambda)")
            // Var of the sample variance ≈ (2λ² + λ)/n for Poisson.
            XCTAssertEqual(variance, lambda, accuracy: 6 * ((2 * lambda * lambda + lambda) / Double(n)).squareRoot(), "variance at λ = \(lambda)")
        }
        XCTAssertEqual(rng.poisson(0), 0)
    }

    /// The published phantom against an independent numpy evaluation of its formula
    /// (values printed by numpy 2.4 with meshgrid(x, y), x along columns).
    func testPaperPhantomMatchesIndependentEvaluation() {
        let m = Phantom.paper.maps(rows: 64, cols: 64, config: .srio3LSAT002, seed: 0)
        let golden: [(Int, Int, Double, Double, Double)] = [
            (0, 0, 6.123233995736766e-19, -0.0033978631704630934, -0.0050967947556946405),
            (5, 40, -0.00021694186955877924, -0.00375318932290064, -0.005629783984350959),
            (31, 32, -8.71967124502158e-19, 0.004630906740105899, 0.006946360110158848),
            (63, 10, -0.00048131212347500617, -0.004507976867595342, -0.006761965301393015),
            (20, 63, -0.0002607176016897483, -0.004322199747203044, -0.006483299620804567),
            (50, 50, -0.00019421739813735007, 0.004986843460106419, 0.0074802651901596275),
        ]
        for (r, c, e, w, x) in golden {
            let i = r * 64 + c
            XCTAssertEqual(m.strain[i], e, accuracy: 1e-15 + 1e-12 * abs(e), "strain at (\(r), \(c))")
            XCTAssertEqual(m.tiltLRDeg[i], w, accuracy: 1e-15 + 1e-12 * abs(w), "tilt_lr at (\(r), \(c))")
            XCTAssertEqual(m.tiltUDDeg[i], x, accuracy: 1e-15 + 1e-12 * abs(x), "tilt_ud at (\(r), \(c))")
            XCTAssertEqual(m.thicknessA[i], 117)
        }
    }

    /// Domains are piecewise constant in tilt with sharp walls; the thickness phantom
    /// spans the configured range; all stay inside the library ranges.
    func testOwnPhantomsStayInRangeAndHaveTheirFeatures() {
        let config = DonutConfig.srio3LSAT002
        let d = Phantom.domains.maps(rows: 40, cols: 50, config: config, seed: 3)
        XCTAssertEqual(d, Phantom.domains.maps(rows: 40, cols: 50, config: config, seed: 3), "same seed, same phantom")
        XCTAssertNotEqual(d, Phantom.domains.maps(rows: 40, cols: 50, config: config, seed: 4))
        XCTAssertGreaterThanOrEqual(Set(d.tiltLRDeg).count, 4, "several tilt domains")
        XCTAssertLessThan(Set(d.tiltLRDeg).count, 40, "tilt is piecewise constant")
        let t = Phantom.thickness.maps(rows: 16, cols: 16, config: config, seed: 0)
        XCTAssertLessThan(t.thicknessA.min()!, 95); XCTAssertGreaterThan(t.thicknessA.max()!, 145)
        for m in [d, t, Phantom.paper.maps(rows: 64, cols: 64, config: config, seed: 0)] {
            XCTAssert(m.strain.allSatisfy { $0 >= config.ranges.strain[0] && $0 <= config.ranges.strain[1] })
            XCTAssert(m.tiltLRDeg.allSatisfy { $0 >= config.ranges.tiltLRDeg[0] && $0 <= config.ranges.tiltLRDeg[1] })
            XCTAssert(m.tiltUDDeg.allSatisfy { $0 >= config.ranges.tiltUDDeg[0] && $0 <= config.ranges.tiltUDDeg[1] })
        }
    }

    /// Noiseless frames peak at exactly the configured photons; noisy frames are integer
    /// counts; any frame range reproduces the same frames (rank-split independence).
    func testScanFramesAreScaledAndReproducibleForAnySplit() {
        let config = DonutConfig.srio3LSAT002
        let maps = Phantom.paper.maps(rows: 4, cols: 5, config: config, seed: 0)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        var clean = [Float](repeating: 0, count: 20 * 4096), noisy = clean, part = [Float](repeating: 0, count: 7 * 4096)
        clean.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<20, model: model, peakPhotons: 7, seed: 1, noise: false, into: $0, batch: 6)
        }
        for f in 0..<20 { XCTAssertEqual(clean[(f * 4096)..<((f + 1) * 4096)].max()!, 7, accuracy: 1e-5) }
        noisy.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<20, model: model, peakPhotons: 7, seed: 1, into: $0)
        }
        XCTAssert(noisy.allSatisfy { $0 >= 0 && $0 == $0.rounded() })
        XCTAssertGreaterThan(noisy.reduce(0, +), 0)
        part.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 9..<16, model: model, peakPhotons: 7, seed: 1, into: $0, batch: 3)
        }
        XCTAssertEqual(part, Array(noisy[(9 * 4096)..<(16 * 4096)]))
        // Photon budget: mean counts ≈ the noiseless expectation (Poisson is unbiased).
        let expected = clean.reduce(0.0) { $0 + Double($1) }, observed = noisy.reduce(0.0) { $0 + Double($1) }
        XCTAssertEqual(observed, expected, accuracy: 6 * expected.squareRoot())
    }

    func testFrameProblems() {
        func check(_ v: [Float]) -> FrameProblem? { v.withUnsafeBufferPointer { FrameProblem.inspect($0) } }
        XCTAssertNil(check([0, 1, 2]))
        XCTAssertEqual(check([0, .nan, 2]), .nonFinite)
        XCTAssertEqual(check([0, .infinity]), .nonFinite)
        XCTAssertEqual(check([1, -1, 2]), .negative)
        XCTAssertEqual(check([0, 0, 0]), .empty)
    }
}
