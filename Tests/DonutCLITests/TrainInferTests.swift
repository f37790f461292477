import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// `donut train` and `donut infer` end to end, on 16×16 frames and a tiny network so the
/// debug build trains in seconds.
final class TrainInferTests: XCTestCase {
    var dir: URL!
    var config: String!
    var training: String!

    override func setUpWithError() throws {
        dir = try scratchFolder(self)
        config = try writeTinyConfig(in: dir)
        training = try writeTinyTrainingPreset(in: dir, epochs: 3, checkpointEvery: 5)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--out", "scan.h5"], in: dir), "scan")
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func testTrainThenInferWritesMapsWithResidualAndSigmas() throws {
        let r = try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "model.h5"], in: dir)
        assertSucceeded(r, "train")
        let model = try CheckpointFile.read(path: path("model.h5"))
        XCTAssertEqual(model.method, "donut")
        XCTAssertEqual(model.step, 3 * 9, "3 epochs of 36 training frames in batches of 4")
        XCTAssert(model.lossLog.contains { !$0.validation.isNaN }, "validation loss logged")
        let csv = try String(contentsOfFile: path("model.loss.csv"), encoding: .utf8)
        XCTAssert(csv.hasPrefix("step,epoch,train_loss"), csv)
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "maps.h5", "--mc-samples", "5"], ranks: 2, in: dir), "infer")
        let maps = try ResultMapsReader.read(path: path("maps.h5"))
        // A 3-epoch model explains some frames badly: those, and only those, are flagged by
        // their goodness of fit (valid = 0 above the threshold); every other estimate is kept.
        let gof = try XCTUnwrap(maps.results.goodnessOfFit, "goodness of fit written")
        XCTAssert(maps.results.valid.contains(1), "most frames of a trained model are valid")
        for i in 0..<40 {
            XCTAssertEqual(maps.results.valid[i] == 1, gof[i] <= GoodnessOfFit.defaultThreshold, "valid follows goodness of fit at frame \(i)")
            if maps.results.valid[i] == 1 { XCTAssert(maps.results.strain[i].isFinite, "strain frame \(i)") }
        }
        XCTAssertNil(maps.results.thicknessA, "no thickness map when the model does not predict it")
        XCTAssert(maps.results.residual!.allSatisfy { $0 > 0 && $0.isFinite }, "residual in counts")
        for name in ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"] {
            XCTAssert(maps.results.sigmas[name]?.allSatisfy { $0 > 0 && $0.isFinite } ?? false, "\(name) from MC dropout")
        }
        XCTAssertEqual(maps.provenance?.method, "donut")
        // The rank count does not change the maps (inference is per frame).
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "one.h5"], in: dir), "infer np 1")
        let one = try ResultMapsReader.read(path: path("one.h5")).results
        for i in 0..<40 {
            XCTAssertEqual(one.strain[i], maps.results.strain[i], accuracy: 1e-6 * abs(one.strain[i]) + 1e-12, "strain frame \(i)")
            XCTAssertEqual(one.tiltUDDeg[i], maps.results.tiltUDDeg[i], accuracy: 1e-6 * abs(one.tiltUDDeg[i]) + 1e-12, "tilt_ud frame \(i)")
        }
    }

    /// Inference is per frame: a batch smaller than the streamed chunk (and not dividing it)
    /// gives the maps of one batch holding the whole scan, frame by frame.
    func testMapsDoNotDependOnTheBatch() throws {
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "model.h5"], in: dir), "train")
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "whole.h5", "--batch", "40"], in: dir), "batch 40")
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "small.h5", "--batch", "7"], in: dir), "batch 7")
        let whole = try ResultMapsReader.read(path: path("whole.h5")).results, small = try ResultMapsReader.read(path: path("small.h5")).results
        // Float rounding differs with the batch (the convolutions' image chunks follow it):
        // tolerances relative to each map's largest value.
        func scale(_ v: [Double]) -> Double { v.map { abs($0) }.max()! }
        let (s, t, r) = (scale(whole.strain), scale(whole.tiltLRDeg), scale(whole.residual!))
        for i in 0..<40 {
            XCTAssertEqual(small.strain[i], whole.strain[i], accuracy: 1e-5 * s, "strain frame \(i)")
            XCTAssertEqual(small.tiltLRDeg[i], whole.tiltLRDeg[i], accuracy: 1e-5 * t, "tilt_lr frame \(i)")
            XCTAssertEqual(small.residual![i], whole.residual![i], accuracy: 1e-5 * r, "residual frame \(i)")
        }
        XCTAssertGreaterThan(Set(small.strain.map(\.bitPattern)).count, 30, "distinct frames give distinct estimates")
    }

    /// SIGTERM mid-training: the step finishes, a checkpoint is written, exit code 75;
    /// `--resume` then ends with exactly the weights of an uninterrupted run.
    func testSigtermCheckpointAndResumeGiveTheUninterruptedWeights() throws {
        var t = try ConfigFile.load(TrainingConfig.self, path: training)
        t.schedule.epochs = 60
        try ConfigFile.yaml(of: t).write(toFile: training, atomically: true, encoding: .utf8)
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "full.h5"], in: dir), "uninterrupted")
        let process = Process()
        process.executableURL = donutBinary
        process.arguments = ["train", "--scan", "scan.h5", "--training", training, "--out", "part.h5", "--checkpoint", "ck.h5"]
        process.currentDirectoryURL = dir
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: path("ck.h5")) && process.isRunning && Date() < deadline { usleep(2_000) }
        XCTAssert(process.isRunning, "training ended before the first checkpoint; make it longer")
        process.terminate()   // SIGTERM
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 75, "documented exit code after a signal")
        let stopped = try CheckpointFile.read(path: path("ck.h5"))
        XCTAssertLessThan(stopped.step, 60 * 9, "stopped early (step \(stopped.step))")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("part.h5")), "no final model after a signal")
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "part.h5", "--checkpoint", "ck.h5",
                                   "--resume", "ck.h5"], in: dir), "resume")
        let full = try CheckpointFile.read(path: path("full.h5")), resumed = try CheckpointFile.read(path: path("part.h5"))
        XCTAssertEqual(resumed.step, full.step)
        XCTAssert(zip(resumed.parameters, full.parameters).allSatisfy { $0.bitPattern == $1.bitPattern },
                  "resumed weights equal the uninterrupted run's")
        XCTAssertEqual(resumed.bufferValues, full.bufferValues)
    }

    func testModelAndScanMismatchesAreClearErrors() throws {
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "model.h5"], in: dir), "train")
        // A 64×64 scan for a model trained on 16×16 frames (another instrument config).
        let big = try writeSmallConfig(in: dir, name: "big.yaml")
        assertSucceeded(try donut(["simulate", "scan", "--config", big, "--rows", "2", "--cols", "2", "--out", "big.h5"], in: dir), "big scan")
        assertFailed(try donut(["infer", "--model", "model.h5", "--scan", "big.h5", "--out", "m.h5"], in: dir),
                     naming: ["model.h5", "big.h5", "model.frame_size"])
        // A scan that records no config, with frames neither 16×16 nor containing the 32×32 ROI.
        try NpyFile.write([Float](repeating: 1, count: 4 * 20 * 20), shape: [2, 2, 20, 20], to: path("odd.npy"))
        assertFailed(try donut(["infer", "--model", "model.h5", "--scan", "odd.npy", "--out", "m.h5"], in: dir),
                     naming: ["odd.npy", "20×20", "16×16"])
        // Not a model.
        assertFailed(try donut(["infer", "--model", "scan.h5", "--scan", "scan.h5", "--out", "m.h5"], in: dir), naming: ["scan.h5", "/entry/model"])
        // A scan whose frames are all bad: nothing to train on.
        let cfg = try ConfigFile.load(path: config)
        try ScanWriter.write(path: path("nan.h5"), frames: [Float](repeating: .nan, count: 4 * 256), layout: ScanLayout(rows: 2, cols: 2),
                             frameSize: 16, provenance: Provenance(version: "t", date: "t", method: "t", commandLine: "t",
                                                                   configJSON: ConfigFile.json(cfg), inputs: [], modelID: ""))
        assertFailed(try donut(["train", "--scan", "nan.h5", "--training", training, "--out", "m2.h5"], in: dir), naming: ["nan.h5", "no usable frame"])
        // Bad frames at inference: NaN pixels with valid = 0, not a crash.
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "nan.h5", "--out", "nanmaps.h5"], in: dir), "infer on NaN frames")
        XCTAssertEqual(try ResultMapsReader.read(path: path("nanmaps.h5")).results.valid, [0, 0, 0, 0])
        // MC-dropout sigmas from a model trained without dropout: refused, naming the key.
        var noDropout = try ConfigFile.load(TrainingConfig.self, path: training)
        noDropout.network.dropout = 0; noDropout.schedule.epochs = 1
        try ConfigFile.yaml(of: noDropout).write(toFile: path("nodrop.yaml"), atomically: true, encoding: .utf8)
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", "nodrop.yaml", "--out", "nodrop.h5"], in: dir), "train without dropout")
        assertFailed(try donut(["infer", "--model", "nodrop.h5", "--scan", "scan.h5", "--out", "m3.h5", "--mc-samples", "5"], in: dir),
                     naming: ["nodrop.h5", "network.dropout", "--physics-refine"])
        // An existing model is not overwritten without --force: the same training has nothing to
        // do (exit 0), another one is refused.
        let again = try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "model.h5"], in: dir)
        assertSucceeded(again, "the same training again")
        XCTAssert(again.stderr.contains("nothing to do"), again.stderr)
        assertFailed(try donut(["train", "--scan", "scan.h5", "--training", "nodrop.yaml", "--out", "model.h5"], in: dir),
                     naming: ["model.h5", "other settings", "--force"])
    }

    /// `--verbose` logs the network plan, the same text (`NetworkPlan.description`) as `donut
    /// bench … --show-plan`: the plan this process makes for the model's network at the run's
    /// batch (train: the preset's 4; infer: the 40 frames, under the default 256) is in stderr
    /// word for word. Without `--verbose`, no plan.
    func testVerboseLogsTheNetworkPlan() throws {
        let plain = try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "model.h5", "--epochs", "1"], in: dir)
        assertSucceeded(plain, "train")
        XCTAssertFalse(plain.all.contains("network plan:"), plain.all)
        let verbose = try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "verbose.h5", "--epochs", "1",
                                 "--verbose"], in: dir)
        assertSucceeded(verbose, "train --verbose")
        let model = try CheckpointFile.read(path: path("model.h5"))
        let config = try ConfigFile.fromJSON(model.configJSON, source: "model.h5")
        let preset = try ConfigFile.parse(TrainingConfig.self, yaml: model.trainingJSON, source: "model.h5")
        func plan(batch: Int, training: Bool) throws -> String {
            let net = try DonutNetwork<Float>(settings: preset.network, optimiser: preset.optimiser, config: config, seed: 0)
            net.plan(batch: batch, training: training)
            return "\(try XCTUnwrap(net.networkPlan))"
        }
        let trainingPlan = try plan(batch: preset.schedule.batchSize, training: true)
        XCTAssert(trainingPlan.contains("with gradients"), trainingPlan)
        XCTAssert(verbose.stderr.contains(trainingPlan), "train --verbose logs the plan:\n\(trainingPlan)\n---\n\(verbose.stderr)")

        let inferPlain = try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "plain.h5"], in: dir)
        assertSucceeded(inferPlain, "infer")
        XCTAssertFalse(inferPlain.all.contains("network plan:"), inferPlain.all)
        let inferVerbose = try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "maps.h5", "--verbose"], in: dir)
        assertSucceeded(inferVerbose, "infer --verbose")
        let inferencePlan = try plan(batch: 40, training: false)
        XCTAssert(inferencePlan.contains("inference pass:"), inferencePlan)
        XCTAssert(inferVerbose.stderr.contains(inferencePlan), "infer --verbose logs the plan:\n\(inferencePlan)\n---\n\(inferVerbose.stderr)")
    }
}
