import XCTest
import DonutCore
@testable import DonutIO
import DonutPhysics

/// 4×4 model frames from an 8×8 ROI at (x 1, y 2) binned by 2, on a 12×10 detector whose
/// row 5 is a gap (2³² − 1) and with a hot pixel at (y 3, x 4) in the pixel mask.
private func eigerConfig() -> DonutConfig {
    var c = DonutConfig.srio3LSAT002
    c.model.frameSize = 4
    c.instrument.roi = DetectorROI(x: 1, y: 2, width: 8, height: 8)
    c.instrument.binning = 2
    return c
}

private let detector = RawDetectorLayout(height: 12, width: 10, gapRows: [5..<6], hotPixels: [3 * 10 + 4])
private let rows = 3, cols = 4

/// File frame n, pixel (y, x): (13n + 3y + x) mod 997, the gap row at the sentinel, the hot
/// pixel at 1e6; a serpentine scan of 3×4 (positions in µm), monitor 100·(n + 1).
private func writeScan(_ path: String, framesPerFile: Int?) throws {
    let h = detector.height, w = detector.width
    var x: [Double] = [], y: [Double] = []
    for n in 0..<(rows * cols) {
        let r = n / cols, c = n % cols
        x.append(Double(r % 2 == 0 ? c : cols - 1 - c)); y.append(Double(r))
    }
    let provenance = Provenance(version: "t", date: "t", method: "t", commandLine: "t", configJSON: ConfigFile.json(eigerConfig()), inputs: [], modelID: "")
    try RawDetectorFileWriter.write(path: path, layout: detector, rows: rows, cols: cols, frames: { r in
        var out = [UInt32](repeating: 0, count: cols * h * w)
        for k in 0..<cols {
            let n = r * cols + k
            for p in 0..<(h * w) {
                let py = p / w, px = p % w
                out[k * h * w + p] = py == 5 ? .max : p == 34 ? 1_000_000 : UInt32((13 * n + 3 * py + px) % 997)
            }
        }
        return out
    }, positions: (x, y), monitor: (0..<(rows * cols)).map { 100 * Double($0 + 1) }, provenance: provenance,
       framesPerFile: framesPerFile, force: true)
}

/// Runs `body` in the working folder `folder`, restoring the previous one after.
private func inWorkingFolder<T>(_ folder: URL, _ body: () throws -> T) rethrows -> T {
    let previous = FileManager.default.currentDirectoryPath
    precondition(FileManager.default.changeCurrentDirectoryPath(folder.path))
    defer { _ = FileManager.default.changeCurrentDirectoryPath(previous) }
    return try body()
}

/// Runs `body` with the environment variable `name` set to `value`, restoring it after.
private func withEnvironment<T>(_ name: String, _ value: String, _ body: () throws -> T) rethrows -> T {
    let previous = getenv(name).map { String(cString: $0) }
    setenv(name, value, 1)
    defer { if let previous { setenv(name, previous, 1) } else { unsetenv(name) } }
    return try body()
}

/// `path` with symbolic links, "." and ".." resolved (nil when it does not exist).
private func realPath(_ path: String) -> String? {
    guard let p = realpath(path, nil) else { return nil }
    defer { free(p) }
    return String(cString: p)
}

/// Each part's file is the file HDF5 itself opens when it follows the part's link (same
/// working folder and environment): Donut's search agrees with HDF5's.
private func assertHDF5OpensTheSameFiles(master: String, parts: [ScanFramePart], file: StaticString = #filePath, line: UInt = #line) throws {
    let f = try H5File.open(master)
    defer { try? f.close() }
    for part in parts {
        let opened = f.fileOpenedByHDF5(following: part.link)
        XCTAssertNotNil(opened, "HDF5 follows \(part.link)", file: file, line: line)
        XCTAssertEqual(opened.flatMap(realPath), realPath(part.file), "\(part.link): Donut opens \(part.file), HDF5 \(opened ?? "nothing")", file: file, line: line)
    }
}

final class EigerMasterTests: XCTestCase {
    /// A master with 3 parts of 5 + 5 + 2 frames reads exactly as the single-dataset file of
    /// the same frames: every block (all 78 ranges of the 12 frames in map order, including
    /// those that span two parts and the reversed serpentine row that crosses part 2's
    /// start) has the same counts, weights and monitor; the Dectris mask place is found.
    func testMasterReadsAsTheSingleDatasetFile() throws {
        let folder = makeScratchFolder(self)
        let single = folder.appendingPathComponent("single.h5").path, master = folder.appendingPathComponent("scan_master.h5").path
        try writeScan(single, framesPerFile: nil)
        try writeScan(master, framesPerFile: 5)
        for k in 1...3 {
            XCTAssertTrue(FileManager.default.fileExists(atPath: folder.appendingPathComponent("scan_data_00000\(k).h5").path))
        }
        let f = try H5File.open(master)
        XCTAssertFalse(f.exists("/entry/data/data"))
        XCTAssertEqual(f.link("/entry/data/data_000002"), .external(file: "scan_data_000002.h5", object: "/entry/data/data"))
        XCTAssertEqual(f.link("/entry/instrument"), .hard)
        XCTAssertNil(f.link("/entry/data/data_000004"))
        try f.close()

        let a = try ScanReader(path: single, config: eigerConfig())
        let b = try ScanReader(path: master, config: eigerConfig())
        XCTAssertEqual(a.frameParts, [])
        XCTAssertEqual(b.frameParts.map(\.frameCount), [5, 5, 2])
        XCTAssertEqual(b.frameParts.map(\.firstFrame), [0, 5, 10])
        XCTAssertEqual(b.frameParts.map(\.link), (1...3).map { "/entry/data/data_00000\($0)" })
        XCTAssertEqual(b.frameParts.map(\.linkedFile), (1...3).map { "scan_data_00000\($0).h5" })
        XCTAssertEqual(b.frameParts[2].file, folder.appendingPathComponent("scan_data_000003.h5").path)
        XCTAssertEqual(b.dataset, "/entry/data/data_000001…data_000003")
        XCTAssertEqual(a.maskSource, "/entry/instrument/detector/pixel_mask")
        XCTAssertEqual(b.maskSource, "/entry/instrument/detector/detectorSpecific/pixel_mask")
        XCTAssertEqual(b.modelMask, a.modelMask)
        XCTAssertEqual(b.modelMask.enumerated().filter { $0.element != 0 }.map(\.offset), [1, 4, 5, 6, 7],
                       "the hot pixel at raw (3, 4) is model pixel (0, 1), the gap row 5 is model row 1")
        XCTAssertEqual(b.geometry, a.geometry)
        XCTAssertEqual(b.geometry.order, .serpentine)
        XCTAssertEqual(b.layout, a.layout)
        XCTAssertEqual(b.storedType, a.storedType)
        XCTAssertEqual(b.summary.framesSource, ["/entry/data/data_000001 → scan_data_000001.h5:/entry/data/data (5 frames)",
                                                "/entry/data/data_000002 → scan_data_000002.h5:/entry/data/data (5 frames)",
                                                "/entry/data/data_000003 → scan_data_000003.h5:/entry/data/data (2 frames)"])
        XCTAssertEqual(a.summary.framesSource, ["/entry/data/data"])
        var spanning = 0
        for lo in 0..<12 {
            for hi in (lo + 1)...12 {
                let x = try a.readBlock(lo..<hi), y = try b.readBlock(lo..<hi)
                XCTAssertEqual(y.first, x.first); XCTAssertEqual(y.count, x.count)
                XCTAssertEqual(y.counts, x.counts, "counts \(lo)..<\(hi)")
                XCTAssertEqual(y.weights, x.weights, "weights \(lo)..<\(hi)")
                XCTAssertEqual(y.monitor, x.monitor, "monitor \(lo)..<\(hi)")
                XCTAssertEqual(try b.readFrames(lo..<hi), try a.readFrames(lo..<hi))
                let files = Set((lo..<hi).map { b.geometry.fileIndex($0) / 5 })
                if files.count > 1 { spanning += 1 }
            }
        }
        XCTAssertGreaterThan(spanning, 30, "blocks spanning two or three parts")
        // The blocks are not trivially equal: frames differ, the gap row and hot pixel are masked.
        let all = try b.readBlock(0..<12)
        XCTAssertNotNil(all.weights)
        XCTAssertNotEqual(Array(all.counts[0..<16]), Array(all.counts[16..<32]))
        // Map frame 4 is file frame 7 (serpentine row 1 reversed), in part 2.
        var expected = 0
        for i in 0..<2 { for j in 0..<2 { expected += (13 * 7 + 3 * (2 + i) + 1 + j) % 997 } }
        XCTAssertEqual(try b.readFrames(4..<5)[0], Float(expected))
        try a.close(); try b.close()
    }

    /// `donut inspect` lists the parts (count, frames each, data files) and finds the mask.
    func testInspectListsTheParts() throws {
        let folder = makeScratchFolder(self)
        let master = folder.appendingPathComponent("scan_master.h5").path
        try writeScan(master, framesPerFile: 5)
        let i = try inspectScan(path: master, config: eigerConfig())
        XCTAssertEqual(i.parts.map(\.frameCount), [5, 5, 2])
        XCTAssertEqual(i.shape, [12, 12, 10])
        XCTAssertEqual(i.frameCount, 12)
        XCTAssertEqual(i.maskSource, "/entry/instrument/detector/detectorSpecific/pixel_mask")
        XCTAssertEqual(i.storedType, "uint32")
        XCTAssertEqual(i.filters.first?.id, 32008)
        let report = i.report.joined(separator: "\n")
        XCTAssertTrue(report.contains("parts: 3 data files linked from the master, frames each: 5 + 5 + 2 = 12"), report)
        for k in 1...3 { XCTAssertTrue(report.contains("/entry/data/data_00000\(k) → scan_data_00000\(k).h5:/entry/data/data"), report) }
    }

    /// A missing data file (an aborted acquisition, or a master copied alone) is refused at
    /// open, naming the link, the data file and what was expected — by the reader and inspect.
    func testDanglingLinkIsRefusedAtOpen() throws {
        let folder = makeScratchFolder(self)
        let master = folder.appendingPathComponent("scan_master.h5").path
        try writeScan(master, framesPerFile: 5)
        try FileManager.default.removeItem(at: folder.appendingPathComponent("scan_data_000002.h5"))
        let fragments = ["scan_master.h5", "link '/entry/data/data_000002'", "part 2 of 3", "'scan_data_000002.h5'",
                         "dataset '/entry/data/data'", "does not exist", "(N, 12, 10) uint32 frames like part 1"]
        assertThrows(try ScanReader(path: master, config: eigerConfig()), containing: fragments)
        assertThrows(try inspectScan(path: master, config: eigerConfig()), containing: fragments)
    }

    /// A part whose frames have another shape or type, a data file without the dataset, a
    /// part shorter than it announces and a gap in the numbering: each a clear error at open.
    func testPartMismatchesAreRefusedAtOpen() throws {
        let folder = makeScratchFolder(self)
        let master = folder.appendingPathComponent("scan_master.h5").path
        let part2 = folder.appendingPathComponent("scan_data_000002.h5").path
        func rewritePart2(type: H5ElementType = .uint32, shape: [Int], dataset: String = "/entry/data/data", imageRange: (Int, Int)? = nil) throws {
            try writeScan(master, framesPerFile: 5)
            try FileManager.default.removeItem(atPath: part2)
            let f = try H5File.create(part2)
            try f.createGroup("/entry"); try f.createGroup("/entry/data")
            _ = try f.createDataset(dataset, type: type, shape: shape)
            if let (lo, hi) = imageRange {
                try f.setAttribute("image_nr_low", lo, on: dataset); try f.setAttribute("image_nr_high", hi, on: dataset)
            }
            try f.close()
        }
        let cfg = eigerConfig()
        try rewritePart2(shape: [5, 12, 9])
        assertThrows(try ScanReader(path: master, config: cfg),
                     containing: ["scan_data_000002.h5", "dataset '/entry/data/data'", "part 2 of 3", "/entry/data/data_000002",
                                  "frames are uint32 12×9, expected uint32 12×10 like part 1 (scan_data_000001.h5:/entry/data/data)"])
        try rewritePart2(type: .uint16, shape: [5, 12, 10])
        assertThrows(try ScanReader(path: master, config: cfg), containing: ["scan_data_000002.h5", "frames are uint16 12×10, expected uint32 12×10"])
        try rewritePart2(shape: [5, 120])
        assertThrows(try ScanReader(path: master, config: cfg), containing: ["scan_data_000002.h5", "expected frames (N, H, W), got shape (5, 120)"])
        try rewritePart2(shape: [5, 12, 10], dataset: "/entry/data/other")
        assertThrows(try ScanReader(path: master, config: cfg), containing: ["scan_data_000002.h5", "dataset '/entry/data/data'", "not found", "part 2 of 3"])
        try rewritePart2(shape: [3, 12, 10], imageRange: (6, 10))
        assertThrows(try ScanReader(path: master, config: cfg), containing: ["scan_data_000002.h5", "holds 3 frames", "announces images 6…10"])
        // Part 3 announces images 11…12 but follows only 8 frames: the short part 2 shows there too.
        try rewritePart2(shape: [3, 12, 10])
        assertThrows(try ScanReader(path: master, config: cfg),
                     containing: ["scan_data_000003.h5", "part 3 of 3", "holds 2 frames, images 9…10", "announces images 11…12"])
        // A short last part without Dectris' image numbers (an aborted acquisition) shows in the frame count.
        try writeScan(master, framesPerFile: 5)
        let part3 = folder.appendingPathComponent("scan_data_000003.h5").path
        try FileManager.default.removeItem(atPath: part3)
        let short = try H5File.create(part3)
        try short.createGroup("/entry"); try short.createGroup("/entry/data")
        _ = try short.createDataset("/entry/data/data", type: .uint32, shape: [1, 12, 10])
        try short.close()
        assertThrows(try ScanReader(path: master, config: cfg, scanShape: (3, 4)),
                     containing: ["scan_master.h5", "scan shape 3×4 = 12 frames, but the dataset holds 11",
                                  "in 3 parts: 5 + 5 + 1 frames (the master announces 12)"])
        assertThrows(try ScanReader(path: master, config: cfg),
                     containing: ["scan_master.h5", "positioner", "12 values", "the scan has 11 frames", "3 parts: 5 + 5 + 1 frames (the master announces 12)"])
        // A gap in the numbering.
        try writeScan(master, framesPerFile: 5)
        let f = try H5File.open(master, writable: true)
        try f.createExternalLink("/entry/data/data_000005", file: "scan_data_000003.h5", object: "/entry/data/data")
        try f.close()
        assertThrows(try ScanReader(path: master, config: cfg), containing: ["scan_master.h5", "/entry/data/data", "part 4 is missing", "/entry/data/data_000005"])
    }

    /// A rerun sees a master's data files as inputs: one replaced or gone (a data file copied
    /// again after an aborted transfer) makes `reprocess` redo the scan; the master alone
    /// unchanged is not enough to skip it.
    func testRerunFingerprintsTheDataFiles() throws {
        let folder = makeScratchFolder(self)
        let master = folder.appendingPathComponent("scan_master.h5").path, single = folder.appendingPathComponent("single.h5").path
        try writeScan(master, framesPerFile: 5)
        try writeScan(single, framesPerFile: nil)
        let data = (1...3).map { folder.appendingPathComponent("scan_data_00000\($0).h5").path }
        XCTAssertEqual(ScanReader.frameFiles(path: master), [master] + data)
        XCTAssertEqual(ScanReader.frameFiles(path: single), [single])
        XCTAssertEqual(ScanReader.frameFiles(path: folder.appendingPathComponent("none.h5").path), [folder.appendingPathComponent("none.h5").path])
        let lib = folder.appendingPathComponent("lib.h5").path, out = folder.appendingPathComponent("maps.h5").path
        try Data(repeating: 2, count: 3000).write(to: URL(fileURLWithPath: lib))
        let job = ReprocessJob(index: 0, name: "scans[0] scan_master.h5", scanPath: master, dataset: "/entry/data/data", scanShape: nil,
                               method: "fit", modelPath: lib, roi: nil, refineIterations: nil, batch: 8, outputPath: out, duplicateOf: nil)
        XCTAssertEqual(job.inputFiles, [master, lib] + data)
        var r = FrameResults(frameRange: 0..<12)
        r.strain = .init(repeating: 1e-3, count: 12); r.tiltLRDeg = .init(repeating: 0, count: 12)
        r.tiltUDDeg = .init(repeating: 0, count: 12); r.valid = .init(repeating: 1, count: 12)
        try ResultMapsWriter.write(path: out, results: r, layout: ScanLayout(rows: 3, cols: 4),
                                   provenance: Provenance(version: "t", date: "t", method: "fit", commandLine: "t", configJSON: "{}", inputs: [], modelID: ""))
        let first = try ReprocessRerun.decide(job, previous: nil, force: false)
        let done = ReprocessStatus.Entry(name: job.name, scan: master, output: out, state: .done, fingerprint: first.fingerprint,
                                         frames: 12, inputs: first.inputs, result: try ContentFingerprint.content(of: out))
        XCTAssertEqual(try ReprocessRerun.decide(job, previous: done, force: false).verdict, .done(done), "nothing changed: done")
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: data[1]))
        h.seekToEndOfFile(); h.write(Data([0])); try h.close()
        guard case .run(replace: true, _) = try ReprocessRerun.decide(job, previous: done, force: false).verdict else {
            return XCTFail("a changed data file is reprocessed")
        }
        try FileManager.default.removeItem(atPath: data[1])
        guard case .run(replace: true, _) = try ReprocessRerun.decide(job, previous: done, force: false).verdict else {
            return XCTFail("a missing data file is reprocessed (and then refused by the reader)")
        }
    }

    /// A virtual dataset over data files (how converters present a master as one dataset)
    /// reads as HDF5 maps it; a missing source file or dataset, which HDF5 would read as
    /// fill values (zeros), is refused at open naming it. Made with h5py (skipped without it).
    func testVirtualDatasetWithAMissingSourceIsRefused() throws {
        let folder = makeScratchFolder(self)
        let script = """
        import h5py, numpy as np
        for k in (1, 2):
            with h5py.File(f"src{k}.h5", "w") as f:
                f["/entry/data/data"] = (np.arange(3 * 12 * 10).reshape(3, 12, 10) % 97 + 10 * k).astype(np.uint32)
        layout = h5py.VirtualLayout(shape=(6, 12, 10), dtype=np.uint32)
        for k in (1, 2):
            layout[3 * (k - 1):3 * k] = h5py.VirtualSource(f"src{k}.h5", "/entry/data/data", shape=(3, 12, 10))
        with h5py.File("vds.h5", "w") as f:
            f.create_virtual_dataset("/entry/data/data", layout, fillvalue=0)
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script]
        p.currentDirectoryURL = folder
        p.standardError = FileHandle.nullDevice
        try p.run(); p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw XCTSkip("python3 with h5py is needed to write a virtual dataset") }
        let vds = folder.appendingPathComponent("vds.h5").path
        let reader = try ScanReader(path: vds, config: eigerConfig(), scanShape: (2, 3))
        var expected: Float = 0
        for i in 0..<2 { for j in 0..<2 { expected += Float(((2 + i) * 10 + 1 + j) % 97 + 20) } }
        XCTAssertEqual(try reader.readFrames(3..<4)[0], expected, "frame 3 is source 2's first frame")
        try reader.close()
        let src2 = folder.appendingPathComponent("src2.h5")
        try FileManager.default.moveItem(at: src2, to: folder.appendingPathComponent("away.h5"))
        assertThrows(try ScanReader(path: vds, config: eigerConfig(), scanShape: (2, 3)),
                     containing: ["vds.h5", "dataset '/entry/data/data'", "mapping 2 of 2", "'src2.h5'", "does not exist",
                                  "src2.h5 (beside vds.h5)", "fill values"])
        let f = try H5File.create(src2.path)
        try f.createGroup("/entry")
        try f.close()
        assertThrows(try ScanReader(path: vds, config: eigerConfig(), scanShape: (2, 3)),
                     containing: ["src2.h5", "dataset '/entry/data/data'", "not found", "mapping 2 of 2", "fill values"])
    }

    /// Data files named by absolute paths (as some writers and converters store them), moved
    /// with their master to another folder, and the master opened by a relative path from a
    /// third working folder: HDF5 tries the absolute name, then its last component beside the
    /// master, and so does the reader (it looked for the absolute name only).
    func testAbsoluteLinksFollowAMasterMovedWithItsDataFiles() throws {
        let folder = makeScratchFolder(self)
        let acquired = folder.appendingPathComponent("acquired"), moved = folder.appendingPathComponent("moved")
        let elsewhere = folder.appendingPathComponent("elsewhere")
        for d in [acquired, elsewhere] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        try writeScan(acquired.appendingPathComponent("scan_master.h5").path, framesPerFile: 5)
        let absolute = try H5File.create(acquired.appendingPathComponent("absolute_master.h5").path)
        try absolute.createGroup("/entry"); try absolute.createGroup("/entry/data")
        for k in 1...3 {
            try absolute.createExternalLink("/entry/data/data_00000\(k)", file: acquired.appendingPathComponent("scan_data_00000\(k).h5").path,
                                            object: "/entry/data/data")
        }
        try absolute.close()
        try FileManager.default.moveItem(at: acquired, to: moved)
        try inWorkingFolder(elsewhere) {
            let f = try H5File.open("../moved/absolute_master.h5")
            let stack = try FrameStack(f, dataset: "/entry/data/data")
            XCTAssertEqual(stack.parts.map(\.file), (1...3).map { "../moved/scan_data_00000\($0).h5" })
            XCTAssertEqual(stack.parts.map(\.frameCount), [5, 5, 2])
            let g = try H5File.open("../moved/scan_master.h5")
            let relative = try FrameStack(g, dataset: "/entry/data/data")
            XCTAssertEqual(try stack.read(range: 0..<12, trailingStart: nil, trailingCount: nil),
                           try relative.read(range: 0..<12, trailingStart: nil, trailingCount: nil))
            try stack.close(); try relative.close(); try f.close(); try g.close()
            try assertHDF5OpensTheSameFiles(master: "../moved/absolute_master.h5", parts: stack.parts)
        }
    }

    /// A master opened through a symbolic link (an analysis folder linking the beamline's
    /// file): HDF5 finds the data files beside the link's target, and so does the reader (it
    /// looked beside the link and in the working folder only).
    func testSymlinkedMasterFindsTheDataFilesBesideItsTarget() throws {
        let folder = makeScratchFolder(self)
        let beamline = folder.appendingPathComponent("beamline"), analysis = folder.appendingPathComponent("analysis")
        for d in [beamline, analysis] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        let master = beamline.appendingPathComponent("scan_master.h5").path, linked = analysis.appendingPathComponent("scan.h5").path
        try writeScan(master, framesPerFile: 5)
        try FileManager.default.createSymbolicLink(atPath: linked, withDestinationPath: "../beamline/scan_master.h5")
        let a = try ScanReader(path: master, config: eigerConfig()), b = try ScanReader(path: linked, config: eigerConfig())
        XCTAssertEqual(b.frameParts.map { realPath($0.file) }, a.frameParts.map { realPath($0.file) })
        XCTAssertEqual(try b.readFrames(0..<12), try a.readFrames(0..<12))
        try a.close(); try b.close()
        try assertHDF5OpensTheSameFiles(master: linked, parts: b.frameParts)
    }

    /// Data files copied to another folder than the master's, named in HDF5_EXT_PREFIX: its
    /// prefixes come first, in order, passing over a folder without the file and a file that
    /// is no HDF5 file, and before an (older) data file of the same name beside the master.
    func testHDF5ExtPrefixNamesWhereTheDataFilesWereCopied() throws {
        let folder = makeScratchFolder(self)
        let m = folder.appendingPathComponent("m"), copied = folder.appendingPathComponent("copied")
        let empty = folder.appendingPathComponent("empty"), junk = folder.appendingPathComponent("junk")
        for d in [m, copied, empty, junk] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        let master = m.appendingPathComponent("scan_master.h5").path
        try writeScan(master, framesPerFile: 5)
        let reference = try ScanReader(path: master, config: eigerConfig())
        let frames = try reference.readFrames(0..<12)
        try reference.close()
        for k in 1...3 {
            let name = "scan_data_00000\(k).h5"
            try FileManager.default.moveItem(at: m.appendingPathComponent(name), to: copied.appendingPathComponent(name))
            try Data("not HDF5".utf8).write(to: junk.appendingPathComponent(name))
        }
        try FileManager.default.copyItem(at: copied.appendingPathComponent("scan_data_000003.h5"), to: m.appendingPathComponent("scan_data_000001.h5"))
        try withEnvironment("HDF5_EXT_PREFIX", "\(empty.path):\(junk.path)/:\(copied.path)") {
            let r = try ScanReader(path: master, config: eigerConfig())
            XCTAssertEqual(r.frameParts.map(\.file), (1...3).map { copied.appendingPathComponent("scan_data_00000\($0).h5").path })
            XCTAssertEqual(r.frameParts.map(\.frameCount), [5, 5, 2])
            XCTAssertEqual(try r.readFrames(0..<12), frames)
            try r.close()
            try assertHDF5OpensTheSameFiles(master: master, parts: r.frameParts)
            XCTAssertEqual(ScanReader.frameFiles(path: master), [master] + r.frameParts.map(\.file))
        }
    }

    /// A dangling link's error names the link, the file name it holds and every place HDF5
    /// looks, in its order and why (HDF5_EXT_PREFIX, beside the master, the working folder),
    /// and says when a place holds a file that is no HDF5 file; HDF5 agrees it dangles.
    func testDanglingLinkListsEveryPlaceTried() throws {
        let folder = makeScratchFolder(self)
        let m = folder.appendingPathComponent("m"), copied = folder.appendingPathComponent("copied")
        let elsewhere = folder.appendingPathComponent("elsewhere")
        for d in [m, copied, elsewhere] { try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true) }
        let master = m.appendingPathComponent("scan_master.h5").path
        try writeScan(master, framesPerFile: 5)
        try FileManager.default.removeItem(at: m.appendingPathComponent("scan_data_000002.h5"))
        try Data("not HDF5".utf8).write(to: elsewhere.appendingPathComponent("scan_data_000002.h5"))
        try withEnvironment("HDF5_EXT_PREFIX", copied.path) {
            try inWorkingFolder(elsewhere) {
                assertThrows(try ScanReader(path: "../m/scan_master.h5", config: eigerConfig()), containing: [
                    "file '../m/scan_master.h5', link '/entry/data/data_000002'", "part 2 of 3", "'scan_data_000002.h5'",
                    "which is no HDF5 file where it exists (HDF5 looks, in order, at "
                        + "\(copied.path)/scan_data_000002.h5 (HDF5_EXT_PREFIX), "
                        + "../m/scan_data_000002.h5 (beside scan_master.h5), "
                        + "scan_data_000002.h5 (in the working folder \(FileManager.default.currentDirectoryPath); not an HDF5 file))",
                    "name their folder in HDF5_EXT_PREFIX"])
                let f = try H5File.open("../m/scan_master.h5")
                XCTAssertNil(f.fileOpenedByHDF5(following: "/entry/data/data_000002"), "HDF5 finds no file either")
                XCTAssertNotNil(f.fileOpenedByHDF5(following: "/entry/data/data_000001"))
                try f.close()
            }
        }
    }
}
