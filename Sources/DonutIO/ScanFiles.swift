import DonutCore
import DonutMPI
import DonutPhysics
import Foundation

// Scan files: frames of a raster scan, HDF5 or .npy.
//
// HDF5 layout written by `ScanWriter` (read by `ScanReader`, which also takes other files
// holding frames at any dataset path):
//   /                      @default="entry" @donut_file="scan" @donut_format_version
//   /entry                 NXentry @default="data"
//   /entry/data            NXdata @signal="data"
//     data                 (rows, cols, H, W) float32 @units="counts"
//     y, x                 (rows), (cols) float64 @units="um"   (only when positions are known)
//   /entry/ground_truth    NXcollection (phantoms): strain "", tilt_lr "deg", tilt_ud "deg",
//                          thickness "angstrom", each (rows, cols) float64
//   /entry/process         NXprocess + config NXnote (see NeXusProcess.swift)

/// Ground-truth map names and units, in file order.
let groundTruthUnits: [(name: String, units: String)] = [
    ("strain", ""), ("tilt_lr", "deg"), ("tilt_ud", "deg"), ("thickness", "angstrom"),
]

/// Reads a scan's frames, each rank its own range, as model-size frames (frameSize²,
/// row-major), cropping to the ROI and binning when the file holds raw detector frames.
///
/// `init` and `close` are collective when a communicator is given (the file is opened with
/// MPI-IO); every read is independent.
public final class ScanReader {
    public let path: String
    /// Dataset path of the frames (for .npy files, "" ).
    public let dataset: String
    public let layout: ScanLayout
    /// Model frame edge (pixels).
    public let frameSize: Int
    /// Frame size on disk (H, W).
    public let storedFrameShape: (height: Int, width: Int)
    /// The config recorded in the file (`/entry/process/config/data`), if any.
    public let configJSON: String?

    private enum Source { case hdf5(H5File, H5Dataset), npy(NpyFile) }
    private var source: Source?
    /// 2 for (rows, cols, H, W), 1 for (N, H, W).
    private let leadingRank: Int
    /// Crop and binning applied to stored frames; nil when they are used as they are.
    private let roi: DetectorROI?
    private let binning: Int

    public init(path: String, dataset: String = "/entry/data/data", config: DonutConfig,
                comm: Communicator? = nil, scanShape: (rows: Int, cols: Int)? = nil) throws {
        self.path = path
        frameSize = config.model.frameSize
        let shape: [Int]
        var positions: (y: [Double], x: [Double])?
        var configJSON: String?
        let objectName: String
        if path.lowercased().hasSuffix(".npy") {
            let npy = try NpyFile(path: path)
            shape = npy.shape
            source = .npy(npy)
            self.dataset = ""
            objectName = ""
        } else {
            let file = try H5File.open(path, comm: comm)
            let d = try file.openDataset(dataset)
            guard d.isNumeric else { throw DonutIOError.dataset(path, dataset, "expected numeric frames, got \(d.typeDescription)") }
            shape = d.shape
            source = .hdf5(file, d)
            self.dataset = dataset
            objectName = dataset
            if file.exists("/entry/process/config/data") {
                configJSON = try file.readString("/entry/process/config/data")
            }
            positions = try Self.readPositions(file)
        }
        self.configJSON = configJSON
        func fail(_ message: String) -> DonutIOError {
            objectName.isEmpty ? DonutIOError(file: path, message) : .dataset(path, objectName, message)
        }
        let dims = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        let rows: Int, cols: Int
        switch shape.count {
        case 4:
            rows = shape[0]; cols = shape[1]; leadingRank = 2
            if let s = scanShape, s.rows != rows || s.cols != cols {
                throw fail("scan shape \(s.rows)×\(s.cols) was given but the frames are laid out \(rows)×\(cols) \(dims)")
            }
        case 3:
            guard let s = scanShape else {
                throw fail("3-D frames (N, H, W) \(dims) need the scan shape (rows, cols) to be given")
            }
            guard s.rows > 0, s.cols > 0, let n = Sizes.product([s.rows, s.cols]), n == shape[0] else {
                let n = Sizes.product([s.rows, s.cols]).map(String.init) ?? "more than 2^63"
                throw fail("scan shape \(s.rows)×\(s.cols) = \(n) frames, but the dataset holds \(shape[0]) \(dims)")
            }
            rows = s.rows; cols = s.cols; leadingRank = 1
        default:
            throw fail("expected 4-D (rows, cols, H, W) or 3-D (N, H, W), got \(shape.count)-D \(dims)")
        }
        guard rows > 0, cols > 0 else { throw fail("scan has no frames \(dims)") }
        let h = shape[shape.count - 2], w = shape[shape.count - 1]
        // Sizes declared by the file, checked before anything is allocated for them: the
        // per-frame results of the whole scan (about 64 bytes a frame) and one stored frame.
        if let why = Sizes.memoryProblem("the scan's maps", factors: [("rows", rows), ("cols", cols)], bytesPerElement: 64)
            ?? Sizes.memoryProblem("one stored frame", factors: [("height", h), ("width", w)], bytesPerElement: 8) {
            throw fail("\(dims): \(why)")
        }
        storedFrameShape = (h, w)
        let r = config.instrument.roi, b = config.instrument.binning
        if h == frameSize && w == frameSize {
            roi = nil; binning = 1
        } else if r.width == frameSize * b, r.height == frameSize * b, r.x >= 0, r.y >= 0,
                  r.x <= w - r.width, r.y <= h - r.height {
            roi = r; binning = b
        } else {
            throw fail("frames are \(h)×\(w) \(dims): expected \(frameSize)×\(frameSize) frames, or raw detector frames "
                       + "containing the ROI (x \(r.x)..<\(r.x + r.width), y \(r.y)..<\(r.y + r.height)) that bins by \(b) "
                       + "to \(frameSize)×\(frameSize) (config keys instrument.roi, instrument.binning)")
        }
        if let p = positions {
            guard p.y.count == rows, p.x.count == cols else {
                throw DonutIOError.dataset(path, "/entry/data/y", "positions y (\(p.y.count)) and x (\(p.x.count)) do not match the scan \(rows)×\(cols)")
            }
            layout = ScanLayout(rows: rows, cols: cols, y: p.y, x: p.x, axisUnits: "um")
        } else {
            layout = ScanLayout(rows: rows, cols: cols)
        }
    }

    /// `/entry/data/y` and `/entry/data/x` (µm) when both exist.
    private static func readPositions(_ file: H5File) throws -> (y: [Double], x: [Double])? {
        guard file.exists("/entry/data/y"), file.exists("/entry/data/x") else { return nil }
        var out: [[Double]] = []
        for name in ["/entry/data/y", "/entry/data/x"] {
            let d = try file.openDataset(name)
            guard d.shape.count == 1 else {
                throw DonutIOError.dataset(file.path, name, "expected 1-D scan positions, got shape \(d.shape)")
            }
            out.append(try d.read(as: Double.self))
        }
        return (out[0], out[1])
    }

    /// Frames `range` (flat index row·cols + col), frameSize² floats each, row-major. Values
    /// are passed on as stored (NaN and negative counts included: judging frames is the
    /// caller's job). Independent: call it on any rank, any number of times.
    public func readFrames(_ range: Range<Int>) throws -> [Float] {
        guard range.lowerBound >= 0, range.upperBound <= layout.frameCount else {
            throw error("frames \(range) outside the scan's \(layout.frameCount) frames")
        }
        let (h, w) = storedFrameShape
        let cropped: [Float]
        let cropH = roi?.height ?? h, cropW = roi?.width ?? w
        switch source {
        case .hdf5(_, let d):
            let sel = FlatSelection(leadingRank: leadingRank, range: range,
                                    trailingStart: roi.map { [$0.y, $0.x] }, trailingCount: roi.map { [$0.height, $0.width] })
            cropped = try d.read(as: Float.self, selection: sel)
        case .npy(let npy):
            let all = try npy.readFloats(range.lowerBound * h * w ..< range.upperBound * h * w)
            if let r = roi {
                var out = [Float](repeating: 0, count: range.count * r.height * r.width)
                for f in 0..<range.count {
                    for y in 0..<r.height {
                        let src = f * h * w + (r.y + y) * w + r.x, dst = (f * r.height + y) * r.width
                        for x in 0..<r.width { out[dst + x] = all[src + x] }
                    }
                }
                cropped = out
            } else {
                cropped = all
            }
        case nil:
            throw error("reader is closed")
        }
        guard roi != nil, binning > 1 else { return cropped }
        // Sum-binning: out[y][x] = Σ_{i,j < b} crop[y·b + i][x·b + j].
        let b = binning, n = frameSize
        var out = [Float](repeating: 0, count: range.count * n * n)
        for f in 0..<range.count {
            for y in 0..<n {
                for i in 0..<b {
                    let src = (f * cropH + y * b + i) * cropW
                    for x in 0..<n {
                        var s: Float = 0
                        for j in 0..<b { s += cropped[src + x * b + j] }
                        out[(f * n + y) * n + x] += s
                    }
                }
            }
        }
        return out
    }

    /// Ground-truth maps of a simulated scan (`/entry/ground_truth/{strain, tilt_lr,
    /// tilt_ud, thickness}`, those present), flat (rows·cols); nil when the file has none.
    public func groundTruth() throws -> [String: [Double]]? {
        guard case .hdf5(let file, _)? = source, file.exists("/entry/ground_truth") else { return nil }
        var out: [String: [Double]] = [:]
        for (name, _) in groundTruthUnits where file.exists("/entry/ground_truth/\(name)") {
            let values = try file.readDataset("/entry/ground_truth/\(name)", as: Double.self)
            guard values.count == layout.frameCount else {
                throw DonutIOError.dataset(path, "/entry/ground_truth/\(name)", "has \(values.count) values, the scan has \(layout.frameCount) frames")
            }
            out[name] = values
        }
        return out
    }

    /// Checksum of frames `range` as returned by `readFrames` (see `frameChecksum(frames:firstIndex:frameSize:)`).
    public func frameChecksum(_ range: Range<Int>) throws -> UInt64 {
        Self.frameChecksum(frames: try readFrames(range), firstIndex: range.lowerBound, frameSize: frameSize)
    }

    /// The checksum of all frames read by all ranks: each rank's `frameChecksum(localRange)`,
    /// summed over ranks. Collective when `comm` is given. Same value for any split.
    public func globalFrameChecksum(_ localRange: Range<Int>, comm: Communicator?) throws -> UInt64 {
        var v = [try frameChecksum(localRange)]
        comm?.allreduceSum(&v)
        return v[0]
    }

    /// Rank-count-independent checksum: Σ (wrapping) over frames n of FNV-1a-64 of
    /// (n as 8 little-endian bytes, then the frame's Float bits as little-endian bytes).
    /// A sum of per-frame hashes does not depend on how frames are split between ranks.
    public static func frameChecksum(frames: [Float], firstIndex: Int, frameSize: Int) -> UInt64 {
        let per = frameSize * frameSize
        precondition(per > 0 && frames.count % per == 0, "frames.count \(frames.count) is not a multiple of \(per)")
        var total: UInt64 = 0
        for f in 0 ..< frames.count / per {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            func mix(_ byte: UInt8) { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
            let index = UInt64(firstIndex + f)
            for k in 0..<8 { mix(UInt8(truncatingIfNeeded: index >> (8 * k))) }
            for i in f * per ..< (f + 1) * per {
                let bits = frames[i].bitPattern
                mix(UInt8(truncatingIfNeeded: bits)); mix(UInt8(truncatingIfNeeded: bits >> 8))
                mix(UInt8(truncatingIfNeeded: bits >> 16)); mix(UInt8(truncatingIfNeeded: bits >> 24))
            }
            total &+= h
        }
        return total
    }

    /// The form recorded in `Provenance.Input.checksum`.
    public static func checksumString(_ value: UInt64) -> String {
        "fnv1a64sum:" + String(value, radix: 16).leftPadded(to: 16)
    }

    /// Closes the file (collective for parallel readers). Also done on deinit.
    public func close() throws {
        if case .hdf5(let file, let d)? = source {
            source = nil
            try d.close()
            try file.close()
        }
        source = nil
    }

    private func error(_ message: String) -> DonutIOError {
        dataset.isEmpty ? DonutIOError(file: path, message) : .dataset(path, dataset, message)
    }
}

extension String {
    func leftPadded(to n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

/// Writes a simulated or converted scan (serial, one process).
public enum ScanWriter {
    /// Writes `frames` ((rows·cols) frames of frameSize², row-major) with the layout above.
    /// `groundTruth` keys: strain, tilt_lr, tilt_ud, thickness (flat rows·cols maps).
    /// Refuses to overwrite `path` unless `force`; the file appears only when complete.
    public static func write(path: String, frames: [Float], layout: ScanLayout, frameSize: Int,
                             groundTruth: [String: [Double]]? = nil, provenance: Provenance,
                             force: Bool = false) throws {
        let n = layout.frameCount
        guard frames.count == n * frameSize * frameSize else {
            throw DonutIOError.dataset(path, "/entry/data/data", "\(frames.count) values given for \(layout.rows)×\(layout.cols) frames of \(frameSize)×\(frameSize)")
        }
        guard layout.y.count == layout.rows, layout.x.count == layout.cols else {
            throw DonutIOError.dataset(path, "/entry/data/y", "layout axes y (\(layout.y.count)) and x (\(layout.x.count)) do not match \(layout.rows)×\(layout.cols)")
        }
        if let gt = groundTruth {
            for (name, values) in gt {
                guard groundTruthUnits.contains(where: { $0.name == name }) else {
                    throw DonutIOError.dataset(path, "/entry/ground_truth/\(name)", "unknown ground-truth map (known: strain, tilt_lr, tilt_ud, thickness)")
                }
                guard values.count == n else {
                    throw DonutIOError.dataset(path, "/entry/ground_truth/\(name)", "\(values.count) values for \(n) frames")
                }
            }
        }
        let output = try AtomicOutput(path: path, force: force, expectedBytes: frames.count * 4 + (64 << 10))
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "scan", entryDefault: "data")
            try f.createGroup("/entry/data", nxClass: "NXdata")
            try f.setAttribute("signal", "data", on: "/entry/data")
            try f.writeDataset("/entry/data/data", frames, shape: [layout.rows, layout.cols, frameSize, frameSize], units: "counts")
            if layout.axisUnits == "um" {
                try f.writeDataset("/entry/data/y", layout.y, shape: [layout.rows], units: "um")
                try f.writeDataset("/entry/data/x", layout.x, shape: [layout.cols], units: "um")
            }
            if let gt = groundTruth {
                try f.createGroup("/entry/ground_truth", nxClass: "NXcollection")
                for (name, units) in groundTruthUnits {
                    if let values = gt[name] {
                        try f.writeDataset("/entry/ground_truth/\(name)", values, shape: [layout.rows, layout.cols], units: units)
                    }
                }
            }
            try f.writeProcess(provenance)
        }
    }
}
