import XCTest
import DonutIO
import DonutMPI

final class SelectionTests: XCTestCase {
    /// Flat indices covered by boxes over `leading`, listed by brute force.
    private func indices(_ boxes: [HyperslabBox], leading: [Int]) -> [Int] {
        var out: [Int] = []
        for box in boxes {
            var idx = box.start
            let total = box.count.reduce(1, *)
            for _ in 0..<total {
                var flat = 0
                for (d, i) in idx.enumerated() { flat = flat * leading[d] + i }
                out.append(flat)
                // Next multi-index inside the box (C order).
                var d = idx.count - 1
                while d >= 0 {
                    idx[d] += 1
                    if idx[d] < box.start[d] + box.count[d] { break }
                    idx[d] = box.start[d]; d -= 1
                }
            }
        }
        return out.sorted()
    }

    func testBoxesMatchBruteForceOnOddShapes() {
        let shapes: [[Int]] = [[1], [7], [1, 1], [3, 5], [5, 1], [1, 6], [2, 3, 4], [3, 1, 5], [2, 3, 2, 3]]
        for leading in shapes {
            let n = leading.reduce(1, *)
            for a in 0...n {
                for b in a...n {
                    let boxes = flatRangeBoxes(leading: leading, range: a..<b)
                    XCTAssertEqual(indices(boxes, leading: leading), Array(a..<b),
                                   "leading \(leading) range \(a)..<\(b): boxes \(boxes)")
                    XCTAssertLessThanOrEqual(boxes.count, 2 * (leading.count - 1) + 1,
                                             "leading \(leading) range \(a)..<\(b): boxes \(boxes)")
                    for box in boxes {
                        for d in 0..<leading.count {
                            XCTAssertTrue(box.count[d] > 0 && box.start[d] + box.count[d] <= leading[d],
                                          "leading \(leading) range \(a)..<\(b): box \(box)")
                        }
                    }
                }
            }
        }
    }

    /// The boxes applied by HDF5: write each flat range of a (3, 5, 2) dataset in pieces
    /// (including empty pieces) and read it back whole and by range.
    func testSelectionsThroughHDF5() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("sel.h5").path
        let f = try H5File.create(path)
        let d = try f.createDataset("/x", type: .float64, shape: [3, 5, 2])
        let cuts = [0, 4, 4, 9, 15]
        for (a, b) in zip(cuts, cuts.dropFirst()) {
            let values = (a * 2 ..< b * 2).map(Double.init)
            try values.withUnsafeBufferPointer { try d.write($0, selection: FlatSelection(leadingRank: 2, range: a..<b)) }
        }
        XCTAssertEqual(try d.read(as: Double.self), (0..<30).map(Double.init))
        XCTAssertEqual(try d.read(as: Double.self, selection: FlatSelection(leadingRank: 2, range: 3..<11)),
                       (6..<22).map(Double.init))
        XCTAssertEqual(try d.read(as: Double.self, selection: FlatSelection(leadingRank: 2, range: 7..<7)), [])
        // Trailing sub-box: element 1 of the last dimension for frames 2..<6.
        XCTAssertEqual(try d.read(as: Double.self, selection: FlatSelection(leadingRank: 2, range: 2..<6,
                                                                           trailingStart: [1], trailingCount: [1])),
                       [5, 7, 9, 11])
        // Leading rank 1 over (3, 5·2) blocks of rows.
        XCTAssertEqual(try d.read(as: Double.self, selection: FlatSelection(leadingRank: 1, range: 1..<2)),
                       (10..<20).map(Double.init))
        assertThrows(try [1.0].withUnsafeBufferPointer { try d.write($0, selection: FlatSelection(leadingRank: 2, range: 0..<1)) },
                     containing: ["sel.h5", "dataset '/x'", "writing 1 values into a selection of 2"])
        try d.close()
        try f.close()
    }
}

final class HDF5FileTests: XCTestCase {
    func testRoundTripTypesStringsAttributes() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("rt.h5").path
        let floats: [Float] = [0, -0, 1.5, .nan, .infinity, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, 3]
        let doubles: [Double] = [.pi, -.nan, 1e-300, 0, 2, 3]
        do {
            let f = try H5File.create(path)
            try f.createGroup("/g", nxClass: "NXentry")
            try f.writeDataset("/g/f", floats, shape: [2, 4], units: "counts")
            try f.writeDataset("/g/d", doubles, shape: [6], units: "deg")
            try f.writeDataset("/g/u", [UInt8](arrayLiteral: 0, 1, 255), shape: [3])
            try f.writeDataset("/g/i", [Int64.min, 0, .max], shape: [3])
            try f.writeString("/g/s", "héllo")
            try f.writeString("/g/vs", "variable", variableLength: true)
            try f.writeString("/g/empty", "")
            try f.setAttribute("axes", ["y", "x"], on: "/g")
            try f.setAttribute("scale", 2.5, on: "/g/d")
            try f.setAttribute("count", 42, on: "/")
            try f.close()
        }
        let f = try H5File.open(path)
        assertBitsEqual(try f.readDataset("/g/f", as: Float.self), floats, "float32")
        assertBitsEqual(try f.readDataset("/g/d", as: Double.self), doubles, "float64")
        XCTAssertEqual(try f.readDataset("/g/u", as: UInt8.self), [0, 1, 255])
        XCTAssertEqual(try f.readDataset("/g/i", as: Int64.self), [.min, 0, .max])
        // Conversion on read: uint8 → Float.
        XCTAssertEqual(try f.readDataset("/g/u", as: Float.self), [0, 1, 255])
        XCTAssertEqual(try f.openDataset("/g/f").shape, [2, 4])
        XCTAssertEqual(try f.readString("/g/s"), "héllo")
        XCTAssertEqual(try f.readString("/g/vs"), "variable")
        XCTAssertEqual(try f.readString("/g/empty"), "")
        XCTAssertEqual(try f.readStringAttribute("NX_class", on: "/g"), "NXentry")
        XCTAssertEqual(try f.readStringAttribute("units", on: "/g/f"), "counts")
        XCTAssertEqual(try f.readStringArrayAttribute("axes", on: "/g"), ["y", "x"])
        XCTAssertEqual(try f.readDoubleAttribute("scale", on: "/g/d"), 2.5)
        XCTAssertEqual(try f.readIntAttribute("count", on: "/"), 42)
        XCTAssertTrue(f.exists("/g/f"))
        XCTAssertFalse(f.exists("/g/nope"))
        XCTAssertFalse(f.exists("/nope/deeper"))
        assertThrows(try f.openDataset("/entry/data/data"), containing: ["rt.h5", "dataset '/entry/data/data'", "not found"])
        assertThrows(try f.readStringAttribute("units", on: "/g/u"), containing: ["rt.h5", "attribute '/g/u@units'", "not found"])
        assertThrows(try f.readString("/g/f"), containing: ["rt.h5", "/g/f", "expected a string, got float32"])
        assertThrows(try f.readDataset("/g/s", as: Float.self), containing: ["rt.h5", "dataset '/g/s'", "expected numbers, got string"])
        try f.close()
    }

    /// A parallel (MPI-IO) file on a one-rank communicator behaves like a serial one.
    func testParallelFileOnOneRank() throws {
        let folder = makeScratchFolder(self)
        let path = folder.appendingPathComponent("par.h5").path
        let world = Communicator.world
        do {
            let f = try H5File.create(path, comm: world)
            try f.createGroup("/g")
            let d = try f.createDataset("/g/x", type: .float32, shape: [4, 3])
            let mine = shardRange(count: 4, parts: world.size, index: world.rank)
            let values = (mine.lowerBound * 3 ..< mine.upperBound * 3).map(Float.init)
            try values.withUnsafeBufferPointer { try d.write($0, selection: FlatSelection(leadingRank: 1, range: mine)) }
            try [Float]().withUnsafeBufferPointer { try d.write($0, selection: FlatSelection(leadingRank: 1, range: 2..<2)) }
            try d.close()
            try f.writeString("/g/s", "fixed")
            try f.setAttribute("units", "counts", on: "/g/x")
            try f.close()
        }
        let f = try H5File.open(path, comm: world)
        XCTAssertEqual(try f.readDataset("/g/x", as: Float.self), (0..<12).map(Float.init))
        XCTAssertEqual(try f.readString("/g/s"), "fixed")
        try f.close()
    }

    func testOpenErrors() throws {
        let folder = makeScratchFolder(self)
        let missing = folder.appendingPathComponent("missing.h5").path
        assertThrows(try H5File.open(missing), containing: ["missing.h5", "does not exist"])
        let notHDF5 = folder.appendingPathComponent("text.h5").path
        try "hello".write(toFile: notHDF5, atomically: true, encoding: .utf8)
        assertThrows(try H5File.open(notHDF5), containing: ["text.h5", "cannot open as HDF5"])
        // Truncated: write a real file, cut it in half.
        let path = folder.appendingPathComponent("cut.h5").path
        do {
            let f = try H5File.create(path)
            try f.writeDataset("/x", [Float](repeating: 1, count: 10_000), shape: [100, 100])
            try f.close()
        }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try h.truncate(atOffset: UInt64(size / 2))
        try h.close()
        assertThrows(try H5File.open(path), containing: ["cut.h5", "truncated"])
    }
}
