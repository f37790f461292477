import Foundation
import DonutNN
import DonutBLAS
import DonutPhysics

/// Maps from a trained network, for one contiguous block of a scan's frames.
///
/// Frames go through the encoder in batches of the planned size (the last batch is padded
/// with copies of a usable frame, never re-planned); bad frames (NaN, negative, empty)
/// get NaN parameters and `valid = 0`. The residual is the physics MAE between the frame
/// and the smooth model at the prediction, scaled to the frame's counts (photons).
/// With `monteCarloSamples > 1`, dropout stays on for that many extra passes and the
/// standard deviation of the predictions is written as `*_sigma` (MC dropout, Gal &
/// Ghahramani 2016); the maps themselves are the deterministic (dropout-off) prediction.
///
/// Frames come as `FrameBlock`s: the input is counts/monitor with masked pixels filled from
/// their measured neighbours (`MaskInpainting`: a masked pixel must not look like a zero count
/// to a network trained on complete frames); the residual is taken over measured pixels only.
/// Pass t's mask of frame i depends on (seed, t, i) only: any batching or rank split gives
/// the same sigmas.
public struct NetworkInference {
    public let network: DonutNetwork<Float>
    public var batch: Int
    public var monteCarloSamples: Int
    public var seed: UInt64

    public init(network: DonutNetwork<Float>, batch: Int, monteCarloSamples: Int = 0, seed: UInt64 = 0) {
        self.network = network; self.batch = batch; self.monteCarloSamples = monteCarloSamples; self.seed = seed
    }

    /// Maps of frames read as plain counts (every pixel measured, no monitor).
    public func run(frames keep: Range<Int>, readFrames: (Range<Int>) throws -> [Float], judge: FrameJudge? = nil,
                    progress: ((Int, Int) -> Void)? = nil) rethrows -> FrameResults {
        let np = network.frameSize * network.frameSize
        return try run(frames: keep, readBlock: { r in FrameBlock(first: r.lowerBound, count: r.count, pixelCount: np, counts: try readFrames(r)) },
                       judge: judge, progress: progress)
    }

    /// Maps of the frames `keep`, read as `FrameBlock`s; `judge` fills the goodness of fit,
    /// sets valid = 0 above its threshold and keeps the scan's verdict.
    public func run(frames keep: Range<Int>, readBlock: (Range<Int>) throws -> FrameBlock, judge: FrameJudge? = nil,
                    progress: ((Int, Int) -> Void)? = nil) rethrows -> FrameResults {
        var out = FrameResults(frameRange: keep)
        let predictsThickness = network.mapping.predictsThickness
        if predictsThickness { out.thicknessA = .init(repeating: .nan, count: keep.count) }
        out.residual = .init(repeating: .nan, count: keep.count)
        let mc = monteCarloSamples > 1
        let names = ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"] + (predictsThickness ? ["thickness_sigma"] : [])
        if mc { for n in names { out.sigmas[n] = .init(repeating: .nan, count: keep.count) } }
        let np = network.frameSize * network.frameSize
        network.plan(batch: batch, training: false)
        let savedIDs = network.dropoutSampleIDs
        defer { network.dropoutSampleIDs = savedIDs }
        var buffer = [Float](repeating: 0, count: batch * np)
        var residuals = [Double](repeating: 0, count: batch)
        let inpainting = MaskInpainting(frameSize: network.frameSize)
        var start = keep.lowerBound
        while start < keep.upperBound {
            let range = start..<min(start + batch, keep.upperBound)
            let block = try readBlock(range)
            precondition(block.first == range.lowerBound && block.count == range.count && block.pixelCount == np,
                         "read frames \(block.range) of \(block.pixelCount) pixels for \(range) of \(np)")
            let frames = networkInput(block, inpainting: inpainting)
            var usable = [Bool](repeating: false, count: batch)
            var filler = -1
            frames.withUnsafeBufferPointer { f in
                for k in 0..<range.count where FrameProblem.inspect(UnsafeBufferPointer(rebasing: f[(k * np)..<((k + 1) * np)])) == nil {
                    usable[k] = true
                    if filler < 0 { filler = k }
                }
            }
            if filler >= 0 {
                buffer.withUnsafeMutableBufferPointer { b in
                    frames.withUnsafeBufferPointer { f in
                        for k in 0..<batch {
                            let source = k < range.count && usable[k] ? k : filler
                            (b.baseAddress! + k * np).update(from: f.baseAddress! + source * np, count: np)
                        }
                    }
                }
                buffer.withUnsafeBufferPointer { network.loadInput($0.baseAddress!, count: batch) }
                var rng = SplitMix64(seed: seed)   // unused: no dropout in inference mode
                network.forward(mode: .inference, rng: &rng, physics: true, decoder: false)
                // Residual: MAE in the network's units (frame scaled to mean 1), back to counts;
                // frames of the batch on the cores (each frame's sums whole on one thread).
                let physicsOut = network.physicsOutput, scaled = network.input
                residuals.withUnsafeMutableBufferPointer { r in
                    frames.withUnsafeBufferPointer { f in
                        block.weights.withOptionalBuffer { w in
                            Parallel.forRanges(range.count, work: range.count * np,
                                               PhysicsResidual(residuals: r.baseAddress!, physics: physicsOut, scaled: scaled,
                                                               frames: f.baseAddress!, weights: w?.baseAddress, pixelCount: np))
                        }
                    }
                    if let m = block.monitor { for k in 0..<range.count { r[k] *= m[k] } }
                }
                for k in 0..<range.count where usable[k] {
                    let i = range.lowerBound + k - keep.lowerBound, p = network.parameters(k)
                    out.strain[i] = p.strain; out.tiltLRDeg[i] = p.tiltLRDeg; out.tiltUDDeg[i] = p.tiltUDDeg
                    if predictsThickness { out.thicknessA?[i] = p.thicknessA }
                    out.valid[i] = 1
                    out.residual?[i] = residuals[k]
                }
                if mc {
                    var sum = [Double](repeating: 0, count: batch * 4), sumSq = sum
                    // Masks keyed by (pass, frame index in the scan): the same pass seeds for
                    // every batch, one stream per frame, so the sigmas do not depend on how
                    // frames are batched or split across ranks.
                    network.dropoutSampleIDs = Array(range.lowerBound ..< range.lowerBound + batch)
                    var passes = SplitMix64(seed: seed)
                    for _ in 0..<monteCarloSamples {
                        network.forward(mode: .monteCarlo, rng: &passes, physics: false, decoder: false)
                        for k in 0..<range.count where usable[k] {
                            let p = network.parameters(k)
                            sum[4 * k] += p.strain; sumSq[4 * k] += p.strain * p.strain
                            sum[4 * k + 1] += p.tiltLRDeg; sumSq[4 * k + 1] += p.tiltLRDeg * p.tiltLRDeg
                            sum[4 * k + 2] += p.tiltUDDeg; sumSq[4 * k + 2] += p.tiltUDDeg * p.tiltUDDeg
                            sum[4 * k + 3] += p.thicknessA; sumSq[4 * k + 3] += p.thicknessA * p.thicknessA
                        }
                    }
                    let s = Double(monteCarloSamples)
                    for k in 0..<range.count where usable[k] {
                        let i = range.lowerBound + k - keep.lowerBound
                        for (j, name) in names.enumerated() {
                            let mean = sum[4 * k + j] / s
                            out.sigmas[name]?[i] = max(0, (sumSq[4 * k + j] - s * mean * mean) / (s - 1)).squareRoot()
                        }
                    }
                }
            }
            judge?.judge(&out, block: block, usable: Array(usable.prefix(range.count)))
            progress?(range.upperBound - keep.lowerBound, keep.count)
            start = range.upperBound
        }
        return out
    }
}

/// The network's input frames of `block`: counts/monitor, masked pixels filled from their
/// measured neighbours (`MaskInpainting`). Bad frames (NaN, negative, empty) are left as they
/// are, for `FrameProblem` to reject.
public func networkInput(_ block: FrameBlock, inpainting: MaskInpainting) -> [Float] {
    var frames = block.counts
    let np = block.pixelCount
    guard block.weights != nil || block.monitor != nil else { return frames }
    frames.withUnsafeMutableBufferPointer { buf in
        for f in 0..<block.count {
            let frame = UnsafeMutableBufferPointer(rebasing: buf[(f * np)..<((f + 1) * np)])
            guard FrameProblem.inspect(UnsafeBufferPointer(frame)) == nil else { continue }
            if let m = block.monitor?[f], m != 1 { let s = Float(1 / m); for i in frame.indices { frame[i] *= s } }
            if let w = block.weights {
                w.withUnsafeBufferPointer { inpainting.fill(frame, weights: UnsafeBufferPointer(rebasing: $0[(f * np)..<((f + 1) * np)])) }
            }
        }
    }
    return frames
}

/// `NetworkInference`'s residual of frames `frames` (the network's input, counts/monitor):
/// mean |Î − x| over the measured pixels (weight 1; all when `weights` is nil) in the
/// network's units (x scaled to mean 1), times the frame's mean Σ frame/n² (the caller
/// multiplies by the monitor: photons).
struct PhysicsResidual: ParallelLoop {
    let residuals: UnsafeMutablePointer<Double>
    let physics: UnsafePointer<Float>, scaled: UnsafePointer<Float>, frames: UnsafePointer<Float>, weights: UnsafePointer<Float>?
    let pixelCount: Int
    func run(_ frameRange: Range<Int>, worker: Int) {
        let np = pixelCount
        for k in frameRange {
            var mae = 0.0, total = 0.0, measured = 0.0
            for j in 0..<np {
                total += Double(frames[k * np + j])
                if let w = weights, w[k * np + j] == 0 { continue }
                mae += abs(Double(physics[k * np + j] - scaled[k * np + j])); measured += 1
            }
            residuals[k] = measured > 0 ? mae / measured * total / Double(np) : .nan
        }
    }
}
