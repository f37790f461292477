import XCTest

/// Progress of long commands in logs (stderr is a pipe here, as under Slurm): plain lines
/// with global counts from rank 0 only, whatever the rank count; --quiet silences them.
final class ProgressOutputTests: XCTestCase {
    func progressLines(_ stderr: String, _ what: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.contains("\(what): ") }
    }

    func testLibraryProgressLinesOnOneAndTwoRanksAndQuiet() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir)   // 120 entries, written 10 at a time
        let one = try donut(["simulate", "library", "--config", config, "--chunk", "10", "--out", "a.h5"], in: dir)
        assertSucceeded(one, "library, 1 rank")
        let lines1 = progressLines(one.stderr, "library entries")
        XCTAssertGreaterThanOrEqual(lines1.count, 5, one.stderr)
        XCTAssertLessThanOrEqual(lines1.count, 11, "about one line per 10 %: \(one.stderr)")
        XCTAssert(lines1.last!.contains("120/120 (100%)"), lines1.last!)
        XCTAssertFalse(one.stderr.contains("\r"), "no bar drawing into a log")

        let two = try donut(["simulate", "library", "--config", config, "--chunk", "10", "--out", "b.h5"], ranks: 2, in: dir)
        assertSucceeded(two, "library, 2 ranks")
        let lines2 = progressLines(two.stderr, "library entries")
        XCTAssertGreaterThanOrEqual(lines2.count, 5, two.stderr)
        XCTAssertLessThanOrEqual(lines2.count, 11, "rank 0 alone prints: \(two.stderr)")
        XCTAssert(lines2.allSatisfy { $0.contains("/120 (") }, "global counts on every rank count: \(lines2)")
        XCTAssertEqual(lines2.filter { $0.contains("120/120 (100%)") }.count, 1, two.stderr)

        let quiet = try donut(["simulate", "library", "--config", config, "--chunk", "10", "--quiet", "--out", "c.h5"], in: dir)
        assertSucceeded(quiet, "library --quiet")
        XCTAssertEqual(progressLines(quiet.stderr, "library entries"), [], quiet.stderr)
        XCTAssert(quiet.stderr.contains("wrote c.h5"), "log lines stay: \(quiet.stderr)")
    }

    func testTrainingShowsStepsLossAndEpochLines() throws {
        let dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        let training = try writeTinyTrainingPreset(in: dir, epochs: 2, checkpointEvery: 100)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--out", "scan.h5"], in: dir), "scan")
        let r = try donut(["train", "--scan", "scan.h5", "--training", training, "--out", "model.h5"], in: dir)
        assertSucceeded(r, "train")
        let lines = progressLines(r.stderr, "train donut steps")
        XCTAssert(lines.last?.contains("18/18 (100%)") ?? false, "2 epochs × 9 steps: \(r.stderr)")
        XCTAssert(lines.last?.contains("loss ") ?? false, "the loss beside the count: \(r.stderr)")
        XCTAssert(lines.dropLast().contains { $0.contains("ETA ") }, "an ETA before the end: \(r.stderr)")
        XCTAssert(r.stderr.contains("epoch 1/2 done") && r.stderr.contains("epoch 2/2 done") && r.stderr.contains("validation"), r.stderr)
    }
}
