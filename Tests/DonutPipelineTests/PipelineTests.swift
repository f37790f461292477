import XCTest
import Foundation
import DonutPhysics
import DonutCore
@testable import DonutIO
@testable import DonutPipeline

final class FitPipelineTests: XCTestCase {
    /// Noise-free frames of the library's own (box) model: the fit's maps follow the truth
    /// pixel by pixel (a swapped axis, a misplaced shard or transposed maps give r ≈ 0).
    /// The published centre-of-mass estimate shrinks towards the library's centre (a bias,
    /// measured here at r ≈ 0.997 for the tilts, 0.75 for strain with 9 steps per axis),
    /// so the bounds are on correlation and, for the tilts, on an RMSE well below the spread.
    func testFitMapsFollowTheGroundTruth() throws {
        let dir = try scratchFolder(self)
        let config = smallConfig(steps: 9)
        try simulateInputs(in: dir, config: config, noise: false)
        let out = dir.appendingPathComponent("fit.h5").path
        let outcome = try fitScan(context, FitRequest(scan: ScanInput(path: dir.appendingPathComponent("scan.h5").path),
                                                      libraryPath: dir.appendingPathComponent("lib.h5").path,
                                                      outputs: MapOutputs(path: out, force: false, quickLooks: false)))
        XCTAssertEqual(outcome.frames, 30)
        XCTAssertEqual(outcome.invalidFrames, 0)
        let maps = try ResultMapsReader.read(path: out)
        XCTAssertEqual(maps.provenance?.method, "correlation-fit")
        let t = try truth(dir.appendingPathComponent("scan.h5"))
        for (name, estimate, minimumR, rmseOverSpread) in [("strain", maps.results.strain, 0.6, Double.infinity),
                                                           ("tilt_lr", maps.results.tiltLRDeg, 0.99, 0.7),
                                                           ("tilt_ud", maps.results.tiltUDDeg, 0.99, 0.7)] {
            let r = MapMetrics.pearson(estimate, t[name]!)
            let rmse = MapMetrics.rmse(estimate, t[name]!), spread = standardDeviation(t[name]!)
            XCTAssertGreaterThan(r, minimumR, "\(name): correlation with the truth")
            XCTAssertLessThan(rmse, rmseOverSpread * spread, "\(name): RMSE \(rmse), truth spread \(spread)")
        }
    }

    /// An existing result is refused before any work, as bad input (exit code 2).
    func testExistingOutputIsRefusedAsBadInput() throws {
        let dir = try scratchFolder(self)
        try simulateInputs(in: dir, config: smallConfig(steps: 3), rows: 2, cols: 2)
        let out = dir.appendingPathComponent("fit.h5").path
        let request = FitRequest(scan: ScanInput(path: dir.appendingPathComponent("scan.h5").path),
                                 libraryPath: dir.appendingPathComponent("lib.h5").path,
                                 outputs: MapOutputs(path: out, force: false, quickLooks: false))
        try fitScan(context, request)
        let before = try Data(contentsOf: URL(fileURLWithPath: out))
        XCTAssertThrowsError(try fitScan(context, request)) { error in
            XCTAssertEqual(DonutExitCode(for: error), .badInput)
            XCTAssert("\(error)".contains(out) && "\(error)".contains("--force"), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), before, "the result is untouched")
    }
}

final class TrainInferPipelineTests: XCTestCase {
    /// Training writes a model and its loss log; inference streamed in chunks of 7 frames
    /// gives the same maps, bit for bit, as in one chunk (the chunking is only memory).
    func testTrainThenInferIsIndependentOfTheChunk() throws {
        let dir = try scratchFolder(self)
        try simulateInputs(in: dir, config: smallConfig(steps: 3), rows: 5, cols: 6, library: false)
        let scan = ScanInput(path: dir.appendingPathComponent("scan.h5").path)
        let model = dir.appendingPathComponent("model.h5").path
        let trained = try trainModel(context, TrainRequest(scans: [scan], training: tinyTraining(epochs: 2), outPath: model))
        XCTAssertTrue(trained.completed)
        XCTAssertEqual(trained.steps, try CheckpointFile.read(path: model).step)
        XCTAssertGreaterThan(trained.steps, 0)
        XCTAssert(FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.loss.csv").path))
        var maps: [FrameResults] = []
        for chunk in [7, InferRequest.defaultChunkFrames] {
            let out = dir.appendingPathComponent("maps-\(chunk).h5").path
            let outcome = try inferScan(context, InferRequest(modelPath: model, scan: scan,
                                                              outputs: MapOutputs(path: out, force: false, quickLooks: false),
                                                              batch: 4, chunkFrames: chunk))
            XCTAssertEqual(outcome.frames, 30)
            maps.append(try ResultMapsReader.read(path: out).results)
            XCTAssertEqual(outcome.invalidFrames, maps.last!.valid.filter { $0 == 0 }.count, "the outcome counts the valid = 0 frames")
        }
        // A tiny model after two epochs: some frames may fail the goodness-of-fit check, but
        // every frame marked valid has finite maps.
        for i in maps[0].valid.indices where maps[0].valid[i] == 1 {
            XCTAssert(maps[0].strain[i].isFinite && maps[0].tiltLRDeg[i].isFinite, "frame \(i)")
        }
        XCTAssertEqual(bits(maps[0].strain), bits(maps[1].strain))
        XCTAssertEqual(bits(maps[0].tiltLRDeg), bits(maps[1].tiltLRDeg))
        XCTAssertEqual(bits(maps[0].tiltUDDeg), bits(maps[1].tiltUDDeg))
        XCTAssertEqual(maps[0].valid, maps[1].valid)
    }

    /// A model trained on a Dectris master records, with the scan it was asked for, the
    /// parts it read and their data files (`frames_source`, as fit and infer results do), in
    /// the finished model and in its checkpoints; a single-dataset scan records that dataset.
    func testTrainingProvenanceNamesTheDataFilesRead() throws {
        let dir = try scratchFolder(self)
        var config = smallConfig(steps: 3)
        config.instrument.roi = DetectorROI(x: 16, y: 24, width: 128, height: 128)
        var s = ScanSimulationRequest(config: config, outPath: dir.appendingPathComponent("scan_master.h5").path)
        s.phantom = .domains; s.rows = 3; s.cols = 4; s.seed = 5
        var detector = RawDetectorRequest()
        detector.height = 300; detector.width = 300
        try simulateRawScan(context, s, detector: detector, framesPerFile: 5)
        let model = dir.appendingPathComponent("model.h5").path, checkpoint = dir.appendingPathComponent("model.ckpt.h5").path
        var request = TrainRequest(scans: [ScanInput(path: s.outPath)], training: tinyTraining(epochs: 1, checkpointEvery: 1),
                                   outPath: model, checkpointPath: checkpoint)
        request.shouldStop = { false }
        _ = try trainModel(context, request)
        let parts = (1...3).map { "/entry/data/data_00000\($0) → scan_data_00000\($0).h5:/entry/data/data (\($0 == 3 ? 2 : 5) frames)" }
        for file in [model, checkpoint] {
            let f = try H5File.open(file)
            let inputs = try XCTUnwrap(try f.readProcess()).inputs
            try f.close()
            XCTAssertEqual(inputs.map(\.path), ["scan_master.h5"], file)
            XCTAssertEqual(inputs.first?.dataset, defaultFramesDataset, "the dataset asked for")
            XCTAssertEqual(inputs.first?.framesSource, parts, file)
        }

        try simulateInputs(in: dir, config: smallConfig(steps: 3), rows: 2, cols: 3, library: false)
        let single = dir.appendingPathComponent("single-model.h5").path
        _ = try trainModel(context, TrainRequest(scans: [ScanInput(path: dir.appendingPathComponent("scan.h5").path)],
                                                 training: tinyTraining(epochs: 1), outPath: single))
        let f = try H5File.open(single)
        XCTAssertEqual(try f.readProcess()?.inputs.map(\.framesSource), [[defaultFramesDataset]])
        try f.close()
    }

    /// A stop request (what SIGTERM/SIGUSR1 set) ends training after a checkpoint; resuming
    /// from it reaches the weights of the uninterrupted run, bit for bit.
    func testStopAndResumeGiveTheUninterruptedWeights() throws {
        let dir = try scratchFolder(self)
        try simulateInputs(in: dir, config: smallConfig(steps: 3), rows: 4, cols: 5, library: false)
        let scan = ScanInput(path: dir.appendingPathComponent("scan.h5").path)
        let training = tinyTraining(epochs: 3, checkpointEvery: 2)
        let straight = dir.appendingPathComponent("straight.h5").path
        let whole = try trainModel(context, TrainRequest(scans: [scan], training: training, outPath: straight))
        XCTAssertTrue(whole.completed)

        let resumed = dir.appendingPathComponent("resumed.h5").path
        var first = TrainRequest(scans: [scan], training: training, outPath: resumed)
        var asked = 0
        first.shouldStop = { asked += 1; return asked >= 4 }
        let stopped = try trainModel(context, first)
        XCTAssertFalse(stopped.completed)
        XCTAssertLessThan(stopped.steps, whole.steps)
        XCTAssertFalse(FileManager.default.fileExists(atPath: resumed), "no model before the training completes")
        let checkpoint = TrainRequest.defaultCheckpointPath(out: resumed)
        XCTAssertEqual(try CheckpointFile.read(path: checkpoint).step, stopped.steps)

        let second = TrainRequest(scans: [scan], training: training, outPath: resumed, resume: checkpoint)
        XCTAssertTrue(try trainModel(context, second).completed)
        let a = try CheckpointFile.read(path: straight), b = try CheckpointFile.read(path: resumed)
        XCTAssertEqual(a.step, b.step)
        XCTAssertEqual(a.parameters.map(\.bitPattern), b.parameters.map(\.bitPattern), "weights after resume")
    }

    /// A stop request during start-up — at the end of each phase before the first step —
    /// ends the training at once with nothing written (no checkpoint, model, loss log or
    /// temporary file); the same request again then trains to the uninterrupted weights. A
    /// request during the start-up of a resumed run leaves its checkpoint byte for byte.
    func testStopDuringStartUpWritesNothingAndARerunContinues() throws {
        let dir = try scratchFolder(self)
        try simulateInputs(in: dir, config: smallConfig(steps: 3), rows: 4, cols: 5)
        let scan = ScanInput(path: dir.appendingPathComponent("scan.h5").path)
        let library = dir.appendingPathComponent("lib.h5").path
        let training = tinyTraining(epochs: 2, checkpointEvery: 2)
        let straight = dir.appendingPathComponent("straight.h5").path
        var whole = TrainRequest(scans: [scan], libraryPath: library, mix: 0.5, training: training, outPath: straight)
        whole.shouldStop = { false }; whole.shouldStopBeforeFirstStep = { false }
        XCTAssertTrue(try trainModel(context, whole).completed)
        func files() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() }
        let before = try files()

        let out = dir.appendingPathComponent("m.h5").path
        // Phases: options/MPI, fingerprints, library, scan, network: a request in each.
        for phase in 1...5 {
            var request = TrainRequest(scans: [scan], libraryPath: library, mix: 0.5, training: training, outPath: out)
            var asked = 0
            request.shouldStopBeforeFirstStep = { asked += 1; return asked >= phase }
            request.shouldStop = { XCTFail("phase \(phase): a step was started"); return true }
            let outcome = try trainModel(context, request)
            XCTAssertFalse(outcome.completed, "phase \(phase)")
            XCTAssertEqual(outcome.steps, 0, "phase \(phase)")
            XCTAssertEqual(asked, phase, "phase \(phase): stopped at the first request")
            XCTAssertEqual(try files(), before, "phase \(phase): nothing written")
        }
        XCTAssertEqual(try files(), before)

        // Interrupted after a few steps, then stopped during the start-up of the resume.
        var first = TrainRequest(scans: [scan], libraryPath: library, mix: 0.5, training: training, outPath: out)
        var steps = 0
        first.shouldStopBeforeFirstStep = { false }
        first.shouldStop = { steps += 1; return steps >= 3 }
        XCTAssertFalse(try trainModel(context, first).completed)
        let checkpoint = TrainRequest.defaultCheckpointPath(out: out)
        let saved = try Data(contentsOf: URL(fileURLWithPath: checkpoint))
        for phase in 1...5 {
            var again = TrainRequest(scans: [scan], libraryPath: library, mix: 0.5, training: training, outPath: out, resume: checkpoint)
            var asked = 0
            again.shouldStopBeforeFirstStep = { asked += 1; return asked >= phase }
            XCTAssertFalse(try trainModel(context, again).completed, "resume, phase \(phase)")
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: checkpoint)), saved, "resume, phase \(phase): checkpoint unchanged")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        }
        // The same command again (no --resume: the run records find the checkpoint) finishes
        // with the uninterrupted run's weights.
        var last = TrainRequest(scans: [scan], libraryPath: library, mix: 0.5, training: training, outPath: out)
        last.shouldStop = { false }; last.shouldStopBeforeFirstStep = { false }
        XCTAssertTrue(try trainModel(context, last).completed)
        let a = try CheckpointFile.read(path: straight), b = try CheckpointFile.read(path: out)
        XCTAssertEqual(a.step, b.step)
        XCTAssertEqual(a.parameters.map(\.bitPattern), b.parameters.map(\.bitPattern), "weights after the interrupted start-ups")
    }
}

final class ReprocessPipelineTests: XCTestCase {
    /// A manifest with a good and a missing scan: the good one's maps equal a direct fit's,
    /// the missing one is reported; a rerun skips what is done and still reports the failure.
    func testFailedScansAreReportedAndDoneScansSkipped() throws {
        let dir = try scratchFolder(self)
        try simulateInputs(in: dir, config: smallConfig(steps: 3), scan: "a.h5", rows: 3, cols: 4)
        try """
        output_dir: out
        defaults: {method: fit, library: lib.h5}
        scans:
          - path: a.h5
          - path: missing.h5
        """.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let request = ReprocessRequest(manifestPath: dir.appendingPathComponent("m.yaml").path)
        let first = try reprocess(context, request)
        XCTAssertEqual([first.done, first.skipped, first.failed], [1, 0, 1])
        let status = try XCTUnwrap(try ReprocessStatus.read(path: first.statusPath))
        XCTAssertEqual(status.scans.map(\.state.rawValue), ["done", "failed"])
        XCTAssert(status.scans[1].reason.contains("missing.h5"), status.scans[1].reason)

        let direct = dir.appendingPathComponent("direct.h5").path
        try fitScan(context, FitRequest(scan: ScanInput(path: dir.appendingPathComponent("a.h5").path),
                                        libraryPath: dir.appendingPathComponent("lib.h5").path,
                                        outputs: MapOutputs(path: direct, force: false, quickLooks: false)))
        let viaManifest = try ResultMapsReader.read(path: dir.appendingPathComponent("out/a_maps.h5").path).results
        let alone = try ResultMapsReader.read(path: direct).results
        XCTAssertEqual(bits(viaManifest.strain), bits(alone.strain))
        XCTAssertEqual(bits(viaManifest.tiltUDDeg), bits(alone.tiltUDDeg))

        let again = try reprocess(context, request)
        XCTAssertEqual([again.done, again.skipped, again.failed], [0, 1, 1])
    }
}

final class RefinePipelineTests: XCTestCase {
    /// Fine-tuning from a trained model on two scans, then every scan re-inferred with the
    /// refined model; a stop request before the end re-infers nothing.
    func testRefineFineTunesThenReinfersEveryScan() throws {
        let dir = try scratchFolder(self)
        let config = smallConfig(steps: 3)
        try simulateInputs(in: dir, config: config, scan: "a.h5", rows: 3, cols: 4, seed: 1, library: false)
        try simulateInputs(in: dir, config: config, scan: "b.h5", rows: 4, cols: 3, seed: 2, library: false)
        let base = dir.appendingPathComponent("base.h5").path
        _ = try trainModel(context, TrainRequest(scans: [ScanInput(path: dir.appendingPathComponent("a.h5").path)],
                                                 training: tinyTraining(epochs: 1), outPath: base))
        try """
        scans:
          - path: a.h5
          - path: b.h5
        """.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("refined.h5").path
        var request = RefineRequest(modelPath: base, manifestPath: dir.appendingPathComponent("m.yaml").path, outPath: out)
        request.augment = 0; request.epochs = 1

        var stopped = request
        stopped.shouldStop = { true }
        let early = try refine(context, stopped)
        XCTAssertFalse(early.training.completed)
        XCTAssertNil(early.reprocess)
        XCTAssertFalse(FileManager.default.fileExists(atPath: RefineRequest.defaultMapsFolder(out: out)), "nothing re-inferred")

        request.force = true
        let outcome = try refine(context, request)
        XCTAssertTrue(outcome.training.completed)
        XCTAssertEqual(outcome.reprocess?.done, 2)
        XCTAssertEqual(outcome.reprocess?.failed, 0)
        let refined = try CheckpointFile.read(path: out), original = try CheckpointFile.read(path: base)
        XCTAssertEqual(refined.method, TrainingMode.donut.rawValue)
        XCTAssertGreaterThan(refined.step, 0)
        XCTAssertNotEqual(refined.parameters, original.parameters, "the weights moved")
        for (name, frames) in [("a", 12), ("b", 12)] {
            let maps = try ResultMapsReader.read(path: RefineRequest.defaultMapsFolder(out: out) + "/\(name)_maps.h5")
            XCTAssertEqual(maps.results.strain.count, frames)
            XCTAssert(maps.results.strain.allSatisfy(\.isFinite), name)
        }
    }
}

extension RefinePipelineTests {
    /// A stop request during the re-inference ends it between two scans: the outcome says
    /// interrupted (the command exits 75), the scan done is done, the next one pending; the
    /// same request again finds the model finished and the done scan, and infers the rest.
    func testStopDuringReinferenceContinuesOnRerun() throws {
        let dir = try scratchFolder(self)
        let config = smallConfig(steps: 3)
        try simulateInputs(in: dir, config: config, scan: "a.h5", rows: 3, cols: 4, seed: 1, library: false)
        try simulateInputs(in: dir, config: config, scan: "b.h5", rows: 4, cols: 3, seed: 2, library: false)
        let base = dir.appendingPathComponent("base.h5").path
        _ = try trainModel(context, TrainRequest(scans: [ScanInput(path: dir.appendingPathComponent("a.h5").path)],
                                                 training: tinyTraining(epochs: 1), outPath: base))
        try "scans:\n  - path: a.h5\n  - path: b.h5\n".write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("refined.h5").path
        var request = RefineRequest(modelPath: base, manifestPath: dir.appendingPathComponent("m.yaml").path, outPath: out)
        request.augment = 0; request.epochs = 1
        let maps = RefineRequest.defaultMapsFolder(out: out)
        // The request arrives once the first scan's maps exist (the model is finished by then).
        var stopped = request
        stopped.shouldStop = { FileManager.default.fileExists(atPath: maps + "/a_maps.h5") }
        let first = try refine(context, stopped)
        XCTAssertTrue(first.training.completed)
        XCTAssertEqual(first.reprocess?.interrupted, true)
        XCTAssertEqual(first.reprocess?.done, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: maps + "/b_maps.h5"), "the scan after the request is not inferred")
        let status = try XCTUnwrap(try ReprocessStatus.read(path: first.reprocess!.statusPath))
        XCTAssertEqual(status.scans.map(\.state.rawValue), ["done", "pending"])

        request.shouldStop = { false }
        let again = try refine(context, request)
        XCTAssertTrue(again.training.alreadyDone, "the finished model is not trained again")
        XCTAssertEqual(again.reprocess?.interrupted, false)
        XCTAssertEqual([again.reprocess?.done, again.reprocess?.skipped, again.reprocess?.failed], [1, 1, 0])
        XCTAssert(FileManager.default.fileExists(atPath: maps + "/b_maps.h5"))
    }
}

final class GoodnessOfFitPipelineTests: XCTestCase {
    /// Hot pixels (1e6 counts) nobody masked: the fit does not write a silent constant map —
    /// every affected frame gets valid = 0 and a goodness of fit ≫ 1, and the outcome carries a
    /// warning naming the scan and the pixel; the clean scan gets gof ≈ 1 and no warning.
    func testUnmaskedHotPixelsAreFlaggedWithAWarning() throws {
        let dir = try scratchFolder(self)
        let config = smallConfig(steps: 7)
        try simulateInputs(in: dir, config: config)
        let scan = dir.appendingPathComponent("scan.h5").path, lib = dir.appendingPathComponent("lib.h5").path
        let reader = try ScanReader(path: scan, config: config)
        var frames = try reader.readFrames(0..<reader.layout.frameCount)
        let layout = reader.layout, t = try reader.groundTruth(), json = try XCTUnwrap(reader.configJSON)
        try reader.close()
        for f in 0..<layout.frameCount { frames[f * 4096 + 30 * 64 + 33] = 1e6 }
        let hot = dir.appendingPathComponent("hot.h5").path
        try ScanWriter.write(path: hot, frames: frames, layout: layout, frameSize: 64, groundTruth: t,
                             provenance: context.provenance(method: "test", config: json, inputs: [], modelID: ""))
        let clean = try fitScan(context, FitRequest(scan: ScanInput(path: scan), libraryPath: lib,
                                                    outputs: MapOutputs(path: dir.appendingPathComponent("clean.h5").path, force: false, quickLooks: false)))
        XCTAssertNil(clean.warning)
        let cleanMaps = try ResultMapsReader.read(path: dir.appendingPathComponent("clean.h5").path).results
        let gof = try XCTUnwrap(cleanMaps.goodnessOfFit)
        XCTAssert(gof.allSatisfy { $0 > 0.7 && $0 < GoodnessOfFit.defaultThreshold }, "clean gof \(gof)")
        let outcome = try fitScan(context, FitRequest(scan: ScanInput(path: hot), libraryPath: lib,
                                                      outputs: MapOutputs(path: dir.appendingPathComponent("hot_fit.h5").path, force: false, quickLooks: false)))
        let warning = try XCTUnwrap(outcome.warning)
        XCTAssert(warning.contains(hot) && warning.contains("y = 30, x = 33"), warning)
        XCTAssertEqual(outcome.invalidFrames, layout.frameCount)
        let maps = try ResultMapsReader.read(path: dir.appendingPathComponent("hot_fit.h5").path).results
        XCTAssert(maps.valid.allSatisfy { $0 == 0 } && maps.goodnessOfFit!.allSatisfy { $0 > 100 })
    }
}
