import DonutCore
import DonutPhysics
import Foundation

/// How to read a beamline scan: everything a user may have to say about a raw detector
/// file (frames dataset, ROI, mask, hot pixels, monitor, scan order, positioners).
/// Pipelines take it from the command line or the manifest and pass it straight to
/// `ScanReader`; nil fields mean "find it or use the default" as documented per field
/// (configs/README.md, "From the beamline").
public struct ScanReadOptions: Equatable, Sendable {
    /// Dataset of the frames; nil: the reader's default (`/entry/data/data`).
    public var dataset: String?
    /// Detector region (raw pixels) cut from the frames; nil: the model's `instrument.roi`.
    /// The ROI does not change a pattern, so a library or model serves any ROI of its size.
    public var roi: DetectorROI?
    /// Where the bad-pixel mask comes from (default: the file's NeXus `pixel_mask`).
    public var mask: MaskSource
    /// Raw counts above which a pixel is masked in that frame (hot pixels); nil: no
    /// threshold (the default: only the mask, the dtype's sentinel and negative/NaN values
    /// exclude pixels; `donut inspect` reports pixels that look hot).
    public var hotPixelThreshold: Double?
    /// Where the incident-intensity monitor comes from (default: searched at NeXus places).
    public var monitor: MonitorSource
    /// Acquisition order; nil: detected from positioners, else raster.
    public var scanOrder: ScanOrder?
    /// Per-frame positioner datasets (µm) for x (fast) and y (slow); nil: searched
    /// (`ScanReader.positionerSearch`). A bare name is looked up in the search groups.
    public var positionerX: String?
    public var positionerY: String?

    public init(dataset: String? = nil, roi: DetectorROI? = nil, mask: MaskSource = .auto, hotPixelThreshold: Double? = nil,
                monitor: MonitorSource = .auto, scanOrder: ScanOrder? = nil, positionerX: String? = nil, positionerY: String? = nil) {
        self.dataset = dataset; self.roi = roi; self.mask = mask; self.hotPixelThreshold = hotPixelThreshold
        self.monitor = monitor; self.scanOrder = scanOrder; self.positionerX = positionerX; self.positionerY = positionerY
    }

    /// Checks the values themselves (files are checked when the scan is opened).
    public func validate() throws {
        if let r = roi, r.x < 0 || r.y < 0 || r.width < 1 || r.height < 1 {
            throw ConfigError(key: "roi", "needs x, y ≥ 0 and width, height ≥ 1 (got \(r.x),\(r.y),\(r.width),\(r.height))")
        }
        if let t = hotPixelThreshold, !(t.isFinite && t > 0) {
            throw ConfigError(key: "hot_pixel_threshold", "must be a positive number of counts (got \(t))")
        }
    }

    /// Parses "X,Y,W,H" (raw detector pixels), as given to `--roi` and the manifest key.
    public static func parseROI(_ text: String) throws -> DetectorROI {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 4, let x = parts[0], let y = parts[1], let w = parts[2], let h = parts[3],
              x >= 0, y >= 0, w >= 1, h >= 1 else {
            throw ConfigError(key: "roi", "must be X,Y,W,H in raw detector pixels, x, y ≥ 0, w, h ≥ 1 (got '\(text)')")
        }
        return DetectorROI(x: x, y: y, width: w, height: h)
    }
}

/// Where the bad-pixel mask comes from. Non-zero = bad, (H, W) like the frames.
public enum MaskSource: Equatable, Sendable, CustomStringConvertible {
    /// The scan file's NeXus `pixel_mask` when there is one (`ScanReader.maskSearch`).
    case auto
    /// No mask file or dataset (sentinels, hot-pixel threshold, negative/NaN still apply).
    case none
    /// A mask file (.h5 or .npy) and, for HDF5, the dataset (nil: searched as in `auto`).
    case file(path: String, dataset: String?)

    /// "auto", "none", "FILE" or "FILE:DATASET" (`--mask`, manifest key `mask`).
    public static func parse(_ text: String) -> MaskSource {
        switch text {
        case "auto", "": return .auto
        case "none": return .none
        default:
            if let colon = text.range(of: ":/") {
                return .file(path: String(text[..<colon.lowerBound]), dataset: String(text[text.index(after: colon.lowerBound)...]))
            }
            return .file(path: text, dataset: nil)
        }
    }
    public var description: String {
        switch self {
        case .auto: return "auto"
        case .none: return "none"
        case .file(let p, let d): return d.map { "\(p):\($0)" } ?? p
        }
    }
}

/// Where the per-frame monitor comes from (any positive unit; frames are scaled by the
/// monitor relative to its median).
public enum MonitorSource: Equatable, Sendable, CustomStringConvertible {
    /// Searched in the scan file (`ScanReader.monitorSearch`); none found = no monitor.
    case auto
    case none
    /// A dataset of the scan file ("/entry/…") or of another file ("FILE:/entry/…").
    case dataset(file: String?, path: String)

    /// "auto", "none", "/DATASET" or "FILE:/DATASET" (`--monitor`, manifest key `monitor`).
    public static func parse(_ text: String) -> MonitorSource {
        switch text {
        case "auto", "": return .auto
        case "none": return .none
        default:
            if text.hasPrefix("/") { return .dataset(file: nil, path: text) }
            if let colon = text.range(of: ":/") {
                return .dataset(file: String(text[..<colon.lowerBound]), path: String(text[text.index(after: colon.lowerBound)...]))
            }
            return .dataset(file: nil, path: text)
        }
    }
    public var description: String {
        switch self {
        case .auto: return "auto"
        case .none: return "none"
        case .dataset(let f, let p): return f.map { "\($0):\(p)" } ?? p
        }
    }
}

/// How a scan was read, as the result file records it (`ResultMapsWriter.write(scan:)`):
/// the ROI actually used, the mask (at model resolution, with counts), the monitor, the
/// scan order and, for scatter scans, each frame's position.
public struct ScanReadSummary: Equatable, Sendable {
    public var roi: DetectorROI?
    public var binning: Int
    public var maskSource: String?
    /// frameSize² values, 1 = model pixel excluded by the static mask.
    public var modelMask: [UInt8]
    /// Raw pixels the static mask excludes inside the ROI and on the whole frame.
    public var maskedRawPixelsInROI: Int
    public var maskedRawPixels: Int
    public var sentinel: Double?
    public var hotPixelThreshold: Double?
    /// Relative monitor in map order (nil: none).
    public var monitor: [Double]?
    public var monitorSource: String?
    public var monitorReference: Double?
    public var geometry: ScanGeometry
    /// Where the frames were read: the dataset, or each numbered part of a Dectris master
    /// ("/entry/data/data_000001 → x_data_000001.h5:/entry/data/data (100 frames)").
    public var framesSource: [String]

    public init(roi: DetectorROI?, binning: Int, maskSource: String?, modelMask: [UInt8], maskedRawPixelsInROI: Int,
                maskedRawPixels: Int, sentinel: Double?, hotPixelThreshold: Double?, monitor: [Double]?,
                monitorSource: String?, monitorReference: Double?, geometry: ScanGeometry, framesSource: [String] = []) {
        self.framesSource = framesSource
        self.roi = roi; self.binning = binning; self.maskSource = maskSource; self.modelMask = modelMask
        self.maskedRawPixelsInROI = maskedRawPixelsInROI; self.maskedRawPixels = maskedRawPixels
        self.sentinel = sentinel; self.hotPixelThreshold = hotPixelThreshold; self.monitor = monitor
        self.monitorSource = monitorSource; self.monitorReference = monitorReference; self.geometry = geometry
    }

    /// Why this summary cannot go with maps of `layout`, or nil.
    func problem(layout: ScanLayout) -> String? {
        let n = layout.frameCount
        if geometry.rows * geometry.cols != n { return "scan geometry \(geometry.rows)×\(geometry.cols) does not match the maps \(layout.rows)×\(layout.cols)" }
        if let m = monitor, m.count != n { return "monitor has \(m.count) values for \(n) frames" }
        if let x = geometry.x, let y = geometry.y, x.count != n || y.count != n { return "positions have \(x.count)/\(y.count) values for \(n) frames" }
        if geometry.order == .scatter && geometry.x == nil { return "a scatter scan needs per-frame positions" }
        let side = Int(Double(modelMask.count).squareRoot())
        if side * side != modelMask.count { return "the model mask has \(modelMask.count) values, not a square frame" }
        return nil
    }
}
