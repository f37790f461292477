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
/// row-major, raster order on the measured grid), cropping to the ROI and binning when the
/// file holds raw detector frames.
///
/// Raw detector files (Eiger, Jungfrau, … as beamline file writers leave them) are read as
/// they are: compressed chunks (filters checked and one chunk decoded at open), integer
/// frames (uint8/16/32, int32) with the dtype's sentinel masked, a NeXus `pixel_mask` or a
/// mask file, a hot-pixel threshold, a per-frame monitor, positioners and serpentine order
/// (`ScanReadOptions`). Every problem of the file is reported by `init`, before any
/// computation. `readBlock` gives methods what they consume (`FrameBlock`); `readFrames`
/// gives the counts as stored (no masking), for callers that judge frames themselves.
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
    /// Element type on disk.
    public let storedType: H5StoredType
    /// Order of the frames in the file and where they lie (maps are in raster order).
    public let geometry: ScanGeometry
    /// The ROI actually used (raw pixels), nil when stored frames are used as they are.
    public let roi: DetectorROI?
    /// Raw pixels summed into one model pixel along each axis.
    public let binning: Int
    /// Value that marks a masked pixel in this dtype (2ⁿ − 1 for unsigned, 2ⁿ⁻¹ − 1 for
    /// signed integers; nil for floats).
    public let sentinel: Double?
    /// Raw counts above which a pixel is excluded in that frame; nil: none.
    public let hotPixelThreshold: Double?
    /// Where the static mask came from ("/entry/instrument/detector/pixel_mask",
    /// "mask.h5:/mask", or nil when there is none).
    public let maskSource: String?
    /// Static mask over the whole stored frame (H·W, true = bad), when there is one.
    public let frameMask: [Bool]?
    /// Monitor relative to its median, in map order (nil: none); `monitorSource` says where
    /// it came from and `monitorReference` is the median in the monitor's own units.
    public let monitor: [Double]?
    public let monitorSource: String?
    public let monitorReference: Double?

    /// The numbered parts the frames are split over (Dectris masters: `/entry/data/data_000001`,
    /// … external links to data files), in order; empty when the frames are one dataset.
    public let frameParts: [ScanFramePart]

    private enum Source { case hdf5(H5File, FrameStack), npy(NpyFile) }
    private var source: Source?
    /// 2 for (rows, cols, H, W), 1 for (N, H, W).
    private let leadingRank: Int
    /// The static mask cropped to the ROI (cropH·cropW), nil when nothing is masked there.
    private let cropMask: [Bool]?

    /// Groups searched for positioners, and the names tried for x (fast) and y (slow).
    public static let positionerSearch = (groups: ["/entry/measurement", "/entry/instrument/positioners",
                                                   "/entry/sample/positioners", "/entry/sample"],
                                          x: ["samx", "sx"], y: ["samy", "sy"])
    /// Datasets tried for a NeXus pixel mask (then `pixel_mask` and
    /// `detectorSpecific/pixel_mask` of every NXdetector group under /entry/instrument).
    public static let maskSearch = ["/entry/instrument/detector/pixel_mask",
                                    "/entry/instrument/detector/detectorSpecific/pixel_mask"]
    /// Datasets tried for the monitor, in order (then `data` of every NXmonitor group
    /// under /entry, then 1-D datasets of /entry/measurement named *mon*, i0 or io).
    public static let monitorSearch = ["/entry/instrument/monitor/data", "/entry/monitor/data", "/entry/control/data"]

    public init(path: String, dataset: String = defaultFramesDataset, config: DonutConfig,
                comm: Communicator? = nil, scanShape: (rows: Int, cols: Int)? = nil,
                options: ScanReadOptions = ScanReadOptions()) throws {
        try options.validate()
        self.path = path
        frameSize = config.model.frameSize
        let dataset = options.dataset ?? dataset
        let shape: [Int]
        var axisPositions: (y: [Double], x: [Double])?
        var configJSON: String?
        let objectName: String
        var file: H5File?
        var partsNote = ""  // "3 parts: 5 + 5 + 2 frames" for the checks below; "" for one dataset
        if path.lowercased().hasSuffix(".npy") {
            let npy = try NpyFile(path: path)
            shape = npy.shape
            source = .npy(npy)
            self.dataset = ""
            frameParts = []
            objectName = ""
            storedType = H5StoredType(kind: npy.dtype == .uint8 ? .unsignedInteger : npy.dtype == .int64 ? .signedInteger : .float,
                                      bits: npy.dtype.size * 8)
        } else {
            let f = try H5File.open(path, comm: comm)
            file = f
            let stack: FrameStack
            do { stack = try FrameStack(f, dataset: dataset) } catch { try? f.close(); throw error }
            shape = stack.shape
            storedType = stack.storedType
            source = .hdf5(f, stack)
            self.dataset = stack.name
            frameParts = stack.parts
            partsNote = stack.partsSummary
            objectName = stack.name
            if f.exists(configDataset) {
                configJSON = try f.readString(configDataset)
            }
            axisPositions = try Self.readPositions(f)
        }
        self.configJSON = configJSON
        func fail(_ message: String) -> DonutIOError {
            objectName.isEmpty ? DonutIOError(file: path, message) : .dataset(path, objectName, message)
        }
        let dims = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var grid: (rows: Int, cols: Int)?
        let frameCount: Int
        switch shape.count {
        case 4:
            grid = (shape[0], shape[1]); leadingRank = 2; frameCount = Sizes.product([shape[0], shape[1]]) ?? Int.max
            if let s = scanShape, s.rows != shape[0] || s.cols != shape[1] {
                throw fail("scan shape \(s.rows)×\(s.cols) was given but the frames are laid out \(shape[0])×\(shape[1]) \(dims)")
            }
        case 3:
            leadingRank = 1; frameCount = shape[0]
            if let s = scanShape {
                guard s.rows > 0, s.cols > 0, let n = Sizes.product([s.rows, s.cols]), n == shape[0] else {
                    let n = Sizes.product([s.rows, s.cols]).map(String.init) ?? "more than 2^63"
                    throw fail("scan shape \(s.rows)×\(s.cols) = \(n) frames, but the dataset holds \(shape[0]) \(dims)"
                               + (partsNote.isEmpty ? "" : " in \(partsNote)"))
                }
                grid = s
            }
        default:
            throw fail("expected 4-D (rows, cols, H, W) or 3-D (N, H, W), got \(shape.count)-D \(dims)")
        }
        guard frameCount > 0 else { throw fail("scan has no frames \(dims)") }
        let h = shape[shape.count - 2], w = shape[shape.count - 1]
        // Sizes declared by the file, checked before anything is allocated for them: the
        // per-frame results of the whole scan (about 64 bytes a frame) and one stored frame.
        let mapFactors = shape.count == 4 ? [("rows", shape[0]), ("cols", shape[1])] : [("frames", shape[0])]
        if let why = Sizes.memoryProblem("the scan's maps", factors: mapFactors, bytesPerElement: 64)
            ?? Sizes.memoryProblem("one stored frame", factors: [("height", h), ("width", w)], bytesPerElement: 8) {
            throw fail("\(dims): \(why)")
        }
        storedFrameShape = (h, w)

        // Geometry: declared order, positioners, grid.
        /// A count that does not match may come from a short or missing part: say what the parts hold.
        func withParts<T>(_ body: () throws -> T) throws -> T {
            do { return try body() } catch var e as DonutIOError where !partsNote.isEmpty {
                e.message += " (frames in \(partsNote))"
                throw e
            }
        }
        let positioners = try withParts { try file.flatMap { try Self.readPositioners($0, frameCount: frameCount, options: options) } }
        do {
            geometry = try ScanGeometry.resolve(frameCount: frameCount, grid: grid, declared: options.scanOrder,
                                                positions: positioners.map { ($0.x, $0.y) })
        } catch let p as ScanGeometry.Problem {
            let where_ = positioners.map { " (positioners \($0.xPath), \($0.yPath))" } ?? ""
            throw fail(p.description + where_ + (partsNote.isEmpty ? "" : " (frames in \(partsNote))"))
        }
        if geometry.source == .assumed, let p = axisPositions {
            guard p.y.count == geometry.rows, p.x.count == geometry.cols else {
                throw DonutIOError.dataset(path, "/entry/data/y", "positions y (\(p.y.count)) and x (\(p.x.count)) do not match the scan \(geometry.rows)×\(geometry.cols)")
            }
            layout = ScanLayout(rows: geometry.rows, cols: geometry.cols, y: p.y, x: p.x, axisUnits: "um")
        } else {
            layout = geometry.layout
        }

        // ROI and binning.
        let r = options.roi ?? config.instrument.roi, b = config.instrument.binning
        if h == frameSize && w == frameSize {
            roi = nil; binning = 1  // frames already cut to the model's size: no ROI applies
        } else if r.width == frameSize * b, r.height == frameSize * b, r.x >= 0, r.y >= 0,
                  r.x <= w - r.width, r.y <= h - r.height {
            roi = r; binning = b
        } else {
            let which = options.roi != nil ? "the ROI given (--roi / manifest key roi)" : "the model's ROI (config keys instrument.roi, instrument.binning)"
            let fits = r.width == frameSize * b && r.height == frameSize * b
            let problem = fits ? "it lies off the frame" : "it must be \(frameSize * b)×\(frameSize * b) raw pixels: model frame \(frameSize) × binning \(b)"
            throw fail("frames are \(h)×\(w) \(dims): expected \(frameSize)×\(frameSize) frames, or raw detector frames containing "
                       + "\(which) x \(r.x)..<\(r.x &+ r.width), y \(r.y)..<\(r.y &+ r.height) (\(problem))")
        }

        // Sentinel, hot pixels, static mask.
        switch storedType.kind {
        case .unsignedInteger where storedType.bits <= 32: sentinel = Double((UInt64(1) << storedType.bits) - 1)
        case .signedInteger where storedType.bits <= 32: sentinel = Double((Int64(1) << (storedType.bits - 1)) - 1)
        default: sentinel = nil
        }
        hotPixelThreshold = options.hotPixelThreshold
        let mask = try Self.readMask(options.mask, scanFile: file, scanPath: path, frame: (h, w))
        maskSource = mask?.source
        frameMask = mask?.bad
        let cropH = roi?.height ?? h, cropW = roi?.width ?? w, ox = roi?.x ?? 0, oy = roi?.y ?? 0
        if let bad = mask?.bad {
            var crop = [Bool](repeating: false, count: cropH * cropW)
            for y in 0..<cropH { for x in 0..<cropW { crop[y * cropW + x] = bad[(oy + y) * w + ox + x] } }
            cropMask = crop.contains(true) ? crop : nil
        } else {
            cropMask = nil
        }

        // Monitor, relative to its median, in map order.
        if let m = try withParts({ try Self.readMonitor(options.monitor, scanFile: file, scanPath: path, frameCount: frameCount) }) {
            let sorted = m.values.sorted()
            let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : 0.5 * (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2])
            let g = geometry
            monitor = (0..<frameCount).map { m.values[g.fileIndex($0)] / median }
            monitorSource = m.source; monitorReference = median
        } else {
            monitor = nil; monitorSource = nil; monitorReference = nil
        }

        // The ROI must see the sample: refuse one that lies (mostly) on a gap or masked
        // region of the first frame (sentinel values and the static mask).
        let first = try readBlock(0..<1, maskOnlyStaticAndSentinel: true)
        let excluded = first.weights.map { $0.reduce(0) { $0 + ($1 == 0 ? 1 : 0) } } ?? 0
        if excluded * 2 > first.pixelCount {
            let rr = roi ?? DetectorROI(x: 0, y: 0, width: w, height: h)
            throw fail("the ROI x \(rr.x)..<\(rr.x + rr.width), y \(rr.y)..<\(rr.y + rr.height) lies on a detector gap or masked region: "
                       + "\(excluded) of its \(first.pixelCount) model pixels are masked in the first frame "
                       + "(mask \(maskSource ?? "none"), sentinel \(sentinel.map { String(format: "%.0f", $0) } ?? "none")); "
                       + "choose another ROI (donut inspect suggests one)")
        }
    }

    /// Frame-like datasets (3-D or 4-D numeric) under /entry, for "not found" errors.
    static func frameCandidates(_ f: H5File) -> [String] {
        var out: [String] = []
        func walk(_ g: String, depth: Int) {
            for name in f.children(of: g) {
                let p = (g == "/" ? "" : g) + "/" + name
                switch f.objectKind(p) {
                case .group? where depth < 4: walk(p, depth: depth + 1)
                case .dataset?:
                    if let d = try? f.openDataset(p), d.isNumeric, d.shape.count >= 3 { out.append(p); try? d.close() }
                default: break
                }
                if out.count >= 8 { return }
            }
        }
        walk("/", depth: 0)
        return out
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

    /// Per-frame positioners in µm (file order), from the options or the search list; nil
    /// when neither x nor y is found (both or neither: one alone is an error).
    static func readPositioners(_ f: H5File, frameCount n: Int, options: ScanReadOptions)
        throws -> (x: [Double], y: [Double], xPath: String, yPath: String)? {
        let s = positionerSearch
        func locate(_ given: String?, _ names: [String]) throws -> String? {
            if let given {
                if given.hasPrefix("/") {
                    guard f.objectKind(given) == .dataset else { throw DonutIOError.dataset(f.path, given, "positioner not found") }
                    return given
                }
                guard let p = s.groups.map({ "\($0)/\(given)" }).first(where: { f.objectKind($0) == .dataset }) else {
                    throw DonutIOError(file: f.path, "positioner '\(given)' not found in \(s.groups.joined(separator: ", "))")
                }
                return p
            }
            for g in s.groups { for name in names where f.objectKind("\(g)/\(name)") == .dataset { return "\(g)/\(name)" } }
            return nil
        }
        let xp = try locate(options.positionerX, s.x), yp = try locate(options.positionerY, s.y)
        guard let xp, let yp else {
            if let one = xp ?? yp {
                throw DonutIOError.dataset(f.path, one, "a positioner was found for one axis only (x: \(xp ?? "none"), y: \(yp ?? "none")); "
                                           + "name both (--positioners X,Y) or neither")
            }
            return nil
        }
        func read(_ p: String) throws -> [Double] {
            let d = try f.openDataset(p)
            defer { try? d.close() }
            guard d.isNumeric, d.shape.reduce(1, *) == n else {
                throw DonutIOError.dataset(f.path, p, "positioner has shape \(d.shape) (\(d.shape.reduce(1, *)) values), the scan has \(n) frames")
            }
            let units = f.attributeExists("units", on: p) ? try f.readStringAttribute("units", on: p) : "um"
            let scale: Double
            switch units.lowercased() {
            case "um", "µm", "μm", "micron", "microns", "micrometer", "micrometre": scale = 1
            case "mm": scale = 1e3
            case "nm": scale = 1e-3
            case "m": scale = 1e6
            default: throw DonutIOError.attribute(f.path, p, "units", "unknown length unit '\(units)' (expected um, mm, nm or m)")
            }
            let v = try d.read(as: Double.self).map { $0 * scale }
            if let bad = v.firstIndex(where: { !$0.isFinite }) {
                throw DonutIOError.dataset(f.path, p, "positioner value \(bad) is \(v[bad])")
            }
            return v
        }
        return (try read(xp), try read(yp), xp, yp)
    }

    /// The static mask (H·W, true = bad) and where it came from; nil when there is none.
    static func readMask(_ source: MaskSource, scanFile: H5File?, scanPath: String, frame: (h: Int, w: Int))
        throws -> (bad: [Bool], source: String)? {
        func search(_ f: H5File) -> String? {
            if let p = maskSearch.first(where: { f.objectKind($0) == .dataset }) { return p }
            for g in f.children(of: "/entry/instrument") {
                let gp = "/entry/instrument/\(g)"
                guard f.objectKind(gp) == .group, (try? f.readStringAttribute("NX_class", on: gp)) == "NXdetector" else { continue }
                for p in ["\(gp)/pixel_mask", "\(gp)/detectorSpecific/pixel_mask"] where f.objectKind(p) == .dataset { return p }
            }
            return nil
        }
        func check(_ shape: [Int], _ values: [Double], file: String, object: String) throws -> [Bool] {
            let plane = shape.count == 3 && shape[0] == 1 ? Array(shape.dropFirst()) : shape
            guard plane == [frame.h, frame.w] else {
                let e = "mask has shape \(shape), the frames are \(frame.h)×\(frame.w)"
                throw object.isEmpty ? DonutIOError(file: file, e) : DonutIOError.dataset(file, object, e)
            }
            return values.map { $0 != 0 }
        }
        switch source {
        case .none: return nil
        case .auto:
            guard let f = scanFile, let p = search(f) else { return nil }
            let d = try f.openDataset(p)
            defer { try? d.close() }
            return (try check(d.shape, try d.read(as: Double.self), file: scanPath, object: p), p)
        case .file(let mp, let dataset):
            if mp.lowercased().hasSuffix(".npy") {
                let npy = try NpyFile(path: mp)
                return (try check(npy.shape, try npy.readDoubles(), file: mp, object: ""), mp)
            }
            let f = try H5File.open(mp)
            defer { try? f.close() }
            guard let p = dataset ?? search(f) ?? ["/mask", "/pixel_mask", "/data"].first(where: { f.objectKind($0) == .dataset }) else {
                throw DonutIOError(file: mp, "no mask dataset found (tried \((maskSearch + ["/mask", "/pixel_mask", "/data"]).joined(separator: ", ")); "
                                   + "name one as FILE:DATASET")
            }
            let d = try f.openDataset(p)
            defer { try? d.close() }
            return (try check(d.shape, try d.read(as: Double.self), file: mp, object: p), "\(mp):\(p)")
        }
    }

    /// The monitor values (file order, raw units) and where they came from; nil when none.
    /// Refuses a monitor of the wrong length or with a zero, negative or non-finite value.
    static func readMonitor(_ source: MonitorSource, scanFile: H5File?, scanPath: String, frameCount n: Int)
        throws -> (values: [Double], source: String)? {
        var file = scanFile, dpath: String
        var other: H5File?
        defer { try? other?.close() }
        switch source {
        case .none: return nil
        case .auto:
            guard let f = scanFile else { return nil }
            var found = monitorSearch.first { f.objectKind($0) == .dataset }
            if found == nil {
                for g in f.children(of: "/entry") where (try? f.readStringAttribute("NX_class", on: "/entry/\(g)")) == "NXmonitor" {
                    if f.objectKind("/entry/\(g)/data") == .dataset { found = "/entry/\(g)/data"; break }
                }
            }
            if found == nil {
                found = f.children(of: "/entry/measurement").first { name in
                    let l = name.lowercased()
                    return (l.contains("mon") || l == "i0" || l == "io") && f.objectKind("/entry/measurement/\(name)") == .dataset
                }.map { "/entry/measurement/\($0)" }
            }
            guard let p = found else { return nil }
            dpath = p
        case .dataset(let mf, let p):
            if let mf {
                other = try H5File.open(mf)
                file = other
            }
            guard let f = file else { throw DonutIOError(file: scanPath, "a monitor dataset needs an HDF5 scan file or FILE:/DATASET") }
            dpath = p
            guard f.objectKind(p) == .dataset else { throw DonutIOError.dataset(f.path, p, "monitor not found") }
        }
        let f = file!
        let d = try f.openDataset(dpath)
        defer { try? d.close() }
        let hint = "; pass --monitor none to process without one"
        guard d.isNumeric, d.shape.reduce(1, *) == n else {
            throw DonutIOError.dataset(f.path, dpath, "monitor has shape \(d.shape) (\(d.shape.reduce(1, *)) values), the scan has \(n) frames\(hint)")
        }
        let v = try d.read(as: Double.self)
        let bad = v.indices.filter { !(v[$0].isFinite && v[$0] > 0) }
        if let i = bad.first {
            throw DonutIOError.dataset(f.path, dpath, "monitor has \(bad.count) zero, negative or non-finite values "
                                       + "(first: frame \(i) = \(v[i])); frames cannot be normalised by it\(hint)")
        }
        let src = f === scanFile ? dpath : "\(f.path):\(dpath)"
        return (v, src)
    }

    /// Raw crop (cropH·cropW per frame, as Double) of file frames `range`.
    private func readCrop(fileRange range: Range<Int>) throws -> [Double] {
        let (h, w) = storedFrameShape
        switch source {
        case .hdf5(_, let frames):
            return try frames.read(range: range, trailingStart: roi.map { [$0.y, $0.x] }, trailingCount: roi.map { [$0.height, $0.width] })
        case .npy(let npy):
            let all = try npy.readDoubles(range.lowerBound * h * w ..< range.upperBound * h * w)
            guard let r = roi else { return all }
            var out = [Double](repeating: 0, count: range.count * r.height * r.width)
            for f in 0..<range.count {
                for y in 0..<r.height {
                    let src = f * h * w + (r.y + y) * w + r.x, dst = (f * r.height + y) * r.width
                    for x in 0..<r.width { out[dst + x] = all[src + x] }
                }
            }
            return out
        case nil:
            throw error("reader is closed")
        }
    }

    /// Raw crops of map frames `range` (raster order on the grid), read run by run.
    private func readCropMapOrder(_ range: Range<Int>) throws -> [Double] {
        guard range.lowerBound >= 0, range.upperBound <= layout.frameCount else {
            throw error("frames \(range) outside the scan's \(layout.frameCount) frames")
        }
        let per = (roi?.height ?? storedFrameShape.height) * (roi?.width ?? storedFrameShape.width)
        let runs = geometry.fileRuns(range)
        if runs.count == 1, runs[0].step == 1 { return try readCrop(fileRange: runs[0].file ..< runs[0].file + runs[0].count) }
        var out = [Double](repeating: 0, count: range.count * per)
        for run in runs {
            let lo = run.step == 1 ? run.file : run.file - run.count + 1
            let part = try readCrop(fileRange: lo ..< lo + run.count)
            for i in 0..<run.count {
                let src = run.step == 1 ? i : run.count - 1 - i, dst = run.map - range.lowerBound + i
                for p in 0..<per { out[dst * per + p] = part[src * per + p] }
            }
        }
        return out
    }

    /// Frames `range` (flat map index row·cols + col), frameSize² floats each, row-major,
    /// summed over each bin. Values are passed on as stored (NaN, negative counts and
    /// sentinels included, no mask): methods use `readBlock`. Independent.
    public func readFrames(_ range: Range<Int>) throws -> [Float] {
        let cropped = try readCropMapOrder(range).map { Float($0) }
        guard let roi, binning > 1 else { return cropped }
        let cropH = roi.height, cropW = roi.width
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

    /// Frames `range` (map order) as methods consume them: counts summed over each bin,
    /// weight 0 (and count 0) for a model pixel when any raw pixel of its bin is masked —
    /// by the static mask, the dtype's sentinel, the hot-pixel threshold, or a negative,
    /// NaN or infinite value — and the monitor relative to its median. Independent.
    public func readBlock(_ range: Range<Int>) throws -> FrameBlock {
        try readBlock(range, maskOnlyStaticAndSentinel: false)
    }

    private func readBlock(_ range: Range<Int>, maskOnlyStaticAndSentinel: Bool) throws -> FrameBlock {
        let crop = try readCropMapOrder(range)
        let b = binning, n = frameSize, np = n * n
        let cropW = roi?.width ?? storedFrameShape.width, cropH = roi?.height ?? storedFrameShape.height
        let sentinel = self.sentinel ?? .nan
        let hot = maskOnlyStaticAndSentinel ? .infinity : (hotPixelThreshold ?? .infinity)
        let staticMask = cropMask
        var counts = [Float](repeating: 0, count: range.count * np)
        var weights = [Float](repeating: 1, count: range.count * np)
        var anyMasked = false
        for f in 0..<range.count {
            let base = f * cropH * cropW
            for y in 0..<n {
                for x in 0..<n {
                    var s = 0.0, bad = false
                    for i in 0..<b {
                        let row = (y * b + i) * cropW + x * b
                        for j in 0..<b {
                            let v = crop[base + row + j]
                            if v == sentinel || (staticMask?[row + j] ?? false) { bad = true }
                            else if !maskOnlyStaticAndSentinel && (!v.isFinite || v < 0 || v > hot) { bad = true }
                            else { s += v }
                        }
                    }
                    if bad { weights[f * np + y * n + x] = 0; anyMasked = true }
                    else { counts[f * np + y * n + x] = Float(s) }
                }
            }
        }
        return FrameBlock(first: range.lowerBound, count: range.count, pixelCount: np, counts: counts,
                          weights: anyMasked ? weights : nil, monitor: monitor.map { Array($0[range]) })
    }

    /// The static mask at model resolution (frameSize², 1 = excluded), all 0 when none:
    /// what the result file records as the mask used.
    public var modelMask: [UInt8] {
        let n = frameSize, b = binning, cropW = roi?.width ?? storedFrameShape.width
        guard let m = cropMask else { return .init(repeating: 0, count: n * n) }
        return (0..<(n * n)).map { k in
            let y = k / n, x = k % n
            for i in 0..<b { for j in 0..<b where m[(y * b + i) * cropW + x * b + j] { return 1 } }
            return 0
        }
    }

    /// How this scan is read, for the result file.
    public var summary: ScanReadSummary {
        ScanReadSummary(roi: roi, binning: binning, maskSource: maskSource, modelMask: modelMask,
                               maskedRawPixelsInROI: cropMask?.reduce(0) { $0 + ($1 ? 1 : 0) } ?? 0,
                               maskedRawPixels: frameMask?.reduce(0) { $0 + ($1 ? 1 : 0) } ?? 0,
                               sentinel: sentinel, hotPixelThreshold: hotPixelThreshold, monitor: monitor,
                               monitorSource: monitorSource, monitorReference: monitorReference, geometry: geometry,
                               framesSource: frameParts.isEmpty ? (dataset.isEmpty ? [] : [dataset]) : frameParts.map(\.description))
    }

    /// The config as used for this scan: `instrument.roi` is the ROI actually read (for
    /// provenance: a library or model serves any ROI of its size).
    public func configUsed(_ config: DonutConfig) -> DonutConfig {
        var c = config
        if let roi { c.instrument.roi = roi }
        return c
    }

    /// The config JSON a result records: `recorded` unchanged when the ROI read is the
    /// config's own, else the config with `instrument.roi` set to the ROI actually used.
    public func provenanceConfigJSON(_ config: DonutConfig, recorded: String) -> String {
        guard let roi, roi != config.instrument.roi else { return recorded }
        return ConfigFile.json(configUsed(config))
    }

    /// Ground-truth maps of a simulated scan (`/entry/ground_truth/{strain, tilt_lr,
    /// tilt_ud, thickness}`, those present), flat (rows·cols, map order); nil when none.
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
        if case .hdf5(let file, let frames)? = source {
            source = nil
            try frames.close()
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
                             force: Bool = false, inputs: [(role: String, path: String)] = []) throws {
        let n = layout.frameCount
        guard frames.count == n * frameSize * frameSize else {
            throw DonutIOError.dataset(path, defaultFramesDataset, "\(frames.count) values given for \(layout.rows)×\(layout.cols) frames of \(frameSize)×\(frameSize)")
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
        let output = try AtomicOutput(path: path, force: force, expectedBytes: frames.count * 4 + (64 << 10), inputs: inputs)
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "scan", entryDefault: "data")
            try f.createGroup("/entry/data", nxClass: "NXdata")
            try f.setAttribute("signal", "data", on: "/entry/data")
            try f.writeDataset(defaultFramesDataset, frames, shape: [layout.rows, layout.cols, frameSize, frameSize], units: "counts")
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
