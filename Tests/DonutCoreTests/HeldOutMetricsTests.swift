import XCTest
import DonutNN
import DonutPhysics
import DonutCore

/// Held-out metrics: the same maps and residuals as `NetworkInference` on those frames, means
/// over the usable frames only, RMSE against ground truth in the maps' units.
final class HeldOutMetricsTests: XCTestCase {
    func testMeansAndRMSEOverUsableHeldOutFrames() throws {
        let (config, settings) = NetworkGradientTests.smallSetup(thickness: false, dropout: 0)
        let net = try DonutNetwork<Float>(settings: settings, optimiser: TrainingConfig.donutPaper.optimiser, config: config, seed: 5)
        var frames = NetworkGradientTests.frames(config, count: 7).map(Float.init)
        let np = config.model.frameSize * config.model.frameSize
        for j in (3 * np)..<(4 * np) { frames[j] = .nan }   // frame 3 is bad
        let read: (Range<Int>) -> [Float] = { Array(frames[($0.lowerBound * np)..<($0.upperBound * np)]) }
        let maps = NetworkInference(network: net, batch: 4).run(frames: 0..<7, readFrames: read)
        // Truth = estimate + a known offset per map: the RMSE is that offset exactly.
        let truth = ["strain": maps.strain.map { $0 + 2e-4 }, "tilt_lr": maps.tiltLRDeg.map { $0 - 0.03 },
                     "tilt_ud": maps.tiltUDDeg.map { $0 + 0.5 }]
        let m = HeldOutMetrics.evaluate(network: net, config: config, batch: 4, count: 7, readFrames: read, truth: truth)
        XCTAssertEqual(m.frames, 7)
        XCTAssertEqual(try XCTUnwrap(m.groundTruthRMSE["strain"]), 2e-4, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(m.groundTruthRMSE["tilt_lr"]), 0.03, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(m.groundTruthRMSE["tilt_ud"]), 0.5, accuracy: 1e-12)
        XCTAssertNil(m.groundTruthRMSE["thickness"], "no thickness truth, no thickness RMSE")
        let residuals = try XCTUnwrap(maps.residual)
        XCTAssert(residuals[3].isNaN, "the bad frame has no residual")
        let usable = residuals.enumerated().filter { $0.offset != 3 }.map(\.element)
        XCTAssertEqual(m.physicsMAE, usable.reduce(0, +) / 6, accuracy: 1e-12 * m.physicsMAE)
        XCTAssert(m.physicsMAE > 0 && m.physicsMAE.isFinite)
        // Deviance: GoodnessOfFit at the network's estimates, frame by frame, mean over the 6 usable frames.
        let judge = GoodnessOfFit(config: config)
        var fits: [Double] = []
        for i in 0..<7 where i != 3 {
            let p = FrameParameters(strain: maps.strain[i], tiltLRDeg: maps.tiltLRDeg[i], tiltUDDeg: maps.tiltUDDeg[i],
                                    thicknessA: judge.model.geometry.defaultThicknessA)
            let block = FrameBlock(first: i, count: 1, pixelCount: np, counts: read(i..<(i + 1)))
            fits.append(judge.evaluate(block, frames: [0], estimates: [p])[0].goodness)
        }
        XCTAssert(fits.allSatisfy { $0.isFinite && $0 > 0 }, "\(fits)")
        XCTAssertEqual(m.deviance, fits.reduce(0, +) / 6, accuracy: 1e-9 * m.deviance)
        let none = HeldOutMetrics.evaluate(network: net, config: config, batch: 4, count: 0, readFrames: read)
        XCTAssertEqual(none.frames, 0); XCTAssert(none.physicsMAE.isNaN && none.deviance.isNaN)
    }

    /// Masked pixels carry no information: a hot pixel under the mask changes nothing, the same
    /// pixel unmasked makes the deviance much larger.
    func testMaskedPixelsAreLeftOutOfTheDeviance() throws {
        let (config, settings) = NetworkGradientTests.smallSetup(thickness: false, dropout: 0)
        let net = try DonutNetwork<Float>(settings: settings, optimiser: TrainingConfig.donutPaper.optimiser, config: config, seed: 5)
        let np = config.model.frameSize * config.model.frameSize
        let clean = NetworkGradientTests.frames(config, count: 4).map(Float.init)
        var hot = clean
        for k in 0..<4 { hot[k * np + 37] = 1e6 }
        var weights = [Float](repeating: 1, count: 4 * np)
        for k in 0..<4 { weights[k * np + 37] = 0 }
        func metrics(_ frames: [Float], _ w: [Float]?) -> HeldOutMetrics {
            HeldOutMetrics.evaluate(network: net, config: config, batch: 4, count: 4, readBlock: { r in
                var c = Array(frames[(r.lowerBound * np)..<(r.upperBound * np)])
                let ww = w.map { Array($0[(r.lowerBound * np)..<(r.upperBound * np)]) }
                if let ww { for i in c.indices where ww[i] == 0 { c[i] = 0 } }   // masked pixels hold 0
                return FrameBlock(first: r.lowerBound, count: r.count, pixelCount: np, counts: c, weights: ww)
            })
        }
        let maskedHot = metrics(hot, weights), maskedClean = metrics(clean, weights), unmasked = metrics(hot, nil)
        XCTAssertEqual(maskedHot.deviance, maskedClean.deviance, accuracy: 1e-12 * maskedClean.deviance)
        XCTAssertGreaterThan(unmasked.deviance, 10 * maskedHot.deviance)
    }
}
