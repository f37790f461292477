import XCTest
import DonutNN
import DonutCore
@testable import DonutIO

/// `donut sweep summary`'s library side: ranking by a metric that does not contain the swept
/// weights, the CSV/markdown tables, the points without results and their reasons, the plots.
final class SweepSummaryTests: XCTestCase {
    func checkpoint(step: Int) -> ModelCheckpoint {
        let p = (0..<5).map { Float($0) }
        return ModelCheckpoint(method: "donut", tensors: [TensorRecord(name: "w", shape: [5], group: "encoder", offset: 0)],
                               parameters: p, firstMoments: p, secondMoments: p, buffers: [], bufferValues: [], step: step,
                               epoch: 2, stepInEpoch: 0, rngState: [0, 0], configJSON: "{}", trainingJSON: "{}", lossLog: [])
    }
    let provenance = Provenance(version: "t", date: "t", method: "train", commandLine: "t", configJSON: "{}", inputs: [], modelID: "")

    /// Five planned points of loss.physics: three finished, whose validation loss grows with
    /// the weight (Σ w_k L_k) while their held-out deviance says the middle one is best; one
    /// failed, one interrupted, one not started.
    func makeSweep() throws -> String {
        let dir = makeScratchFolder(self).path
        let weights = ["1.0", "5.0", "10.0", "20.0", "50.0", "100.0"]
        try AtomicOutput.write(Data(("index\tloss.physics\n" + weights.enumerated().map { "\($0)\t\($1)\n" }.joined()).utf8),
                               to: dir + "/points.tsv", force: false)
        // (validation loss, held-out deviance, physics MAE); validation ∝ weight, deviance not.
        let finished: [Int: (Double, Double, Double)] = [0: (1.2, 3.5, 9.0), 1: (5.5, 1.1, 4.0), 2: (10.8, 1.9, 6.0)]
        for i in 0..<weights.count {
            let folder = SweepPlanLayout.runFolder(dir, i)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            if let (v, d, mae) = finished[i] {
                try CheckpointFile.write(checkpoint(step: 40), path: folder + "/model.h5", provenance: provenance, force: false)
                let m = SweepPointMetrics(heldOutFrames: 12, heldOutPhysicsMAE: mae, heldOutDeviance: d,
                                          groundTruthRMSE: ["strain": 1e-4 * d, "tilt_lr": .nan], validationLoss: v,
                                          wallSeconds: 10, samplesPerSecond: 100 + Double(i), steps: 40)
                try AtomicOutput.write(try m.json(), to: SweepPointMetrics.path(forModel: folder + "/model.h5"), force: false)
            }
        }
        try SweepPointStatus(state: "failed", reason: "scan.h5: no usable frame").write(folder: SweepPlanLayout.runFolder(dir, 3))
        try CheckpointFile.write(checkpoint(step: 17), path: SweepPlanLayout.runFolder(dir, 4) + "/model.checkpoint.h5",
                                 provenance: provenance, force: false)
        return dir
    }

    func testRanksByHeldOutDevianceNotByTheWeightedLoss() throws {
        let dir = try makeSweep()
        let summary = try SweepSummary.collect(outDir: dir)
        XCTAssertEqual(summary.metric, "held_out_deviance")
        XCTAssertEqual(summary.ranked.map(\.index), [1, 2, 0], "by held-out deviance")
        XCTAssertEqual(try SweepSummary.collect(outDir: dir, metric: "validation_loss").ranked.map(\.index), [0, 1, 2],
                       "the weighted loss just follows the weight")
        XCTAssertEqual(try SweepSummary.collect(outDir: dir, metric: "held_out_physics_mae").ranked.map(\.index), [1, 2, 0])
        XCTAssertEqual(try SweepSummary.collect(outDir: dir, metric: "samples_per_second").ranked.map(\.index), [2, 1, 0],
                       "throughput: higher is better")
        XCTAssertEqual(try SweepSummary.collect(outDir: dir, metric: "rmse_strain").ranked.map(\.index), [1, 2, 0])
        assertThrows(try SweepSummary.collect(outDir: dir, metric: "accuracy"), containing: ["accuracy", "held_out_deviance"])
        XCTAssertEqual(summary.missing.map(\.index), [3, 4, 5])
        XCTAssert(summary.missing[0].reason.contains("failed") && summary.missing[0].reason.contains("no usable frame"), summary.missing[0].reason)
        XCTAssert(summary.missing[1].reason.contains("unfinished") && summary.missing[1].reason.contains("step 17"), summary.missing[1].reason)
        XCTAssert(summary.missing[2].reason.contains("not started"), summary.missing[2].reason)
    }

    func testTablesAndPlotsAreWrittenOnceAndNotReplacedSilently() throws {
        let dir = try makeSweep()
        let summary = try SweepSummary.collect(outDir: dir)
        let paths = try summary.write(outDir: dir, force: false)
        XCTAssertEqual(paths.map { URL(fileURLWithPath: $0).lastPathComponent },
                       ["summary.csv", "summary.md", "summary-held_out_deviance-loss.physics.png"])
        let csv = try String(contentsOfFile: dir + "/summary.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        XCTAssertEqual(csv[0].prefix(4), ["rank", "index", "loss.physics", "held_out_deviance"])
        XCTAssertEqual(csv.count, 4, "header + three finished points")
        XCTAssertEqual(csv[1].prefix(4), ["1", "1", "5.0", "1.1"])
        let rmseColumn = try XCTUnwrap(csv[0].firstIndex(of: "rmse_tilt_lr"))
        XCTAssertEqual(csv[1][rmseColumn], "nan", "a metric not measured is flagged, not a number")
        let md = try String(contentsOfFile: dir + "/summary.md", encoding: .utf8)
        XCTAssert(md.contains("| 1 | 1 | 5.0 | 1.1 |"), md)
        XCTAssert(md.contains("point 3 (loss.physics = 20.0): failed: scan.h5: no usable frame"), md)
        XCTAssert(md.contains("point 4 (loss.physics = 50.0): unfinished"), md)
        let tsv = summary.tsv().split(separator: "\n").map(String.init)
        XCTAssertEqual(tsv[0].split(separator: "\t").prefix(3), ["index", "loss.physics", "held_out_deviance"])
        XCTAssertEqual(tsv[1...3].map { $0.split(separator: "\t")[0] }, ["1", "2", "0"], "index first, best first")
        XCTAssert(tsv[4].hasPrefix("not ranked: point 3: failed"), tsv[4])
        // The PNG: signature and the plot's size in IHDR.
        let png = try Data(contentsOf: URL(fileURLWithPath: paths[2]))
        XCTAssertEqual(Array(png.prefix(8)), [137, 80, 78, 71, 13, 10, 26, 10])
        XCTAssertEqual(png[16..<24].reduce(0) { $0 << 8 | UInt64($1) } >> 32, UInt64(ScatterPlot.width))
        // Same content again: nothing rewritten; other content: refused without --force.
        var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 0), timespec(tv_sec: 1_600_000_000, tv_nsec: 0)]
        for p in paths { XCTAssertEqual(utimensat(AT_FDCWD, p, &times, 0), 0) }
        try summary.write(outDir: dir, force: false)
        for p in paths {
            XCTAssertEqual((try FileManager.default.attributesOfItem(atPath: p)[.modificationDate] as? Date)?.timeIntervalSince1970, 1_600_000_000, p)
        }
        let other = try SweepSummary.collect(outDir: dir, metric: "validation_loss")
        assertThrows(try other.write(outDir: dir, force: false), containing: ["summary.csv", "pass --force"])
        XCTAssertEqual(try other.write(outDir: dir, force: true).count, 3)
    }

    /// The scatter plot puts the best point (ringed) where its value is: lowest deviance at
    /// the bottom, x from the swept value on a log axis when the values span decades.
    func testPlotPlacesPoints() {
        let plot = ScatterPlot(title: "t", xLabel: "loss.physics", yLabel: "d", points: ["1.0", "10.0", "100.0"],
                               values: [2, 1, 3], best: 1)
        let (x, _, log) = plot.xPositions()
        XCTAssertTrue(log)
        XCTAssertEqual(x, [0, 0.5, 1])
        let categorical = ScatterPlot(title: "t", xLabel: "k", yLabel: "d", points: ["\"b\"", "\"a\""], values: [1, 2], best: nil)
        XCTAssertEqual(categorical.xPositions().positions, [1, 0])
    }

    func testMetricsRoundTripWithNaNAsNull() throws {
        let dir = makeScratchFolder(self).path
        let m = SweepPointMetrics(heldOutFrames: 3, heldOutPhysicsMAE: 0.5, heldOutDeviance: .nan, groundTruthRMSE: ["strain": 2e-4],
                                  validationLoss: 1.5, wallSeconds: 2, samplesPerSecond: 30, steps: 7)
        let path = dir + "/m.metrics.json"
        try AtomicOutput.write(try m.json(), to: path, force: false)
        XCTAssert(try String(contentsOfFile: path, encoding: .utf8).contains("\"held_out_deviance\" : null"))
        let back = try SweepPointMetrics.read(path: path)
        XCTAssert(back.heldOutDeviance.isNaN)
        XCTAssertEqual(back.heldOutPhysicsMAE, 0.5); XCTAssertEqual(back.groundTruthRMSE, ["strain": 2e-4]); XCTAssertEqual(back.steps, 7)
    }
}
