import XCTest
import DonutPhysics
@testable import DonutIO

/// The reprocess manifest: strict keys with optional ones, settings inheritance, paths
/// relative to the manifest, duplicates marked; and the status file round trip.
final class ReprocessManifestTests: XCTestCase {
    let example = """
    output_dir: results
    defaults:
      method: donut
      model: models/m.h5
      physics_refine: true
    scans:
      - path: a.h5
      - path: raw/b.h5
        scan_shape: 10x20
        output: b-refit.h5
        overrides: {method: fit, library: lib.h5, physics_refine: false, dataset: /frames, roi: {x: 1, y: 2, width: 128, height: 128}}
      - path: /abs/c.h5
        overrides: {refine_iterations: 3, batch: 64}
      - path: a.h5
    """

    func parse(_ yaml: String) throws -> ReprocessManifest {
        try ConfigFile.parse(ReprocessManifest.self, yaml: yaml, source: "m.yaml")
    }

    func expectError(_ yaml: String, key: String, mentions: [String] = [], file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(yaml)
            XCTFail("expected an error at key '\(key)'", file: file, line: line)
        } catch let e as ConfigFileError {
            XCTAssertEqual(e.key, key, "\(e)", file: file, line: line)
            XCTAssertEqual(e.file, "m.yaml", file: file, line: line)
            for m in mentions { XCTAssert(e.description.contains(m), "'\(e)' does not mention '\(m)'", file: file, line: line) }
        } catch {
            XCTFail("expected ConfigFileError, got \(error)", file: file, line: line)
        }
    }

    func testResolvesSettingsAndPathsAgainstTheManifest() throws {
        let m = try parse(example)
        let jobs = m.jobs(manifestPath: "/data/run/m.yaml")
        XCTAssertEqual(jobs.count, 4)
        XCTAssertEqual(m.outputFolder(manifestPath: "/data/run/m.yaml"), "/data/run/results")
        XCTAssertEqual(jobs[0].scanPath, "/data/run/a.h5")
        XCTAssertEqual(jobs[0].method, "donut")
        XCTAssertEqual(jobs[0].modelPath, "/data/run/models/m.h5")
        XCTAssertEqual(jobs[0].refineIterations, 8, "physics_refine from defaults, default iterations")
        XCTAssertEqual(jobs[0].dataset, "/entry/data/data")
        XCTAssertEqual(jobs[0].outputPath, "/data/run/results/a_maps.h5")
        XCTAssertEqual(jobs[1].method, "fit")
        XCTAssertEqual(jobs[1].modelPath, "/data/run/lib.h5", "fit uses the library")
        XCTAssertNil(jobs[1].refineIterations, "override switches refinement off")
        XCTAssertEqual(jobs[1].dataset, "/frames")
        XCTAssertEqual(jobs[1].scanShape?.rows, 10); XCTAssertEqual(jobs[1].scanShape?.cols, 20)
        XCTAssertEqual(jobs[1].roi, DetectorROI(x: 1, y: 2, width: 128, height: 128))
        XCTAssertEqual(jobs[1].outputPath, "/data/run/results/b-refit.h5")
        XCTAssertEqual(jobs[2].scanPath, "/abs/c.h5")
        XCTAssertEqual(jobs[2].refineIterations, 3)
        XCTAssertEqual(jobs[2].batch, 64)
        XCTAssertNil(jobs[0].duplicateOf); XCTAssertNil(jobs[1].duplicateOf); XCTAssertNil(jobs[2].duplicateOf)
        XCTAssertEqual(jobs[3].duplicateOf, "duplicate of scans[0] (same file and dataset)")
        // --out-dir replaces output_dir (relative to the working directory).
        let moved = m.jobs(manifestPath: "/data/run/m.yaml", outputDir: "/elsewhere")
        XCTAssertEqual(moved[0].outputPath, "/elsewhere/a_maps.h5")
    }

    /// The documented example loads and resolves.
    func testTheExampleInConfigsLoads() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("configs/reprocess-example.yaml").path
        let jobs = try ReprocessManifest.load(path: path).jobs(manifestPath: path)
        XCTAssertEqual(jobs.map(\.method), ["donut", "fit", "donut"])
        XCTAssertEqual(jobs.map { $0.refineIterations }, [8, nil, 8])
        XCTAssertEqual(jobs[2].scanShape?.rows, 165)
        XCTAssert(jobs.allSatisfy { $0.duplicateOf == nil })
        // Raw-detector keys: the mask file relative to the manifest, the monitor, order, threshold.
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("masks/eiger-500k.h5").standardizedFileURL.path
        XCTAssertEqual(jobs[2].readOptions.mask, .file(path: folder, dataset: "/pixel_mask"))
        XCTAssertEqual(jobs[2].maskPath, folder)
        XCTAssertEqual(jobs[2].readOptions.monitor, .dataset(file: nil, path: "/entry/measurement/i0"))
        XCTAssertEqual(jobs[2].readOptions.scanOrder, .serpentine)
        XCTAssertEqual(jobs[2].readOptions.hotPixelThreshold, 100000)
        XCTAssertEqual(jobs[0].readOptions, ScanReadOptions())
        XCTAssertNil(jobs[0].maskPath)
        // Command-line settings win over the manifest's, for every scan.
        let cli = ReprocessManifest.Settings(roi: DetectorROI(x: 1, y: 2, width: 128, height: 128), mask: "none")
        let over = try ReprocessManifest.load(path: path).jobs(manifestPath: path, override: cli)
        XCTAssert(over.allSatisfy { $0.roi == cli.roi && $0.readOptions.mask == MaskSource.none }, "\(over.map(\.roi))")
        XCTAssertEqual(over[2].readOptions.scanOrder, .serpentine)
    }

    /// Reprocess needs each scan's model or library; refine (which supplies the model) does not.
    func testMethodInputsAreRequiredUnlessTheCallerSuppliesThem() throws {
        let path = NSTemporaryDirectory() + "manifest-\(UUID().uuidString).yaml"
        defer { try? FileManager.default.removeItem(atPath: path) }
        for (text, missing) in [("scans:\n  - path: a.h5\n", "model"), ("defaults: {method: fit}\nscans:\n  - path: a.h5\n", "library")] {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try ReprocessManifest.load(path: path)) { e in
                let e = e as? ConfigFileError
                XCTAssertEqual(e?.file, path); XCTAssertEqual(e?.key, "scans[0]")
                XCTAssert(e?.message.contains(missing) ?? false, "\(String(describing: e))")
            }
            XCTAssertEqual(try ReprocessManifest.load(path: path, needsMethodInputs: false).scans.count, 1)
        }
    }

    func testOnlyScansAreRequired() throws {
        let m = try parse("scans:\n  - path: a.h5\ndefaults: {model: m.h5}\n")
        XCTAssertNil(m.outputDir)
        XCTAssertEqual(m.jobs(manifestPath: "/d/m.yaml")[0].outputPath, "/d/a_maps.h5")
        expectError("defaults: {model: m.h5}\n", key: "scans", mentions: ["required"])
        expectError("scans:\n  - output: x.h5\n", key: "scans[0].path", mentions: ["required"])
    }

    func testErrorsNameTheDottedKey() {
        expectError("scans:\n  - path: a.h5\n    overides: {}\n", key: "scans[0].overides", mentions: ["unknown key", "overrides"])
        expectError("defaults: {model: m.h5, refine_iterations: many}\nscans:\n  - path: a.h5\n",
                    key: "defaults.refine_iterations", mentions: ["integer"])
        expectError("defaults: {model: m.h5}\nscans:\n  - path: a.h5\n    overrides: {method: magic}\n",
                    key: "scans[0].overrides.method", mentions: ["donut, fit"])
        expectError("defaults: {model: m.h5}\nscans:\n  - path: a.h5\n    scan_shape: 10by20\n", key: "scans[0].scan_shape")
        expectError("defaults: {model: m.h5}\nscans:\n  - path: a.h5\n    output: sub/x.h5\n", key: "scans[0].output")
        expectError("defaults: {model: m.h5}\nscans: []\n", key: "scans", mentions: ["no scans"])
    }

    func testTwoEntriesWritingOneOutputAreMarked() throws {
        let m = try parse("defaults: {model: m.h5}\nscans:\n  - path: one/a.h5\n  - path: two/a.h5\n")
        let jobs = m.jobs(manifestPath: "/d/m.yaml")
        XCTAssertNil(jobs[0].duplicateOf)
        XCTAssertEqual(jobs[1].duplicateOf, "output /d/a_maps.h5 is also the output of scans[0]")
    }

    func testStatusFileRoundTripsAndIsWrittenAtomically() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("status-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = ReprocessStatus.path(inFolder: dir.path)
        XCTAssertNil(try ReprocessStatus.read(path: path))
        var s = ReprocessStatus(manifest: "/d/m.yaml", scans: [.init(name: "scans[0] a.h5", scan: "/d/a.h5", output: "/d/a_maps.h5")])
        s.scans[0].state = .failed; s.scans[0].reason = "file '/d/a.h5': does not exist"
        try s.write(path: path)
        try s.write(path: path)
        let back = try XCTUnwrap(try ReprocessStatus.read(path: path))
        XCTAssertEqual(back.scans, s.scans)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["reprocess-status.json"], "no temporary left")
        try "{not json".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ReprocessStatus.read(path: path)) { XCTAssert("\($0)".contains(path)) }
    }
}
