import DonutCore
import DonutPhysics
import Foundation

/// `donut plot`: PNG figures of result files through the quick-look renderer — the maps of
/// each file (strain and tilts diverging and centred on 0, the same colour limits for the
/// same map across the compared files, axes in µm when the scan positions are known), σ,
/// goodness-of-fit, residual and valid maps, and against a scan's ground truth: the truth
/// maps, error maps (estimate − truth), parity densities (estimate against truth, y = x
/// marked) and the crosstalk density (tilt_lr error against true strain, the DONUT paper's
/// comparison), and with a scan: for a few pixels of the first result, the measured frame,
/// the forward model's frame at the result's parameters and their difference. Files are
/// `<out>/<stem>_<figure>.png`; the notebooks draw the same with matplotlib.
public enum ResultPlots {
    public struct Request: Sendable {
        public var result: String
        public var compare: [String]
        /// A scan with /entry/ground_truth (from `donut simulate scan`).
        public var truthScan: String?
        public var outDir: String
        public var force: Bool
        /// The scan whose frames are drawn beside the model (default: `truthScan`); nil and no
        /// truth: no frame figures.
        public var frameScan: String?
        /// How many pixels get frame figures.
        public var frameCount: Int
        public init(result: String, compare: [String] = [], truthScan: String? = nil, outDir: String, force: Bool = false,
                    frameScan: String? = nil, frameCount: Int = 3) {
            self.result = result; self.compare = compare; self.truthScan = truthScan; self.outDir = outDir; self.force = force
            self.frameScan = frameScan; self.frameCount = frameCount
        }
    }

    /// What `write` did: the files, and one line per file and map with its RMSE against truth.
    public struct Report: Sendable {
        public var files: [String] = []
        public var metrics: [String] = []
    }

    /// One figure to write.
    struct Figure {
        var name: String          // file name inside outDir
        var title: String
        var units: String
        var map: [Double]
        var rows: Int, cols: Int
        var valid: [UInt8]?
        var style: QuickLook.Style
    }

    /// Reads everything, checks that nothing would be overwritten (without `force`), then
    /// writes every PNG atomically. Throws before writing anything when an input is bad or
    /// an output exists.
    public static func write(_ request: Request) throws -> Report {
        let paths = [request.result] + request.compare
        let files = try paths.map { try ResultMapsReader.read(path: $0) }
        let first = files[0].layout
        for (p, f) in zip(paths, files).dropFirst() where f.layout.rows != first.rows || f.layout.cols != first.cols {
            throw DonutIOError(file: p, "maps are \(f.layout.rows)×\(f.layout.cols), \(request.result) has \(first.rows)×\(first.cols): cannot compare")
        }
        let truth = try request.truthScan.map { try readGroundTruth(path: $0, frames: first.frameCount) }
        var figures = plan(stems: stems(paths), files: files, truth: truth)
        if let scan = request.frameScan ?? request.truthScan, request.frameCount > 0 {
            figures += try frameFigures(stem: stems(paths)[0], path: request.result, maps: files[0], scanPath: scan,
                                        count: request.frameCount)
        }
        var report = Report()
        if let truth {
            for (stem, f) in zip(stems(paths), files) {
                for (name, estimate) in parameterMaps(f.results) where truth[name] != nil {
                    report.metrics.append(String(format: "%@ %@: RMSE %.3e", stem, name, MapMetrics.rmse(masked(estimate, f.results.valid), truth[name]!)))
                }
                if let ts = truth["strain"], let tw = truth["tilt_lr"] {
                    report.metrics.append(String(format: "%@ crosstalk |r| tilt_lr error ~ strain: %.3f",
                                                 stem, MapMetrics.crosstalk(errorOf: masked(f.results.tiltLRDeg, f.results.valid), truth: tw, against: ts)))
                }
            }
        }
        let targets = figures.map { URL(fileURLWithPath: request.outDir).appendingPathComponent($0.name).path }
        if !request.force, let existing = targets.first(where: { FileManager.default.fileExists(atPath: $0) }) {
            throw DonutIOError(file: existing, "exists (pass --force to overwrite; nothing was written)")
        }
        do {
            try FileManager.default.createDirectory(atPath: request.outDir, withIntermediateDirectories: true)
        } catch {
            throw DonutIOError(file: request.outDir, "cannot create the output folder: \(error.localizedDescription)")
        }
        for (figure, path) in zip(figures, targets) {
            let png = QuickLook.png(map: figure.map, rows: figure.rows, cols: figure.cols, title: figure.title,
                                    units: figure.units, valid: figure.valid, style: figure.style)
            try AtomicOutput.write(Data(png), to: path, force: request.force)
            report.files.append(path)
        }
        return report
    }

    /// File stems: the result file names without extension, made unique ("fit", "fit-2").
    static func stems(_ paths: [String]) -> [String] {
        var seen: [String: Int] = [:]
        return paths.map { p in
            let base = URL(fileURLWithPath: p).deletingPathExtension().lastPathComponent
            seen[base, default: 0] += 1
            return seen[base]! == 1 ? base : "\(base)-\(seen[base]!)"
        }
    }

    static let signedMaps: Set<String> = ["strain", "tilt_lr", "tilt_ud"]
    static let units: [String: String] = ["strain": "", "tilt_lr": "deg", "tilt_ud": "deg", "thickness": "angstrom"]

    static func parameterMaps(_ r: FrameResults) -> [(String, [Double])] {
        var list = [("strain", r.strain), ("tilt_lr", r.tiltLRDeg), ("tilt_ud", r.tiltUDDeg)]
        if let t = r.thicknessA { list.append(("thickness", t)) }
        return list
    }

    /// NaN where valid = 0: metrics and shared limits count only the valid pixels.
    static func masked(_ v: [Double], _ valid: [UInt8]) -> [Double] {
        zip(v, valid).map { $1 != 0 ? $0 : .nan }
    }

    /// Robust (1st/99th percentile) limits over several maps together; symmetric when signed.
    static func sharedLimits(_ maps: [[Double]], signed: Bool) -> (Double, Double)? {
        guard let (lo, hi) = QuickLook.limits(of: maps.joined().filter(\.isFinite)) else { return nil }
        if signed { let m = max(abs(lo), abs(hi)); return (-m, m) }
        return (lo, hi)
    }

    static func plan(stems: [String], files: [ResultMaps], truth: [String: [Double]]?) -> [Figure] {
        let layout = files[0].layout, rows = layout.rows, cols = layout.cols
        var figures: [Figure] = []
        // Parameter maps: the same limits for one map across files (and the truth).
        var names = ["strain", "tilt_lr", "tilt_ud"]
        if files.contains(where: { $0.results.thicknessA != nil }) { names.append("thickness") }
        for name in names {
            var maps = files.compactMap { f in parameterMaps(f.results).first { $0.0 == name }.map { masked($0.1, f.results.valid) } }
            if let t = truth?[name] { maps.append(t) }
            let lim = sharedLimits(maps, signed: signedMaps.contains(name))
            for (stem, f) in zip(stems, files) {
                guard let values = parameterMaps(f.results).first(where: { $0.0 == name })?.1 else { continue }
                figures.append(Figure(name: "\(stem)_\(name).png", title: "\(stem): \(name)", units: units[name] ?? "",
                                      map: values, rows: rows, cols: cols, valid: f.results.valid,
                                      style: .init(signed: signedMaps.contains(name), limits: lim, axes: axes(f.layout))))
            }
            if let t = truth?[name] {
                figures.append(Figure(name: "truth_\(name).png", title: "truth: \(name)", units: units[name] ?? "", map: t,
                                      rows: rows, cols: cols, valid: nil,
                                      style: .init(signed: signedMaps.contains(name), limits: lim, axes: axes(layout))))
            }
        }
        // Quality maps of each file, each on its own limits.
        for (stem, f) in zip(stems, files) {
            let r = f.results
            var quality: [(String, [Double], String)] = r.sigmas.keys.sorted().map { key in
                (key, r.sigmas[key]!, units[String(key.dropLast("_sigma".count))] ?? "")
            }
            if let g = r.goodnessOfFit { quality.append(("goodness_of_fit", g, "")) }
            if let e = r.residual { quality.append(("residual", e, "counts")) }
            for (name, values, u) in quality {
                figures.append(Figure(name: "\(stem)_\(name).png", title: "\(stem): \(name)", units: u, map: values,
                                      rows: rows, cols: cols, valid: r.valid, style: .init(axes: axes(f.layout))))
            }
            figures.append(Figure(name: "\(stem)_valid.png", title: "\(stem): valid", units: "", map: r.valid.map(Double.init),
                                  rows: rows, cols: cols, valid: nil, style: .init(limits: (0, 1), axes: axes(f.layout))))
        }
        guard let truth else { return figures }
        // Errors (shared limits per map across files), parity and crosstalk densities.
        for name in names where truth[name] != nil {
            let t = truth[name]!
            let errors = files.map { f in
                zip(masked(parameterMaps(f.results).first { $0.0 == name }?.1 ?? [], f.results.valid), t).map { $0 - $1 }
            }
            let lim = sharedLimits(errors, signed: true)
            for (stem, (f, e)) in zip(stems, zip(files, errors)) where e.count == t.count {
                figures.append(Figure(name: "\(stem)_\(name)_error.png", title: "\(stem): \(name) error", units: units[name] ?? "",
                                      map: e, rows: rows, cols: cols, valid: f.results.valid,
                                      style: .init(signed: true, limits: lim, axes: axes(f.layout))))
            }
            for (stem, f) in zip(stems, files) {
                guard let est = parameterMaps(f.results).first(where: { $0.0 == name })?.1 else { continue }
                let u = units[name].map { $0.isEmpty ? "" : " [\($0)]" } ?? ""
                if let d = density(x: t, y: masked(est, f.results.valid), xLabel: "true \(name)\(u)", yLabel: "est.", square: true) {
                    figures.append(Figure(name: "\(stem)_\(name)_parity.png", title: "\(stem): \(name) parity", units: "pixels",
                                          map: d.counts, rows: d.rows, cols: d.cols, valid: nil,
                                          style: .init(axes: d.axes, diagonal: true)))
                }
            }
        }
        if let ts = truth["strain"], let tw = truth["tilt_lr"] {
            for (stem, f) in zip(stems, files) {
                let error = zip(masked(f.results.tiltLRDeg, f.results.valid), tw).map { $0 - $1 }
                if let d = density(x: ts, y: error, xLabel: "true strain", yLabel: "tilt_lr err [deg]", square: false) {
                    figures.append(Figure(name: "\(stem)_crosstalk.png",
                                          title: String(format: "%@: crosstalk |r| %.2f", stem, MapMetrics.crosstalk(errorOf: masked(f.results.tiltLRDeg, f.results.valid), truth: tw, against: ts)),
                                          units: "pixels", map: d.counts, rows: d.rows, cols: d.cols, valid: nil, style: .init(axes: d.axes)))
                }
            }
        }
        return figures
    }

    /// How a result map is drawn on its own (the quick-looks `fit`/`infer` write beside their
    /// results): strain and tilts diverging and centred on 0, valid on [0, 1], the rest on
    /// their robust limits; axes in the scan's units when positions are known.
    public static func style(map name: String, layout: ScanLayout) -> QuickLook.Style {
        QuickLook.Style(signed: signedMaps.contains(name), limits: name == "valid" ? (0, 1) : nil, axes: axes(layout))
    }

    /// Pixels worth a look: the worst and the median goodness of fit (else residual) and the
    /// largest |strain|, all valid, distinct, in that order.
    static func chosenPixels(_ r: FrameResults, count: Int) -> [Int] {
        let valid = (0..<r.valid.count).filter { r.valid[$0] != 0 && r.strain[$0].isFinite }
        var picks: [Int] = []
        if let score = r.goodnessOfFit ?? r.residual {
            let scored = valid.filter { score[$0].isFinite }.sorted { score[$0] < score[$1] }
            if let worst = scored.last { picks.append(worst) }
            if !scored.isEmpty { picks.append(scored[scored.count / 2]) }
        }
        if let largest = valid.max(by: { abs(r.strain[$0]) < abs(r.strain[$1]) }) { picks.append(largest) }
        var out: [Int] = []
        for p in picks where !out.contains(p) { out.append(p) }
        return Array(out.prefix(count))
    }

    /// Measured frame, model frame and measured − model for the chosen pixels. The model is
    /// the forward model of the result's config (box profile for the correlation fit's
    /// library, smooth for the networks) at the pixel's parameters, scaled to the measured
    /// counts by the Poisson maximum-likelihood factor a = Σ counts / Σ model.
    static func frameFigures(stem: String, path: String, maps: ResultMaps, scanPath: String, count: Int) throws -> [Figure] {
        guard let provenance = maps.provenance, !provenance.configJSON.isEmpty else {
            throw DonutIOError(file: path, object: "/entry/process/config", "no config recorded: cannot draw the model's frames")
        }
        let config = try ConfigFile.fromJSON(provenance.configJSON, source: "\(path):/entry/process/config")
        let reader = try ScanReader(path: scanPath, config: config)
        defer { try? reader.close() }
        guard reader.layout.frameCount == maps.layout.frameCount else {
            throw DonutIOError(file: scanPath, "has \(reader.layout.frameCount) frames, \(path) has \(maps.layout.frameCount) map pixels")
        }
        let profile: Profile = provenance.method.hasPrefix("correlation-fit") ? .box : .smooth
        let model = ForwardModel<Double>(geometry: DiffractionGeometry(config: config), profile: profile)
        let r = maps.results, n = config.model.frameSize
        var figures: [Figure] = []
        for i in chosenPixels(r, count: count) {
            let measured = try reader.readFrames(i..<(i + 1)).map(Double.init)
            let p = FrameParameters(strain: r.strain[i], tiltLRDeg: r.tiltLRDeg[i], tiltUDDeg: r.tiltUDDeg[i],
                                    thicknessA: r.thicknessA?[i] ?? config.sample.thicknessA)
            var predicted = model.patterns([p])
            let total = predicted.reduce(0, +), counts = measured.filter(\.isFinite).reduce(0, +)
            let scale = total > 0 ? counts / total : 0
            predicted = predicted.map { $0 * scale }
            let top = max(measured.filter(\.isFinite).max() ?? 0, predicted.max() ?? 0, 1e-12)
            let at = "r\(i / maps.layout.cols)_c\(i % maps.layout.cols)"
            let label = String(format: "(%d, %d)", i / maps.layout.cols, i % maps.layout.cols)
            figures.append(Figure(name: "\(stem)_frame_\(at)_measured.png", title: "\(stem) \(label): measured", units: "counts",
                                  map: measured, rows: n, cols: n, valid: nil, style: .init(limits: (0, top))))
            figures.append(Figure(name: "\(stem)_frame_\(at)_model.png", title: "\(stem) \(label): model (\(profile.rawValue))",
                                  units: "counts", map: predicted, rows: n, cols: n, valid: nil, style: .init(limits: (0, top))))
            figures.append(Figure(name: "\(stem)_frame_\(at)_difference.png", title: "\(stem) \(label): measured - model",
                                  units: "counts", map: zip(measured, predicted).map { $0 - $1 }, rows: n, cols: n, valid: nil,
                                  style: .init(signed: true)))
        }
        return figures
    }

    static func axes(_ layout: ScanLayout) -> QuickLook.Axes? {
        QuickLook.Axes(scanX: layout.x, y: layout.y, units: layout.axisUnits)
    }

    /// A 2-D histogram of (x, y) over the pixels where both are finite, 48 × 48 bins over
    /// the robust (1st/99th percentile) ranges, the same range on both axes when `square`
    /// (parity: y = x is the diagonal). Rows run from high y (top) to low; empty bins NaN
    /// (grey). nil when fewer than 2 pixels are usable.
    static func density(x: [Double], y: [Double], xLabel: String, yLabel: String, square: Bool, bins: Int = 48)
        -> (counts: [Double], rows: Int, cols: Int, axes: QuickLook.Axes)? {
        let pairs = zip(x, y).filter { $0.0.isFinite && $0.1.isFinite }
        guard pairs.count > 1, var xr = QuickLook.limits(of: pairs.map(\.0)), var yr = QuickLook.limits(of: pairs.map(\.1)) else { return nil }
        if square { let r = (min(xr.0, yr.0), max(xr.1, yr.1)); xr = r; yr = r }
        func widen(_ r: inout (Double, Double)) { if r.1 <= r.0 { let d = max(abs(r.0) * 1e-3, 1e-12); r = (r.0 - d, r.1 + d) } }
        widen(&xr); widen(&yr)
        var counts = [Double](repeating: 0, count: bins * bins)
        func bin(_ v: Double, _ r: (Double, Double)) -> Int? {
            let k = Int(((v - r.0) / (r.1 - r.0) * Double(bins)).rounded(.down))
            return v < r.0 || v > r.1 ? nil : min(k, bins - 1)
        }
        for (a, b) in pairs {
            guard let c = bin(a, xr), let r = bin(b, yr) else { continue }
            counts[(bins - 1 - r) * bins + c] += 1
        }
        let centres = { (r: (Double, Double)) in (0..<bins).map { r.0 + (Double($0) + 0.5) * (r.1 - r.0) / Double(bins) } }
        return (counts.map { $0 > 0 ? $0 : .nan }, bins, bins,
                QuickLook.Axes(x: centres(xr), y: centres(yr).reversed(), xLabel: xLabel, yLabel: yLabel))
    }

    /// The scan's ground truth, each map checked against the result's pixel count.
    static func readGroundTruth(path: String, frames: Int) throws -> [String: [Double]] {
        let truth = try groundTruth(scanPath: path)
        for (name, v) in truth where v.count != frames {
            throw DonutIOError.dataset(path, "/entry/ground_truth/\(name)", "has \(v.count) values, the result maps have \(frames) pixels")
        }
        return truth
    }
}

/// The ground-truth maps a simulated scan records (/entry/ground_truth/{strain, tilt_lr,
/// tilt_ud, thickness}, whichever it has); throws naming the scan when it has none.
public func groundTruth(scanPath scan: String) throws -> [String: [Double]] {
    let file = try H5File.open(scan)
    defer { try? file.close() }
    var truth: [String: [Double]] = [:]
    for name in ["strain", "tilt_lr", "tilt_ud", "thickness"] where file.exists("/entry/ground_truth/\(name)") {
        truth[name] = try file.readDataset("/entry/ground_truth/\(name)", as: Double.self)
    }
    guard !truth.isEmpty else { throw DonutIOError.group(scan, "/entry/ground_truth", "not found: the scan has no ground truth") }
    return truth
}
