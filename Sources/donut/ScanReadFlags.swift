import ArgumentParser
import DonutIO
import DonutPhysics
import Foundation

/// How to read a raw detector scan (configs/README.md, "From the beamline"): ROI, mask,
/// monitor, hot pixels, scan order. Shared by fit, infer, train, reprocess and refine.
struct ScanReadFlags: ParsableArguments {
    @Option(help: ArgumentHelp("Detector region read from raw frames, raw pixels (default: the config's instrument.roi). "
                               + "A library or model serves any ROI of its size.", valueName: "x,y,w,h"))
    var roi: String?
    @Option(help: ArgumentHelp("Bad-pixel mask, non-zero = bad: auto (the scan's NeXus pixel_mask), none, or a file "
                               + "(.h5[:/dataset] or .npy) shaped like the frames.", valueName: "auto|none|file[:/dataset]"))
    var mask: String?
    @Option(help: ArgumentHelp("Incident-intensity monitor, one value per frame: auto (searched at NeXus places), none, "
                               + "a /dataset of the scan, or file:/dataset.", valueName: "auto|none|/dataset"))
    var monitor: String?
    @Option(help: ArgumentHelp("Acquisition order (default: detected from positioners, else raster).", valueName: "raster|serpentine|scatter"))
    var scanOrder: String?
    @Option(help: ArgumentHelp("Raw counts above which a pixel is masked in that frame (default: no threshold).", valueName: "counts"))
    var hotPixelThreshold: Double?
    @Option(help: ArgumentHelp("Per-frame positioner datasets (µm) of the fast (x) and slow (y) axis "
                               + "(default: samx,samy searched in /entry/measurement, /entry/instrument/positioners, …).", valueName: "x,y"))
    var positioners: String?

    func validate() throws { _ = try options }

    /// The options as `ScanReader` takes them (file paths made absolute).
    var options: ScanReadOptions {
        get throws {
            var o = ScanReadOptions()
            do {
                o.roi = try roi.map(ScanReadOptions.parseROI)
            } catch let e as ConfigError { throw ValidationError("--roi \(e.message)") }
            o.mask = mask.map(MaskSource.parse) ?? .auto
            if case .file(let p, let d) = o.mask { o.mask = .file(path: absolute(p), dataset: d) }
            o.monitor = monitor.map(MonitorSource.parse) ?? .auto
            if case .dataset(let f?, let d) = o.monitor { o.monitor = .dataset(file: absolute(f), path: d) }
            if let s = scanOrder {
                guard let order = ScanOrder(rawValue: s) else {
                    throw ValidationError("--scan-order must be one of \(ScanOrder.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(s)')")
                }
                o.scanOrder = order
            }
            o.hotPixelThreshold = hotPixelThreshold
            if let p = positioners {
                let parts = p.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw ValidationError("--positioners must be X,Y (dataset names or paths; got '\(p)')")
                }
                o.positionerX = parts[0]; o.positionerY = parts[1]
            }
            do { try o.validate() } catch let e as ConfigError { throw ValidationError("--\(e.key.replacingOccurrences(of: "_", with: "-")) \(e.message)") }
            return o
        }
    }

    /// The flags as manifest settings that win over the manifest's (reprocess, refine).
    var manifestOverride: ReprocessManifest.Settings? {
        get throws {
            let o = try options
            guard roi != nil || mask != nil || monitor != nil || scanOrder != nil || hotPixelThreshold != nil else { return nil }
            if positioners != nil { throw ValidationError("--positioners is not available with a manifest: name them per scan with --scan files instead") }
            return ReprocessManifest.Settings(roi: o.roi, mask: mask == nil ? nil : o.mask.description,
                                              monitor: monitor == nil ? nil : o.monitor.description,
                                              scanOrder: scanOrder, hotPixelThreshold: hotPixelThreshold)
        }
    }

    private func absolute(_ p: String) -> String {
        p.hasPrefix("/") ? p : URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(p).standardizedFileURL.path
    }
}
