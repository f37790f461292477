import XCTest
import DonutNN
import DonutCore
import DonutPhysics
@testable import DonutIO

/// Content fingerprints and the rerun decisions built on them: what counts as done, what is
/// redone, what is refused (issue 16.7, 17.4, 18.3).
final class RerunTests: XCTestCase {
    /// Sets a file's mtime (and atime) to `seconds` since 1970, as `touch -r` would.
    func setTimes(_ path: String, _ seconds: Int) {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        XCTAssertEqual(utimensat(AT_FDCWD, path, &times, 0), 0)
    }

    func mtime(_ path: String) throws -> Date {
        try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date)
    }

    // MARK: - Content fingerprint

    /// The streamed hash does not depend on how the bytes are cut into reads (the 8-byte
    /// carry between calls), and any changed byte or length changes it.
    func testDigestIsIndependentOfReadSizesAndSeesEveryByte() {
        var rng = SplitMix64(seed: 7)
        let bytes = (0..<1000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func digest(_ data: [UInt8], pieces: [Int]) -> String {
            var h = Hasher128(), start = 0
            for n in pieces + [data.count] where start < data.count {
                let end = min(data.count, start + n)
                data[start..<end].withUnsafeBytes { h.add($0) }
                start = end
            }
            return h.finish()
        }
        let whole = digest(bytes, pieces: [bytes.count])
        XCTAssertEqual(digest(bytes, pieces: [1, 2, 3, 5, 7, 11, 13, 500]), whole)
        XCTAssertEqual(digest(bytes, pieces: Array(repeating: 3, count: 400)), whole)
        var seen: Set<String> = [whole]
        for i in [0, 1, 7, 8, 500, 998, 999] {
            var changed = bytes
            changed[i] ^= 0x01
            XCTAssert(seen.insert(digest(changed, pieces: [bytes.count])).inserted, "flipping bit 0 of byte \(i) changes the digest")
        }
        XCTAssert(seen.insert(digest(Array(bytes.dropLast()), pieces: [999])).inserted, "a shorter file differs")
        XCTAssert(seen.insert(digest(bytes + [0], pieces: [1001])).inserted, "a trailing zero byte differs")
    }

    /// touch changes nothing; an edit hidden by restoring the mtime (touch -r) is seen; an
    /// unchanged stat reuses the recorded digest without reading the file.
    func testContentNotModificationTimeDecides() throws {
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("scan.h5").path
        try Data(repeating: 3, count: 100_000).write(to: URL(fileURLWithPath: path))
        setTimes(path, 1_600_000_000)
        let first = try ContentFingerprint.content(of: path)
        setTimes(path, 1_700_000_000)   // touch
        let touched = try ContentFingerprint.content(of: path, reusing: [first])
        XCTAssertNotEqual(touched.mtimeNS, first.mtimeNS)
        XCTAssertEqual(touched.digest, first.digest, "a touched file has the same content")
        // Edit one byte in place (same size), then put the old mtime back.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seek(toOffset: 54_321); handle.write(Data([4])); try handle.close()
        setTimes(path, 1_700_000_000)
        let edited = try ContentFingerprint.content(of: path, reusing: [touched])
        XCTAssertEqual(edited.size, touched.size); XCTAssertEqual(edited.mtimeNS, touched.mtimeNS)
        XCTAssertNotEqual(edited.digest, touched.digest, "the edit is found although size and mtime are unchanged")
        // Same stat as a record: its digest is taken as it is (here a marker, proving no read).
        var marker = edited
        marker.digest = "c128:recorded"
        XCTAssertEqual(try ContentFingerprint.content(of: path, reusing: [marker]).digest, "c128:recorded")
        XCTAssertEqual(try ContentFingerprint.content(of: dir.appendingPathComponent("none.h5").path).digest, "missing")
        assertThrows(try ContentFingerprint.content(of: dir.path), containing: [dir.path, "a folder, not a regular file"])
    }

    // MARK: - Reprocess

    func job(_ dir: URL, roi: DetectorROI? = nil) -> ReprocessJob {
        ReprocessJob(index: 0, name: "scans[0] scan.h5", scanPath: dir.appendingPathComponent("scan.h5").path,
                     dataset: "/entry/data/data", scanShape: nil, method: "fit", modelPath: dir.appendingPathComponent("lib.h5").path,
                     roi: roi, refineIterations: nil, batch: 8, outputPath: dir.appendingPathComponent("scan_maps.h5").path,
                     duplicateOf: nil)
    }

    /// A 2×3 result written the way every command writes one.
    func writeResult(_ path: String, strain: Double = 1e-3, force: Bool = true) throws {
        var r = FrameResults(frameRange: 0..<6)
        r.strain = .init(repeating: strain, count: 6); r.tiltLRDeg = .init(repeating: 0.01, count: 6)
        r.tiltUDDeg = .init(repeating: -0.02, count: 6); r.valid = .init(repeating: 1, count: 6)
        try ResultMapsWriter.write(path: path, results: r, layout: ScanLayout(rows: 2, cols: 3),
                                   provenance: Provenance(version: "t", date: "t", method: "fit", commandLine: "t",
                                                          configJSON: "{}", inputs: [], modelID: ""), force: force)
    }

    /// The entry a finished scan leaves in the status file.
    func doneEntry(_ j: ReprocessJob) throws -> ReprocessStatus.Entry {
        let d = try ReprocessRerun.decide(j, previous: nil, force: false)
        return ReprocessStatus.Entry(name: j.name, scan: j.scanPath, output: j.outputPath, state: .done, fingerprint: d.fingerprint,
                                     frames: 6, inputs: d.inputs, result: try ContentFingerprint.content(of: j.outputPath))
    }

    func testReprocessVerdicts() throws {
        let dir = makeScratchFolder(self)
        let j = job(dir)
        try Data(repeating: 1, count: 5000).write(to: URL(fileURLWithPath: j.scanPath))
        try Data(repeating: 2, count: 3000).write(to: URL(fileURLWithPath: j.modelPath))
        XCTAssertEqual(j.inputFiles, [j.scanPath, j.modelPath], "the scan and the library are the job's inputs")
        guard case .run(replace: false, _) = try ReprocessRerun.decide(j, previous: nil, force: false).verdict else {
            return XCTFail("no result yet: run")
        }
        try writeResult(j.outputPath)
        let done = try doneEntry(j)
        // Nothing changed; then only touched: done, nothing to do.
        XCTAssertEqual(try ReprocessRerun.decide(j, previous: done, force: false).verdict, .done(done))
        setTimes(j.scanPath, 1_650_000_000); setTimes(j.outputPath, 1_650_000_000)
        guard case .done = try ReprocessRerun.decide(j, previous: done, force: false).verdict else { return XCTFail("touched only: done") }
        // A setting changed (ROI): our own result is redone in place.
        guard case .run(replace: true, let why) = try ReprocessRerun.decide(job(dir, roi: DetectorROI(x: 1, y: 2, width: 64, height: 64)),
                                                                            previous: done, force: false).verdict else {
            return XCTFail("a changed ROI is reprocessed")
        }
        XCTAssert(why.contains("changed"), why)
        // The scan's content changed with its mtime restored: redone.
        let before = try mtime(j.scanPath)
        try Data(repeating: 9, count: 5000).write(to: URL(fileURLWithPath: j.scanPath))
        setTimes(j.scanPath, Int(before.timeIntervalSince1970))
        guard case .run(replace: true, _) = try ReprocessRerun.decide(j, previous: done, force: false).verdict else {
            return XCTFail("changed content, same mtime: reprocessed")
        }
        try Data(repeating: 1, count: 5000).write(to: URL(fileURLWithPath: j.scanPath))
        guard case .done = try ReprocessRerun.decide(j, previous: done, force: false).verdict else { return XCTFail("content restored: done") }
        // Someone truncates the result: not done, redone.
        let whole = try Data(contentsOf: URL(fileURLWithPath: j.outputPath))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: j.outputPath))
        guard case .run(replace: true, let damaged) = try ReprocessRerun.decide(j, previous: done, force: false).verdict else {
            return XCTFail("a truncated result is not done")
        }
        XCTAssert(damaged.contains("not usable") && damaged.contains(j.outputPath), damaged)
        // A complete, readable result that is not the recorded one (someone else's): refused.
        try writeResult(j.outputPath, strain: 5e-3)
        guard case .refuse(let message) = try ReprocessRerun.decide(j, previous: done, force: false).verdict else {
            return XCTFail("someone else's result is never overwritten without --force")
        }
        XCTAssert(message.contains("pass --force"), message)
        guard case .run(replace: true, _) = try ReprocessRerun.decide(j, previous: done, force: true).verdict else {
            return XCTFail("--force redoes it")
        }
    }

    /// A mask file is an input like the scan: its content is part of the fingerprint; the
    /// manifest's read options (hot-pixel threshold) are settings.
    func testMaskContentAndReadOptionsDecide() throws {
        let dir = makeScratchFolder(self)
        var j = job(dir)
        j.maskPath = dir.appendingPathComponent("mask.npy").path
        try Data(repeating: 1, count: 5000).write(to: URL(fileURLWithPath: j.scanPath))
        try Data(repeating: 2, count: 3000).write(to: URL(fileURLWithPath: j.modelPath))
        try Data(repeating: 0, count: 400).write(to: URL(fileURLWithPath: j.maskPath!))
        XCTAssertEqual(j.inputFiles, [j.scanPath, j.modelPath, j.maskPath!])
        try writeResult(j.outputPath)
        let done = try doneEntry(j)
        guard case .done = try ReprocessRerun.decide(j, previous: done, force: false).verdict else { return XCTFail("unchanged: done") }
        let stamp = try mtime(j.maskPath!)
        try Data(repeating: 0, count: 399).write(to: URL(fileURLWithPath: j.maskPath!))
        setTimes(j.maskPath!, Int(stamp.timeIntervalSince1970))
        guard case .run(replace: true, _) = try ReprocessRerun.decide(j, previous: done, force: false).verdict else {
            return XCTFail("a changed mask is reprocessed")
        }
        try Data(repeating: 0, count: 400).write(to: URL(fileURLWithPath: j.maskPath!))
        var hot = j
        hot.readOptions.hotPixelThreshold = 5000
        XCTAssertNotEqual(hot.settingsText, j.settingsText)
        guard case .run(replace: true, _) = try ReprocessRerun.decide(hot, previous: done, force: false).verdict else {
            return XCTFail("another hot-pixel threshold is reprocessed")
        }
    }

    /// Status entries written by an older version (no inputs/result records) still read.
    func testOlderStatusFilesRead() throws {
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("reprocess-status.json").path
        try """
        {"manifest": "/m.yaml", "updated": "2026-01-01T00:00:00Z", "scans": [{"name": "scans[0] a.h5", "scan": "/a.h5",
         "output": "/a_maps.h5", "state": "done", "reason": "", "fingerprint": "fnv1a64:0123456789abcdef", "frames": 6, "seconds": 1}]}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let s = try XCTUnwrap(try ReprocessStatus.read(path: path))
        XCTAssertNil(s.scans[0].inputs); XCTAssertNil(s.scans[0].result)
        // Writing the same entries again leaves the file alone.
        let before = try mtime(path)
        setTimes(path, 1_600_000_000)
        XCTAssertFalse(try s.writeIfChanged(path: path))
        XCTAssertEqual(try mtime(path).timeIntervalSince1970, 1_600_000_000)
        var changed = s
        changed.scans[0].state = .failed
        XCTAssertTrue(try changed.writeIfChanged(path: path))
        XCTAssertNotEqual(try mtime(path), before)
    }

    // MARK: - Training

    func model(step: Int) -> ModelCheckpoint {
        let p = (0..<37).map { Float($0) * 0.01 }
        return ModelCheckpoint(
            method: "donut",
            tensors: [TensorRecord(name: "w", shape: [37], group: "encoder", offset: 0)],
            parameters: p, firstMoments: p, secondMoments: p, buffers: [], bufferValues: [], step: step, epoch: 1,
            stepInEpoch: 0, rngState: [1, UInt64(step)], configJSON: "{}", trainingJSON: "{}", lossLog: [])
    }

    func write(_ path: String, step: Int, run: TrainingRun?) throws {
        try CheckpointFile.write(model(step: step), path: path,
                                 provenance: Provenance(version: "t", date: "t", method: "train", commandLine: "t", configJSON: "{}",
                                                        inputs: [], modelID: ""), force: true, run: run)
    }

    func testTrainingVerdicts() throws {
        let dir = makeScratchFolder(self)
        let scan = dir.appendingPathComponent("scan.h5").path, out = dir.appendingPathComponent("model.h5").path
        let ck = dir.appendingPathComponent("model.checkpoint.h5").path
        try Data(repeating: 1, count: 4000).write(to: URL(fileURLWithPath: scan))
        func run(_ settings: String, finished: Bool = false) throws -> TrainingRun {
            TrainingRun(settingsText: "preset=" + settings, inputs: try TrainingRun.inputs([scan], reusing: []), finished: finished)
        }
        let current = try run("preset A")
        XCTAssertEqual(TrainingRerun.decide(current: current, out: out, checkpoint: ck, resume: nil, force: false), .fresh(replace: false, why: ""))
        // An interrupted run of the same settings and inputs resumes (asked or not).
        try write(ck, step: 10, run: current)
        XCTAssertEqual(TrainingRerun.decide(current: current, out: out, checkpoint: ck, resume: ck, force: false), .resume(ck))
        XCTAssertEqual(TrainingRerun.decide(current: current, out: out, checkpoint: ck, resume: nil, force: false), .resume(ck))
        // A checkpoint of other settings is refused, naming both.
        guard case .refuse(ck, let message) = TrainingRerun.decide(current: try run("preset B"), out: out, checkpoint: ck, resume: ck, force: false) else {
            return XCTFail("a checkpoint of other settings is not resumed")
        }
        XCTAssert(message.contains("preset: preset A → preset B") && message.contains("--force"), message)
        guard case .fresh(replace: true, _) = TrainingRerun.decide(current: try run("preset B"), out: out, checkpoint: ck, resume: ck, force: true) else {
            return XCTFail("--force starts afresh")
        }
        // A checkpoint without a record (older donut) is refused too.
        try write(ck, step: 10, run: nil)
        guard case .refuse(ck, let old) = TrainingRerun.decide(current: current, out: out, checkpoint: ck, resume: ck, force: false) else {
            return XCTFail("an unrecorded checkpoint is not resumed")
        }
        XCTAssert(old.contains("no run fingerprint"), old)
        // Finished: the model records the same run → nothing to do, even with --resume.
        try write(ck, step: 40, run: current)
        try write(out, step: 40, run: try run("preset A", finished: true))
        XCTAssertEqual(TrainingRerun.decide(current: current, out: out, checkpoint: ck, resume: ck, force: false), .alreadyDone)
        // The finished model under other settings: refused, never overwritten without --force.
        guard case .refuse(out, let other) = TrainingRerun.decide(current: try run("preset B"), out: out, checkpoint: ck, resume: ck, force: false) else {
            return XCTFail("a model of other settings is not replaced")
        }
        XCTAssert(other.contains("other settings") && other.contains("--force"), other)
        // The scan repaired (content changed, mtime restored): trained again, not resumed.
        let before = try mtime(scan)
        try Data(repeating: 2, count: 4000).write(to: URL(fileURLWithPath: scan))
        setTimes(scan, Int(before.timeIntervalSince1970))
        let repaired = try run("preset A")
        guard case .fresh(replace: true, let why) = TrainingRerun.decide(current: repaired, out: out, checkpoint: ck, resume: ck, force: false) else {
            return XCTFail("a repaired scan is trained on again")
        }
        XCTAssert(why.contains(scan), why)
        // Only the checkpoint left, from the old content: not resumed, trained afresh.
        try FileManager.default.removeItem(atPath: out)
        guard case .fresh(replace: true, _) = TrainingRerun.decide(current: repaired, out: out, checkpoint: ck, resume: ck, force: false) else {
            return XCTFail("a checkpoint of other frames is not resumed")
        }
        // A damaged model is not done.
        try Data(repeating: 0, count: 100).write(to: URL(fileURLWithPath: out))
        guard case .refuse(out, let damaged) = TrainingRerun.decide(current: repaired, out: out, checkpoint: ck, resume: nil, force: false) else {
            return XCTFail("an unreadable model is not done")
        }
        XCTAssert(damaged.contains("not a readable model"), damaged)
    }

    func testRunRecordRoundTrips() throws {
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("m.h5").path
        let scan = dir.appendingPathComponent("s.h5").path
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: scan))
        let run = TrainingRun(settingsText: "x", inputs: try TrainingRun.inputs([scan], reusing: []), finished: true)
        try write(path, step: 3, run: run)
        XCTAssertEqual(try CheckpointFile.readRun(path: path), run)
        try write(path, step: 3, run: nil)
        XCTAssertNil(try CheckpointFile.readRun(path: path))
    }
}
