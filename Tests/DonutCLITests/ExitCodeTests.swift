import XCTest
import Foundation
import DonutIO

/// The exit-code table (slurm/README.md): 2 bad input, 3 some scans failed; the one-line
/// reason is the last line on stderr, also under `mpirun` (no MPI_Abort banner when every
/// rank failed alike).
final class ExitCodeTests: XCTestCase {
    var dir: URL!
    override func setUpWithError() throws { dir = try scratchFolder(self) }

    /// The last non-empty line of `text`.
    func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.map(String.init) ?? ""
    }

    func testBadUsageAndBadInputExitTwoWithTheReasonLast() throws {
        let usage = try donut(["fit", "--scan", "s.h5", "--library", "l.h5", "--out", "m.h5", "--batch", "0"], in: dir)
        XCTAssertEqual(usage.status, 2, usage.all)
        XCTAssert(lastLine(usage.stderr).hasPrefix("donut: error: --batch must be positive"), usage.stderr)
        XCTAssert(usage.stderr.contains("Usage: donut fit"), "the usage comes before the reason:\n\(usage.stderr)")
        let missing = try donut(["fit", "--scan", "s.h5", "--library", "nolib.h5", "--out", "m.h5"], in: dir)
        XCTAssertEqual(missing.status, 2, missing.all)
        XCTAssert(lastLine(missing.stderr).hasPrefix("donut: error:") && lastLine(missing.stderr).contains("nolib.h5"), missing.stderr)
        let evaluate = try donut(["evaluate", "--scan", "nothing.h5", "maps.h5"], in: dir)
        XCTAssertEqual(evaluate.status, 2, evaluate.all)
        XCTAssert(lastLine(evaluate.stderr).contains("nothing.h5"), evaluate.stderr)
    }

    func testUnderMPIEveryRankFailingEndsCleanlyWithTheReasonLast() throws {
        let process = donutProcess(["fit", "--scan", "s.h5", "--library", "nolib.h5", "--out", "m.h5"], ranks: 2, in: dir)
        // `mpirun -q`: without mpirun's own note after a non-zero exit, Donut's line is the last.
        process.arguments!.insert("-q", at: 1)
        let err = Pipe(), out = Pipe()
        process.standardError = err; process.standardOutput = out
        try process.run()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        _ = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 2, e)
        XCTAssertFalse(e.contains("MPI_ABORT"), e)
        XCTAssert(lastLine(e).hasPrefix("donut: error:") && lastLine(e).contains("nolib.h5"), e)
        XCTAssertEqual(e.components(separatedBy: "donut: error:").count - 1, 1, "rank 0 alone prints the reason:\n\(e)")
    }

    func testSomeScansFailedExitsThree() throws {
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--rows", "3", "--cols", "3", "--out", "a.h5"], in: dir), "scan")
        try """
        output_dir: out
        defaults: {method: fit, library: lib.h5}
        scans:
          - path: a.h5
          - path: missing.h5
        """.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let r = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        XCTAssertEqual(r.status, 3, r.all)
        XCTAssert(lastLine(r.stderr).hasPrefix("donut: error: 1 of 2 scan(s) failed"), r.stderr)
        XCTAssertNotNil(try ResultMapsReader.read(path: dir.appendingPathComponent("out/a_maps.h5").path), "the good scan is done")
    }
}
