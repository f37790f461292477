import XCTest
import DonutIO

/// A disk that fills up during `donut reprocess`: the scans written before stay intact, the
/// next one fails with a reason that names the folder and the free space, the exit code is
/// non-zero — and the process ends with that code, not with a crash (a full disk met inside
/// an HDF5 write crashed HDF5 1.10 at MPI_Finalize). Needs a small tmpfs: root only.
final class FullDiskTests: XCTestCase {
    func testFullOutputDiskFailsTheScanWithAReasonAndKeepsFinishedResults() throws {
        let dir = try scratchFolder(self)
        let out = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        // 1,300 KiB: a 4×4 scan's result (checked against 2×~65 KiB + 1 MiB) fits, a 60×60
        // scan's (2×~235 KiB + 1 MiB) does not — whatever the exact file sizes.
        let mount = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=1300k", "tmpfs", out.path])
        guard mount == 0 else { throw XCTSkip("cannot mount a tmpfs here (needs root)") }
        defer { _ = try? run("/bin/umount", [out.path]) }
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5", "--smooth"], in: dir), "library")
        for (name, side) in [("a.h5", "4"), ("b.h5", "60")] {
            assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", side, "--cols", side,
                                       "--out", name], in: dir), name)
        }
        try """
        output_dir: out
        defaults: {method: fit, library: lib.h5}
        scans:
          - path: a.h5
          - path: b.h5
        """.write(to: dir.appendingPathComponent("m.yaml"), atomically: true, encoding: .utf8)
        let r = try donut(["reprocess", "--manifest", "m.yaml"], in: dir)
        XCTAssertEqual(r.status, 3, "exit code 3 (some scans failed), not a crash:\n\(r.all)")
        XCTAssert(r.stderr.contains("not enough free space"), r.stderr)
        let status = try XCTUnwrap(try ReprocessStatus.read(path: out.appendingPathComponent("reprocess-status.json").path))
        XCTAssertEqual(status.scans.map(\.state.rawValue), ["done", "failed"])
        XCTAssert(status.scans[1].reason.contains(out.path), status.scans[1].reason)
        XCTAssertEqual(try ResultMapsReader.read(path: out.appendingPathComponent("a_maps.h5").path).results.valid.count, 16,
                       "the finished result is intact")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("b_maps.h5").path))
    }

    func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool); p.arguments = arguments
        p.standardError = FileHandle.nullDevice; p.standardOutput = FileHandle.nullDevice
        try p.run(); p.waitUntilExit()
        return p.terminationStatus
    }
}
