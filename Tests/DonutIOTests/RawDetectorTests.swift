import XCTest
import DonutCore
import DonutIO
import DonutMPI
import DonutPhysics

/// 4×4 model frames from an 8×8 ROI at (x 1, y 2) binned by 2 (the raw fixtures' row 5,
/// the gap, falls into model row 1).
private func rawConfig() -> DonutConfig {
    var c = DonutConfig.srio3LSAT002
    c.model.frameSize = 4
    c.instrument.roi = DetectorROI(x: 1, y: 2, width: 8, height: 8)
    c.instrument.binning = 2
    return c
}

/// scripts/make_raw_fixtures.py's frame values: (7n + 3y + x) mod 1000, row 5 = 2³² − 1.
private func fixtureValue(_ n: Int, _ y: Int, _ x: Int) -> Double {
    y == 5 ? 4294967295 : Double((7 * n + 3 * y + x) % 1000)
}

/// Runs scripts/make_raw_fixtures.py into `folder`; skips the test when Python lacks
/// h5py/hdf5plugin (scripts/setup installs them; CI has them).
private func makeRawFixtures(_ folder: URL) throws {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/make_raw_fixtures.py").path
    // hdf5plugin registers its own filters; a plugin folder meant for Donut must not interfere.
    var env = ProcessInfo.processInfo.environment
    env["HDF5_PLUGIN_PATH"] = nil
    let probe = Process()
    probe.environment = env
    probe.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    probe.arguments = ["python3", "-c", "import h5py, hdf5plugin"]
    probe.standardError = FileHandle.nullDevice
    try probe.run(); probe.waitUntilExit()
    guard probe.terminationStatus == 0 else { throw XCTSkip("python3 with h5py and hdf5plugin is needed (scripts/setup installs them)") }
    let p = Process()
    p.environment = env
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script, folder.path]
    p.standardOutput = FileHandle.nullDevice
    try p.run(); p.waitUntilExit()
    XCTAssertEqual(p.terminationStatus, 0, "make_raw_fixtures.py failed")
}

final class RawDetectorFilterTests: XCTestCase {
    /// Debian's plugin folders that exist are searched, folders that do not are not (HDF5
    /// 1.10 fails every plugin load at the first missing folder).
    func testPluginSearchPathHoldsOnlyExistingFolders() {
        H5Plugins.registerSearchPath()
        let path = H5Plugins.searchPath
        for p in path { XCTAssertTrue(FileManager.default.fileExists(atPath: p), "searched folder \(p) does not exist") }
        for p in H5Plugins.debianFolders where FileManager.default.fileExists(atPath: p) {
            XCTAssertTrue(path.contains(p), "\(p) exists but is not searched (\(path))")
        }
    }

    /// gzip, LZ4, Blosc-LZ4 and bitshuffle-LZ4 chunks decode to the uncompressed copy,
    /// and ScanReader masks the uint32 gap value while binning the rest.
    func testCompressedFramesDecodeAndBin() throws {
        let folder = makeScratchFolder(self)
        try makeRawFixtures(folder)
        for name in ["gzip", "lz4", "blosc-lz4", "bitshuffle-lz4"] {
            let path = folder.appendingPathComponent("raw_\(name).h5").path
            let f = try H5File.open(path)
            let d = try f.openDataset("/entry/instrument/detector/data")
            XCTAssertEqual(d.chunkShape, [1, 40, 48], name)
            XCTAssertFalse(d.filters.isEmpty, name)
            XCTAssertEqual(d.storedType.description, "uint32")
            XCTAssertEqual(try d.read(as: UInt32.self), try f.readDataset("/entry/reference/data", as: UInt32.self), name)
            try d.close(); try f.close()

            let reader = try ScanReader(path: path, config: rawConfig(), scanShape: (2, 3))
            XCTAssertEqual(reader.sentinel, 4294967295)
            XCTAssertEqual(reader.geometry.order, .raster)
            XCTAssertEqual(reader.geometry.source, .assumed)
            let block = try reader.readBlock(1..<5)
            XCTAssertEqual(block.first, 1); XCTAssertEqual(block.count, 4)
            XCTAssertNil(block.monitor)
            let w = try XCTUnwrap(block.weights, name)
            for f in 0..<4 {
                for y in 0..<4 {
                    for x in 0..<4 {
                        let k = f * 16 + y * 4 + x
                        var sum = 0.0, masked = false
                        for i in 0..<2 { for j in 0..<2 {
                            let v = fixtureValue(1 + f, 2 + 2 * y + i, 1 + 2 * x + j)
                            if v == 4294967295 { masked = true } else { sum += v }
                        } }
                        XCTAssertEqual(w[k], masked ? 0 : 1, "\(name) weight frame \(f) (\(y), \(x))")
                        XCTAssertEqual(block.counts[k], masked ? 0 : Float(sum), "\(name) count frame \(f) (\(y), \(x))")
                    }
                }
            }
            XCTAssertEqual(w.filter { $0 == 0 }.count, 4 * 4, "\(name): model row 1 of each frame")
            try reader.close()
        }
    }

    /// A filter without a decoder (zstd) and a plugin that loads but cannot decode the
    /// variant (Debian 12's bitshuffle with zstd) are refused at open, naming the filter
    /// id, the dataset, the file and how to install a decoder.
    func testUndecodableFilterRefusedAtOpen() throws {
        let folder = makeScratchFolder(self)
        try makeRawFixtures(folder)
        let zstd = folder.appendingPathComponent("raw_zstd.h5").path
        if H5Plugins.canDecode(32015) {
            XCTAssertNoThrow(try ScanReader(path: zstd, config: rawConfig(), scanShape: (2, 3)), "a zstd decoder is present here")
        } else {
            do { _ = try ScanReader(path: zstd, config: rawConfig(), scanShape: (2, 3)) } catch { print("refused as expected: \(error)") }
            assertThrows(try ScanReader(path: zstd, config: rawConfig(), scanShape: (2, 3)),
                         containing: [zstd, "/entry/data/data", "zstd (id 32015)", "no decoder", "HDF5_PLUGIN_PATH"])
        }
        let bz = folder.appendingPathComponent("raw_bitshuffle-zstd.h5").path
        do {
            let r = try ScanReader(path: bz, config: rawConfig(), scanShape: (2, 3))
            // A decoder that handles bitshuffle+zstd is installed here: then it must decode right.
            let f = try H5File.open(bz)
            XCTAssertEqual(try f.readDataset("/entry/data/data", as: UInt32.self), try f.readDataset("/entry/reference/data", as: UInt32.self))
            try r.close()
        } catch {
            print("refused as expected: \(error)")
            for fragment in [bz, "/entry/data/data", "bitshuffle (id 32008, with zstd)", "to read it"] {
                XCTAssertTrue("\(error)".contains(fragment), "'\(error)' lacks '\(fragment)'")
            }
        }
    }
}

/// A raw uint16 scan of 2 rows × 3 frames (12×10 detector) taken as a serpentine: file
/// frame n holds 100·n + y + x, with a pixel_mask, a monitor and positioners as a beamline
/// control system writes them. `edit` may change any dataset before the file is closed.
private func writeRawScan(_ path: String, positions: (x: [Double], y: [Double])? = ([0, 1, 2, 2, 1, 0], [0, 0, 0, 5, 5, 5]),
                          monitor: [Double]? = [100, 200, 300, 400, 500, 600], maskShape: [Int] = [12, 10],
                          edit: ((inout [UInt16]) -> Void)? = nil) throws {
    var frames = [UInt16](repeating: 0, count: 6 * 12 * 10)
    for n in 0..<6 { for y in 0..<12 { for x in 0..<10 { frames[(n * 12 + y) * 10 + x] = UInt16(100 * n + y + x) } } }
    edit?(&frames)
    let f = try H5File.create(path)
    for g in ["/entry", "/entry/data", "/entry/instrument", "/entry/instrument/detector", "/entry/measurement", "/entry/instrument/monitor"] {
        try f.createGroup(g)
    }
    try f.setAttribute("NX_class", "NXdetector", on: "/entry/instrument/detector")
    let d = try f.createDataset("/entry/data/data", type: .uint16, shape: [6, 12, 10], chunks: [1, 12, 10], filters: [.gzip()])
    try frames.withUnsafeBufferPointer { try d.write($0) }
    try d.close()
    var mask = [UInt8](repeating: 0, count: maskShape.reduce(1, *))
    if maskShape == [12, 10] { mask[3 * 10 + 4] = 1 }  // raw (y 3, x 4): model pixel (0, 1)
    try f.writeDataset("/entry/instrument/detector/pixel_mask", mask, shape: maskShape)
    if let m = monitor { try f.writeDataset("/entry/instrument/monitor/data", m, shape: [m.count]) }
    if let p = positions {
        try f.writeDataset("/entry/measurement/samx", p.x, shape: [p.x.count], units: "um")
        try f.writeDataset("/entry/measurement/samy", p.y.map { $0 / 1000 }, shape: [p.y.count], units: "mm")
    }
    try f.close()
}

final class RawDetectorScanTests: XCTestCase {
    func testSerpentineMaskSentinelHotPixelsMonitor() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("raw.h5").path
        // File frame 4 has the uint16 sentinel at raw (y 8, x 6) → model (3, 2); file frame 1
        // a hot pixel at raw (y 2, x 1) → model (0, 0).
        try writeRawScan(path) { f in
            f[(4 * 12 + 8) * 10 + 6] = 65535
            f[(1 * 12 + 2) * 10 + 1] = 60000
        }
        let reader = try ScanReader(path: path, config: rawConfig(), options: ScanReadOptions(hotPixelThreshold: 50000))
        XCTAssertEqual(reader.geometry.order, .serpentine)
        XCTAssertEqual(reader.geometry.source, .positioners)
        XCTAssertEqual(reader.layout, ScanLayout(rows: 2, cols: 3, y: [0, 5], x: [0, 1, 2], axisUnits: "um"))
        XCTAssertEqual(reader.maskSource, "/entry/instrument/detector/pixel_mask")
        XCTAssertEqual(reader.sentinel, 65535)
        XCTAssertEqual(reader.modelMask.enumerated().filter { $0.element != 0 }.map(\.offset), [1])
        XCTAssertEqual(reader.monitorSource, "/entry/instrument/monitor/data")
        XCTAssertEqual(reader.monitorReference, 350)
        let block = try reader.readBlock(0..<6)
        // Map order: row 1 is file frames 5, 4, 3.
        let fileOf = [0, 1, 2, 5, 4, 3]
        XCTAssertEqual(block.monitor, fileOf.map { Double(100 * ($0 + 1)) / 350 })
        let w = try XCTUnwrap(block.weights)
        for k in 0..<6 {
            let n = fileOf[k]
            for y in 0..<4 {
                for x in 0..<4 {
                    var masked = y == 0 && x == 1  // pixel_mask
                    if n == 4 && y == 3 && x == 2 { masked = true }  // sentinel
                    if n == 1 && y == 0 && x == 0 { masked = true }  // hot pixel
                    var sum: Float = 0
                    for i in 0..<2 { for j in 0..<2 { sum += Float(100 * n + (2 + 2 * y + i) + (1 + 2 * x + j)) } }
                    XCTAssertEqual(w[k * 16 + y * 4 + x], masked ? 0 : 1, "map frame \(k) (\(y), \(x))")
                    XCTAssertEqual(block.counts[k * 16 + y * 4 + x], masked ? 0 : sum, "map frame \(k) (\(y), \(x))")
                }
            }
        }
        // A block cut inside the reversed row, and readFrames (no masking) in the same order.
        let part = try reader.readBlock(2..<5)
        XCTAssertEqual(part.counts, Array(block.counts[32..<80]))
        let raw = try reader.readFrames(3..<4)
        XCTAssertEqual(raw[0], Float(4 * (100 * 5) + 2 + 3 + 1 + 2 + 2 + 3 + 1 + 2))  // file frame 5, model (0, 0)
        // Declared order and no mask / monitor.
        let plain = try ScanReader(path: path, config: rawConfig(), options: ScanReadOptions(mask: .none, monitor: .none, scanOrder: .serpentine))
        XCTAssertEqual(plain.geometry.source, .declared)
        XCTAssertNil(plain.monitor)
        XCTAssertNil(plain.maskSource)
        XCTAssertEqual(try plain.readBlock(0..<1).weights, nil)
    }

    func testScatterWhenPositionsAreOffGrid() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("fly.h5").path
        try writeRawScan(path, positions: ([0, 1.4, 2, 2.1, 0.6, 0], [0, 0, 0, 5, 5, 5]))
        let reader = try ScanReader(path: path, config: rawConfig())
        XCTAssertEqual(reader.geometry.order, .scatter)
        XCTAssertEqual(reader.layout.rows, 1); XCTAssertEqual(reader.layout.cols, 6)
        XCTAssertEqual(reader.geometry.x, [0, 1.4, 2, 2.1, 0.6, 0])
        XCTAssertEqual(reader.geometry.y, [0, 0, 0, 5, 5, 5])
    }

    /// Every bad input is refused at open, naming the file, the dataset or key and the numbers.
    func testBadInputsRefusedAtOpen() throws {
        let folder = makeScratchFolder(self)
        func file(_ name: String) -> String { folder.appendingPathComponent(name).path }
        let c = rawConfig()
        try writeRawScan(file("ok.h5"))
        assertThrows(try ScanReader(path: file("ok.h5"), dataset: "/entry/data/frames", config: c),
                     containing: ["ok.h5", "/entry/data/frames", "not found", "/entry/data/data"])
        try writeRawScan(file("mask.h5"), maskShape: [10, 12])
        assertThrows(try ScanReader(path: file("mask.h5"), config: c),
                     containing: ["mask.h5", "/entry/instrument/detector/pixel_mask", "[10, 12]", "12×10"])
        try NpyFile.write([Float](repeating: 0, count: 12 * 12), shape: [12, 12], to: file("m.npy"))
        assertThrows(try ScanReader(path: file("ok.h5"), config: c, options: ScanReadOptions(mask: .parse(file("m.npy")))),
                     containing: ["m.npy", "[12, 12]", "12×10"])
        try writeRawScan(file("mon5.h5"), monitor: [1, 2, 3, 4, 5])
        assertThrows(try ScanReader(path: file("mon5.h5"), config: c),
                     containing: ["mon5.h5", "/entry/instrument/monitor/data", "5 values", "6 frames", "--monitor none"])
        try writeRawScan(file("mon0.h5"), monitor: [1, 2, 0, 4, .nan, 6])
        assertThrows(try ScanReader(path: file("mon0.h5"), config: c),
                     containing: ["mon0.h5", "/entry/instrument/monitor/data", "2 zero, negative or non-finite", "frame 2"])
        try writeRawScan(file("pos.h5"), positions: ([0, 1, 2, 3, 4], [0, 0, 0, 5, 5]))
        assertThrows(try ScanReader(path: file("pos.h5"), config: c),
                     containing: ["pos.h5", "/entry/measurement/samx", "5 values", "6 frames"])
        assertThrows(try ScanReader(path: file("ok.h5"), config: c, options: ScanReadOptions(scanOrder: .raster)),
                     containing: ["ok.h5", "raster", "serpentine"])
        assertThrows(try ScanReader(path: file("ok.h5"), config: c, scanShape: (3, 2)),
                     containing: ["ok.h5", "2 rows of 3", "3×2"])
        assertThrows(try ScanReader(path: file("ok.h5"), config: c, options: ScanReadOptions(roi: DetectorROI(x: 4, y: 6, width: 8, height: 8))),
                     containing: ["ok.h5", "x 4..<12", "y 6..<14", "off the frame", "12×10"])
        assertThrows(try ScanReader(path: file("ok.h5"), config: c, options: ScanReadOptions(roi: DetectorROI(x: 0, y: 0, width: 6, height: 6))),
                     containing: ["ok.h5", "must be 8×8"])
        // A ROI on a module gap: the sentinel fills rows 0–7 of every frame.
        try writeRawScan(file("gap.h5")) { f in for n in 0..<6 { for y in 0..<8 { for x in 0..<10 { f[(n * 12 + y) * 10 + x] = 65535 } } } }
        assertThrows(try ScanReader(path: file("gap.h5"), config: c),
                     containing: ["gap.h5", "/entry/data/data", "gap", "of its 16 model pixels", "65535"])
        assertThrows(try ScanReadOptions.parseROI("1,2,3"), containing: ["roi", "X,Y,W,H"])
        XCTAssertEqual(try ScanReadOptions.parseROI("1, 2,30,40"), DetectorROI(x: 1, y: 2, width: 30, height: 40))
    }
}

final class ResultScanSummaryTests: XCTestCase {
    private func provenance() -> Provenance {
        Provenance(version: "t", date: "t", method: "t", commandLine: "t", configJSON: "{}", inputs: [], modelID: "")
    }

    /// The result file records the mask, ROI, monitor and order of a serpentine raw scan,
    /// and the goodness of fit; the maps keep their µm axes.
    func testMaskMonitorOrderAndGoodnessOfFitAreRecorded() throws {
        let folder = makeScratchFolder(self)
        let scan = folder.appendingPathComponent("raw.h5").path, out = folder.appendingPathComponent("maps.h5").path
        try writeRawScan(scan)
        let reader = try ScanReader(path: scan, config: rawConfig())
        var r = FrameResults(frameRange: 0..<6)
        r.strain = (0..<6).map { Double($0) }; r.valid = [1, 1, 1, 1, 0, 1]
        r.goodnessOfFit = [1, 1.1, 0.9, 1, 40, 1]
        try ResultMapsWriter.write(path: out, results: r, layout: reader.layout, provenance: provenance(), scan: reader.summary)
        let back = try ResultMapsReader.read(path: out)
        XCTAssertEqual(back.results.goodnessOfFit, r.goodnessOfFit)
        XCTAssertEqual(back.layout.x, [0, 1, 2]); XCTAssertEqual(back.layout.axisUnits, "um")
        let f = try H5File.open(out)
        XCTAssertEqual(try f.readDataset("/entry/instrument/detector/pixel_mask", as: UInt8.self), reader.modelMask)
        XCTAssertEqual(try f.readIntAttribute("masked_model_pixels", on: "/entry/instrument/detector/pixel_mask"), 1)
        XCTAssertEqual(try f.readIntAttribute("masked_raw_pixels", on: "/entry/instrument/detector/pixel_mask"), 1)
        XCTAssertEqual(try f.readStringAttribute("source", on: "/entry/instrument/detector/pixel_mask"), "/entry/instrument/detector/pixel_mask")
        XCTAssertEqual(try f.readDataset("/entry/instrument/detector/roi", as: Int64.self), [1, 2, 8, 8])
        XCTAssertEqual(try f.readDataset("/entry/monitor/data", as: Double.self), [100, 200, 300, 600, 500, 400].map { $0 / 350 })
        XCTAssertEqual(try f.readDoubleAttribute("reference_level", on: "/entry/monitor/data"), 350)
        XCTAssertEqual(try f.readString("/entry/scan_order"), "serpentine")
        XCTAssertEqual(try f.readStringAttribute("source", on: "/entry/scan_order"), "positioners")
        XCTAssertFalse(f.exists("/entry/scatter"))
    }

    /// A scatter scan gets 1-D maps with each frame's position (silx's scatter NXdata) and
    /// is the entry's default plot.
    func testScatterScanIsWrittenWithPositions() throws {
        let folder = makeScratchFolder(self)
        let scan = folder.appendingPathComponent("fly.h5").path, out = folder.appendingPathComponent("maps.h5").path
        try writeRawScan(scan, positions: ([0, 1.4, 2, 2.1, 0.6, 0], [0, 0, 0, 5, 5, 5]))
        let reader = try ScanReader(path: scan, config: rawConfig())
        var r = FrameResults(frameRange: 0..<6)
        r.strain = (0..<6).map { Double($0) * 1e-3 }; r.valid = [1, 1, 1, 1, 1, 1]
        try ResultMapsWriter.write(path: out, results: r, layout: reader.layout, provenance: provenance(), scan: reader.summary)
        let f = try H5File.open(out)
        XCTAssertEqual(try f.readStringAttribute("default", on: "/entry"), "scatter")
        XCTAssertEqual(try f.readStringArrayAttribute("axes", on: "/entry/scatter"), ["x", "y"])
        XCTAssertEqual(try f.readDataset("/entry/scatter/strain", as: Double.self), r.strain)
        XCTAssertEqual(try f.readDataset("/entry/scatter/x", as: Double.self), [0, 1.4, 2, 2.1, 0.6, 0])
        XCTAssertEqual(try f.readDataset("/entry/scatter/y", as: Double.self), [0, 0, 0, 5, 5, 5])
        XCTAssertEqual(try f.readString("/entry/scan_order"), "scatter")
    }
}

final class RawDetectorDTypeTests: XCTestCase {
    /// Each dtype's sentinel (uint8 255, int32 2³¹ − 1), negative values (int32 −1) and
    /// NaN/∞ (float32) are excluded by readBlock; readFrames passes values on as stored.
    func testSentinelsNegativeAndNaNAreExcluded() throws {
        let folder = makeScratchFolder(self)
        func check<T: H5Numeric>(_ name: String, _ bad: [T], _ fill: T, type: H5ElementType, expectSentinel: Double?) throws {
            let path = folder.appendingPathComponent("\(name).h5").path
            var frames = [T](repeating: fill, count: 2 * 12 * 10)
            // Frame 1: bad values at raw (y 2, x 1), (y 4, x 3), (y 9, x 8) → model (0,0), (1,1), (3,3).
            for (v, (y, x)) in zip(bad, [(2, 1), (4, 3), (9, 8)]) { frames[(12 + y) * 10 + x] = v }
            let f = try H5File.create(path)
            try f.createGroup("/entry"); try f.createGroup("/entry/data")
            let d = try f.createDataset("/entry/data/data", type: type, shape: [2, 12, 10])
            try frames.withUnsafeBufferPointer { try d.write($0) }
            try d.close(); try f.close()
            let reader = try ScanReader(path: path, config: rawConfig(), scanShape: (1, 2))
            XCTAssertEqual(reader.sentinel, expectSentinel, name)
            let block = try reader.readBlock(0..<2)
            let w = try XCTUnwrap(block.weights, name)
            let zeros = w.indices.filter { w[$0] == 0 }
            XCTAssertEqual(zeros, [16 + 0, 16 + 5, 16 + 15].prefix(bad.count).map { $0 }, name)
            XCTAssert(zeros.allSatisfy { block.counts[$0] == 0 }, name)
            XCTAssert(block.counts.allSatisfy { $0.isFinite && $0 >= 0 }, name)
            XCTAssertFalse(try reader.readFrames(1..<2).allSatisfy { $0.isFinite && $0 >= 0 && $0 < 100 }, "\(name): readFrames keeps stored values")
        }
        try check("u8", [UInt8(255)], UInt8(3), type: .uint8, expectSentinel: 255)
        try check("i32", [Int32(-1), Int32.max], Int32(3), type: .int32, expectSentinel: 2147483647)
        try check("f32", [Float.nan, -2, .infinity], Float(3), type: .float32, expectSentinel: nil)
    }
}

/// Inspect's suggested ROI (`inspectScan`): centred on the intensity centroid of the summed
/// frames, with masked pixels filled from their neighbours.
final class InspectSuggestedROITests: XCTestCase {
    /// A round blob centred on pixel-centre (19.5, 21.5) of a 40×40 uint32 detector, crossed by
    /// 2-pixel gaps (the dtype's sentinel) just right of and below its centre, as Eiger chip gaps
    /// cross a pattern: the 16×16 ROI centred on it starts at (12, 14). Left out of the centroid,
    /// the gaps pulled it up and left, and the old centring (round(c) − size/2) gave (11, 13).
    func testROIIsCentredOnTheBlobDespiteAGapThroughIt() throws {
        let folder = makeScratchFolder(self)
        var c = DonutConfig.srio3LSAT002
        c.model.frameSize = 8; c.instrument.binning = 2   // a 16×16 raw ROI
        let path = folder.appendingPathComponent("blob.h5").path
        let h = 40, w = 40, frames = 4
        var values = [UInt32](repeating: 0, count: frames * h * w)
        for k in 0..<frames {
            for y in 0..<h {
                for x in 0..<w {
                    let r2 = (Double(x) - 19.5) * (Double(x) - 19.5) + (Double(y) - 21.5) * (Double(y) - 21.5)
                    let gap = x == 20 || x == 21 || y == 22 || y == 23
                    values[(k * h + y) * w + x] = gap ? .max : UInt32((1000 * exp(-r2 / 18)).rounded())
                }
            }
        }
        let f = try H5File.create(path)
        try f.createGroup("/entry"); try f.createGroup("/entry/data")
        try f.writeDataset("/entry/data/data", values, shape: [frames, h, w])
        try f.close()
        let i = try inspectScan(path: path, config: c)
        XCTAssertEqual(i.suggestedROI, DetectorROI(x: 12, y: 14, width: 16, height: 16))
    }
}
