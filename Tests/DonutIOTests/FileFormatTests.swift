import XCTest
import DonutCore
import DonutIO
import DonutMPI
import DonutPhysics

private func provenance(_ method: String = "test", inputs: [Provenance.Input] = []) -> Provenance {
    Provenance(version: "0.0-test", date: "2025-01-01T00:00:00Z", method: method, commandLine: "donut test",
               configJSON: "{\"model\": {\"frame_size\": 4}}", inputs: inputs, modelID: "none")
}

/// Small frames so the tests stay fast: 4×4 model frames; raw frames use an 8×8 ROI at
/// (x 1, y 2) binned by 2.
private func smallConfig() -> DonutConfig {
    var c = DonutConfig.srio3LSAT002
    c.model.frameSize = 4
    c.instrument.roi = DetectorROI(x: 1, y: 2, width: 8, height: 8)
    c.instrument.binning = 2
    return c
}

/// Deterministic pseudo-random floats (LCG), with a NaN and a negative value mixed in.
private func frames(_ count: Int, seed: UInt64 = 1) -> [Float] {
    var s = seed
    var out = (0..<count).map { _ -> Float in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return Float(s >> 40) / Float(1 << 24) * 10
    }
    if count > 3 { out[1] = .nan; out[3] = -2 }
    return out
}

final class ScanFileTests: XCTestCase {
    func testScanRoundTripRangesChecksumGroundTruth() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("scan.h5").path
        let layout = ScanLayout(rows: 3, cols: 5, y: [0, 0.5, 1], x: [0, 0.1, 0.2, 0.3, 0.4])
        let data = frames(15 * 16)
        let gt: [String: [Double]] = ["strain": (0..<15).map { Double($0) * 1e-4 }, "tilt_lr": (0..<15).map { Double($0) }]
        try ScanWriter.write(path: path, frames: data, layout: layout, frameSize: 4, groundTruth: gt, provenance: provenance())
        let reader = try ScanReader(path: path, config: smallConfig())
        XCTAssertEqual(reader.layout, layout)
        XCTAssertEqual(reader.layout.axisUnits, "um")
        assertBitsEqual(try reader.readFrames(0..<15), data, "all frames")
        assertBitsEqual(try reader.readFrames(4..<11), Array(data[64..<176]), "frames 4..<11")
        XCTAssertEqual(try reader.readFrames(7..<7), [])
        XCTAssertEqual(try reader.groundTruth(), gt)
        XCTAssertEqual(reader.configJSON, provenance().configJSON)
        // The checksum of any split sums to the checksum of the whole.
        let whole = try reader.frameChecksum(0..<15)
        for cuts in [[0, 15], [0, 7, 15], [0, 1, 1, 9, 15], [0, 3, 6, 9, 12, 15]] {
            var sum: UInt64 = 0
            for (a, b) in zip(cuts, cuts.dropFirst()) { sum &+= try reader.frameChecksum(a..<b) }
            XCTAssertEqual(sum, whole, "split \(cuts)")
        }
        XCTAssertNotEqual(try reader.frameChecksum(0..<1), try reader.frameChecksum(1..<2))
        XCTAssertEqual(try reader.globalFrameChecksum(0..<15, comm: Communicator.world), whole)
        XCTAssertTrue(ScanReader.checksumString(whole).hasPrefix("fnv1a64sum:"))
        XCTAssertEqual(ScanReader.checksumString(1), "fnv1a64sum:0000000000000001")
        assertThrows(try reader.readFrames(10..<16), containing: ["scan.h5", "/entry/data/data", "outside"])
        try reader.close()
        // Parallel open on one rank gives the same frames.
        let par = try ScanReader(path: path, config: smallConfig(), comm: Communicator.world)
        assertBitsEqual(try par.readFrames(2..<9), Array(data[32..<144]), "parallel reader")
        try par.close()
        // No temporary files left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["scan.h5"])
    }

    /// Raw (N, 12, 10) frames: crop to the ROI and sum-bin by 2, checked against a direct loop.
    func testRawFramesAreCroppedAndBinned() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("raw.h5").path
        let (n, h, w) = (6, 12, 10)
        let raw = (0..<n * h * w).map { Float($0 % 97) + 0.25 }
        let f = try H5File.create(path)
        try f.writeDataset("/frames", raw, shape: [n, h, w])
        try f.close()
        func expected(_ frame: Int) -> [Float] {
            var out = [Float](repeating: 0, count: 16)
            for y in 0..<4 { for x in 0..<4 { for i in 0..<2 { for j in 0..<2 {
                out[y * 4 + x] += raw[frame * h * w + (2 + y * 2 + i) * w + (1 + x * 2 + j)]
            } } } }
            return out
        }
        let reader = try ScanReader(path: path, dataset: "/frames", config: smallConfig(), scanShape: (2, 3))
        XCTAssertEqual(reader.layout.rows, 2); XCTAssertEqual(reader.layout.cols, 3)
        XCTAssertEqual(reader.layout.axisUnits, "")
        // Sums of four values that are multiples of 0.25 below 100: exact in Float.
        assertBitsEqual(try reader.readFrames(1..<4), (1..<4).flatMap(expected), "binned frames")
        XCTAssertNil(try reader.groundTruth())
        // The same through .npy.
        let npy = folder.appendingPathComponent("raw.npy").path
        try NpyFile.write(raw, shape: [n, h, w], to: npy)
        let npyReader = try ScanReader(path: npy, config: smallConfig(), scanShape: (2, 3))
        assertBitsEqual(try npyReader.readFrames(2..<6), (2..<6).flatMap(expected), "binned .npy frames")
        assertThrows(try ScanReader(path: path, dataset: "/frames", config: smallConfig()),
                     containing: ["raw.h5", "dataset '/frames'", "need the scan shape"])
        assertThrows(try ScanReader(path: path, dataset: "/frames", config: smallConfig(), scanShape: (2, 2)),
                     containing: ["raw.h5", "dataset '/frames'", "holds 6"])
    }

    func testNpyScanAtModelSize() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("scan.npy").path
        let data = frames(2 * 3 * 16)
        try NpyFile.write(data, shape: [2, 3, 4, 4], to: path)
        let reader = try ScanReader(path: path, config: smallConfig())
        XCTAssertEqual(reader.layout.frameCount, 6)
        assertBitsEqual(try reader.readFrames(0..<6), data, ".npy frames")
        assertBitsEqual(try reader.readFrames(5..<6), Array(data[80..<96]), ".npy frame 5")
    }

    func testScanErrors() throws {
        let folder = makeScratchFolder(self)
        let config = smallConfig()
        assertThrows(try ScanReader(path: folder.appendingPathComponent("none.h5").path, config: config),
                     containing: ["none.h5", "does not exist"])
        let path = folder.appendingPathComponent("scan.h5").path
        let f = try H5File.create(path)
        try f.createGroup("/entry"); try f.createGroup("/entry/data")
        try f.writeDataset("/entry/data/data", [Float](repeating: 0, count: 64 * 64), shape: [64, 64])
        try f.writeDataset("/entry/data/odd", [Float](repeating: 0, count: 2 * 2 * 5 * 5), shape: [2, 2, 5, 5])
        try f.close()
        assertThrows(try ScanReader(path: path, config: config),
                     containing: ["file '\(path)', dataset '/entry/data/data': expected 4-D (rows, cols, H, W) or 3-D (N, H, W), got 2-D (64, 64)"])
        assertThrows(try ScanReader(path: path, dataset: "/entry/data/odd", config: config),
                     containing: ["scan.h5", "dataset '/entry/data/odd'", "frames are 5×5", "instrument.roi"])
        assertThrows(try ScanReader(path: path, dataset: "/entry/data/missing", config: config),
                     containing: ["scan.h5", "dataset '/entry/data/missing'", "not found"])
    }

    func testNoOverwriteWithoutForce() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("scan.h5").path
        let layout = ScanLayout(rows: 1, cols: 2)
        try ScanWriter.write(path: path, frames: frames(32), layout: layout, frameSize: 4, provenance: provenance())
        assertThrows(try ScanWriter.write(path: path, frames: frames(32, seed: 2), layout: layout, frameSize: 4, provenance: provenance()),
                     containing: ["scan.h5", "exists; pass --force to overwrite"])
        assertBitsEqual(try ScanReader(path: path, config: smallConfig()).readFrames(0..<2), frames(32), "untouched")
        try ScanWriter.write(path: path, frames: frames(32, seed: 2), layout: layout, frameSize: 4, provenance: provenance(), force: true)
        assertBitsEqual(try ScanReader(path: path, config: smallConfig()).readFrames(0..<2), frames(32, seed: 2), "overwritten")
        assertThrows(try ScanWriter.write(path: folder.appendingPathComponent("no/such/scan.h5").path, frames: frames(32),
                                          layout: layout, frameSize: 4, provenance: provenance()),
                     containing: ["scan.h5", "output folder", "does not exist"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), ["scan.h5"])
    }
}

final class LibraryFileTests: XCTestCase {
    private func roundTrip(grid: LibraryGrid, comm: Communicator?, file: String) throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent(file).path
        let per = 16
        let all = frames(grid.count * per, seed: 7)
        let writer = try LibraryWriter(path: path, grid: grid, frameSize: 4, provenance: provenance("library"), comm: comm)
        // Slabs in uneven pieces, including an empty one (what a rank without entries passes).
        let cuts = [0, 5, 5, grid.count / 2 + 1, grid.count]
        for (a, b) in zip(cuts, cuts.dropFirst()) {
            try all[a * per ..< b * per].withUnsafeBufferPointer { try writer.writeSlab(entries: a..<b, patterns: $0) }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "published before finish()")
        try writer.finish()
        let reader = try LibraryReader(path: path, comm: comm)
        XCTAssertEqual(reader.grid, grid)
        XCTAssertEqual(reader.frameSize, 4)
        XCTAssertEqual(reader.configJSON, provenance().configJSON)
        XCTAssertEqual(reader.provenance?.method, "library")
        // The round trip of arbitrary bits (NaN, negatives): the content check is off here
        // (LibraryContentTests checks it).
        assertBitsEqual(try reader.readSlab(0..<grid.count, checkEntries: false), all, "\(file) all")
        assertBitsEqual(try reader.readSlab(3..<9, checkEntries: false), Array(all[3 * per ..< 9 * per]), "\(file) 3..<9")
        assertThrows(try reader.readSlab(0..<grid.count), containing: [file, "library entry 0", "holds nan"])
        try reader.close()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [file])
    }

    func testRoundTripWithoutThicknessAxis() throws {
        var c = smallConfig()
        c.library = LibrarySteps(strain: 3, tiltLR: 2, tiltUD: 5, thickness: 1)
        try roundTrip(grid: LibraryGrid(config: c), comm: nil, file: "lib.h5")
    }

    func testRoundTripWithThicknessAxisParallelDriver() throws {
        var c = smallConfig()
        c.library = LibrarySteps(strain: 2, tiltLR: 3, tiltUD: 2, thickness: 3)
        let grid = LibraryGrid(config: c)
        XCTAssertEqual(grid.shape, [2, 3, 2, 3])
        try roundTrip(grid: grid, comm: Communicator.world, file: "lib4.h5")
    }

    func testLibraryErrors() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("bad.h5").path
        let f = try H5File.create(path)
        try f.createGroup("/entry"); try f.createGroup("/entry/library")
        try f.close()
        assertThrows(try LibraryReader(path: path), containing: ["bad.h5", "dataset '/entry/library/patterns'", "not found"])
        let wrong = folder.appendingPathComponent("axes.h5").path
        let g = try H5File.create(wrong)
        try g.createGroup("/entry"); try g.createGroup("/entry/library")
        try g.writeDataset("/entry/library/patterns", [Float](repeating: 0, count: 2 * 2 * 2 * 16), shape: [2, 2, 2, 4, 4])
        try g.writeDataset("/entry/library/strain", [0.0, 1, 2], shape: [3])
        try g.close()
        assertThrows(try LibraryReader(path: wrong),
                     containing: ["axes.h5", "dataset '/entry/library/strain'", "has 3 values", "has 2 along axis 0"])
        let flat = folder.appendingPathComponent("flat.h5").path
        let h = try H5File.create(flat)
        try h.createGroup("/entry"); try h.createGroup("/entry/library")
        try h.writeDataset("/entry/library/patterns", [Float](repeating: 0, count: 16), shape: [4, 4])
        try h.close()
        assertThrows(try LibraryReader(path: flat), containing: ["flat.h5", "/entry/library/patterns", "got 2-D"])
    }
}

final class ResultMapsTests: XCTestCase {
    private func sampleResults(rows: Int, cols: Int) -> FrameResults {
        var r = FrameResults(frameRange: 0 ..< rows * cols)
        let n = rows * cols
        r.strain = (0..<n).map { Double($0) * 1e-4 }
        r.strain[2] = .nan
        r.tiltLRDeg = (0..<n).map { Double($0) * 0.01 - 0.05 }
        r.tiltUDDeg = (0..<n).map { -Double($0) * 0.003 }
        r.thicknessA = (0..<n).map { 100 + Double($0) }
        r.residual = (0..<n).map { Double($0) / 7 }
        r.valid = (0..<n).map { $0 == 2 ? 0 : 1 }
        r.sigmas = ["strain_sigma": (0..<n).map { Double($0) * 1e-6 }]
        return r
    }

    /// Takes frames `range` of full results, as one rank would hold them.
    private func block(_ r: FrameResults, _ range: Range<Int>) -> FrameResults {
        var b = FrameResults(frameRange: range)
        b.strain = Array(r.strain[range]); b.tiltLRDeg = Array(r.tiltLRDeg[range]); b.tiltUDDeg = Array(r.tiltUDDeg[range])
        b.thicknessA = r.thicknessA.map { Array($0[range]) }; b.residual = r.residual.map { Array($0[range]) }
        b.valid = Array(r.valid[range]); b.sigmas = r.sigmas.mapValues { Array($0[range]) }
        return b
    }

    func testRoundTripAttributesAndH5Dump() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("maps.h5").path
        let layout = ScanLayout(rows: 3, cols: 4, y: [0, 1, 2], x: [0, 0.5, 1, 1.5])
        let full = sampleResults(rows: 3, cols: 4)
        let world = Communicator.world
        let mine = shardRange(count: 12, parts: world.size, index: world.rank)
        let prov = provenance("donut", inputs: [.init(path: "scan.h5", dataset: "/entry/data/data", checksum: "fnv1a64sum:00ff")])
        try ResultMapsWriter.write(path: path, results: block(full, mine), layout: layout, provenance: prov, comm: world)
        let maps = try ResultMapsReader.read(path: path)
        XCTAssertEqual(maps.layout, layout)
        // Bit-exact round trip (NaN included), so compare bits, not values with a tolerance.
        assertBitsEqual(maps.results.strain, full.strain, "strain")
        assertBitsEqual(maps.results.tiltLRDeg, full.tiltLRDeg, "tilt_lr")
        assertBitsEqual(maps.results.tiltUDDeg, full.tiltUDDeg, "tilt_ud")
        assertBitsEqual(maps.results.thicknessA ?? [], full.thicknessA!, "thickness")
        assertBitsEqual(maps.results.residual ?? [], full.residual!, "residual")
        assertBitsEqual(maps.results.sigmas["strain_sigma"] ?? [], full.sigmas["strain_sigma"]!, "strain_sigma")
        XCTAssertEqual(maps.results.valid, full.valid)
        XCTAssertEqual(maps.provenance, prov)
        XCTAssertEqual(maps.signal, "strain")
        XCTAssertEqual(maps.auxiliarySignals, ["tilt_lr", "tilt_ud", "thickness", "residual", "valid", "strain_sigma"])

        let f = try H5File.open(path)
        XCTAssertEqual(try f.readStringAttribute("default", on: "/"), "entry")
        XCTAssertEqual(try f.readStringAttribute("default", on: "/entry"), "result")
        XCTAssertEqual(try f.readStringAttribute("NX_class", on: "/entry/result"), "NXdata")
        XCTAssertEqual(try f.readStringArrayAttribute("axes", on: "/entry/result"), ["y", "x"])
        XCTAssertEqual(try f.readStringAttribute("units", on: "/entry/result/tilt_lr"), "deg")
        XCTAssertEqual(try f.readStringAttribute("units", on: "/entry/result/thickness"), "angstrom")
        XCTAssertEqual(try f.readStringAttribute("units", on: "/entry/result/y"), "um")
        XCTAssertEqual(try f.readStringAttribute("interpretation", on: "/entry/result/valid"), "image")
        XCTAssertEqual(try f.readStringAttribute("NX_class", on: "/entry/process"), "NXprocess")
        XCTAssertEqual(try f.readString("/entry/process/config/type"), "application/json")
        XCTAssertEqual(try f.openDataset("/entry/result/strain").shape, [3, 4])
        XCTAssertEqual(try f.openDataset("/entry/result/valid").typeDescription, "uint8")
        try f.close()

        // h5dump -H (hdf5-tools) sees the NeXus attributes: an independent reader of the file.
        let dump = Process()
        dump.executableURL = URL(fileURLWithPath: "/usr/bin/h5dump")
        dump.arguments = ["-H", path]
        let pipe = Pipe()
        dump.standardOutput = pipe
        try dump.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        dump.waitUntilExit()
        XCTAssertEqual(dump.terminationStatus, 0, text)
        // -H prints headers: attribute names, types and shapes (not their values).
        for fragment in ["ATTRIBUTE \"default\"", "ATTRIBUTE \"signal\"", "ATTRIBUTE \"auxiliary_signals\"",
                         "ATTRIBUTE \"axes\"", "ATTRIBUTE \"interpretation\"", "ATTRIBUTE \"units\"",
                         "ATTRIBUTE \"NX_class\"", "GROUP \"result\"", "GROUP \"process\"", "GROUP \"config\"",
                         "DATASET \"tilt_ud\"", "DATASET \"strain_sigma\"", "H5T_IEEE_F64LE", "H5T_STD_U8LE",
                         "SIMPLE { ( 3, 4 ) / ( 3, 4 ) }", "CSET H5T_CSET_UTF8"] {
            XCTAssertTrue(text.contains(fragment), "h5dump -H lacks \(fragment):\n\(text)")
        }
    }

    func testOnlyRequiredMapsAndIndexAxes() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("min.h5").path
        var r = FrameResults(frameRange: 0..<6)
        r.strain = [1, 2, 3, 4, 5, 6]; r.tiltLRDeg = r.strain; r.tiltUDDeg = r.strain
        try ResultMapsWriter.write(path: path, results: r, layout: ScanLayout(rows: 2, cols: 3), provenance: provenance())
        let maps = try ResultMapsReader.read(path: path)
        XCTAssertNil(maps.results.thicknessA)
        XCTAssertNil(maps.results.residual)
        XCTAssertEqual(maps.results.sigmas, [:])
        XCTAssertEqual(maps.auxiliarySignals, ["tilt_lr", "tilt_ud", "valid"])
        XCTAssertEqual(maps.layout.axisUnits, "")
        XCTAssertEqual(maps.layout.x, [0, 1, 2])
        assertThrows(try ResultMapsWriter.write(path: path, results: r, layout: ScanLayout(rows: 2, cols: 3), provenance: provenance()),
                     containing: ["min.h5", "exists; pass --force to overwrite"])
    }

    func testResultErrors() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("bad.h5").path
        var r = sampleResults(rows: 2, cols: 2)
        r.sigmas["weird_sigma"] = [0, 0, 0, 0]
        assertThrows(try ResultMapsWriter.write(path: path, results: r, layout: ScanLayout(rows: 2, cols: 2), provenance: provenance()),
                     containing: ["bad.h5", "unknown sigma map 'weird_sigma'"])
        var short = sampleResults(rows: 2, cols: 2)
        short.residual = [1]
        assertThrows(try ResultMapsWriter.write(path: path, results: short, layout: ScanLayout(rows: 2, cols: 2), provenance: provenance()),
                     containing: ["bad.h5", "map 'residual' has 1 values for 4 frames"])
        let part = block(sampleResults(rows: 2, cols: 2), 0..<3)
        assertThrows(try ResultMapsWriter.write(path: path, results: part, layout: ScanLayout(rows: 2, cols: 2), provenance: provenance()),
                     containing: ["bad.h5", "cover 3 frames, the scan has 4"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder.path), [])
    }
}

final class NpyTests: XCTestCase {
    func testReferencePatterns() throws {
        // Written by numpy (Tests/Fixtures/README.md), so the reader is checked on a file it did not write.
        let npy = try NpyFile(path: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/reference/box_patterns.npy").path)
        XCTAssertEqual(npy.dtype, .float64)
        XCTAssertEqual(npy.shape, [24, 64, 64])
        // Element [0, 0, 0] is 0 (dark corner); the first non-zero one, flat index 348, and
        // the brightest, index 86742, as numpy reads them (repr of float64: exact).
        let all = try npy.readDoubles()
        XCTAssertEqual(all.count, 24 * 64 * 64)
        XCTAssertEqual(all[0], 0)
        XCTAssertEqual(all.firstIndex { $0 > 0 }, 348)
        XCTAssertEqual(all[348], 230.6198083742508)
        XCTAssertEqual(all.firstIndex(of: all.max()!), 86742)
        XCTAssertEqual(all[86742], 4530.747156264362)
        XCTAssertEqual(try npy.readDoubles(348..<349), [230.6198083742508])
        XCTAssertGreaterThan(all[0 ..< 64 * 64].max()!, 0, "first pattern is not empty")
        XCTAssertTrue(all.allSatisfy { $0.isFinite && $0 >= 0 }, "intensities are finite and non-negative")
    }

    func testRoundTripsAndErrors() throws {
        let folder = makeScratchFolder(self)
        let p = { folder.appendingPathComponent($0).path }
        let f: [Float] = [1, -0, .nan, .infinity, 3.25, .leastNonzeroMagnitude]
        try NpyFile.write(f, shape: [2, 3], to: p("f.npy"))
        let fr = try NpyFile(path: p("f.npy"))
        XCTAssertEqual(fr.shape, [2, 3]); XCTAssertEqual(fr.dtype, .float32)
        XCTAssertEqual(fr.dataOffset % 64, 0)
        assertBitsEqual(try fr.readFloats(), f, "<f4")
        let d: [Double] = [.pi, -1e300, .nan]
        try NpyFile.write(d, shape: [3], to: p("d.npy"))
        assertBitsEqual(try NpyFile(path: p("d.npy")).readDoubles(), d, "<f8")
        try NpyFile.write([UInt8](arrayLiteral: 0, 7, 255), shape: [3, 1], to: p("u.npy"))
        XCTAssertEqual(try NpyFile(path: p("u.npy")).readDoubles(), [0, 7, 255])
        try NpyFile.write([Int64](arrayLiteral: -5, 1 << 40), shape: [2], to: p("i.npy"))
        XCTAssertEqual(try NpyFile(path: p("i.npy")).readDoubles(), [-5, 1099511627776])
        try NpyFile.write([Float](), shape: [0, 4], to: p("empty.npy"))
        XCTAssertEqual(try NpyFile(path: p("empty.npy")).readFloats(), [])

        func raw(_ header: String, version: UInt8 = 1, data: [UInt8] = [], to name: String) throws {
            var bytes: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
            let h = Array(header.utf8)
            bytes += version == 1 ? [UInt8(h.count & 0xFF), UInt8(h.count >> 8)] : [UInt8(h.count & 0xFF), UInt8(h.count >> 8), 0, 0]
            try Data(bytes + h + data).write(to: URL(fileURLWithPath: p(name)))
        }
        // Version 2 header.
        try raw("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }\n", version: 2,
                data: Array(withUnsafeBytes(of: 2.5.bitPattern.littleEndian) { Array($0) }), to: "v2.npy")
        XCTAssertEqual(try NpyFile(path: p("v2.npy")).readDoubles(), [2.5])
        try raw("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }\n", data: [UInt8](repeating: 0, count: 32), to: "fortran.npy")
        assertThrows(try NpyFile(path: p("fortran.npy")), containing: ["fortran.npy", "Fortran order"])
        try raw("{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }\n", data: [UInt8](repeating: 0, count: 8), to: "big.npy")
        assertThrows(try NpyFile(path: p("big.npy")), containing: ["big.npy", "unsupported dtype '>f8'"])
        try raw("{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }\n", data: [UInt8](repeating: 0, count: 8), to: "short.npy")
        assertThrows(try NpyFile(path: p("short.npy")), containing: ["short.npy", "truncated"])
        try Data("not numpy".utf8).write(to: URL(fileURLWithPath: p("text.npy")))
        assertThrows(try NpyFile(path: p("text.npy")), containing: ["text.npy", "not a .npy file"])
        assertThrows(try NpyFile(path: p("missing.npy")), containing: ["missing.npy", "does not exist"])
    }
}
