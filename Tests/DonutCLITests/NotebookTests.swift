import XCTest
import DonutIO

/// Result files open in h5py (a reader that is not ours), through the notebooks users get.
/// The code cells of each notebook in notebooks-export/ run in order under python3 with
/// DONUT_RESULT pointing at a freshly fitted file. Skipped only outside CI when python3 or
/// h5py is missing (scripts/setup installs h5py).
final class NotebookTests: XCTestCase {
    static let notebooks = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("notebooks-export")

    func python(_ script: String, in dir: URL, env: [String: String] = [:]) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        p.currentDirectoryURL = dir
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return CommandResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    func testNotebooksOpenAFreshResultWithH5py() throws {
        let dir = try scratchFolder(self)
        let probe = try? python("import h5py, numpy", in: dir)
        if probe?.status != 0 {
            if ProcessInfo.processInfo.environment["CI"] != nil {
                XCTFail("CI must have python3 with h5py (scripts/setup installs it): \(probe?.stderr ?? "no python3")")
            }
            throw XCTSkip("python3 with h5py not available")
        }
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--rows", "3", "--cols", "5", "--out", "scan.h5"], in: dir), "scan")
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "fit.h5"], ranks: 2, in: dir), "fit")
        let files = try FileManager.default.contentsOfDirectory(at: Self.notebooks, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "ipynb" }
        XCTAssertFalse(files.isEmpty, "no notebooks in \(Self.notebooks.path)")
        for nb in files {
            let runner = """
            import json, sys
            nb = json.load(open(sys.argv[1] if len(sys.argv) > 1 else '\(nb.path)'))
            scope = {}
            for cell in nb['cells']:
                if cell['cell_type'] == 'code':
                    exec(''.join(cell['source']), scope)
            """
            let r = try python(runner, in: dir, env: ["DONUT_RESULT": dir.appendingPathComponent("fit.h5").path])
            XCTAssertEqual(r.status, 0, "\(nb.lastPathComponent) failed:\n\(r.all)")
            XCTAssert(r.stdout.contains("signal strain"), "\(nb.lastPathComponent) output:\n\(r.stdout)")
            XCTAssert(r.stdout.contains("tilt_lr      shape (3, 5) units 'deg'"), "\(nb.lastPathComponent) output:\n\(r.stdout)")
            XCTAssert(r.stdout.contains("method correlation-fit"), "\(nb.lastPathComponent) output:\n\(r.stdout)")
        }
    }
}
