import XCTest
import DonutNN
import DonutPhysics
@testable import DonutCore

/// Masked pixels and the networks: filled input, losses over measured pixels only.
final class MaskedNetworkTests: XCTestCase {
    /// Weighted MAE = Σ w|ŷ − y| / Σ w over the measured subset, gradient weight·w·sign/Σ w;
    /// all-one weights give the unweighted loss. Poisson deviance likewise.
    func testWeightedLossesMatchTheMeasuredSubset() {
        var rng = SplitMix64(seed: 41)
        let frames = 5, pixels = 300, n = frames * pixels
        let prediction = (0..<n).map { _ in Float(rng.uniform(0, 3)) }, target = (0..<n).map { _ in Float(rng.poisson(1.2)) }
        let w = (0..<n).map { _ in Float(rng.uniform() < 0.2 ? 0 : 1) }
        var sums = [Double](repeating: 0, count: frames), grad = [Float](repeating: 9, count: n)
        let loss = MAELoss.frames(prediction: prediction, target: target, frames: frames, framePixels: pixels, frameSums: &sums,
                                  dPrediction: &grad, weight: 2.5, pixelWeights: w)
        var brute = 0.0, measured = 0.0
        for i in 0..<n where w[i] == 1 { brute += abs(Double(prediction[i]) - Double(target[i])); measured += 1 }
        XCTAssertEqual(loss, brute / measured, accuracy: 1e-6 * brute / measured)
        for i in 0..<n {
            let e = prediction[i] - target[i]
            let expected: Float = w[i] == 0 || e == 0 ? 0 : Float(2.5 / measured) * (e > 0 ? 1 : -1)
            XCTAssertEqual(grad[i], expected, accuracy: 1e-7, "pixel \(i)")
        }
        let ones = [Float](repeating: 1, count: n)
        XCTAssertEqual(MAELoss.frames(prediction: prediction, target: target, frames: frames, framePixels: pixels, frameSums: &sums, pixelWeights: ones),
                       MAELoss.forward(prediction: prediction, target: target, count: n), accuracy: 1e-6)
        var poisson = 0.0
        for i in 0..<n where w[i] == 1 {
            let l = Double(prediction[i]) + 0.01, y = Double(target[i])
            poisson += 2 * ((l - y) - (y > 0 ? y * log(l / y) : 0))
        }
        XCTAssertEqual(PoissonDeviance.forward(prediction: prediction, target: target, count: n, floor: 0.01, pixelWeights: w),
                       poisson / measured, accuracy: 1e-9 * abs(poisson))
    }

    /// The fill is exact on a frame linear in x and y (a masked gap band and isolated pixels),
    /// gives an isolated pixel the mean of its 4 neighbours, and leaves measured pixels alone.
    func testInpaintingIsExactOnLinearFramesAndLocal() {
        let n = 16
        var frame = (0..<(n * n)).map { Float(3 + 0.5 * Double($0 % n) - 0.25 * Double($0 / n)) }
        let truth = frame
        var w = [Float](repeating: 1, count: n * n)
        for y in 0..<n { for x in 6..<9 { w[y * n + x] = 0 } }
        for p in [2 * n + 2, 11 * n + 13, 15 * n + 15] { w[p] = 0 }
        for i in frame.indices where w[i] == 0 { frame[i] = 1e6 }
        let inpainting = MaskInpainting(frameSize: n)
        frame.withUnsafeMutableBufferPointer { f in w.withUnsafeBufferPointer { inpainting.fill(f, weights: $0) } }
        for i in frame.indices where w[i] == 0 && i != 15 * n + 15 {
            XCTAssertEqual(frame[i], truth[i], accuracy: 1e-4, "pixel \(i)")   // linear: exact where it has neighbours on both sides of an axis
        }
        for i in frame.indices where w[i] == 1 { XCTAssertEqual(frame[i], truth[i]) }
        var bump = [Float](repeating: 0, count: n * n), one = [Float](repeating: 1, count: n * n)
        bump[5 * n + 4] = 1; bump[5 * n + 6] = 3; bump[4 * n + 5] = 2; bump[6 * n + 5] = 6; one[5 * n + 5] = 0
        bump.withUnsafeMutableBufferPointer { f in one.withUnsafeBufferPointer { inpainting.fill(f, weights: $0) } }
        XCTAssertEqual(bump[5 * n + 5], 3, accuracy: 1e-6, "mean of the 4 neighbours")
    }

    /// The network never sees masked pixels: frames whose masked pixels hold 0 or 1e6 give
    /// identical estimates and residuals, different from the same hot pixels unmasked; the
    /// residual (over measured pixels) stays finite and near the clean frame's.
    func testMaskedHotPixelsDoNotReachTheNetwork() throws {
        let (config, settings) = NetworkGradientTests.smallSetup(thickness: false, dropout: 0)
        let network = try DonutNetwork<Float>(settings: settings, optimiser: TrainingConfig.donutPaper.optimiser, config: config, seed: 3)
        let count = 6
        let clean = NetworkGradientTests.frames(config, count: count).map(Float.init)
        var hot = clean, w = [Float](repeating: 1, count: clean.count)
        for f in 0..<count { for p in [3 * 16 + 7, 9 * 16 + 9] { hot[f * 256 + p] = 1e6; w[f * 256 + p] = 0 } }
        var masked = hot
        for i in masked.indices where w[i] == 0 { masked[i] = 0 }
        let inference = NetworkInference(network: network, batch: 4)
        func run(_ block: FrameBlock) -> FrameResults { inference.run(frames: 0..<count, readBlock: { block.frames($0) }) }
        let a = run(FrameBlock(first: 0, count: count, pixelCount: 256, counts: clean))
        let b = run(FrameBlock(first: 0, count: count, pixelCount: 256, counts: masked, weights: w))
        let b2 = run(FrameBlock(first: 0, count: count, pixelCount: 256, counts: hot, weights: w))
        let c = run(FrameBlock(first: 0, count: count, pixelCount: 256, counts: hot))
        XCTAssertEqual(b.strain, b2.strain); XCTAssertEqual(b.tiltLRDeg, b2.tiltLRDeg); XCTAssertEqual(b.tiltUDDeg, b2.tiltUDDeg)
        XCTAssertEqual(b.residual, b2.residual)
        XCTAssertNotEqual(b.strain, c.strain, "unmasked hot pixels do reach the network")
        for f in 0..<count {
            XCTAssert(b.residual![f].isFinite && b.residual![f] < 2 * a.residual![f] + 1, "residual over measured pixels: \(b.residual![f]) vs \(a.residual![f])")
        }
    }

    /// Training on masked frames does not depend on what the masked pixels hold: the same
    /// weights after training whether they hold 0 or 1e6 (filled for the input, left out of
    /// both losses).
    func testTrainingIgnoresMaskedPixelValues() throws {
        let (config, settings) = NetworkGradientTests.smallSetup(thickness: false, dropout: 0.1)
        var training = TrainingConfig.donutPaper
        training.network = settings
        training.schedule = Schedule(batchSize: 4, epochs: 2, validationFraction: 0.2, checkpointEvery: 1000, seed: 4)
        let frames = NetworkGradientTests.frames(config, count: 24).map(Float.init)
        var w = [Float](repeating: 1, count: frames.count)
        for f in 0..<24 { for y in 0..<16 { w[f * 256 + y * 16 + 10] = 0 }; w[f * 256 + 37] = 0 }
        var results: [[Float]] = []
        for value: Float in [0, 1e6] {
            var x = frames
            for i in x.indices where w[i] == 0 { x[i] = value }
            let net = try DonutNetwork<Float>(settings: settings, optimiser: training.optimiser, config: config, seed: 4)
            let trainer = try Trainer(network: net, training: training, mode: .donut,
                                      data: TrainingData(measured: x, measuredCount: 24, library: nil, simulatedFraction: 0, peakPhotons: 30,
                                                         measuredWeights: w))
            var validation: [Double] = []
            try trainer.run(checkpoint: { _ in }, log: { if $0.validation.isFinite { validation.append($0.validation) } })
            XCTAssert(validation.allSatisfy { $0.isFinite && $0 < 100 }, "validation losses \(validation)")
            results.append(Array(UnsafeBufferPointer(start: net.store.parameters, count: net.store.count)))
        }
        XCTAssertEqual(results[0], results[1], "masked pixel values reached the training")
    }
}
