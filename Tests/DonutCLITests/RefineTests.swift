import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// `donut refine` through the binary: fine-tuning on every manifest scan plus library frames,
/// the refined model's provenance, re-inference through the reprocess path (status file,
/// failed scans skipped), one and two ranks, bad inputs, SIGTERM and --resume.
/// 16×16 frames and a tiny network, as in `TrainInferTests`.
final class RefineTests: XCTestCase {
    var dir: URL!
    var config: String!
    var training: String!

    override func setUpWithError() throws {
        dir = try scratchFolder(self)
        config = try writeTinyConfig(in: dir)
        training = try writeTinyTrainingPreset(in: dir, epochs: 2, checkpointEvery: 5)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5", "--smooth"], in: dir), "library")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--seed", "2", "--peak", "40", "--out", "a.h5"], in: dir), "scan a")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "paper", "--rows", "4", "--cols", "6",
                                   "--seed", "3", "--peak", "40", "--out", "b.h5"], in: dir), "scan b")
        // The base model: trained on scan a only.
        assertSucceeded(try donut(["train", "--scan", "a.h5", "--training", training, "--out", "base.h5"], in: dir), "base model")
        try """
        defaults:
          model: base.h5
          batch: 8
        scans:
          - path: a.h5
          - path: b.h5
          - path: missing.h5
        """.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func maps(_ name: String) throws -> FrameResults { try ResultMapsReader.read(path: path(name)).results }

    /// The refined model, the maps of both readable scans from it (equal to `donut infer` with
    /// it), the missing scan left out of training and failed in the status.
    func checkRefined(_ r: CommandResult, model: String, folder: String) throws {
        XCTAssertEqual(r.status, 3, "a failed scan (missing.h5) gives exit status 3:\n\(r.all)")
        for fragment in ["missing.h5: left out of training", "64 measured frame(s)", "mix 0.5", "2 done", "1 failed"] {
            XCTAssert(r.stderr.contains(fragment), "log lacks '\(fragment)':\n\(r.stderr)")
        }
        let base = try CheckpointFile.read(path: path("base.h5")), refined = try CheckpointFile.read(path: path(model))
        XCTAssertEqual(refined.parameters.count, base.parameters.count)
        XCTAssertNotEqual(refined.parameters, base.parameters, "fine-tuning changed the weights")
        XCTAssertEqual(refined.configJSON, base.configJSON)
        XCTAssertEqual(refined.method, "donut")
        let provenance = try H5File.open(path(model))
        let modelID = try provenance.readString("/entry/process/model_id")
        var inputs: [String] = []
        while provenance.exists("/entry/process/inputs/input_\(inputs.count)") {
            inputs.append(try provenance.readString("/entry/process/inputs/input_\(inputs.count)/path"))
        }
        try provenance.close()
        XCTAssert(modelID.contains("fine-tuned from base.h5"), modelID)
        XCTAssertEqual(inputs.sorted(), ["a.h5", "b.h5", "base.h5", "lib.h5"], "the scans trained on, the library, the base model")
        let status = try XCTUnwrap(try ReprocessStatus.read(path: path("\(folder)/reprocess-status.json")))
        XCTAssertEqual(status.scans.map(\.state), [.done, .done, .failed])
        XCTAssertEqual(status.scans.map(\.frames).prefix(2), [40, 24])
        for scan in ["a", "b"] {
            assertSucceeded(try donut(["infer", "--model", model, "--scan", "\(scan).h5", "--out", "\(folder)-\(scan)-infer.h5",
                                       "--batch", "8"], in: dir), "infer \(scan)")
            let reprocessed = try maps("\(folder)/\(scan)_maps.h5"), inferred = try maps("\(folder)-\(scan)-infer.h5")
            XCTAssertEqual(reprocessed.valid, inferred.valid)
            for i in inferred.strain.indices {
                XCTAssertEqual(reprocessed.strain[i], inferred.strain[i], accuracy: 1e-6 * abs(inferred.strain[i]) + 1e-12,
                               "\(scan) frame \(i): the maps are the refined model's")
                XCTAssertEqual(reprocessed.tiltLRDeg[i], inferred.tiltLRDeg[i], accuracy: 1e-6 * abs(inferred.tiltLRDeg[i]) + 1e-12)
            }
        }
    }

    func testRefineFineTunesOnAllScansAndReinfersEveryScan() throws {
        let r = try donut(["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "lib.h5", "--augment", "0.5",
                           "--out", "refined.h5", "--epochs", "2"], in: dir)
        try checkRefined(r, model: "refined.h5", folder: "refined_maps")
        // The base model's maps differ from the refined model's.
        assertSucceeded(try donut(["infer", "--model", "base.h5", "--scan", "b.h5", "--out", "base-b.h5", "--batch", "8"], in: dir), "base infer")
        XCTAssertNotEqual(try maps("base-b.h5").strain, try maps("refined_maps/b_maps.h5").strain)
        // No overwrite without --force.
        assertFailed(try donut(["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "lib.h5",
                                "--out", "refined.h5"], in: dir), naming: ["refined.h5", "--force"])
    }

    /// The frames of several scans are one concatenated training set: refining on scans a and
    /// b gives bit for bit the weights of refining on one file holding a's frames then b's
    /// (batches that straddle the two scans are read from both).
    func testSeveralScansTrainAsTheirConcatenation() throws {
        var frames: [Float] = []
        for name in ["a.h5", "b.h5"] {
            let file = try H5File.open(path(name))
            frames += try file.readDataset("/entry/data/data", as: Float.self)
            try file.close()
        }
        XCTAssertEqual(frames.count, 64 * 16 * 16)
        let joined = try H5File.create(path("ab.h5"))
        try joined.createGroup("/entry", nxClass: "NXentry"); try joined.createGroup("/entry/data", nxClass: "NXdata")
        try joined.writeDataset("/entry/data/data", frames, shape: [8, 8, 16, 16], units: "counts")
        try joined.close()
        try "defaults: {model: base.h5}\nscans:\n  - path: ab.h5\n"
            .write(to: dir.appendingPathComponent("joined.yaml"), atomically: true, encoding: .utf8)
        try "scans:\n  - path: a.h5\n  - path: b.h5\n"
            .write(to: dir.appendingPathComponent("two.yaml"), atomically: true, encoding: .utf8)
        for (manifest, out) in [("joined.yaml", "joined.h5"), ("two.yaml", "two.h5")] {
            assertSucceeded(try donut(["refine", "--model", "base.h5", "--manifest", manifest, "--library", "lib.h5",
                                       "--augment", "0.5", "--out", out, "--epochs", "2"], in: dir), manifest)
        }
        let joinedModel = try CheckpointFile.read(path: path("joined.h5")), twoModel = try CheckpointFile.read(path: path("two.h5"))
        XCTAssertEqual(twoModel.step, joinedModel.step)
        XCTAssert(zip(twoModel.parameters, joinedModel.parameters).allSatisfy { $0.bitPattern == $1.bitPattern },
                  "two scans train exactly as their concatenation")
        XCTAssertEqual(twoModel.bufferValues, joinedModel.bufferValues)
    }

    func testRefineOnTwoRanks() throws {
        let r = try donut(["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "lib.h5", "--augment", "0.5",
                           "--out", "refined2.h5", "--epochs", "2", "--out-dir", "two"], ranks: 2, in: dir)
        XCTAssert(r.stderr.contains("× 2 ranks"), "data-parallel:\n\(r.stderr)")
        try checkRefined(r, model: "refined2.h5", folder: "two")
    }

    func testBadInputsAreClearErrors() throws {
        // A library for another instrument (64×64 frames) than the model.
        let big = try writeSmallConfig(in: dir, name: "big.yaml")
        assertSucceeded(try donut(["simulate", "library", "--config", big, "--out", "big-lib.h5", "--smooth"], in: dir), "big library")
        assertFailed(try donut(["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "big-lib.h5",
                                "--out", "r.h5"], in: dir), naming: ["base.h5", "/entry/process/config/data", "big-lib.h5", "differ"])
        assertFailed(try donut(["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "nope.h5",
                                "--out", "r.h5"], in: dir), naming: ["nope.h5"])
        assertFailed(try donut(["refine", "--model", "base.h5", "--manifest", "m.yaml", "--out", "r.h5"], in: dir),
                     naming: ["--augment", "--library"])
        assertFailed(try donut(["refine", "--model", "nope.h5", "--manifest", "m.yaml", "--library", "lib.h5",
                                "--out", "r.h5"], in: dir), naming: ["nope.h5"])
        // A scan of another instrument in the manifest: left out of training, failed in the status.
        let bigScan = try donut(["simulate", "scan", "--config", big, "--rows", "2", "--cols", "2", "--out", "big.h5"], in: dir)
        assertSucceeded(bigScan, "big scan")
        try "defaults: {model: base.h5}\nscans:\n  - path: a.h5\n  - path: big.h5\n"
            .write(to: dir.appendingPathComponent("mixed.yaml"), atomically: true, encoding: .utf8)
        let r = try donut(["refine", "--model", "base.h5", "--manifest", "mixed.yaml", "--library", "lib.h5",
                           "--out", "r.h5", "--epochs", "1"], in: dir)
        XCTAssertEqual(r.status, 3, r.all)
        XCTAssert(r.stderr.contains("big.h5: left out of training") && r.stderr.contains("base.h5"), r.stderr)
        XCTAssert(FileManager.default.fileExists(atPath: path("r.h5")), "refined on the usable scan")
    }

    /// SIGTERM during fine-tuning: checkpoint, exit 75, no model; --resume ends with the
    /// uninterrupted run's weights and re-infers.
    func testSigtermAndResume() throws {
        let args = ["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "lib.h5", "--epochs", "40"]
        _ = try donut(args + ["--out", "full.h5"], in: dir)
        let process = Process()
        process.executableURL = donutBinary
        process.arguments = args + ["--out", "part.h5", "--checkpoint", "ck.h5"]
        process.currentDirectoryURL = dir
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: path("ck.h5")) && process.isRunning && Date() < deadline { usleep(2_000) }
        XCTAssert(process.isRunning, "fine-tuning ended before the first checkpoint; make it longer")
        process.terminate()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 75)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("part.h5")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("part_maps/a_maps.h5")), "no maps before the model")
        let r = try donut(args + ["--out", "part.h5", "--checkpoint", "ck.h5", "--resume", "ck.h5"], in: dir)
        XCTAssertEqual(r.status, 3, r.all)   // missing.h5
        let full = try CheckpointFile.read(path: path("full.h5")), resumed = try CheckpointFile.read(path: path("part.h5"))
        XCTAssertEqual(resumed.step, full.step)
        XCTAssert(zip(resumed.parameters, full.parameters).allSatisfy { $0.bitPattern == $1.bitPattern },
                  "resumed weights equal the uninterrupted run's")
        XCTAssert(FileManager.default.fileExists(atPath: path("part_maps/a_maps.h5")))
    }
}
