import XCTest
import DonutPhysics
import DonutCore

final class CorrelationFitTests: XCTestCase {
    static func smallConfig(thickness: Int = 1) -> DonutConfig {
        var c = DonutConfig.srio3LSAT002
        c.library = LibrarySteps(strain: 9, tiltLR: 7, tiltUD: 8, thickness: thickness)
        return c
    }

    static func library(_ config: DonutConfig) -> (LibraryGrid, [Float]) {
        let grid = LibraryGrid(config: config)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        var patterns = [Float](repeating: 0, count: grid.count * 4096)
        patterns.withUnsafeMutableBufferPointer { model.library(grid, entries: 0..<grid.count, into: $0) }
        return (grid, patterns)
    }

    /// Projections from a library split into slabs sum to those of the whole library
    /// (the property that makes the MPI fit exact). Relative 1e-6: each correlation is a
    /// 4096-term Float dot product whose rounding depends on sgemm's blocking, which
    /// changes with the chunk width (~1e-7 relative); the sums are of positive terms.
    func testSplitLibraryProjectionsSumToWholeLibrary() {
        let config = Self.smallConfig(thickness: 3)
        let (grid, patterns) = Self.library(config)
        let maps = Phantom.domains.maps(rows: 3, cols: 4, config: config, seed: 2)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        var frames = [Float](repeating: 0, count: 12 * 4096)
        frames.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<12, model: model, peakPhotons: 7, seed: 5, into: $0)
        }
        let whole = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: patterns, pixelCount: 4096, chunkEntries: 100)
        var reference = [Double](repeating: 0, count: 12 * whole.projectionLength)
        whole.accumulateProjections(frames: frames, count: 12, into: &reference)
        var summed = [Double](repeating: 0, count: reference.count)
        let cuts = [0, 1, 200, 611, grid.count]
        for k in 0..<(cuts.count - 1) {
            let r = cuts[k]..<cuts[k + 1]
            let slab = CorrelationFit(grid: grid, entries: r, patterns: Array(patterns[(r.lowerBound * 4096)..<(r.upperBound * 4096)]),
                                      pixelCount: 4096, chunkEntries: 64)
            slab.accumulateProjections(frames: frames, count: 12, into: &summed)
        }
        for i in 0..<reference.count {
            XCTAssertEqual(summed[i], reference[i], accuracy: 1e-6 * abs(reference[i]), "projection element \(i)")
        }
    }

    /// Noiseless frames simulated at interior library points are located to well within
    /// one library step on every axis (COM of a near-symmetric peak).
    func testRecoversInteriorLibraryPoints() throws {
        let config = Self.smallConfig()
        let (grid, patterns) = Self.library(config)
        let fit = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: patterns, pixelCount: 4096)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let truth = [FrameParameters(strain: grid.strain[4], tiltLRDeg: grid.tiltLRDeg[3], tiltUDDeg: grid.tiltUDDeg[4], thicknessA: 117),
                     FrameParameters(strain: grid.strain[3], tiltLRDeg: grid.tiltLRDeg[2], tiltUDDeg: grid.tiltUDDeg[3], thicknessA: 117)]
        let frames = model.patterns(truth)
        let run = CorrelationFitRun(frameCount: 2, batch: 1, residualModel: model)
        let result = run.run(fit: fit, keep: 0..<2, readFrames: { r in Array(frames[(r.lowerBound * 4096)..<(r.upperBound * 4096)]) },
                             allreduceSum: { _ in })
        let steps = (grid.strain[1] - grid.strain[0], grid.tiltLRDeg[1] - grid.tiltLRDeg[0], grid.tiltUDDeg[1] - grid.tiltUDDeg[0])
        for (i, t) in truth.enumerated() {
            XCTAssertEqual(result.valid[i], 1)
            XCTAssertEqual(result.strain[i], t.strain, accuracy: 0.3 * steps.0, "strain of frame \(i)")
            XCTAssertEqual(result.tiltLRDeg[i], t.tiltLRDeg, accuracy: 0.3 * steps.1, "tilt_lr of frame \(i)")
            XCTAssertEqual(result.tiltUDDeg[i], t.tiltUDDeg, accuracy: 0.3 * steps.2, "tilt_ud of frame \(i)")
            XCTAssertLessThan(result.residual![i], 0.05 * Double(frames.max()!) , "residual of a noiseless frame")
        }
        XCTAssertNil(result.thicknessA)
    }

    /// Bad frames become NaN with valid = 0 and do not disturb their neighbours; the
    /// result of a frame does not depend on the batch it was fitted in.
    func testBadFramesAreMarkedInvalidAndBatchingDoesNotMatter() {
        let config = Self.smallConfig()
        let (grid, patterns) = Self.library(config)
        let fit = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: patterns, pixelCount: 4096)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let maps = Phantom.paper.maps(rows: 2, cols: 3, config: config, seed: 0)
        var frames = [Float](repeating: 0, count: 6 * 4096)
        frames.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<6, model: model, peakPhotons: 7, seed: 9, into: $0)
        }
        let good = frames
        frames[1 * 4096 + 17] = .nan
        frames[3 * 4096 + 5] = -2
        for i in (4 * 4096)..<(5 * 4096) { frames[i] = 0 }
        let read = { (r: Range<Int>) in Array(frames[(r.lowerBound * 4096)..<(r.upperBound * 4096)]) }
        let a = CorrelationFitRun(frameCount: 6, batch: 4).run(fit: fit, keep: 0..<6, readFrames: read, allreduceSum: { _ in })
        let b = CorrelationFitRun(frameCount: 6, batch: 1).run(fit: fit, keep: 2..<6, readFrames: read, allreduceSum: { _ in })
        XCTAssertEqual(a.valid, [1, 0, 1, 0, 0, 1])
        for i in [1, 3, 4] { XCTAssert(a.strain[i].isNaN && a.tiltLRDeg[i].isNaN && a.tiltUDDeg[i].isNaN) }
        XCTAssertEqual(Array(a.valid[2...]), b.valid)
        // Batch size changes sgemm's blocking (Float rounding ~1e-7 of each correlation);
        // subtracting the projection minimum amplifies it ~10×, hence 1e-5 of the library step.
        let strainStep = grid.strain[1] - grid.strain[0], chiStep = grid.tiltUDDeg[1] - grid.tiltUDDeg[0]
        for i in [2, 5] {
            XCTAssertEqual(a.strain[i], b.strain[i - 2], accuracy: 1e-5 * strainStep)
            XCTAssertEqual(a.tiltUDDeg[i], b.tiltUDDeg[i - 2], accuracy: 1e-5 * chiStep)
        }
        let clean = CorrelationFitRun(frameCount: 6, batch: 6).run(
            fit: fit, keep: 0..<6, readFrames: { r in Array(good[(r.lowerBound * 4096)..<(r.upperBound * 4096)]) }, allreduceSum: { _ in })
        XCTAssertEqual(clean.strain[0], a.strain[0], accuracy: 1e-5 * strainStep, "a bad neighbour changes nothing")
        XCTAssertEqual(clean.tiltLRDeg[5], a.tiltLRDeg[5], accuracy: 1e-5 * (grid.tiltLRDeg[1] - grid.tiltLRDeg[0]))
    }
}

/// The published method written as plainly as possible, in Double: normalise, correlate,
/// project, subtract the minimum, centre of mass. The GEMM-and-chunks path must agree.
final class CorrelationFitReferenceTests: XCTestCase {
    func naiveFit(frame: [Float], patterns: [Float], grid: LibraryGrid) -> [Double] {
        let np = frame.count, axes = [grid.strain, grid.tiltLRDeg, grid.tiltUDDeg, grid.thicknessA]
        var projections = axes.map { [Double](repeating: 0, count: $0.count) }
        for e in 0..<grid.count {
            var sum = 0.0, dot = 0.0
            for i in 0..<np { sum += Double(patterns[e * np + i]) }
            for i in 0..<np { dot += Double(frame[i]) * Double(patterns[e * np + i]) / sum }
            let ix = grid.indices(of: e)
            projections[0][ix.strain] += dot; projections[1][ix.tiltLR] += dot
            projections[2][ix.tiltUD] += dot; projections[3][ix.thickness] += dot
        }
        return zip(projections, axes).map { p, axis in
            guard axis.count > 1 else { return axis[0] }
            let lo = p.min()!
            let w = p.map { $0 - lo }
            return zip(w, axis).map { $0 * $1 }.reduce(0, +) / w.reduce(0, +)
        }
    }

    func testFastFitEqualsNaiveDoubleReference() {
        var config = DonutConfig.srio3LSAT002
        config.library = LibrarySteps(strain: 5, tiltLR: 3, tiltUD: 4, thickness: 3)
        let grid = LibraryGrid(config: config)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        var patterns = [Float](repeating: 0, count: grid.count * 4096)
        patterns.withUnsafeMutableBufferPointer { model.library(grid, entries: 0..<grid.count, into: $0) }
        let maps = Phantom.thickness.maps(rows: 2, cols: 3, config: config, seed: 0)
        var frames = [Float](repeating: 0, count: 6 * 4096)
        frames.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<6, model: model, peakPhotons: 20, seed: 4, into: $0)
        }
        let fit = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: patterns, pixelCount: 4096, chunkEntries: 17)
        let fast = CorrelationFitRun(frameCount: 6, batch: 4).run(
            fit: fit, keep: 0..<6, readFrames: { r in Array(frames[(r.lowerBound * 4096)..<(r.upperBound * 4096)]) }, allreduceSum: { _ in })
        let steps = [grid.strain[1] - grid.strain[0], grid.tiltLRDeg[1] - grid.tiltLRDeg[0],
                     grid.tiltUDDeg[1] - grid.tiltUDDeg[0], grid.thicknessA[1] - grid.thicknessA[0]]
        for f in 0..<6 {
            let want = naiveFit(frame: Array(frames[(f * 4096)..<((f + 1) * 4096)]), patterns: patterns, grid: grid)
            let got = [fast.strain[f], fast.tiltLRDeg[f], fast.tiltUDDeg[f], fast.thicknessA![f]]
            for k in 0..<4 {
                // Float GEMM vs Double loops: 1e-5 of a library step (min-subtraction amplifies rounding).
                XCTAssertEqual(got[k], want[k], accuracy: 1e-5 * steps[k], "frame \(f) axis \(k)")
            }
        }
    }
}
