import XCTest
import DonutCore
import DonutIO
import DonutPhysics

/// Issue 17 at the library level: file identity, special files, stale temporary files,
/// nesting depth, sizes, and the content checks of models and libraries.
final class FileIdentityTests: XCTestCase {
    /// The same file under other spellings (./, .., symlink, hard link) is recognised;
    /// another file is not; a name not yet written is matched through its folder.
    func testIdentityFollowsLinksAndSpellings() throws {
        let dir = makeScratchFolder(self)
        let a = dir.appendingPathComponent("a.h5").path, b = dir.appendingPathComponent("b.h5").path
        try Data("a".utf8).write(to: URL(fileURLWithPath: a))
        try Data("b".utf8).write(to: URL(fileURLWithPath: b))
        try FileManager.default.createDirectory(atPath: dir.path + "/sub", withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/link.h5", withDestinationPath: "a.h5")
        try FileManager.default.linkItem(atPath: a, toPath: dir.path + "/hard.h5")
        let id = try XCTUnwrap(FileIdentity(path: a))
        for other in [dir.path + "/./a.h5", dir.path + "/sub/../a.h5", dir.path + "/link.h5", dir.path + "/hard.h5"] {
            XCTAssertEqual(FileIdentity(path: other), id, other)
        }
        XCTAssertNotEqual(FileIdentity(path: b), id)
        XCTAssertEqual(FileIdentity(path: dir.path + "/new.h5"), FileIdentity(path: dir.path + "/sub/../new.h5"))
        XCTAssertNotEqual(FileIdentity(path: dir.path + "/new.h5"), FileIdentity(path: dir.path + "/sub/new.h5"))
        XCTAssertNil(FileIdentity(path: dir.path + "/nofolder/x.h5"))
    }

    /// An output onto an input is refused with force too, and the input is unchanged.
    func testOutputOntoInputIsRefusedEvenWithForce() throws {
        let dir = makeScratchFolder(self)
        let scan = dir.appendingPathComponent("scan.h5").path
        try Data("input".utf8).write(to: URL(fileURLWithPath: scan))
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/alias.h5", withDestinationPath: scan)
        for out in [scan, dir.path + "/./scan.h5", dir.path + "/alias.h5"] {
            assertThrows(try AtomicOutput.write(Data("result".utf8), to: out, force: true, inputs: [("--scan", scan)]),
                         containing: ["same file as the input --scan", "even with --force"])
        }
        XCTAssertEqual(try String(contentsOfFile: scan, encoding: .utf8), "input")
        try FileManager.default.createDirectory(atPath: dir.path + "/sub", withIntermediateDirectories: false)
        assertThrows(try FileIdentity.checkDistinct(outputs: [("--out", dir.path + "/m.h5"), ("--checkpoint", dir.path + "/sub/../m.h5")], inputs: []),
                     containing: ["--checkpoint", "same file as --out"])
        XCTAssertNoThrow(try FileIdentity.checkDistinct(outputs: [("--out", dir.path + "/m.h5"), ("--checkpoint", dir.path + "/sub/../m2.h5")],
                                                        inputs: [("--scan", scan)]))
        XCTAssertNoThrow(try AtomicOutput.write(Data("result".utf8), to: dir.path + "/m.h5", force: false, inputs: [("--scan", scan)]))
    }

    /// FIFOs, devices and folders are refused at once by every reader (a FIFO opened for
    /// reading would block until a writer appears) and as outputs.
    func testSpecialFilesAreRefusedWithoutBlocking() throws {
        let dir = makeScratchFolder(self)
        let fifo = dir.appendingPathComponent("fifo.h5").path
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        let done = DispatchSemaphore(value: 0)
        final class Outcomes: @unchecked Sendable { var list: [String] = []; let lock = NSLock() }
        let outcomes = Outcomes()
        @Sendable func record(_ body: () throws -> Void) {
            let text: String
            do { try body(); text = "accepted" } catch { text = "\(error)" }
            outcomes.lock.lock(); outcomes.list.append(text); outcomes.lock.unlock()
        }
        Thread.detachNewThread {
            record { _ = try H5File.open(fifo) }
            record { _ = try NpyFile(path: fifo) }
            record { _ = try ConfigFile.load(path: fifo) }
            record { _ = try H5File.open("/dev/zero") }
            record { _ = try H5File.open(dir.path) }
            record { try AtomicOutput.write(Data(), to: fifo, force: true) }
            done.signal()
        }
        XCTAssertEqual(done.wait(timeout: .now() + 20), .success, "a reader blocked on a FIFO")
        outcomes.lock.lock(); defer { outcomes.lock.unlock() }
        let errors = outcomes.list
        XCTAssertEqual(errors.count, 6)
        for (e, kind) in zip(errors, ["FIFO", "FIFO", "FIFO", "character device", "folder", "FIFO"]) {
            XCTAssert(e.contains(kind) && !e.contains("accepted"), e)
        }
    }

    /// A killed run's temporary file (this host, a dead process) is removed by the next
    /// write of the same output; a live process's, another host's and unrelated ones stay.
    func testStalePartialsOfDeadProcessesAreRemoved() throws {
        let dir = makeScratchFolder(self)
        let out = dir.appendingPathComponent("x.h5").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run(); p.waitUntilExit()
        let dead = p.processIdentifier
        // Learn this host's tag from a temporary name.
        let probe = try AtomicOutput(path: dir.path + "/probe.h5", force: false)
        let tag = String(URL(fileURLWithPath: probe.temporaryPath).lastPathComponent.dropFirst(".probe.h5.partial-".count).prefix(8))
        let names = [".x.h5.partial-\(tag)-\(dead)-1",            // stale: removed
                     ".x.h5.partial-\(tag)-\(getppid())-2",       // live process: kept
                     ".x.h5.partial-0badc0de-\(dead)-3",          // another host: kept
                     ".y.h5.partial-\(tag)-\(dead)-4",            // another output: kept
                     ".x.h5.partial-999"]                         // not a Donut name: kept
        for n in names { try Data(count: 100).write(to: dir.appendingPathComponent(n)) }
        try AtomicOutput.write(Data("x".utf8), to: out, force: false)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        XCTAssertEqual(left, Set(names.dropFirst() + ["x.h5"]))
    }
}

final class NestingAndSizeTests: XCTestCase {
    /// Deep nesting of every YAML kind is refused with the line, before the parser can
    /// overflow its stack; ordinary files pass.
    func testDeeplyNestedYAMLIsRefused() throws {
        let deep = [String(repeating: "[", count: 200_000),
                    String(repeating: "- ", count: 100_000) + "x",
                    (0..<300).map { String(repeating: " ", count: $0) + "k\($0):" }.joined(separator: "\n") + " 1",
                    "a: " + String(repeating: "{b: ", count: 100_000)]
        for text in deep {
            assertThrows(try ConfigFile.parse(yaml: text, source: "deep.yaml"), containing: ["deep.yaml", "nested deeper than 64"])
        }
        let config = ConfigFile.yaml(.srio3LSAT002)
        XCTAssertEqual(try ConfigFile.parse(yaml: config, source: "ok.yaml"), .srio3LSAT002)
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("deep.yaml").path
        try deep[0].write(toFile: path, atomically: true, encoding: .utf8)
        assertThrows(try ConfigFile.load(path: path), containing: ["deep.yaml", "nested"])
    }

    func testSizesOverflowAndMemory() throws {
        XCTAssertEqual(Sizes.product([3, 4, 5]), 60)
        XCTAssertNil(Sizes.product([1 << 32, 1 << 32]))
        XCTAssertNil(Sizes.product([-1, 4]))
        let overflow = try XCTUnwrap(Sizes.memoryProblem("the frames", factors: [("rows", 4_294_967_296), ("cols", 4_294_967_296)], bytesPerElement: 4))
        XCTAssert(overflow.contains("4294967296 rows") && overflow.contains("overflows"), overflow)
        let big = try XCTUnwrap(Sizes.memoryProblem("the frames", factors: [("frames", 1 << 20), ("pixels", 1 << 20)], bytesPerElement: 4, limit: 1 << 30))
        XCTAssert(big.contains("4.0 TiB") || big.contains("4096.0 GiB"), big)
        XCTAssert(big.contains("memory (1.0 GiB)"), big)
        XCTAssertNil(Sizes.memoryProblem("the frames", factors: [("frames", 10)], bytesPerElement: 4))
    }

    /// Shapes declared by files and `--scan-shape` are checked without overflow or allocation.
    func testDeclaredShapesAreChecked() throws {
        let dir = makeScratchFolder(self)
        var c = DonutConfig.srio3LSAT002
        c.model.frameSize = 4
        c.instrument.roi = DetectorROI(x: 0, y: 0, width: 4, height: 4)
        c.instrument.binning = 1
        // A .npy header declaring 2^62 frames (the file holds a few bytes).
        let npy = dir.appendingPathComponent("huge.npy").path
        try NpyFile.write([Float](repeating: 1, count: 16), shape: [1, 4, 4], to: npy)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: npy))
        let header = String(decoding: bytes[10...], as: UTF8.self)
        let patched = header.replacingOccurrences(of: "(1, 4, 4)", with: "(4611686018427387904, 4, 4)")
        bytes = bytes[..<8] + Data([UInt8(patched.utf8.count & 0xFF), UInt8(patched.utf8.count >> 8)]) + Data(patched.utf8)
        try bytes.write(to: URL(fileURLWithPath: npy))
        assertThrows(try NpyFile(path: npy), containing: ["huge.npy", "4611686018427387904", "overflows"])
        // An HDF5 dataset declaring 10^10 frames (allocated lazily: the file is small).
        let h5 = dir.appendingPathComponent("huge.h5").path
        let f = try H5File.create(h5)
        try f.createGroup("/entry"); try f.createGroup("/entry/data")
        _ = try f.createDataset("/entry/data/data", type: .float32, shape: [100_000, 100_000, 4, 4])
        try f.close()
        assertThrows(try ScanReader(path: h5, config: c), containing: ["huge.h5", "/entry/data/data", "100000 rows", "memory"])
        // --scan-shape whose product overflows.
        let flat = dir.appendingPathComponent("flat.npy").path
        try NpyFile.write([Float](repeating: 1, count: 32), shape: [2, 4, 4], to: flat)
        assertThrows(try ScanReader(path: flat, config: c, scanShape: (4_294_967_296, 4_294_967_296)),
                     containing: ["flat.npy", "4294967296×4294967296", "holds 2"])
    }

    /// Config numbers that size memory are checked (no trap, no failed allocation), and a
    /// config whose patterns are all zero is refused.
    func testConfigSizesAreChecked() throws {
        var c = DonutConfig.srio3LSAT002
        c.library = LibrarySteps(strain: 10_000_000, tiltLR: 10_000_000, tiltUD: 10_000_000, thickness: 1)
        XCTAssertThrowsError(try c.validate()) { XCTAssert("\($0)".contains("library") && "\($0)".contains("10000000"), "\($0)") }
        c = .srio3LSAT002
        c.model.frameSize = 1 << 40
        XCTAssertThrowsError(try c.validate()) { XCTAssert("\($0)".contains("model.frame_size"), "\($0)") }
        c = .srio3LSAT002
        c.instrument.energyKeV = 1e6
        XCTAssertThrowsError(try c.validate()) { XCTAssert("\($0)".contains("instrument.energy_keV") && "\($0)".contains("zero on every pixel"), "\($0)") }
        c = .srio3LSAT002
        c.zonePlate.upsampling = 1 << 30
        XCTAssertThrowsError(try c.validate()) { XCTAssert("\($0)".contains("zone_plate.upsampling"), "\($0)") }
    }
}

final class ContentCheckTests: XCTestCase {
    func provenance(_ config: String = "") -> Provenance {
        Provenance(version: "t", date: "t", method: "t", commandLine: "t", configJSON: config, inputs: [], modelID: "")
    }

    func checkpoint() -> ModelCheckpoint {
        ModelCheckpoint(method: "donut",
                        tensors: [TensorRecord(name: "encoder.0.conv.weight", shape: [4], group: "encoder", offset: 0),
                                  TensorRecord(name: "head.bias", shape: [2], group: "physics", offset: 4)],
                        parameters: [0.1, -0.2, 0.3, 0.4, 0.5, -0.6], firstMoments: [Float](repeating: -0.01, count: 6),
                        secondMoments: [Float](repeating: 0.01, count: 6),
                        buffers: [TensorRecord(name: "encoder.0.bn.running_mean", shape: [2], group: "buffer", offset: 0),
                                  TensorRecord(name: "encoder.0.bn.running_var", shape: [2], group: "buffer", offset: 2)],
                        bufferValues: [-0.5, 0.5, 1, 2], step: 3, epoch: 1, stepInEpoch: 0, rngState: [1, 3],
                        configJSON: "{}", trainingJSON: "{}", lossLog: [])
    }

    /// A model or checkpoint with a non-finite weight, moment or statistic (or a negative
    /// variance) is refused when read, naming the dataset and the tensor.
    func testNonFiniteModelsAreRefusedWhenRead() throws {
        let dir = makeScratchFolder(self)
        let good = dir.appendingPathComponent("good.h5").path
        try CheckpointFile.write(checkpoint(), path: good, provenance: provenance(), force: false)
        XCTAssertEqual(try CheckpointFile.read(path: good).parameters, checkpoint().parameters)
        let cases: [(String, (inout ModelCheckpoint) -> Void, [String])] = [
            ("nan-weight", { $0.parameters[5] = .nan }, ["/entry/model/parameters", "head.bias", "element 1", "nan"]),
            ("inf-weight", { $0.parameters[0] = -.infinity }, ["/entry/model/parameters", "encoder.0.conv.weight", "-inf"]),
            ("nan-mean", { $0.bufferValues[1] = .nan }, ["/entry/model/buffers", "running_mean"]),
            ("negative-var", { $0.bufferValues[3] = -1 }, ["/entry/model/buffers", "running_var", "negative"]),
            ("nan-moment", { $0.secondMoments[2] = .nan }, ["/entry/model/adam_v"]),
        ]
        for (name, edit, fragments) in cases {
            var c = checkpoint()
            edit(&c)
            // Donut refuses to write it (a diverged training keeps its last good checkpoint) …
            assertThrows(try CheckpointFile.write(c, path: good, provenance: self.provenance(), force: true),
                         containing: ["good.h5", "not written", "previous file"] + fragments)
            XCTAssertEqual(try CheckpointFile.read(path: good).parameters, checkpoint().parameters, "the previous checkpoint is intact")
            // … and refuses to read one damaged in place.
            let path = dir.appendingPathComponent("\(name).h5").path
            try FileManager.default.copyItem(atPath: good, toPath: path)
            let f = try H5File.open(path, writable: true)
            for (dataset, values) in [("parameters", c.parameters), ("buffers", c.bufferValues), ("adam_v", c.secondMoments)] {
                let d = try f.openDataset("/entry/model/" + dataset)
                try values.withUnsafeBufferPointer { try d.write($0) }
                try d.close()
            }
            try f.close()
            assertThrows(try CheckpointFile.read(path: path), containing: ["\(name).h5"] + fragments)
        }
    }

    /// Whatever a method hands the writer, a frame whose estimate is not finite is written
    /// with valid = 0 (its values as they were).
    func testNonFiniteEstimatesAreNeverValid() throws {
        let dir = makeScratchFolder(self)
        var r = FrameResults(frameRange: 0..<4)
        r.strain = [1e-3, .nan, 2e-3, 3e-3]; r.tiltLRDeg = [0.1, 0.1, .infinity, 0.1]; r.tiltUDDeg = [0, 0, 0, 0]
        r.thicknessA = [100, 100, 100, -.infinity]
        r.valid = [1, 1, 1, 1]
        let path = dir.appendingPathComponent("maps.h5").path
        try ResultMapsWriter.write(path: path, results: r, layout: ScanLayout(rows: 2, cols: 2), provenance: provenance())
        let back = try ResultMapsReader.read(path: path).results
        XCTAssertEqual(back.valid, [1, 0, 0, 0])
        XCTAssertEqual(back.strain[0], 1e-3)
        XCTAssertEqual(back.tiltLRDeg[2], .infinity)
        var copy = r
        XCTAssertEqual(copy.invalidateNonFiniteEstimates(), 3)
        XCTAssertEqual(copy.invalidateNonFiniteEstimates(), 0, "already flagged")
    }

    /// Library entries that are NaN or all zero are named as such; a library whose stored
    /// config disagrees with its patterns is refused.
    func testLibraryContentAndStoredConfig() throws {
        let dir = makeScratchFolder(self)
        var c = DonutConfig.srio3LSAT002
        c.model.frameSize = 16
        c.instrument.roi = DetectorROI(x: 0, y: 0, width: 32, height: 32)
        c.zonePlate.focalLengthM = 0.1     // the annulus reaches into the 16-pixel frame
        c.library = LibrarySteps(strain: 2, tiltLR: 2, tiltUD: 2, thickness: 1)
        XCTAssertNoThrow(try c.validate())
        let grid = LibraryGrid(config: c)
        func write(_ name: String, grid: LibraryGrid, edit: (inout [Float]) -> Void = { _ in }) throws -> String {
            let path = dir.appendingPathComponent(name).path
            var values = (0..<(grid.count * 256)).map { Float($0 % 7 + 1) }
            edit(&values)
            let w = try LibraryWriter(path: path, grid: grid, frameSize: 16, provenance: provenance(ConfigFile.json(c)))
            try values.withUnsafeBufferPointer { try w.writeSlab(entries: 0..<grid.count, patterns: $0) }
            try w.finish()
            return path
        }
        let good = try LibraryReader(path: try write("good.h5", grid: grid))
        XCTAssertEqual(try good.readSlab(0..<8).count, 8 * 256)
        let zero = try LibraryReader(path: try write("zero.h5", grid: grid) { for i in (5 * 256)..<(6 * 256) { $0[i] = 0 } })
        assertThrows(try zero.readSlab(0..<8), containing: ["zero.h5", "library entry 5", "is all zero"])
        let nan = try LibraryReader(path: try write("nan.h5", grid: grid) { $0[2 * 256 + 3] = .nan })
        assertThrows(try nan.readSlab(0..<8), containing: ["nan.h5", "library entry 2", "holds nan"])
        var other = grid
        other.strain = [other.strain[0], other.strain[1] * 2]
        assertThrows(try LibraryReader(path: try write("axes.h5", grid: other)), containing: ["axes.h5", "/entry/library/strain", "stored config"])
        let bigger = LibraryGrid(strain: [0, 1, 2], tiltLRDeg: grid.tiltLRDeg, tiltUDDeg: grid.tiltUDDeg, thicknessA: grid.thicknessA, hasThicknessAxis: false)
        assertThrows(try LibraryReader(path: try write("shape.h5", grid: bigger)), containing: ["shape.h5", "[3, 2, 2]", "[2, 2, 2]"])
    }
}
