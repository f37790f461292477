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
    /// Writes a raw detector scan of `rows`×`cols` frames in acquisition order. `frames(r)`
    /// gives the H·W uint32 counts of file frame row `r` (cols frames, in the order
    /// acquired); positions (µm) and monitor are per file frame. Streams one row of frames
    /// at a time; refuses to overwrite `path` unless `force`; the file appears complete.
    public static func write(path: String, layout: RawDetectorLayout, rows: Int, cols: Int,
                             frames: @escaping (Int) throws -> [UInt32], positions: (x: [Double], y: [Double]), monitor: [Double],
                             groundTruth: [String: [Double]]? = nil, provenance: Provenance,
                             compression: [H5Filter] = [.bitshuffleLZ4], writeMask: Bool = true, force: Bool = false) throws {
        let n = rows * cols, h = layout.height, w = layout.width
        guard positions.x.count == n, positions.y.count == n, monitor.count == n else {
            throw DonutIOError(file: path, "positions (\(positions.x.count), \(positions.y.count)) and monitor (\(monitor.count)) need \(n) values")
        }
        let output = try AtomicOutput(path: path, force: force, expectedBytes: n * h * w + (1 << 20))
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "scan", entryDefault: "data")
            try f.createGroup("/entry/data", nxClass: "NXdata")
            try f.setAttribute("signal", "data", on: "/entry/data")
            let d = try f.createDataset(defaultFramesDataset, type: .uint32, shape: [n, h, w], chunks: [1, h, w], filters: compression)
            for r in 0..<rows {
                let block = try frames(r)
                guard block.count == cols * h * w else {
                    throw DonutIOError.dataset(path, defaultFramesDataset, "row \(r): \(block.count) values for \(cols) frames of \(h)×\(w)")
                }
                try block.withUnsafeBufferPointer { try d.write($0, selection: FlatSelection(leadingRank: 1, range: (r * cols)..<((r + 1) * cols))) }
            }
            try d.close()
            try f.setAttribute("units", "counts", on: defaultFramesDataset)
            try f.createGroup("/entry/instrument", nxClass: "NXinstrument")
            try f.createGroup("/entry/instrument/detector", nxClass: "NXdetector")
            if writeMask {
                let mask = try f.createDataset("/entry/instrument/detector/pixel_mask", type: .uint32, shape: [h, w],
                                               chunks: [h, w], filters: [.gzip()])
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
