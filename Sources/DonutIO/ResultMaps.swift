import DonutCore
import DonutMPI
import DonutPhysics
import Foundation

// NeXus result maps (docs/design.md, "Files"):
//   /                      @default="entry" @donut_file="result" @donut_format_version
//   /entry                 NXentry @default="result"
//   /entry/result          NXdata @signal="strain" @auxiliary_signals=[other maps]
//                          @axes=["y","x"] @y_indices=0 @x_indices=1
//     strain ""  tilt_lr "deg"  tilt_ud "deg"  [thickness "angstrom"]  [residual "counts"]
//     valid (uint8, "")  [<map>_sigma, units of <map>]
//                          each (rows, cols) float64 (valid uint8) @interpretation="image" @units
//     y, x                 1-D float64, @units = ScanLayout.axisUnits ("um" or "")
//   /entry/process         NXprocess: program, version, date, method, command_line, model_id,
//                          config (NXnote), inputs (NXcollection of NXnote)
// and, when the scan was read from a detector file (`ScanReadSummary`):
//   /entry/instrument/detector  NXdetector: pixel_mask (frameSize, frameSize) uint8, 1 = model
//                          pixel excluded by the static mask (@source, @masked_model_pixels,
//                          @masked_raw_pixels_in_roi, @masked_raw_pixels, @sentinel,
//                          @hot_pixel_threshold); roi [x, y, width, height] raw pixels, @binning
//   /entry/monitor         NXmonitor: data (rows, cols) float64, the monitor relative to its
//                          median (@reference_level, @source)
//   /entry/scan_order      "raster" | "serpentine" | "scatter", @source declared|positioners|assumed
//   /entry/scatter         (scatter scans) NXdata, 1-D maps with per-frame x, y (µm) of the same
//                          length, @axes = ["x", "y"]: silx shows frames at their positions

/// Optional maps in file order: name and units. Sigma maps carry their map's units.
private let optionalMaps: [(name: String, units: String)] = [
    ("thickness", "angstrom"), ("residual", "counts"), ("goodness_of_fit", ""),
    ("strain_sigma", ""), ("tilt_lr_sigma", "deg"), ("tilt_ud_sigma", "deg"), ("thickness_sigma", "angstrom"),
]
private let resultGroup = "/entry/result"

private func optionalMap(_ r: FrameResults, _ name: String) -> [Double]? {
    switch name {
    case "thickness": return r.thicknessA
    case "residual": return r.residual
    case "goodness_of_fit": return r.goodnessOfFit
    default: return r.sigmas[name]
    }
}

/// Writes result maps collectively: every rank passes the `FrameResults` block it
/// computed (contiguous frames; blocks together covering the scan once), the same layout
/// and the same provenance. **Collective**: every rank calls it, even with an empty block.
/// Ranks with non-empty blocks must carry the same optional maps.
public enum ResultMapsWriter {
    /// `scan`: how the frames were read (mask, monitor, ROI, order), the same on every rank.
    public static func write(path: String, results given: FrameResults, layout: ScanLayout, provenance: Provenance,
                             force: Bool = false, comm: Communicator? = nil, scan: ScanReadSummary? = nil) throws {
        // Nothing non-finite is written marked valid (the pipelines count these beforehand).
        var results = given
        results.invalidateNonFiniteEstimates()
        // 1. Local checks, then one allreduce so that every rank throws together.
        let n = results.frameRange.count
        var problem: String?
        if let scan, let p = scan.problem(layout: layout) {
            problem = p
        } else if results.frameRange.lowerBound < 0 || results.frameRange.upperBound > layout.frameCount {
            problem = "frames \(results.frameRange) outside the scan's \(layout.frameCount)"
        } else if layout.y.count != layout.rows || layout.x.count != layout.cols {
            problem = "layout axes y (\(layout.y.count)) and x (\(layout.x.count)) do not match \(layout.rows)×\(layout.cols)"
        }
        for (name, values) in [("strain", results.strain), ("tilt_lr", results.tiltLRDeg), ("tilt_ud", results.tiltUDDeg)]
            where values.count != n { problem = problem ?? "map '\(name)' has \(values.count) values for \(n) frames" }
        if results.valid.count != n { problem = problem ?? "map 'valid' has \(results.valid.count) values for \(n) frames" }
        for key in results.sigmas.keys where !optionalMaps.contains(where: { $0.name == key && key.hasSuffix("_sigma") }) {
            problem = problem ?? "unknown sigma map '\(key)' (known: strain_sigma, tilt_lr_sigma, tilt_ud_sigma, thickness_sigma)"
        }
        for (name, _) in optionalMaps {
            if let v = optionalMap(results, name), v.count != n {
                problem = problem ?? "map '\(name)' has \(v.count) values for \(n) frames"
            }
        }
        // [problems, non-empty blocks, frames, presence of each optional map (non-empty blocks)]
        var tally = [problem == nil ? 0 : 1, n > 0 ? 1 : 0, Double(n)]
        tally += optionalMaps.map { n > 0 && optionalMap(results, $0.name) != nil ? 1 : 0 }
        comm?.allreduceSum(&tally)
        if let problem { throw DonutIOError(file: path, problem) }
        guard tally[0] == 0 else { throw DonutIOError(file: path, "another rank passed invalid results (see its message)") }
        guard Int(tally[2]) == layout.frameCount else {
            throw DonutIOError(file: path, "the ranks' blocks cover \(Int(tally[2])) frames, the scan has \(layout.frameCount)")
        }
        var present: [(name: String, units: String)] = []
        for (i, m) in optionalMaps.enumerated() where tally[3 + i] > 0 {
            guard tally[3 + i] == tally[1] else {
                throw DonutIOError(file: path, "map '\(m.name)' is present on some ranks and missing on others")
            }
            present.append(m)
        }

        // 2. The file, every create on every rank, then one collective write per map.
        // Maps (≤ 8 bytes per frame each) + provenance text; metadata ~64 KiB.
        let expected = layout.frameCount * 8 * (6 + present.count) * (scan?.geometry.order == .scatter ? 2 : 1)
            + provenance.configJSON.utf8.count + (64 << 10)
        let output = try AtomicOutput(path: path, force: force, comm: comm, expectedBytes: expected)
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "result", entryDefault: scan?.geometry.order == .scatter ? "scatter" : "result")
            try f.createGroup(resultGroup, nxClass: "NXdata")
            let shape = [layout.rows, layout.cols]
            let selection = FlatSelection(leadingRank: 2, range: results.frameRange)
            func map<T: H5Numeric>(_ name: String, _ values: [T], units: String) throws {
                let p = "\(resultGroup)/\(name)"
                let d = try f.createDataset(p, type: T.h5ElementType, shape: shape)
                try values.withUnsafeBufferPointer { try d.write($0, selection: selection) }
                try d.close()
                try f.setAttribute("interpretation", "image", on: p)
                try f.setAttribute("units", units, on: p)
            }
            try map("strain", results.strain, units: "")
            try map("tilt_lr", results.tiltLRDeg, units: "deg")
            try map("tilt_ud", results.tiltUDDeg, units: "deg")
            try map("valid", results.valid, units: "")
            for m in present { try map(m.name, optionalMap(results, m.name) ?? [], units: m.units) }
            try f.writeDataset("\(resultGroup)/y", layout.y, shape: [layout.rows], units: layout.axisUnits)
            try f.writeDataset("\(resultGroup)/x", layout.x, shape: [layout.cols], units: layout.axisUnits)
            let names = present.map(\.name)
            let auxiliary = ["tilt_lr", "tilt_ud"] + names.filter { !$0.hasSuffix("_sigma") } + ["valid"]
                + names.filter { $0.hasSuffix("_sigma") }
            try f.setAttribute("signal", "strain", on: resultGroup)
            try f.setAttribute("auxiliary_signals", auxiliary, on: resultGroup)
            try f.setAttribute("axes", ["y", "x"], on: resultGroup)
            try f.setAttribute("y_indices", 0, on: resultGroup)
            try f.setAttribute("x_indices", 1, on: resultGroup)
            if let note = results.sigmaModel { try f.setAttribute("sigma_model", note, on: resultGroup) }
            if let scan {
                try writeScanSummary(f, scan, layout: layout)
                if scan.geometry.order == .scatter {
                    try writeScatter(f, scan, results: results, present: present.map(\.name), layout: layout)
                }
            }
            try f.writeProcess(provenance)
        }
    }

    /// Mask, ROI, monitor and scan order: what was read and how (collective, same on every rank).
    private static func writeScanSummary(_ f: H5File, _ s: ScanReadSummary, layout: ScanLayout) throws {
        try f.createGroup("/entry/instrument", nxClass: "NXinstrument")
        let det = "/entry/instrument/detector"
        try f.createGroup(det, nxClass: "NXdetector")
        if !s.framesSource.isEmpty {
            // The frames read: one dataset, or every part of a Dectris master with its data file.
            try f.setAttribute("frames_source", s.framesSource, on: det)
        }
        let n = Int(Double(s.modelMask.count).squareRoot())
        try f.writeDataset("\(det)/pixel_mask", s.modelMask, shape: [n, n])
        try f.setAttribute("interpretation", "image", on: "\(det)/pixel_mask")
        try f.setAttribute("description", "1 = model pixel excluded (any raw pixel of its bin masked by the pixel mask); "
                           + "sentinel, hot-pixel and negative/NaN values are excluded per frame as well", on: "\(det)/pixel_mask")
        try f.setAttribute("source", s.maskSource ?? "none", on: "\(det)/pixel_mask")
        try f.setAttribute("masked_model_pixels", s.modelMask.reduce(0) { $0 + Int($1) }, on: "\(det)/pixel_mask")
        try f.setAttribute("masked_raw_pixels_in_roi", s.maskedRawPixelsInROI, on: "\(det)/pixel_mask")
        try f.setAttribute("masked_raw_pixels", s.maskedRawPixels, on: "\(det)/pixel_mask")
        try f.setAttribute("sentinel", s.sentinel ?? .nan, on: "\(det)/pixel_mask")
        try f.setAttribute("hot_pixel_threshold", s.hotPixelThreshold ?? .infinity, on: "\(det)/pixel_mask")
        let r = s.roi ?? DetectorROI(x: 0, y: 0, width: n, height: n)
        try f.writeDataset("\(det)/roi", [Int64(r.x), Int64(r.y), Int64(r.width), Int64(r.height)], shape: [4], units: "pixel")
        try f.setAttribute("binning", s.binning, on: "\(det)/roi")
        try f.setAttribute("description", "x, y, width, height of the region read from the stored frames", on: "\(det)/roi")
        if let m = s.monitor {
            try f.createGroup("/entry/monitor", nxClass: "NXmonitor")
            try f.writeDataset("/entry/monitor/data", m, shape: [layout.rows, layout.cols])
            try f.setAttribute("units", "", on: "/entry/monitor/data")
            try f.setAttribute("description", "monitor of each frame divided by its median (map order)", on: "/entry/monitor/data")
            try f.setAttribute("source", s.monitorSource ?? "", on: "/entry/monitor/data")
            try f.setAttribute("reference_level", s.monitorReference ?? .nan, on: "/entry/monitor/data")
        }
        try f.writeString("/entry/scan_order", s.geometry.order.rawValue)
        try f.setAttribute("source", s.geometry.source.rawValue, on: "/entry/scan_order")
    }

    /// 1-D maps with each frame's measured position: NXdata "scatter" (signal and axes of the
    /// same length), which silx plots at the true positions.
    private static func writeScatter(_ f: H5File, _ s: ScanReadSummary, results: FrameResults, present: [String], layout: ScanLayout) throws {
        let g = "/entry/scatter", n = layout.frameCount
        try f.createGroup(g, nxClass: "NXdata")
        let selection = FlatSelection(leadingRank: 1, range: results.frameRange)
        func map<T: H5Numeric>(_ name: String, _ values: [T], units: String) throws {
            let d = try f.createDataset("\(g)/\(name)", type: T.h5ElementType, shape: [n])
            try values.withUnsafeBufferPointer { try d.write($0, selection: selection) }
            try d.close()
            try f.setAttribute("units", units, on: "\(g)/\(name)")
        }
        try map("strain", results.strain, units: "")
        try map("tilt_lr", results.tiltLRDeg, units: "deg")
        try map("tilt_ud", results.tiltUDDeg, units: "deg")
        try map("valid", results.valid, units: "")
        for name in present where !name.hasSuffix("_sigma") {
            try map(name, optionalMap(results, name) ?? [], units: optionalMaps.first { $0.name == name }?.units ?? "")
        }
        try f.writeDataset("\(g)/x", s.geometry.x ?? [], shape: [n], units: "um")
        try f.writeDataset("\(g)/y", s.geometry.y ?? [], shape: [n], units: "um")
        try f.setAttribute("signal", "strain", on: g)
        try f.setAttribute("auxiliary_signals", ["tilt_lr", "tilt_ud"] + present.filter { !$0.hasSuffix("_sigma") } + ["valid"], on: g)
        try f.setAttribute("axes", ["x", "y"], on: g)
        try f.setAttribute("x_indices", 0, on: g)
        try f.setAttribute("y_indices", 0, on: g)
    }
}

/// A result file read back whole.
public struct ResultMaps: Sendable {
    public var layout: ScanLayout
    /// All frames (frameRange = 0 ..< rows·cols).
    public var results: FrameResults
    public var provenance: Provenance?
    public var signal: String
    public var auxiliarySignals: [String]
}

/// Reads result maps (serial; for tests and commands that compare or plot results).
public enum ResultMapsReader {
    public static func read(path: String) throws -> ResultMaps {
        let f = try H5File.open(path)
        defer { try? f.close() }
        guard f.exists(resultGroup) else { throw DonutIOError.group(path, resultGroup, "not found (not a Donut result file?)") }
        func values(_ name: String) throws -> [Double] { try f.readDataset("\(resultGroup)/\(name)", as: Double.self) }
        let strain = try f.openDataset("\(resultGroup)/strain")
        guard strain.shape.count == 2 else {
            throw DonutIOError.dataset(path, "\(resultGroup)/strain", "expected a 2-D (rows, cols) map, got shape \(strain.shape)")
        }
        let rows = strain.shape[0], cols = strain.shape[1]
        try strain.close()
        let units = f.attributeExists("units", on: "\(resultGroup)/y") ? try f.readStringAttribute("units", on: "\(resultGroup)/y") : ""
        let layout = ScanLayout(rows: rows, cols: cols, y: try values("y"), x: try values("x"), axisUnits: units)
        var r = FrameResults(frameRange: 0 ..< rows * cols)
        r.strain = try values("strain")
        r.tiltLRDeg = try values("tilt_lr")
        r.tiltUDDeg = try values("tilt_ud")
        r.valid = try f.readDataset("\(resultGroup)/valid", as: UInt8.self)
        for (name, _) in optionalMaps where f.exists("\(resultGroup)/\(name)") {
            let v = try values(name)
            switch name {
            case "thickness": r.thicknessA = v
            case "residual": r.residual = v
            case "goodness_of_fit": r.goodnessOfFit = v
            default: r.sigmas[name] = v
            }
        }
        if f.attributeExists("sigma_model", on: resultGroup) { r.sigmaModel = try f.readStringAttribute("sigma_model", on: resultGroup) }
        for (name, v) in [("strain", r.strain), ("tilt_lr", r.tiltLRDeg), ("tilt_ud", r.tiltUDDeg)] where v.count != rows * cols {
            throw DonutIOError.dataset(path, "\(resultGroup)/\(name)", "has \(v.count) values, strain is \(rows)×\(cols)")
        }
        return ResultMaps(layout: layout, results: r, provenance: try f.readProcess(),
                          signal: try f.readStringAttribute("signal", on: resultGroup),
                          auxiliarySignals: try f.readStringArrayAttribute("auxiliary_signals", on: resultGroup))
    }
}
