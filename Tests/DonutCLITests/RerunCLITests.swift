import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// Reruns through the binary, as a resubmitted Slurm job runs them (issue 16.7, 18.3, 17.4):
/// nothing changed → exit 0 and no file touched; content changed behind an unchanged mtime →
/// redone; a truncated result → redone; a finished training → left alone; a checkpoint of
/// other settings → refused; refine after a broken scan is repaired → fine-tuned again.
final class RerunCLITests: XCTestCase {
    /// Modification time (ns) of every file under `dir`, by relative path.
    func mtimes(_ dir: URL) throws -> [String: Int64] {
        var out: [String: Int64] = [:]
        let e = FileManager.default.enumerator(atPath: dir.path)!
        while let name = e.nextObject() as? String {
            var st = stat()
            guard stat(dir.appendingPathComponent(name).path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            out[name] = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        }
        return out
    }

    /// Sets mtime and atime of `path` to `ns`, as `touch -r` does.
    func setMTime(_ path: String, _ ns: Int64) {
        var t = [timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000)),
                 timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))]
        XCTAssertEqual(utimensat(AT_FDCWD, path, &t, 0), 0)
    }

    func testReprocessRerunsAreIdempotentAndSeeContent() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5", "--smooth"], in: dir), "library")
        for (name, seed) in [("a", "3"), ("b", "4")] {
            assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "3", "--cols", "4",
                                       "--seed", seed, "--smooth", "--out", "\(name).h5"], in: dir), "scan \(name)")
        }
        try "output_dir: out\ndefaults: {method: fit, library: lib.h5, batch: 5}\nscans:\n  - path: a.h5\n  - path: b.h5\n"
            .write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        assertSucceeded(try donut(["reprocess", "--manifest", "m.yaml"], in: dir), "first run")
        let statusPath = dir.appendingPathComponent("out/reprocess-status.json").path
        func states() throws -> [ReprocessStatus.State] { try XCTUnwrap(try ReprocessStatus.read(path: statusPath)).scans.map(\.state) }
        XCTAssertEqual(try states(), [.done, .done])

        // Nothing changed: exit 0, not one file rewritten (the status file included).
        let before = try mtimes(dir)
        let again = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        assertSucceeded(again, "rerun")
        XCTAssert(again.stderr.contains("0 done, 2 skipped"), again.stderr)
        XCTAssertEqual(try mtimes(dir), before, "a rerun with nothing changed rewrites nothing")
        XCTAssertEqual(try states(), [.done, .done], "done stays done")

        // Touched only: the content is the same, nothing is redone.
        let a = dir.appendingPathComponent("a.h5").path, aMaps = dir.appendingPathComponent("out/a_maps.h5").path
        setMTime(a, before["a.h5"]! + 5_000_000_000)
        let touched = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        assertSucceeded(touched, "after touch")
        XCTAssert(touched.stderr.contains("2 skipped"), touched.stderr)
        XCTAssertEqual(try mtimes(dir)["out/a_maps.h5"], before["out/a_maps.h5"])

        // Other frames under the same name, size and mtime (`touch -r`): reprocessed, no --force needed.
        let oldMaps = try ResultMapsReader.read(path: aMaps).results
        let stamp = try mtimes(dir)["a.h5"]!
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "3", "--cols", "4",
                                   "--seed", "9", "--smooth", "--out", "c.h5"], in: dir), "other frames")
        // Written into a.h5's own inode (same file, same name), then its mtime put back.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: a))
        try handle.truncate(atOffset: 0)
        handle.write(try Data(contentsOf: dir.appendingPathComponent("c.h5")))
        try handle.close()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("c.h5"))
        setMTime(a, stamp)
        XCTAssertEqual(try mtimes(dir)["a.h5"], stamp)
        let changed = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        assertSucceeded(changed, "changed content")
        XCTAssert(changed.stderr.contains("1 done, 1 skipped"), changed.stderr)
        XCTAssertNotEqual(try ResultMapsReader.read(path: aMaps).results.strain, oldMaps.strain, "maps of the new frames")
        XCTAssertEqual(try mtimes(dir)["out/b_maps.h5"], before["out/b_maps.h5"], "the unchanged scan stays as it was")
        XCTAssertEqual(try states(), [.done, .done])

        // A result truncated by someone else is not done: redone, exit 0.
        let whole = try Data(contentsOf: URL(fileURLWithPath: aMaps))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: aMaps))
        let truncated = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        assertSucceeded(truncated, "truncated result")
        XCTAssert(truncated.stderr.contains("not usable") && truncated.stderr.contains("1 done, 1 skipped"), truncated.stderr)
        XCTAssertEqual(try ResultCheck.verify(path: aMaps), 12)
        XCTAssertEqual(try states(), [.done, .done])
    }

    func testFinishedTrainingIsLeftAloneAndForeignCheckpointsRefused() throws {
        let dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        _ = try writeTinyTrainingPreset(in: dir, epochs: 2, validation: 0.2, checkpointEvery: 5)
        _ = try writeTinyTrainingPreset(in: dir, name: "other.yaml", epochs: 3, validation: 0.2, checkpointEvery: 5)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--smooth", "--out", "scan.h5"], in: dir), "scan")
        let args = ["train", "--scan", "scan.h5", "--training", "train.yaml", "--out", "model.h5"]
        assertSucceeded(try donut(args, in: dir), "train")
        // Held-out metrics beside the model: 8 of the 40 frames, finite, ground truth used.
        let metrics = try SweepPointMetrics.read(path: dir.appendingPathComponent("model.metrics.json").path)
        XCTAssertEqual(metrics.heldOutFrames, 8)
        XCTAssert(metrics.heldOutPhysicsMAE > 0 && metrics.heldOutDeviance > 0, "\(metrics)")
        XCTAssert(try XCTUnwrap(metrics.groundTruthRMSE["strain"]).isFinite, "\(metrics)")
        XCTAssert(metrics.samplesPerSecond > 0 && metrics.wallSeconds > 0)

        // Resubmitted as train.sbatch does (--resume when the checkpoint exists): nothing to do.
        let before = try mtimes(dir)
        let again = try donut(args + ["--checkpoint", "model.checkpoint.h5", "--resume", "model.checkpoint.h5"], in: dir)
        assertSucceeded(again, "rerun")
        XCTAssert(again.stderr.contains("nothing to do"), again.stderr)
        XCTAssertEqual(try mtimes(dir), before, "a finished training rewrites nothing")

        // Other settings onto the finished model: refused, the model kept.
        let other = try donut(["train", "--scan", "scan.h5", "--training", "other.yaml", "--out", "model.h5"], in: dir)
        assertFailed(other, naming: ["model.h5", "other settings", "schedule.epochs: 2 → 3", "--force"])
        // A checkpoint of other settings is not resumed.
        let foreign = try donut(["train", "--scan", "scan.h5", "--training", "other.yaml", "--out", "other.h5",
                                 "--checkpoint", "model.checkpoint.h5", "--resume", "model.checkpoint.h5"], in: dir)
        assertFailed(foreign, naming: ["model.checkpoint.h5", "other settings", "not resumed"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("other.h5").path))
        XCTAssertEqual(try mtimes(dir), before, "refusals write nothing")
        // --force trains again.
        let forced = try donut(args + ["--force"], in: dir)
        assertSucceeded(forced, "forced")
        XCTAssertNotEqual(try mtimes(dir)["model.h5"], before["model.h5"])
    }

    /// Two grid points in one array task: both trained with held-out metrics; the task rerun
    /// rewrites nothing; the summary ranks by held-out deviance and is idempotent too.
    func testSweepTaskRerunAndSummary() throws {
        let dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        _ = try writeTinyTrainingPreset(in: dir, epochs: 1, validation: 0.2, checkpointEvery: 50)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--smooth", "--out", "scan.h5"], in: dir), "scan")
        try "base: train.yaml\ngrid:\n  loss.physics: [1.0, 10.0]\npoints_per_task: 2\n"
            .write(to: dir.appendingPathComponent("sweep.yaml"), atomically: true, encoding: .utf8)
        let plan = try donut(["sweep", "plan", "--definition", "sweep.yaml", "--out-dir", "sw"], in: dir)
        assertSucceeded(plan, "plan")
        XCTAssert(plan.stdout.contains("2 point(s)") && plan.stdout.contains("--array=0-0"), plan.stdout)
        assertSucceeded(try donut(["sweep", "run", "--out-dir", "sw", "--task", "0", "--scan", "scan.h5"], in: dir), "task 0")
        var deviance: [Double] = []
        for i in 0..<2 {
            let m = try SweepPointMetrics.read(path: dir.appendingPathComponent(String(format: "sw/run-%03d/model.metrics.json", i)).path)
            XCTAssertEqual(m.heldOutFrames, 8)
            XCTAssert(m.heldOutDeviance.isFinite && m.heldOutPhysicsMAE.isFinite, "\(m)")
            deviance.append(m.heldOutDeviance)
        }
        let before = try mtimes(dir)
        let again = try donut(["sweep", "run", "--out-dir", "sw", "--task", "0", "--scan", "scan.h5"], in: dir)
        assertSucceeded(again, "task 0 again")
        XCTAssert(again.stderr.contains("0 trained, 2 done before"), again.stderr)
        XCTAssertEqual(try mtimes(dir), before, "a finished task rewrites nothing")
        assertFailed(try donut(["sweep", "run", "--out-dir", "sw", "--task", "1", "--scan", "scan.h5"], in: dir),
                     naming: ["plan.json", "tasks 0…0", "task 1"])
        let summary = try donut(["sweep", "summary", "--out-dir", "sw"], in: dir)
        assertSucceeded(summary, "summary")
        let csv = try String(contentsOfFile: dir.appendingPathComponent("sw/summary.csv").path, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(csv.count, 3)
        let best = deviance[0] <= deviance[1] ? 0 : 1
        XCTAssert(csv[1].hasPrefix("1,\(best),"), "ranked by held-out deviance \(deviance): \(csv)")
        XCTAssert(FileManager.default.fileExists(atPath: dir.appendingPathComponent("sw/summary-held_out_deviance-loss.physics.png").path))
        let written = try mtimes(dir)
        assertSucceeded(try donut(["sweep", "summary", "--out-dir", "sw"], in: dir), "summary again")
        XCTAssertEqual(try mtimes(dir), written, "the same summary is not rewritten")
        assertFailed(try donut(["sweep", "summary", "--out-dir", "sw", "--rank-by", "validation_loss"], in: dir),
                     naming: ["summary.csv", "--force"])
    }

    /// refine resubmitted after a broken scan was repaired: fine-tuned again on the repaired
    /// frames (not "resumed" from the finished fine-tuning), every scan done; then nothing to do.
    func testRefineAfterARepairTrainsAgainThenRestsDone() throws {
        let dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        let training = try writeTinyTrainingPreset(in: dir, epochs: 1, checkpointEvery: 5)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5", "--smooth"], in: dir), "library")
        for (name, seed) in [("a", "2"), ("b", "3"), ("c", "4")] {
            assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "4", "--cols", "6",
                                       "--seed", seed, "--peak", "40", "--out", "\(name).h5"], in: dir), "scan \(name)")
        }
        assertSucceeded(try donut(["train", "--scan", "a.h5", "--training", training, "--out", "base.h5"], in: dir), "base")
        // c.h5 broken: its first 4 KiB.
        let whole = try Data(contentsOf: dir.appendingPathComponent("c.h5"))
        try whole.prefix(4096).write(to: dir.appendingPathComponent("c.h5"))
        try "defaults: {model: base.h5, batch: 8}\nscans:\n  - path: a.h5\n  - path: b.h5\n  - path: c.h5\n"
            .write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let args = ["refine", "--model", "base.h5", "--manifest", "m.yaml", "--library", "lib.h5", "--augment", "0.5",
                    "--out", "refined.h5", "--epochs", "1", "--checkpoint", "refined.checkpoint.h5"]
        let first = try donut(args, in: dir)
        XCTAssertNotEqual(first.status, 0, "the broken scan fails:\n\(first.all)")
        let statusPath = dir.appendingPathComponent("refined_maps/reprocess-status.json").path
        XCTAssertEqual(try XCTUnwrap(try ReprocessStatus.read(path: statusPath)).scans.map(\.state), [.done, .done, .failed])
        let firstModel = try CheckpointFile.read(path: dir.appendingPathComponent("refined.h5").path).parameters
        // Repaired in place; resubmitted as refine.sbatch does (--resume when the checkpoint exists).
        try whole.write(to: dir.appendingPathComponent("c.h5"))
        let repaired = try donut(args + ["--resume", "refined.checkpoint.h5"], in: dir)
        assertSucceeded(repaired, "after the repair")
        XCTAssert(repaired.stderr.contains("c.h5") && repaired.stderr.contains("training again"), repaired.stderr)
        XCTAssert(repaired.stderr.contains("72 measured frame(s)"), "trained on all three scans:\n\(repaired.stderr)")
        XCTAssertNotEqual(try CheckpointFile.read(path: dir.appendingPathComponent("refined.h5").path).parameters, firstModel)
        XCTAssertEqual(try XCTUnwrap(try ReprocessStatus.read(path: statusPath)).scans.map(\.state), [.done, .done, .done])
        // Once more: nothing to do, nothing rewritten.
        let before = try mtimes(dir)
        let rest = try donut(args + ["--resume", "refined.checkpoint.h5"], in: dir)
        assertSucceeded(rest, "rerun")
        XCTAssert(rest.stderr.contains("nothing to do") && rest.stderr.contains("3 skipped"), rest.stderr)
        XCTAssertEqual(try mtimes(dir), before)
    }
}
