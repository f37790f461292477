import DonutCore
import DonutPhysics
import Foundation

// Raw detector files as an Eiger/Jungfrau file writer and a beamline control system leave
// them (what `donut simulate scan --detector eiger` writes, to test reading them):
//   /entry/data/data                 (N, H, W) uint32, chunks (1, H, W), bitshuffle-LZ4,
//                                    frames in acquisition order; gaps at 2³² − 1
//   /entry/instrument/detector       NXdetector: pixel_mask (H, W) uint32 (Dectris bits:
//                                    1 gap, 8 hot/over-responding), data → /entry/data/data
//   /entry/measurement               samx, samy (N) float64 µm, mon (N) float64 counts
//   /entry/ground_truth              (rows, cols) maps in raster order on the grid
//   /entry/process                   provenance (config with the ROI the signal lies in)
//
// With `framesPerFile` (the Dectris file-writer layout, what Eiger masters look like): no
// `/entry/data/data` in the master; instead `/entry/data/data_000001`, `data_000002`, …,
// external links to `<prefix>_data_000001.h5:/entry/data/data` (N_k frames each, the last
// part shorter; `@image_nr_low`, `@image_nr_high` the 1-based frames it holds) in the same
// folder, `<prefix>` the master's name without `_master.h5` (or `.h5`); the mask at
// `/entry/instrument/detector/detectorSpecific/pixel_mask` with `nimages`, `ntrigger`.

/// Where a simulated detector has gaps and hot pixels.
public struct RawDetectorLayout: Equatable, Sendable {
    public var height: Int
    public var width: Int
    /// Rows and columns without sensor (module and chip gaps): the sentinel value, masked.
    public var gapRows: [Range<Int>]
    public var gapColumns: [Range<Int>]
    /// Flat indices (y·width + x) of hot pixels: `hotValue` in every frame, masked.
    public var hotPixels: [Int]
    public var hotValue: UInt32

    public init(height: Int, width: Int, gapRows: [Range<Int>] = [], gapColumns: [Range<Int>] = [],
                hotPixels: [Int] = [], hotValue: UInt32 = 1_000_000) {
        self.height = height; self.width = width; self.gapRows = gapRows; self.gapColumns = gapColumns
        self.hotPixels = hotPixels; self.hotValue = hotValue
    }

    /// An Eiger-like sensor of `height`×`width` (default one 514×1030 module): 256-pixel
    /// chips separated by 2-pixel gaps, rows and columns alike.
    public static func eiger(height: Int = 514, width: Int = 1030) -> RawDetectorLayout {
        func gaps(_ n: Int) -> [Range<Int>] { stride(from: 256, to: n - 2, by: 258).map { $0..<($0 + 2) } }
        return RawDetectorLayout(height: height, width: width, gapRows: gaps(height), gapColumns: gaps(width))
    }

    /// The pixel mask: 1 for gap pixels, 8 for hot ones (Dectris' bit meanings).
    public var pixelMask: [UInt32] {
        var m = [UInt32](repeating: 0, count: height * width)
        for r in gapRows { for y in r where y < height { for x in 0..<width { m[y * width + x] |= 1 } } }
        for c in gapColumns { for x in c where x < width { for y in 0..<height { m[y * width + x] |= 1 } } }
        for p in hotPixels where p >= 0 && p < m.count { m[p] |= 8 }
        return m
    }
}

public enum RawDetectorFileWriter {
    /// The data files (names beside `master`, file frames each) of the Dectris layout for
    /// `frameCount` frames: `<prefix>_data_000001.h5`, … where `<prefix>` is the master's name
    /// without `_master.h5` (or `.h5`). What `write` makes and what `simulate scan` reports.
    public static func dataFiles(master: String, frameCount: Int, framesPerFile: Int) -> [(name: String, range: Range<Int>)] {
        let base = (master as NSString).lastPathComponent
        let prefix = base.hasSuffix("_master.h5") ? String(base.dropLast("_master.h5".count))
            : base.hasSuffix(".h5") ? String(base.dropLast(3)) : base
        return stride(from: 0, to: frameCount, by: max(framesPerFile, 1)).enumerated().map { k, lo in
            (prefix + "_data_" + String(k + 1).leftPadded(to: 6) + ".h5", lo ..< min(lo + framesPerFile, frameCount))
        }
    }

    /// Writes a raw detector scan of `rows`×`cols` frames in acquisition order. `frames(r)`
    /// gives the H·W uint32 counts of file frame row `r` (cols frames, in the order
    /// acquired); positions (µm) and monitor are per file frame. Streams one row of frames
    /// at a time; refuses to overwrite `path` unless `force`; the file appears complete.
    /// `framesPerFile`: split the frames over external-linked data files beside `path`
    /// (the Dectris layout above), written before the master that links them.
    public static func write(path: String, layout: RawDetectorLayout, rows: Int, cols: Int,
                             frames: @escaping (Int) throws -> [UInt32], positions: (x: [Double], y: [Double]), monitor: [Double],
                             groundTruth: [String: [Double]]? = nil, provenance: Provenance,
                             compression: [H5Filter] = [.bitshuffleLZ4], writeMask: Bool = true, framesPerFile: Int? = nil,
                             force: Bool = false) throws {
        let n = rows * cols, h = layout.height, w = layout.width
        guard positions.x.count == n, positions.y.count == n, monitor.count == n else {
            throw DonutIOError(file: path, "positions (\(positions.x.count), \(positions.y.count)) and monitor (\(monitor.count)) need \(n) values")
        }
        if let per = framesPerFile, per < 1 { throw DonutIOError(file: path, "frames per data file must be ≥ 1 (got \(per))") }
        // Rows of frames in order, each computed once (a row may span two data files).
        var cached: (row: Int, values: [UInt32])?
        func row(_ r: Int) throws -> [UInt32] {
            if let c = cached, c.row == r { return c.values }
            let block = try frames(r)
            guard block.count == cols * h * w else {
                throw DonutIOError.dataset(path, defaultFramesDataset, "row \(r): \(block.count) values for \(cols) frames of \(h)×\(w)")
            }
            cached = (r, block)
            return block
        }
        /// Writes file frames `range` into `d` (shape (range.count, H, W)), row by row.
        func writeFrames(_ range: Range<Int>, into d: H5Dataset) throws {
            var r = range.lowerBound / cols
            while r * cols < range.upperBound {
                let lo = max(range.lowerBound, r * cols), hi = min(range.upperBound, (r + 1) * cols)
                let block = try row(r)
                try block[((lo - r * cols) * h * w) ..< ((hi - r * cols) * h * w)].withUnsafeBufferPointer {
                    try d.write($0, selection: FlatSelection(leadingRank: 1, range: (lo - range.lowerBound) ..< (hi - range.lowerBound)))
                }
                r += 1
            }
        }
        let dataFiles = framesPerFile.map { Self.dataFiles(master: path, frameCount: n, framesPerFile: $0) } ?? []
        let folder = (path as NSString).deletingLastPathComponent
        for (name, range) in dataFiles {
            let out = try AtomicOutput(path: folder.isEmpty ? name : "\(folder)/\(name)", force: force, expectedBytes: range.count * h * w * 4 + (1 << 20))
            try writeAtomically(out) { f in
                try f.createGroup("/entry", nxClass: "NXentry")
                try f.createGroup("/entry/data", nxClass: "NXdata")
                let d = try f.createDataset(defaultFramesDataset, type: .uint32, shape: [range.count, h, w], chunks: [1, h, w], filters: compression)
                try writeFrames(range, into: d)
                try d.close()
                try f.setAttribute("image_nr_low", range.lowerBound + 1, on: defaultFramesDataset)
                try f.setAttribute("image_nr_high", range.upperBound, on: defaultFramesDataset)
            }
        }
        let output = try AtomicOutput(path: path, force: force, expectedBytes: (framesPerFile == nil ? n * h * w : 0) + (1 << 20))
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "scan", entryDefault: "data")
            try f.createGroup("/entry/data", nxClass: "NXdata")
            if dataFiles.isEmpty {
                try f.setAttribute("signal", "data", on: "/entry/data")
                let d = try f.createDataset(defaultFramesDataset, type: .uint32, shape: [n, h, w], chunks: [1, h, w], filters: compression)
                try writeFrames(0..<n, into: d)
                try d.close()
                try f.setAttribute("units", "counts", on: defaultFramesDataset)
            }
            for (k, file) in dataFiles.enumerated() {
                try f.createExternalLink(defaultFramesDataset + "_" + String(k + 1).leftPadded(to: 6), file: file.name, object: defaultFramesDataset)
            }
            try f.createGroup("/entry/instrument", nxClass: "NXinstrument")
            let det = "/entry/instrument/detector"
            try f.createGroup(det, nxClass: "NXdetector")
            if !dataFiles.isEmpty {
                try f.createGroup("\(det)/detectorSpecific")
                try f.writeDataset("\(det)/detectorSpecific/nimages", [Int64(n)], shape: [1])
                try f.writeDataset("\(det)/detectorSpecific/ntrigger", [Int64(1)], shape: [1])
            }
            if writeMask {
                let place = dataFiles.isEmpty ? "\(det)/pixel_mask" : "\(det)/detectorSpecific/pixel_mask"
                let mask = try f.createDataset(place, type: .uint32, shape: [h, w], chunks: [h, w], filters: [.gzip()])
                try layout.pixelMask.withUnsafeBufferPointer { try mask.write($0) }
                try mask.close()
            }
            try f.createGroup("/entry/measurement", nxClass: "NXcollection")
            try f.writeDataset("/entry/measurement/samx", positions.x, shape: [n], units: "um")
            try f.writeDataset("/entry/measurement/samy", positions.y, shape: [n], units: "um")
            try f.writeDataset("/entry/measurement/mon", monitor, shape: [n], units: "counts")
            if let gt = groundTruth {
                try f.createGroup("/entry/ground_truth", nxClass: "NXcollection")
                for (name, units) in groundTruthUnits {
                    if let values = gt[name] {
                        try f.writeDataset("/entry/ground_truth/\(name)", values, shape: [rows, cols], units: units)
                    }
                }
            }
            try f.writeProcess(provenance)
        }
    }
}

extension RawDetectorLayout {
    /// The layout whose `pixelMask` is `mask` (H·W, Dectris bits): gap rows and columns are
    /// those whose every pixel has bit 1, hot pixels those with bit 8. Nil when the mask is
    /// not of that form (another bit, or a gap pixel outside a full gap row or column).
    public init?(height: Int, width: Int, pixelMask mask: [UInt32]) {
        guard mask.count == height * width else { return nil }
        let rows = (0..<height).filter { y in (0..<width).allSatisfy { mask[y * width + $0] & 1 != 0 } }
        let columns = (0..<width).filter { x in (0..<height).allSatisfy { mask[$0 * width + x] & 1 != 0 } }
        let hot = mask.indices.filter { mask[$0] & 8 != 0 }
        self.init(height: height, width: width, gapRows: rows.map { $0..<($0 + 1) }, gapColumns: columns.map { $0..<($0 + 1) }, hotPixels: hot)
        guard pixelMask == mask else { return nil }
    }
}

extension RawDetectorFileWriter {
    /// Rewrites a raw scan written by `write` (one frames dataset) in the Dectris layout:
    /// `master` and `framesPerFile`-frame data files beside it, with the same frames,
    /// compression, mask, positioners, monitor, ground truth and provenance, so one
    /// simulated scan can be read both ways. Streams one row of frames at a time.
    public static func splitIntoDataFiles(source: String, master: String, framesPerFile: Int, force: Bool = false) throws {
        let f = try H5File.open(source)
        defer { try? f.close() }
        let d = try f.openDataset(defaultFramesDataset)
        defer { try? d.close() }
        guard d.shape.count == 3, d.storedType == H5StoredType(kind: .unsignedInteger, bits: 32) else {
            throw DonutIOError.dataset(source, defaultFramesDataset, "expected (N, H, W) uint32 frames as the raw writer writes them, got \(d.storedType) \(d.shape)")
        }
        let n = d.shape[0], h = d.shape[1], w = d.shape[2]
        let gt = "/entry/ground_truth/strain"
        let grid = f.objectKind(gt) == .dataset ? try f.openDataset(gt).shape : []
        guard grid.count == 2, grid[0] * grid[1] == n else {
            throw DonutIOError.dataset(source, gt, "the scan's rows × cols are read from the ground-truth maps, found shape \(grid) for \(n) frames")
        }
        let rows = grid[0], cols = grid[1]
        let maskPath = "/entry/instrument/detector/pixel_mask"
        let hasMask = f.objectKind(maskPath) == .dataset
        var layout = RawDetectorLayout(height: h, width: w)
        if hasMask {
            let mask = try f.readDataset(maskPath, as: UInt32.self)
            guard let l = RawDetectorLayout(height: h, width: w, pixelMask: mask) else {
                throw DonutIOError.dataset(source, maskPath, "is not a mask of full gap rows and columns (bit 1) and hot pixels (bit 8)")
            }
            layout = l
        }
        var groundTruth: [String: [Double]] = [:]
        for (name, _) in groundTruthUnits where f.objectKind("/entry/ground_truth/\(name)") == .dataset {
            groundTruth[name] = try f.readDataset("/entry/ground_truth/\(name)", as: Double.self)
        }
        let compression: [H5Filter] = d.filters.map { $0.id == 32008 ? .bitshuffleLZ4 : $0.id == 1 ? .gzip(level: $0.parameters.first ?? 4) : $0 }
        guard let provenance = try f.readProcess() else { throw DonutIOError.group(source, "/entry/process", "not found") }
        try write(path: master, layout: layout, rows: rows, cols: cols, frames: { r in
            try d.read(as: UInt32.self, selection: FlatSelection(leadingRank: 1, range: (r * cols)..<((r + 1) * cols)))
        }, positions: (try f.readDataset("/entry/measurement/samx", as: Double.self), try f.readDataset("/entry/measurement/samy", as: Double.self)),
           monitor: try f.readDataset("/entry/measurement/mon", as: Double.self), groundTruth: groundTruth.isEmpty ? nil : groundTruth,
           provenance: provenance, compression: compression, writeMask: hasMask, framesPerFile: framesPerFile, force: force)
    }
}
