import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// `donut reprocess` through the binary: per-scan status, failures skipped with a non-zero
/// exit, reruns, --force, an unusable output folder, and the same maps as `donut fit` and
/// for one and two ranks.
final class ReprocessTests: XCTestCase {
    /// A small library, two tiny scans, a scan of 32×32 frames (the model's are 64×64), a
    /// truncated file, and a manifest listing them plus a missing file and a duplicate entry.
    func makeSetup() throws -> URL {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5", "--smooth"], in: dir), "library")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "3", "--cols", "4",
                                   "--seed", "3", "--smooth", "--out", "a.h5"], in: dir), "scan a")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("raw"), withIntermediateDirectories: true)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "paper", "--rows", "4", "--cols", "3",
                                   "--seed", "4", "--smooth", "--out", "raw/b.h5"], in: dir), "scan b")
        // Frames of the wrong size: a 2×2 scan of 32×32 frames.
        let small = try H5File.create(dir.appendingPathComponent("small.h5").path)
        try small.createGroup("/entry", nxClass: "NXentry"); try small.createGroup("/entry/data", nxClass: "NXdata")
        try small.writeDataset("/entry/data/data", [Float](repeating: 1, count: 4 * 32 * 32), shape: [2, 2, 32, 32], units: "counts")
        try small.close()
        // A truncated HDF5 file: the first 4 KiB of a real one.
        let whole = try Data(contentsOf: dir.appendingPathComponent("a.h5"))
        try whole.prefix(4096).write(to: dir.appendingPathComponent("corrupt.h5"))
        try """
        output_dir: out
        defaults:
          method: fit
          library: lib.h5
          batch: 5
        scans:
          - path: a.h5
          - path: raw/b.h5
            overrides: {physics_refine: true, refine_iterations: 4}
          - path: missing.h5
          - path: small.h5
          - path: corrupt.h5
          - path: a.h5
        """.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        return dir
    }

    func status(_ dir: URL, _ folder: String = "out") throws -> ReprocessStatus {
        try XCTUnwrap(try ReprocessStatus.read(path: dir.appendingPathComponent("\(folder)/reprocess-status.json").path))
    }

    func maps(_ dir: URL, _ name: String) throws -> FrameResults {
        try ResultMapsReader.read(path: dir.appendingPathComponent(name).path).results
    }

    func testFailedScansAreReportedAndSkippedWhileTheOthersFinish() throws {
        let dir = try makeSetup()
        let r = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        XCTAssertNotEqual(r.status, 0, "failures must give a non-zero exit:\n\(r.all)")
        for fragment in ["2 done", "4 failed", "missing.h5", "small.h5", "32×32", "corrupt.h5", "duplicate of scans[0]"] {
            XCTAssert(r.stderr.contains(fragment), "summary lacks '\(fragment)':\n\(r.stderr)")
        }
        let s = try status(dir)
        XCTAssertEqual(s.scans.map(\.state), [.done, .done, .failed, .failed, .failed, .failed])
        XCTAssert(s.scans[4].reason.contains("corrupt.h5"), s.scans[4].reason)
        XCTAssert(s.scans[2].reason.contains("missing.h5") && s.scans[2].reason.contains("does not exist"), s.scans[2].reason)
        XCTAssert(s.scans[3].reason.contains("small.h5") && s.scans[3].reason.contains("expected 64×64"), s.scans[3].reason)
        XCTAssertEqual(s.scans[0].frames, 12)
        // Finished results are intact and equal to `donut fit` on the same scan.
        assertSucceeded(try donut(["fit", "--scan", "a.h5", "--library", "lib.h5", "--out", "fit-a.h5", "--batch", "5"], in: dir), "fit a")
        assertSucceeded(try donut(["fit", "--scan", "raw/b.h5", "--library", "lib.h5", "--out", "fit-b.h5", "--batch", "5",
                                   "--physics-refine", "--refine-iterations", "4"], in: dir), "fit b")
        for (reprocessed, fitted) in [("out/a_maps.h5", "fit-a.h5"), ("out/b_maps.h5", "fit-b.h5")] {
            let a = try maps(dir, reprocessed), b = try maps(dir, fitted)
            XCTAssertEqual(a.valid, b.valid)
            XCTAssertEqual(a.strain, b.strain, reprocessed); XCTAssertEqual(a.tiltLRDeg, b.tiltLRDeg); XCTAssertEqual(a.tiltUDDeg, b.tiltUDDeg)
            XCTAssertEqual(a.residual, b.residual); XCTAssertEqual(a.sigmas, b.sigmas)
        }
        XCTAssertEqual(try maps(dir, "out/b_maps.h5").sigmas.keys.sorted(), ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"])
        // Provenance: the scan relative to the result, its dataset and checksum, the command line.
        let file = try H5File.open(dir.appendingPathComponent("out/b_maps.h5").path)
        XCTAssertEqual(try file.readString("/entry/process/inputs/input_0/path"), "../raw/b.h5")
        XCTAssertEqual(try file.readString("/entry/process/inputs/input_0/dataset"), "/entry/data/data")
        XCTAssert(try file.readString("/entry/process/inputs/input_0/checksum").hasPrefix("fnv1a64sum:"))
        XCTAssertEqual(try file.readString("/entry/process/inputs/input_1/path"), "../lib.h5")
        XCTAssert(try file.readString("/entry/process/command_line").contains("reprocess --manifest m.yaml"))
        XCTAssertEqual(try file.readString("/entry/process/method"), "correlation-fit+physics-refine")
        try file.close()
    }

    func testRerunSkipsDoneScansAndForceRedoesThem() throws {
        let dir = try makeSetup()
        _ = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        let a = dir.appendingPathComponent("out/a_maps.h5").path
        let before = try FileManager.default.attributesOfItem(atPath: a)[.modificationDate] as? Date
        let again = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        XCTAssertNotEqual(again.status, 0, "the failed scans still fail")
        XCTAssert(again.stderr.contains("2 skipped"), again.stderr)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: a)[.modificationDate] as? Date, before, "skipped, not rewritten")
        XCTAssertEqual(try status(dir).scans.map(\.state), [.done, .done, .failed, .failed, .failed, .failed])
        // A changed setting (refinement on) redoes the scan over its own earlier result…
        try "defaults: {method: fit, library: lib.h5}\nscans:\n  - path: a.h5\n    overrides: {physics_refine: true}\n"
            .write(to: dir.appendingPathComponent("m2.yaml"), atomically: true, encoding: .utf8)
        let changed = try donut(["reprocess", "--manifest", "m2.yaml", "--out-dir", "out"], in: dir)
        assertSucceeded(changed, "a changed setting")
        XCTAssert(changed.stderr.contains("changed since the result was made"), changed.stderr)
        XCTAssertNotNil(try maps(dir, "out/a_maps.h5").sigmas["strain_sigma"], "redone with refinement")
        // … but never overwrites a file that is not the result it recorded without --force.
        try FileManager.default.removeItem(atPath: a)
        try FileManager.default.copyItem(atPath: dir.appendingPathComponent("out/b_maps.h5").path, toPath: a)
        let foreign = try donut(["reprocess", "--manifest", "m2.yaml", "--out-dir", "out"], in: dir)
        XCTAssertNotEqual(foreign.status, 0)
        XCTAssert(foreign.stderr.contains("a_maps.h5") && foreign.stderr.contains("pass --force"), foreign.stderr)
        let forced = try donut(["reprocess", "--manifest", "m.yaml", "--force"], in: dir)
        XCTAssert(forced.stderr.contains("2 done") && forced.stderr.contains("0 skipped"), forced.stderr)
        XCTAssertNotEqual(try FileManager.default.attributesOfItem(atPath: a)[.modificationDate] as? Date, before, "redone")
    }

    func testAnUnusableOutputFolderFailsEveryScanClearly() throws {
        let dir = try makeSetup()
        // A file where the output folder's parent should be: nobody (root included) can create it.
        try "x".write(to: dir.appendingPathComponent("blocker"), atomically: true, encoding: .utf8)
        let r = try donut(["reprocess", "--manifest", "m.yaml", "--out-dir", "blocker/out"], in: dir)
        XCTAssertNotEqual(r.status, 0)
        XCTAssert(r.stderr.contains("0 done") && r.stderr.contains("6 failed"), r.stderr)
        XCTAssert(r.stderr.contains("blocker/out"), r.stderr)
        XCTAssert(r.stderr.contains("status is reported here only"), r.stderr)
    }

    func testTwoRanksGiveTheSameMapsAndStatuses() throws {
        let dir = try makeSetup()
        _ = try donut(["reprocess", "--manifest", "m.yaml", "--out-dir", "one"], in: dir)
        let r2 = try donut(["reprocess", "--manifest", "m.yaml", "--out-dir", "two"], ranks: 2, in: dir)
        XCTAssertNotEqual(r2.status, 0, "failures under mpirun give a non-zero exit too:\n\(r2.all)")
        XCTAssert(r2.stderr.contains("2 done") && r2.stderr.contains("4 failed"), r2.stderr)
        XCTAssertEqual(try status(dir, "two").scans.map(\.state), [.done, .done, .failed, .failed, .failed, .failed])
        XCTAssertEqual(try status(dir, "two").scans.map(\.reason), try status(dir, "one").scans.map(\.reason))
        for name in ["a_maps.h5", "b_maps.h5"] {
            let one = try maps(dir, "one/\(name)"), two = try maps(dir, "two/\(name)")
            XCTAssertEqual(one.valid, two.valid)
            for (label, x, y) in [("strain", one.strain, two.strain), ("tilt_lr", one.tiltLRDeg, two.tiltLRDeg), ("tilt_ud", one.tiltUDDeg, two.tiltUDDeg)] {
                for (i, (u, v)) in zip(x, y).enumerated() { XCTAssertEqual(u, v, accuracy: 1e-6, "\(name) \(label) frame \(i)") }
            }
        }
    }

    /// Method donut with refinement, streamed in chunks of 7 frames: the same maps as
    /// `donut infer` (one chunk), up to the encoder's batch-size rounding and the refinement's
    /// convergence tolerance (~0.014σ). 16×16 frames and a tiny network so debug trains in seconds.
    func testDonutMethodStreamsChunksAndMatchesInfer() throws {
        let dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        _ = try writeTinyTrainingPreset(in: dir, epochs: 2, checkpointEvery: 50)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--smooth", "--out", "scan.h5"], in: dir), "scan")
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", "train.yaml", "--out", "model.h5"], in: dir), "train")
        try "defaults: {model: model.h5, physics_refine: true}\nscans:\n  - path: scan.h5\n"
            .write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let r = try donut(["reprocess", "--manifest", "m.yaml", "--chunk", "7"], in: dir)
        assertSucceeded(r, "reprocess")
        XCTAssert(r.stderr.contains("infer") && r.stderr.contains("refine"), "stage times logged:\n\(r.stderr)")
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "infer.h5", "--physics-refine"], in: dir), "infer")
        let a = try maps(dir, "scan_maps.h5"), b = try maps(dir, "infer.h5")
        XCTAssertEqual(a.valid, b.valid)
        XCTAssertEqual(a.valid.count, 40)
        let sigma = try XCTUnwrap(b.sigmas["tilt_ud_sigma"])
        for (name, x, y, s) in [("strain", a.strain, b.strain, b.sigmas["strain_sigma"]!), ("tilt_lr", a.tiltLRDeg, b.tiltLRDeg, b.sigmas["tilt_lr_sigma"]!),
                                ("tilt_ud", a.tiltUDDeg, b.tiltUDDeg, sigma)] {
            for i in 0..<40 where a.valid[i] == 1 {
                XCTAssert(s[i] > 0 && s[i].isFinite, "\(name)_sigma at \(i)")
                XCTAssertEqual(x[i], y[i], accuracy: 0.05 * s[i], "\(name) frame \(i): reprocess (chunks of 7) vs infer")
            }
        }
        XCTAssertEqual(try ResultMapsReader.read(path: dir.appendingPathComponent("scan_maps.h5").path).provenance?.method, "donut+physics-refine")
        // Two ranks: the scan-level σ decision sums both ranks' sign counts, so the σ maps and the
        // recorded decision (40 frames: too few to clear the scan, widened) are those of one rank.
        assertSucceeded(try donut(["infer", "--model", "model.h5", "--scan", "scan.h5", "--out", "infer2.h5", "--physics-refine"],
                                  ranks: 2, in: dir), "infer on 2 ranks")
        let two = try maps(dir, "infer2.h5")
        XCTAssertNotNil(b.sigmaModel)
        XCTAssert(b.sigmaModel?.contains("sign tests of 40 frames") ?? false, b.sigmaModel ?? "nil")
        XCTAssertEqual(two.sigmaModel, b.sigmaModel)
        for name in ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"] {
            for (i, (x, y)) in zip(two.sigmas[name]!, b.sigmas[name]!).enumerated() where b.valid[i] == 1 {
                XCTAssertEqual(x, y, accuracy: 1e-3 * y, "\(name) frame \(i): 2 ranks vs 1")
            }
        }
    }
}
