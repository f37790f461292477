import XCTest
import DonutNN
import DonutPhysics
@testable import DonutCore

/// Masked pixels (weight 0) in the correlation fit: the exact correlation over the measured
/// pixels, checked against a brute-force computation, and estimates that a masked hot pixel
/// does not move.
final class MaskedFitTests: XCTestCase {
    let config = CorrelationFitTests.smallConfig()

    func scanFrames(_ count: Int, seed: UInt64, peak: Double = 7) -> [Float] {
        let maps = Phantom.domains.maps(rows: 1, cols: count, config: config, seed: seed)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        var frames = [Float](repeating: 0, count: count * 4096)
        frames.withUnsafeMutableBufferPointer { ScanSimulation.frames(of: maps, range: 0..<count, model: model, peakPhotons: peak, seed: seed, into: $0) }
        return frames
    }

    /// Projections with weights = brute force: for every entry, c = Σ_{w=1} x·L / Σ_{w=1} L over
    /// the raw (unnormalised) library pattern, summed onto the axes — frames 0–2 sharing one mask
    /// (a gap band and hot pixels), frame 3 with its own, frame 4 with none masked.
    func testMaskedCorrelationEqualsBruteForceOverMeasuredPixels() {
        let (grid, patterns) = CorrelationFitTests.library(config)
        let fit = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: patterns, pixelCount: 4096, chunkEntries: 97)
        var frames = scanFrames(5, seed: 3, peak: 30)
        var weights = [Float](repeating: 1, count: 5 * 4096)
        for f in 0..<3 {
            for y in 0..<64 { for x in 30..<34 { weights[f * 4096 + y * 64 + x] = 0 } }   // a module gap across the ROI
            for p in [100, 2000, 4000] { weights[f * 4096 + p] = 0 }
        }
        for p in stride(from: 5, to: 4096, by: 37) { weights[3 * 4096 + p] = 0 }
        for i in frames.indices where weights[i] == 0 { frames[i] = 0 }
        var masked = [Double](repeating: 0, count: 5 * fit.projectionLength)
        fit.accumulateProjections(frames: frames, weights: weights, count: 5, into: &masked)
        var brute = [Double](repeating: 0, count: masked.count)
        let nE = grid.strain.count, nW = grid.tiltLRDeg.count, nC = grid.tiltUDDeg.count
        for f in 0..<5 {
            for e in 0..<grid.count {
                var num = 0.0, den = 0.0
                for i in 0..<4096 where weights[f * 4096 + i] == 1 {
                    num += Double(frames[f * 4096 + i]) * Double(patterns[e * 4096 + i]); den += Double(patterns[e * 4096 + i])
                }
                let c = den > 0 ? num / den : 0, idx = grid.indices(of: e), o = f * fit.projectionLength
                brute[o + idx.strain] += c; brute[o + nE + idx.tiltLR] += c
                brute[o + nE + nW + idx.tiltUD] += c; brute[o + nE + nW + nC + idx.thickness] += c
            }
        }
        for i in masked.indices { XCTAssertEqual(masked[i], brute[i], accuracy: 1e-5 * abs(brute[i]) + 1e-9, "projection element \(i)") }
        // Frame 4 has no masked pixel: the same as the unweighted correlation.
        var plain = [Double](repeating: 0, count: masked.count)
        fit.accumulateProjections(frames: frames, count: 5, into: &plain)
        let o = 4 * fit.projectionLength
        for i in o..<(o + fit.projectionLength) { XCTAssertEqual(masked[i], plain[i], accuracy: 1e-5 * abs(plain[i])) }
    }

    /// Frames with hot pixels (1e6 counts) in the ROI, masked, give the estimates of the clean
    /// frames within a tenth of a library step (one pixel of 4096 less), and their counts
    /// divided by a monitor change nothing; unmasked, the hot pixels pin the maps and the judge
    /// flags every frame (valid = 0) with a warning naming the pixel.
    func testMaskedHotPixelsLeaveTheEstimatesAndUnmaskedOnesAreFlagged() throws {
        let (grid, patterns) = CorrelationFitTests.library(config)
        let fit = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: patterns, pixelCount: 4096)
        let n = 24
        let clean = scanFrames(n, seed: 7)
        let hotPixels = [20 * 64 + 31, 33 * 64 + 40]
        var hot = clean, weights = [Float](repeating: 1, count: clean.count)
        for f in 0..<n { for p in hotPixels { hot[f * 4096 + p] = 1e6; weights[f * 4096 + p] = 0 } }
        var maskedCounts = hot
        for i in maskedCounts.indices where weights[i] == 0 { maskedCounts[i] = 0 }
        let monitor = (0..<n).map { 0.8 + 0.4 * Double($0 % 5) / 4 }
        func run(_ block: FrameBlock, judge: FrameJudge? = nil) -> FrameResults {
            CorrelationFitRun(frameCount: n, batch: 10).run(fit: fit, keep: 0..<n, readBlock: { block.frames($0) }, allreduceSum: { _ in }, judge: judge)
        }
        let reference = run(FrameBlock(first: 0, count: n, pixelCount: 4096, counts: clean))
        let judge = FrameJudge(config: config)
        let masked = run(FrameBlock(first: 0, count: n, pixelCount: 4096, counts: maskedCounts, weights: weights, monitor: monitor), judge: judge)
        let steps = [grid.strain[1] - grid.strain[0], grid.tiltLRDeg[1] - grid.tiltLRDeg[0], grid.tiltUDDeg[1] - grid.tiltUDDeg[0]]
        for f in 0..<n {
            XCTAssertEqual(masked.valid[f], 1, "frame \(f), gof \(masked.goodnessOfFit![f])")
            XCTAssertEqual(masked.strain[f], reference.strain[f], accuracy: 0.1 * steps[0])
            XCTAssertEqual(masked.tiltLRDeg[f], reference.tiltLRDeg[f], accuracy: 0.1 * steps[1])
            XCTAssertEqual(masked.tiltUDDeg[f], reference.tiltUDDeg[f], accuracy: 0.1 * steps[2])
        }
        XCTAssertNil(judge.verdict.warning(scan: "masked", ranges: config.ranges, threshold: judge.goodness.threshold))
        let loud = FrameJudge(config: config)
        let unmasked = run(FrameBlock(first: 0, count: n, pixelCount: 4096, counts: hot), judge: loud)
        XCTAssertEqual(unmasked.valid.filter { $0 == 1 }.count, 0, "every frame with a hot pixel flagged")
        let text = try XCTUnwrap(loud.verdict.warning(scan: "eiger_hot.h5", ranges: config.ranges, threshold: loud.goodness.threshold))
        XCTAssert(text.contains("eiger_hot.h5") && text.contains("\(n) of \(n)") && (text.contains("y = 20, x = 31") || text.contains("y = 33, x = 40")), text)
    }
}
