import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// Raw Eiger-like files (`simulate scan --detector eiger`) through inspect and fit, on one
/// rank and two: serpentine order, bitshuffle-LZ4 uint32 frames, a ROI away from the
/// config's, monitor and mask recorded in the result.
final class RawDetectorCLITests: XCTestCase {
    /// The small preset with its ROI at (16, 24) of a 300×300 sensor (the chip gap at rows
    /// and columns 256–257 misses it).
    private func setup(_ dir: URL) throws -> String {
        try writeSmallConfig(in: dir) { $0.instrument.roi = DetectorROI(x: 16, y: 24, width: 128, height: 128) }
    }

    private func rmse(_ a: [Double], _ b: [Double]) -> Double {
        (zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) } / Double(a.count)).squareRoot()
    }

    func testFitOnRawSerpentineFileMatchesTheCleanScan() throws {
        let dir = try scratchFolder(self)
        let config = try setup(dir)
        // The library's config keeps the published ROI: the scan's is given with --roi.
        let libConfig = try writeSmallConfig(in: dir, name: "lib.yaml")
        assertSucceeded(try donut(["simulate", "library", "--config", libConfig, "--out", "lib.h5"], in: dir), "library")
        // Noise-free at a high peak: the raw file's per-pixel rounding is negligible, so the
        // fit must match the clean scan's; a mirrored row or a wrong ROI would not.
        let common = ["--config", config, "--phantom", "domains", "--rows", "4", "--cols", "5", "--seed", "2", "--peak", "20000", "--no-noise"]
        assertSucceeded(try donut(["simulate", "scan"] + common + ["--out", "clean.h5"], in: dir), "clean scan")
        // Three hot pixels inside the ROI (in the pixel_mask), a ±20 % monitor, serpentine order.
        assertSucceeded(try donut(["simulate", "scan"] + common + ["--detector", "eiger", "--detector-size", "300x300",
                                                                  "--out", "raw.h5"], in: dir), "raw scan")
        let roi = ["--roi", "16,24,128,128"]
        assertSucceeded(try donut(["fit", "--scan", "clean.h5", "--library", "lib.h5", "--out", "clean_maps.h5"], in: dir), "fit clean")
        assertSucceeded(try donut(["fit", "--scan", "raw.h5", "--library", "lib.h5", "--out", "raw_maps.h5"] + roi, in: dir), "fit raw")
        assertSucceeded(try donut(["fit", "--scan", "raw.h5", "--library", "lib.h5", "--out", "raw_maps2.h5"] + roi, ranks: 2, in: dir), "fit raw np 2")
        let clean = try ResultMapsReader.read(path: dir.appendingPathComponent("clean_maps.h5").path)
        let raw = try ResultMapsReader.read(path: dir.appendingPathComponent("raw_maps.h5").path)
        let two = try ResultMapsReader.read(path: dir.appendingPathComponent("raw_maps2.h5").path)
        let truth = try ScanReader(path: dir.appendingPathComponent("clean.h5").path, config: .srio3LSAT002).groundTruth()!
        let span = (truth["strain"]!.max()! - truth["strain"]!.min()!)
        XCTAssertLessThan(rmse(raw.results.strain, clean.results.strain), 0.02 * span, "raw vs clean strain")
        XCTAssertLessThan(rmse(raw.results.tiltLRDeg, clean.results.tiltLRDeg), 0.002, "raw vs clean tilt_lr (deg)")
        // One rank and two: the same up to Float summation order (≤ 1e-5 of a library step).
        let step = 0.01 / 4, worst = zip(raw.results.strain, two.results.strain).map { abs($0 - $1) }.max() ?? .nan
        XCTAssertLessThanOrEqual(worst, 1e-5 * step, "one rank vs two")
        XCTAssertEqual(raw.results.valid, clean.results.valid)
        // Positions in µm from samx/samy; the file records what was read.
        XCTAssertEqual(raw.layout.axisUnits, "um")
        XCTAssertEqual(raw.layout.x, [0, 0.1, 0.2, 0.3, 0.4].map { $0 }, accuracy: 1e-9)
        let f = try H5File.open(dir.appendingPathComponent("raw_maps.h5").path)
        XCTAssertEqual(try f.readString("/entry/scan_order"), "serpentine")
        XCTAssertEqual(try f.readStringAttribute("source", on: "/entry/scan_order"), "positioners")
        XCTAssertEqual(try f.readDataset("/entry/instrument/detector/roi", as: Int64.self), [16, 24, 128, 128])
        XCTAssertEqual(try f.readStringAttribute("source", on: "/entry/monitor/data"), "/entry/measurement/mon")
        XCTAssertEqual(try f.readStringAttribute("source", on: "/entry/instrument/detector/pixel_mask"), "/entry/instrument/detector/pixel_mask")
        XCTAssertEqual(try f.readIntAttribute("masked_model_pixels", on: "/entry/instrument/detector/pixel_mask"), 3)
        // The same file without its pixel_mask: the hot pixels are not silent — every frame is
        // flagged (valid = 0) with a warning naming the scan; the threshold option restores the maps.
        assertSucceeded(try donut(["simulate", "scan"] + common + ["--detector", "eiger", "--detector-size", "300x300", "--no-mask",
                                                                  "--out", "nomask.h5"], in: dir), "raw scan without mask")
        let unmasked = try donut(["fit", "--scan", "nomask.h5", "--library", "lib.h5", "--out", "nomask_maps.h5"] + roi, in: dir)
        XCTAssert(unmasked.stderr.contains("warning") && unmasked.stderr.contains("nomask.h5"), unmasked.stderr)
        XCTAssertEqual(try ResultMapsReader.read(path: dir.appendingPathComponent("nomask_maps.h5").path).results.valid.filter { $0 == 1 }.count, 0)
        assertSucceeded(try donut(["fit", "--scan", "nomask.h5", "--library", "lib.h5", "--out", "hot_maps.h5", "--hot-pixel-threshold", "100000"] + roi,
                                  in: dir), "fit with a hot-pixel threshold")
        let thresholded = try ResultMapsReader.read(path: dir.appendingPathComponent("hot_maps.h5").path).results
        XCTAssertLessThanOrEqual(zip(thresholded.strain, raw.results.strain).map { abs($0 - $1) }.max() ?? .nan, 1e-5 * step, "threshold vs mask")
        // Provenance records the ROI actually used, not the library's.
        let used = try ConfigFile.fromJSON(raw.provenance!.configJSON, source: "raw_maps.h5")
        XCTAssertEqual(used.instrument.roi, DetectorROI(x: 16, y: 24, width: 128, height: 128))
    }

    func testInspectAndBadInput() throws {
        let dir = try scratchFolder(self)
        let config = try setup(dir)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--rows", "3", "--cols", "4", "--detector", "eiger",
                                   "--detector-size", "300x300", "--out", "raw.h5"], in: dir), "raw scan")
        let r = try donut(["inspect", "raw.h5", "--config", config, "--png", "sum.png"], in: dir)
        assertSucceeded(r, "inspect")
        for fragment in ["uint32", "(12, 300, 300)", "chunks (1, 300, 300)", "bitshuffle (id 32008, with LZ4) [decoder found]",
                         "/entry/instrument/detector/pixel_mask", "hot pixels: 5, 5 of them in the mask", "/entry/measurement/mon",
                         "x /entry/measurement/samx, y /entry/measurement/samy", "3×4 frames, order serpentine (positioners)"] {
            XCTAssert(r.stdout.contains(fragment), "inspect lacks '\(fragment)':\n\(r.stdout)")
        }
        // The suggested ROI is where the signal was put (16, 24), within a few pixels.
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.contains("--roi ") })
        let numbers = line.split(separator: " ")[3].split(separator: ",").compactMap { Int($0) }
        XCTAssertEqual(numbers.count, 4)
        XCTAssertLessThanOrEqual(abs(numbers[0] - 16), 3, String(line)); XCTAssertLessThanOrEqual(abs(numbers[1] - 24), 3, String(line))
        XCTAssert(FileManager.default.fileExists(atPath: dir.appendingPathComponent("sum.png").path))
        assertFailed(try donut(["inspect", "raw.h5", "--config", config, "--png", "sum.png"], in: dir), naming: ["sum.png", "exists"])

        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        let fit = ["fit", "--scan", "raw.h5", "--library", "lib.h5", "--out", "m.h5"]
        assertFailed(try donut(fit + ["--roi", "200,24,128,128"], in: dir), naming: ["raw.h5", "/entry/data/data", "x 200..<328", "off the frame", "300×300"])
        assertFailed(try donut(fit + ["--mask", "nothere.h5"], in: dir), naming: ["nothere.h5", "does not exist"])
        assertFailed(try donut(fit + ["--monitor", "/entry/measurement/samx_missing"], in: dir), naming: ["raw.h5", "/entry/measurement/samx_missing", "monitor not found"])
        assertFailed(try donut(fit + ["--scan-order", "diagonal"], in: dir), naming: ["--scan-order", "diagonal"])
        assertFailed(try donut(fit + ["--scan-order", "raster"], in: dir), naming: ["raw.h5", "raster", "serpentine"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("m.h5").path), "nothing written on bad input")
    }
}

extension RawDetectorCLITests {
    /// zstd chunks (no Debian decoder) are refused naming the filter and the remedy; with the
    /// remedy — HDF5_PLUGIN_PATH set to Python hdf5plugin's plugins — the same file is read.
    func testPluginPathFromTheEnvironmentIsHonoured() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir)
        var env = ProcessInfo.processInfo.environment
        env["HDF5_PLUGIN_PATH"] = nil
        func python(_ args: [String]) throws -> (Int32, String) {
            let p = Process(), out = Pipe()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env"); p.arguments = ["python3"] + args
            p.environment = env; p.standardOutput = out; p.standardError = FileHandle.nullDevice
            try p.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let (ok, plugins) = try python(["-c", "import h5py, hdf5plugin; print(hdf5plugin.PLUGIN_PATH)"])
        guard ok == 0 else { throw XCTSkip("python3 with h5py and hdf5plugin is needed (scripts/setup installs them)") }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/make_raw_fixtures.py").path
        XCTAssertEqual(try python([script, dir.path, "--frames", "2", "--height", "140", "--width", "140"]).0, 0)
        let args = ["inspect", "raw_zstd.h5", "--config", config, "--dataset", "/entry/instrument/detector/data", "--scan-shape", "1x2"]
        if try donut(args + ["--png", "a.png"], in: dir, environment: ["HDF5_PLUGIN_PATH": "/nonexistent"]).status == 0 {
            throw XCTSkip("a zstd decoder is installed system-wide here")
        }
        let refused = try donut(args + ["--png", "a.png"], in: dir, environment: ["HDF5_PLUGIN_PATH": "/nonexistent"])
        XCTAssertEqual(refused.status, 2, refused.all)
        assertFailed(refused, naming: ["raw_zstd.h5", "/entry/instrument/detector/data", "zstd (id 32015)", "HDF5_PLUGIN_PATH"])
        let read = try donut(args + ["--png", "b.png"], in: dir, environment: ["HDF5_PLUGIN_PATH": plugins])
        assertSucceeded(read, "inspect with hdf5plugin's plugins")
        XCTAssert(read.stdout.contains("zstd (id 32015) [decoder found]"), read.stdout)
    }
}

private func XCTAssertEqual(_ a: [Double], _ b: [Double], accuracy: Double, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, file: file, line: line) }
}
