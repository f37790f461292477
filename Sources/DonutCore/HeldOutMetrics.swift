import Foundation
import DonutBLAS
import DonutPhysics

/// How well a trained network explains measured frames it never trained on (the trainer's
/// validation split): measures that do not contain the loss weights, so points of a sweep that
/// change those weights can be compared (validation_loss = Σ w_k L_k cannot).
public struct HeldOutMetrics: Sendable, Equatable {
    /// Held-out frames evaluated (bad frames left out of the means).
    public var frames: Int
    /// Mean over the usable held-out frames of the physics residual (`NetworkInference`:
    /// mean |physics(prediction) − frame| per pixel, in counts).
    public var physicsMAE: Double
    /// Mean reduced Poisson deviance D/E[D|μ] (`FrameResults.goodnessOfFit`) of the held-out
    /// frames; NaN when the inference gives no goodness of fit.
    public var deviance: Double
    /// RMSE of each map against the ground truth over the held-out frames (map name → RMSE in
    /// the map's units); empty without ground truth.
    public var groundTruthRMSE: [String: Double]

    /// `evaluate(…readBlock:…)` for frames read as plain counts (every pixel measured).
    public static func evaluate(network: DonutNetwork<Float>, config: DonutConfig, batch: Int, count: Int,
                                readFrames: (Range<Int>) throws -> [Float], truth: [String: [Double]] = [:]) rethrows -> HeldOutMetrics {
        let np = config.model.frameSize * config.model.frameSize
        return try evaluate(network: network, config: config, batch: batch, count: count, readBlock: {
            FrameBlock(first: $0.lowerBound, count: $0.count, pixelCount: np, counts: try readFrames($0))
        }, truth: truth)
    }

    /// Runs `network` in inference mode on the `count` held-out frames (`readBlock(r)` gives
    /// held-out frames r with their masks) in batches of `batch`, then judges every usable
    /// frame at the network's estimate with `GoodnessOfFit` over its measured pixels (the
    /// smooth model of `config`; frames above the valid threshold count too: a model that
    /// explains the frames badly must rank badly). `truth`: ground-truth maps (strain, tilt_lr,
    /// tilt_ud, thickness) of the held-out frames, in the same order.
    public static func evaluate(network: DonutNetwork<Float>, config: DonutConfig, batch: Int, count: Int,
                                readBlock: (Range<Int>) throws -> FrameBlock, truth: [String: [Double]] = [:]) rethrows -> HeldOutMetrics {
        guard count > 0 else { return HeldOutMetrics(frames: 0, physicsMAE: .nan, deviance: .nan, groundTruthRMSE: [:]) }
        let maps = try NetworkInference(network: network, batch: batch).run(frames: 0..<count, readBlock: readBlock)
        func mean(_ values: [Double]?) -> Double {
            guard let values else { return .nan }
            let usable = zip(values, maps.valid).filter { $0.0.isFinite && $0.1 != 0 }.map(\.0)
            return usable.isEmpty ? .nan : usable.reduce(0, +) / Double(usable.count)
        }
        // Goodness of fit of every usable frame (not only those under the threshold).
        let judge = GoodnessOfFit(config: config)
        var deviance = [Double](repeating: .nan, count: count)
        for start in stride(from: 0, to: count, by: batch) {
            let range = start..<min(start + batch, count)
            var frames: [Int] = [], estimates: [FrameParameters] = []
            for i in range where maps.valid[i] != 0 {
                let p = FrameParameters(strain: maps.strain[i], tiltLRDeg: maps.tiltLRDeg[i], tiltUDDeg: maps.tiltUDDeg[i],
                                        thicknessA: maps.thicknessA?[i].isFinite == true ? maps.thicknessA![i] : judge.model.geometry.defaultThicknessA)
                guard p.strain.isFinite, p.tiltLRDeg.isFinite, p.tiltUDDeg.isFinite else { continue }
                frames.append(i - start); estimates.append(p)
            }
            guard !frames.isEmpty else { continue }
            let block = try readBlock(range)
            for (f, fit) in zip(frames, judge.evaluate(block, frames: frames, estimates: estimates)) { deviance[start + f] = fit.goodness }
        }
        var rmse: [String: Double] = [:]
        let estimates: [String: [Double]?] = ["strain": maps.strain, "tilt_lr": maps.tiltLRDeg, "tilt_ud": maps.tiltUDDeg,
                                              "thickness": maps.thicknessA]
        for (name, values) in truth where values.count == count {
            guard let estimate = estimates[name] ?? nil else { continue }
            // Bad frames are NaN in the estimate: MapMetrics leaves them out.
            rmse[name] = MapMetrics.rmse(estimate, values)
        }
        return HeldOutMetrics(frames: count, physicsMAE: mean(maps.residual), deviance: mean(deviance), groundTruthRMSE: rmse)
    }
}
