import DonutCore
import DonutPhysics
import Foundation

/// What a user needs to know about a detector file before choosing a ROI and a mask
/// (`donut inspect SCAN`): how it is stored, what is masked, where the signal is, what
/// else the file holds (monitor, positioners), and the scan order.
public struct ScanInspection: Sendable {
    public var path: String
    public var dataset: String
    /// The numbered parts the frames are split over (Dectris masters), empty for one dataset.
    public var parts: [ScanFramePart]
    public var storedType: String
    public var shape: [Int]
    public var chunks: [Int]?
    public var filters: [H5Filter]
    /// Frames summed (evenly spread over the scan when it has more than asked for).
    public var framesSummed: Int
    public var frameCount: Int
    public var maskSource: String?
    /// The mask source asked for.
    public var maskRequested: MaskSource
    /// Raw pixels excluded by the static mask (whole frame).
    public var maskedPixels: Int
    /// Raw pixels at the dtype's sentinel in at least one summed frame (gaps, saturation).
    public var sentinelPixels: Int
    public var sentinel: Double?
    /// Pixels whose mean count is over 100× the 99.9th percentile of the others (hot),
    /// and a per-frame threshold that would mask them (10× the largest other value).
    public var hotPixels: Int
    /// Of those, how many the mask already excludes.
    public var hotPixelsMasked: Int
    public var suggestedHotPixelThreshold: Double?
    public var monitorSource: String?
    public var monitorRange: (min: Double, median: Double, max: Double)?
    public var positioners: (x: String, y: String)?
    public var geometry: ScanGeometry?
    /// Why the geometry could not be resolved (e.g. 3-D frames without a scan shape).
    public var geometryProblem: String?
    /// The brightest ROI of the model's size (frameSize × binning raw pixels), centred on
    /// the intensity centroid of the brightest such window; and how much of it is masked.
    public var suggestedROI: DetectorROI
    public var suggestedROIMaskedFraction: Double
    public var roiSize: Int
    /// Which config set `roiSize`.
    public var roiSizeSource: String
    /// The summed frame (log scale) with the suggested ROI drawn, when written.
    public var pngPath: String?

    /// The report `donut inspect` prints, one line per fact.
    public var report: [String] {
        var lines: [String] = []
        lines.append("file: \(path)")
        lines.append("frames: dataset \(dataset), \(storedType), shape (\(shape.map(String.init).joined(separator: ", ")))"
                     + (chunks.map { ", chunks (\($0.map(String.init).joined(separator: ", ")))" } ?? ", contiguous"))
        if !parts.isEmpty {
            lines.append("parts: \(parts.count) data files linked from the master, frames each: "
                         + parts.map { String($0.frameCount) }.joined(separator: " + ") + " = \(frameCount)")
            let shown = parts.count <= 20 ? Array(parts) : Array(parts.prefix(10)) + Array(parts.suffix(10))
            for (i, p) in shown.enumerated() {
                if parts.count > 20 && i == 10 { lines.append("  … \(parts.count - 20) more parts") }
                lines.append("  \(p)")
            }
        }
        lines.append("filters: " + (filters.isEmpty ? "none" : filters.map { "\($0) " + (H5Plugins.canDecode($0.id) ? "[decoder found]" : "[NO DECODER]") }.joined(separator: " → ")))
        lines.append("mask: " + (maskSource.map { "\($0), \(maskedPixels) pixels masked" }
                                 ?? (maskRequested == .none ? "none (--mask none)" : "no pixel_mask found (pass --mask FILE[:DATASET])")))
        lines.append("sentinel: " + (sentinel.map { String(format: "%.0f", $0) + " (\(sentinelPixels) pixels hold it in the summed frames)" } ?? "none (floating-point frames)"))
        lines.append("hot pixels: \(hotPixels), \(hotPixelsMasked) of them in the mask"
                     + (hotPixels > hotPixelsMasked ? (suggestedHotPixelThreshold.map { String(format: " (mask the others with --hot-pixel-threshold %.0f)", $0) } ?? "") : ""))
        if let m = monitorRange, let s = monitorSource {
            lines.append(String(format: "monitor: %@ (min %.4g, median %.4g, max %.4g)", s, m.min, m.median, m.max))
        } else {
            lines.append("monitor: none found (pass --monitor /DATASET)")
        }
        lines.append("positioners: " + (positioners.map { "x \($0.x), y \($0.y)" } ?? "none found (pass --positioners X,Y)"))
        if let g = geometry {
            lines.append("scan: \(g.rows)×\(g.cols) frames, order \(g.order.rawValue) (\(g.source.rawValue))")
        } else {
            lines.append("scan: \(frameCount) frames; order unknown: \(geometryProblem ?? "")")
        }
        let r = suggestedROI
        lines.append(String(format: "suggested ROI: --roi %d,%d,%d,%d (%d×%d raw pixels from %@, %.1f %% masked; from %d summed frames)",
                            r.x, r.y, r.width, r.height, roiSize, roiSize, roiSizeSource, 100 * suggestedROIMaskedFraction, framesSummed))
        if let p = pngPath { lines.append("summed frame: \(p)") }
        return lines
    }
}

/// Inspects a scan file: storage, filters (checked: an undecodable one is an error naming
/// it), the frames summed (at most `maxFrames`, evenly spread; 0 = all) with masked,
/// sentinel and hot pixels counted, monitor, positioners, scan order and a suggested ROI of
/// the model's size (frameSize × binning raw pixels of `config`, else of the config the file
/// records, else of the published preset). Writes the summed frame as a PNG to `pngPath` when given (atomic,
/// no overwrite without `force`). Serial.
public func inspectScan(path: String, dataset: String = defaultFramesDataset, config: DonutConfig? = nil, options: ScanReadOptions = ScanReadOptions(),
                        scanShape: (rows: Int, cols: Int)? = nil, maxFrames: Int = 256, pngPath: String? = nil,
                        force: Bool = false) throws -> ScanInspection {
    try options.validate()
    let dataset = options.dataset ?? dataset
    let f = try H5File.open(path)
    defer { try? f.close() }
    // One dataset, or the numbered parts of a Dectris master (each checked, filters probed).
    let d = try FrameStack(f, dataset: dataset)
    defer { try? d.close() }
    guard d.shape.count == 3 || d.shape.count == 4 else {
        throw DonutIOError.dataset(path, d.name, "expected numeric frames (N, H, W) or (rows, cols, H, W), got \(d.storedType) \(d.shape)")
    }
    var roiFrom = "the config given"
    var cfg = config
    if cfg == nil, f.exists(configDataset),
       let c = try? ConfigFile.fromJSON(try f.readString(configDataset), source: "\(path):\(configDataset)") {
        cfg = c; roiFrom = "the config recorded in the file"
    }
    if cfg == nil { roiFrom = "the published preset (pass --config)" }
    let model = cfg ?? .srio3LSAT002
    let roiSize = model.model.frameSize * model.instrument.binning
    let h = d.shape[d.shape.count - 2], w = d.shape[d.shape.count - 1]
    let leadingRank = d.shape.count - 2
    let n = d.shape.prefix(leadingRank).reduce(1, *)
    guard n > 0, h > 0, w > 0 else { throw DonutIOError.dataset(path, d.name, "holds no frames \(d.shape)") }
    guard roiSize >= 1, roiSize <= min(h, w) else {
        throw DonutIOError.dataset(path, d.name, "frames are \(h)×\(w), smaller than the model's ROI of \(roiSize)×\(roiSize) raw pixels")
    }
    let type = d.storedType
    let sentinel: Double? = switch type.kind {
    case .unsignedInteger where type.bits <= 32: Double((UInt64(1) << type.bits) - 1)
    case .signedInteger where type.bits <= 32: Double((Int64(1) << (type.bits - 1)) - 1)
    default: nil
    }
    let mask = try ScanReader.readMask(options.mask, scanFile: f, scanPath: path, frame: (h, w))

    // Sum frames, evenly spread; count sentinel pixels and keep each pixel's largest value.
    let take = maxFrames <= 0 ? n : min(n, maxFrames)
    let picks = (0..<take).map { take == 1 ? 0 : $0 * (n - 1) / (take - 1) }
    var sum = [Double](repeating: 0, count: h * w), peak = [Double](repeating: 0, count: h * w)
    var isSentinel = [Bool](repeating: false, count: h * w)
    for k in picks {
        let frame = try d.read(range: k..<(k + 1), trailingStart: nil, trailingCount: nil)
        for p in 0..<(h * w) {
            let v = frame[p]
            if v == sentinel { isSentinel[p] = true; continue }
            guard v.isFinite, v >= 0 else { continue }
            sum[p] += v
            peak[p] = max(peak[p], v)
        }
    }
    var bad = (0..<(h * w)).map { isSentinel[$0] || (mask?.bad[$0] ?? false) }
    // Hot: mean over 100× the 99.9th percentile of the other pixels' means (masked or not:
    // the report says how many the mask already covers).
    let goodSums = (0..<(h * w)).filter { !bad[$0] }.map { sum[$0] }.sorted()
    let p999 = goodSums.isEmpty ? 0 : goodSums[min(goodSums.count - 1, Int(Double(goodSums.count) * 0.999))]
    let hotLimit = max(100 * p999, Double(take))
    let hot = (0..<(h * w)).filter { !isSentinel[$0] && sum[$0] > hotLimit }
    let hotMasked = hot.filter { mask?.bad[$0] ?? false }.count
    var suggestedThreshold: Double?
    if !hot.isEmpty {
        for p in hot { bad[p] = true }
        let largest = (0..<(h * w)).filter { !bad[$0] }.map { peak[$0] }.max() ?? 0
        suggestedThreshold = max(10 * largest, 1)
    }

    // Brightest window of roiSize² (integral image), then centred on its centroid.
    var integral = [Double](repeating: 0, count: (h + 1) * (w + 1))
    for y in 0..<h {
        var row = 0.0
        for x in 0..<w {
            row += bad[y * w + x] ? 0 : sum[y * w + x]
            integral[(y + 1) * (w + 1) + x + 1] = integral[y * (w + 1) + x + 1] + row
        }
    }
    func windowSum(_ x: Int, _ y: Int) -> Double {
        let s = roiSize, W = w + 1
        return integral[(y + s) * W + x + s] - integral[y * W + x + s] - integral[(y + s) * W + x] + integral[y * W + x]
    }
    var best = (x: 0, y: 0, s: -1.0)
    for y in 0...(h - roiSize) { for x in 0...(w - roiSize) { let s = windowSum(x, y); if s > best.s { best = (x, y, s) } } }
    // The centroid of the window with its masked pixels filled from their neighbours
    // (`MaskInpainting`): left out, a gap through the pattern pulls the centroid away from
    // itself (by 0.1 pixel for the 2-pixel chip gaps through the walk-through's pattern).
    // The window then starts at centroid − (size − 1)/2, so that the centroid sits at the
    // centre of its pixel centres (the old centroid − size/2, rounded, sat half a pixel off
    // and gave 191 for a pattern centred on 192…319).
    var window = [Float](repeating: 0, count: roiSize * roiSize), measured = window
    for y in 0..<roiSize {
        for x in 0..<roiSize {
            let p = (best.y + y) * w + best.x + x
            if !bad[p] { window[y * roiSize + x] = Float(sum[p]); measured[y * roiSize + x] = 1 }
        }
    }
    window.withUnsafeMutableBufferPointer { f in
        measured.withUnsafeBufferPointer { MaskInpainting(frameSize: roiSize).fill(f, weights: $0) }
    }
    var cx = 0.0, cy = 0.0, total = 0.0
    for y in 0..<roiSize {
        for x in 0..<roiSize {
            let v = Double(window[y * roiSize + x])
            cx += v * Double(best.x + x); cy += v * Double(best.y + y); total += v
        }
    }
    var rx = best.x, ry = best.y
    if total > 0 {
        let half = Double(roiSize - 1) / 2   // the centre of the window's pixel centres
        rx = min(max(Int((cx / total - half).rounded()), 0), w - roiSize)
        ry = min(max(Int((cy / total - half).rounded()), 0), h - roiSize)
    }
    let roi = DetectorROI(x: rx, y: ry, width: roiSize, height: roiSize)
    var maskedInROI = 0
    for y in ry..<(ry + roiSize) { for x in rx..<(rx + roiSize) where bad[y * w + x] { maskedInROI += 1 } }

    // Monitor, positioners, geometry: reported, not refused (inspect is for finding out).
    var monitorSource: String?, monitorRange: (Double, Double, Double)?
    if let m = try? ScanReader.readMonitor(options.monitor, scanFile: f, scanPath: path, frameCount: n) {
        let s = m.values.sorted()
        monitorSource = m.source; monitorRange = (s.first!, s[s.count / 2], s.last!)
    } else if case .auto = options.monitor {
        monitorSource = nil
    }
    let positioners = try? ScanReader.readPositioners(f, frameCount: n, options: options)
    var geometry: ScanGeometry?, problem: String?
    let grid = scanShape ?? (leadingRank == 2 ? (d.shape[0], d.shape[1]) : nil)
    do {
        geometry = try ScanGeometry.resolve(frameCount: n, grid: grid, declared: options.scanOrder,
                                            positions: positioners.map { ($0.x, $0.y) })
    } catch let p as ScanGeometry.Problem { problem = p.description }

    var png: String?
    if let pngPath {
        try writeInspectionPNG(path: pngPath, sum: sum, bad: bad, height: h, width: w, roi: roi, force: force)
        png = pngPath
    }
    return ScanInspection(path: path, dataset: d.name, parts: d.parts, storedType: type.description, shape: d.shape, chunks: d.chunkShape,
                          filters: d.filters, framesSummed: take, frameCount: n, maskSource: mask?.source, maskRequested: options.mask,
                          maskedPixels: mask?.bad.reduce(0) { $0 + ($1 ? 1 : 0) } ?? 0,
                          sentinelPixels: isSentinel.reduce(0) { $0 + ($1 ? 1 : 0) }, sentinel: sentinel,
                          hotPixels: hot.count, hotPixelsMasked: hotMasked, suggestedHotPixelThreshold: suggestedThreshold,
                          monitorSource: monitorSource, monitorRange: monitorRange,
                          positioners: positioners.map { ($0.xPath, $0.yPath) },
                          geometry: geometry, geometryProblem: problem, suggestedROI: roi,
                          suggestedROIMaskedFraction: Double(maskedInROI) / Double(roiSize * roiSize), roiSize: roiSize, roiSizeSource: roiFrom,
                          pngPath: png)
}

/// The summed frame on a log grey scale (masked pixels dark blue), the suggested ROI in red.
private func writeInspectionPNG(path: String, sum: [Double], bad: [Bool], height h: Int, width w: Int,
                                roi: DetectorROI, force: Bool) throws {
    let top = log1p((0..<(h * w)).filter { !bad[$0] }.map { sum[$0] }.max() ?? 0)
    var rgb = [UInt8](repeating: 0, count: h * w * 3)
    for p in 0..<(h * w) {
        if bad[p] { rgb[3 * p] = 20; rgb[3 * p + 1] = 30; rgb[3 * p + 2] = 90; continue }
        let g = UInt8(max(0, min(255, 255 * (top > 0 ? log1p(sum[p]) / top : 0))))
        rgb[3 * p] = g; rgb[3 * p + 1] = g; rgb[3 * p + 2] = g
    }
    func red(_ x: Int, _ y: Int) {
        guard x >= 0, x < w, y >= 0, y < h else { return }
        rgb[3 * (y * w + x)] = 255; rgb[3 * (y * w + x) + 1] = 40; rgb[3 * (y * w + x) + 2] = 40
    }
    for x in roi.x..<(roi.x + roi.width) { red(x, roi.y); red(x, roi.y + roi.height - 1) }
    for y in roi.y..<(roi.y + roi.height) { red(roi.x, y); red(roi.x + roi.width - 1, y) }
    let bytes = PNG.encodeRGB(width: w, height: h, rgb: rgb)
    try AtomicOutput.write(Data(bytes), to: path, force: force)
}
