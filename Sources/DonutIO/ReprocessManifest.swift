import DonutPhysics
import DonutCore
import Foundation

/// A list of scans to (re)process with common defaults and per-scan overrides
/// (`donut reprocess --manifest m.yaml`; keys in configs/README.md, example in
/// configs/reprocess-example.yaml). Read strictly by `ConfigFile` (unknown keys and wrong
/// types name the file and the dotted key); the keys listed in `optionalKeys` may be left out.
/// Paths inside are relative to the manifest's folder.
public struct ReprocessManifest: StrictConfig {
    /// Settings a scan inherits from `defaults` unless it sets them itself.
    public struct Settings: Codable, Equatable, Sendable {
        /// "donut" (a trained model) or "fit" (correlation fit against a library).
        public var method: String?
        /// Model file from `donut train` (method donut).
        public var model: String?
        /// Library file from `donut simulate library` (method fit).
        public var library: String?
        /// HDF5 dataset holding the frames.
        public var dataset: String?
        /// Detector region read from raw frames (overrides the model's `instrument.roi`;
        /// binning is a property of the model and cannot change per scan).
        public var roi: DetectorROI?
        /// Per-frame Poisson maximum-likelihood refinement after the first estimate.
        public var physicsRefine: Bool?
        /// Levenberg–Marquardt iterations per frame.
        public var refineIterations: Int?
        /// Frames per batch (encoder batch or correlation GEMM batch).
        public var batch: Int?
        /// Bad-pixel mask: "auto" (the scan's NeXus pixel_mask, default), "none", FILE or FILE:DATASET.
        public var mask: String?
        /// Monitor: "auto" (searched, default), "none", /DATASET of the scan or FILE:/DATASET.
        public var monitor: String?
        /// "raster", "serpentine" or "scatter"; default: detected from positioners, else raster.
        public var scanOrder: String?
        /// Raw counts above which a pixel is masked in that frame; default: none.
        public var hotPixelThreshold: Double?

        enum CodingKeys: String, CodingKey {
            case method, model, library, dataset, roi, batch, mask, monitor
            case physicsRefine = "physics_refine", refineIterations = "refine_iterations"
            case scanOrder = "scan_order", hotPixelThreshold = "hot_pixel_threshold"
        }
        public init(method: String? = nil, model: String? = nil, library: String? = nil, dataset: String? = nil,
                    roi: DetectorROI? = nil, physicsRefine: Bool? = nil, refineIterations: Int? = nil, batch: Int? = nil,
                    mask: String? = nil, monitor: String? = nil, scanOrder: String? = nil, hotPixelThreshold: Double? = nil) {
            self.method = method; self.model = model; self.library = library; self.dataset = dataset
            self.roi = roi; self.physicsRefine = physicsRefine; self.refineIterations = refineIterations; self.batch = batch
            self.mask = mask; self.monitor = monitor; self.scanOrder = scanOrder; self.hotPixelThreshold = hotPixelThreshold
        }

        /// `self` where set, else `fallback`.
        func over(_ fallback: Settings) -> Settings {
            Settings(method: method ?? fallback.method, model: model ?? fallback.model, library: library ?? fallback.library,
                     dataset: dataset ?? fallback.dataset, roi: roi ?? fallback.roi,
                     physicsRefine: physicsRefine ?? fallback.physicsRefine,
                     refineIterations: refineIterations ?? fallback.refineIterations, batch: batch ?? fallback.batch,
                     mask: mask ?? fallback.mask, monitor: monitor ?? fallback.monitor, scanOrder: scanOrder ?? fallback.scanOrder,
                     hotPixelThreshold: hotPixelThreshold ?? fallback.hotPixelThreshold)
        }
    }

    /// One scan: its file, optional layout and output name, and overrides of `defaults`.
    public struct Scan: Codable, Equatable, Sendable {
        public var path: String
        /// "ROWSxCOLS" for 3-D (N, H, W) frame datasets.
        public var scanShape: String?
        /// Result file name inside the output folder (default: the scan's name + "_maps.h5").
        public var output: String?
        public var overrides: Settings?

        enum CodingKeys: String, CodingKey { case path, output, overrides; case scanShape = "scan_shape" }
        public init(path: String, scanShape: String? = nil, output: String? = nil, overrides: Settings? = nil) {
            self.path = path; self.scanShape = scanShape; self.output = output; self.overrides = overrides
        }
    }

    /// Folder of the result files and the status file (default: the manifest's folder).
    public var outputDir: String?
    public var defaults: Settings?
    public var scans: [Scan]

    enum CodingKeys: String, CodingKey { case defaults, scans; case outputDir = "output_dir" }
    public init(outputDir: String? = nil, defaults: Settings? = nil, scans: [Scan]) {
        self.outputDir = outputDir; self.defaults = defaults; self.scans = scans
    }

    public static var schemaExample: ReprocessManifest {
        let all = Settings(method: "donut", model: "model.h5", library: "lib.h5", dataset: defaultFramesDataset,
                           roi: DetectorROI(x: 0, y: 0, width: 64, height: 64), physicsRefine: false, refineIterations: PhysicsRefinement.defaultMaxIterations, batch: defaultFramesPerBatch,
                           mask: "auto", monitor: "auto", scanOrder: "raster", hotPixelThreshold: 1e6)
        return ReprocessManifest(outputDir: "results", defaults: all,
                                 scans: [Scan(path: "scan.h5", scanShape: "64x64", output: "scan_maps.h5", overrides: all)])
    }

    public static var optionalKeys: Set<String> {
        let settings = ["method", "model", "library", "dataset", "roi", "physics_refine", "refine_iterations", "batch",
                        "mask", "monitor", "scan_order", "hot_pixel_threshold"]
        return Set(["output_dir", "defaults", "scans[].scan_shape", "scans[].output", "scans[].overrides"]
                   + settings.map { "defaults.\($0)" } + settings.map { "scans[].overrides.\($0)" })
    }

    public static let methods = ["donut", "fit"]

    public func validate() throws {
        guard !scans.isEmpty else { throw ConfigError(key: "scans", "lists no scans") }
        func check(_ s: Settings?, _ key: String) throws {
            guard let s else { return }
            if let m = s.method, !Self.methods.contains(m) {
                throw ConfigError(key: "\(key).method", "must be one of \(Self.methods.joined(separator: ", ")) (got '\(m)')")
            }
            if let n = s.refineIterations, n < 1 { throw ConfigError(key: "\(key).refine_iterations", "must be ≥ 1 (got \(n))") }
            if let n = s.batch, n < 1 { throw ConfigError(key: "\(key).batch", "must be ≥ 1 (got \(n))") }
            if let r = s.roi, r.x < 0 || r.y < 0 || r.width < 1 || r.height < 1 {
                throw ConfigError(key: "\(key).roi", "needs x, y ≥ 0 and width, height ≥ 1 (got \(r))")
            }
            if let o = s.scanOrder, ScanOrder(rawValue: o) == nil {
                throw ConfigError(key: "\(key).scan_order", "must be one of \(ScanOrder.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(o)')")
            }
            if let t = s.hotPixelThreshold, !(t.isFinite && t > 0) {
                throw ConfigError(key: "\(key).hot_pixel_threshold", "must be a positive number of counts (got \(t))")
            }
        }
        try check(defaults, "defaults")
        for (i, scan) in scans.enumerated() {
            guard !scan.path.isEmpty else { throw ConfigError(key: "scans[\(i)].path", "is empty") }
            if let s = scan.scanShape, parseScanShape(s) == nil {
                throw ConfigError(key: "scans[\(i)].scan_shape", "must look like 64x64 (got '\(s)')")
            }
            if let o = scan.output, o.isEmpty || o.contains("/") {
                throw ConfigError(key: "scans[\(i)].output", "must be a file name inside output_dir (got '\(o)')")
            }
            try check(scan.overrides, "scans[\(i)].overrides")
        }
    }

    /// Reads and checks a manifest file. `needsMethodInputs`: every scan must name the model
    /// (method donut) or library (method fit) it is processed with — `donut reprocess`; off for
    /// `donut refine`, which processes every scan with the model it has just refined.
    public static func load(path: String, needsMethodInputs: Bool = true) throws -> ReprocessManifest {
        let m = try ConfigFile.load(Self.self, path: path)
        guard needsMethodInputs else { return m }
        for (i, scan) in m.scans.enumerated() {
            let s = (scan.overrides ?? Settings()).over(m.defaults ?? Settings())
            let method = s.method ?? "donut"
            if method == "donut" && s.model == nil {
                throw ConfigFileError(file: path, key: "scans[\(i)]", "method donut needs a model (defaults.model or overrides.model)")
            }
            if method == "fit" && s.library == nil {
                throw ConfigFileError(file: path, key: "scans[\(i)]", "method fit needs a library (defaults.library or overrides.library)")
            }
        }
        return m
    }

    /// The folder of results and status: `override` (relative to the working directory)
    /// when given, else `output_dir` relative to the manifest's folder (default: that folder).
    public func outputFolder(manifestPath: String, override: String? = nil) -> String {
        let base = URL(fileURLWithPath: manifestPath).standardizedFileURL.deletingLastPathComponent()
        let cwd = URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
        return override.map { resolve($0, against: cwd) } ?? resolve(outputDir ?? ".", against: base)
    }

    /// Every scan with its settings resolved and its paths made absolute against the
    /// manifest's folder (`outputDir` overrides the manifest's output folder). Duplicate
    /// scans (same file and dataset) and clashing outputs are marked, not dropped: the
    /// later entry fails with the reason while the first is processed.
    /// `override`: settings given on the command line (`--roi`, `--mask`, …), which win over
    /// the manifest's defaults and per-scan overrides (paths in it must be absolute).
    public func jobs(manifestPath: String, outputDir overrideDir: String? = nil, override: Settings? = nil) -> [ReprocessJob] {
        let base = URL(fileURLWithPath: manifestPath).standardizedFileURL.deletingLastPathComponent()
        let outDir = outputFolder(manifestPath: manifestPath, override: overrideDir)
        var seenInput: [String: Int] = [:], seenOutput: [String: Int] = [:]
        return scans.enumerated().map { i, scan in
            let s = (override ?? Settings()).over((scan.overrides ?? Settings()).over(defaults ?? Settings()))
            let path = resolve(scan.path, against: base)
            let stem = URL(fileURLWithPath: scan.path).deletingPathExtension().lastPathComponent
            let output = URL(fileURLWithPath: outDir).appendingPathComponent(scan.output ?? "\(stem)_maps.h5").path
            let method = s.method ?? "donut"
            var job = ReprocessJob(index: i, name: "scans[\(i)] \(scan.path)", scanPath: path,
                                   dataset: s.dataset ?? defaultFramesDataset, scanShape: scan.scanShape.flatMap(parseScanShape),
                                   method: method, modelPath: (method == "donut" ? s.model : s.library).map { resolve($0, against: base) } ?? "",
                                   roi: s.roi, refineIterations: (s.physicsRefine ?? false) ? (s.refineIterations ?? PhysicsRefinement.defaultMaxIterations) : nil,
                                   batch: s.batch ?? defaultFramesPerBatch, outputPath: output, duplicateOf: nil)
            // Mask and monitor files are relative to the manifest's folder, like every path in it.
            var options = ScanReadOptions(hotPixelThreshold: s.hotPixelThreshold, scanOrder: s.scanOrder.flatMap(ScanOrder.init(rawValue:)))
            switch s.mask.map(MaskSource.parse) ?? .auto {
            case .file(let p, let d):
                job.maskPath = resolve(p, against: base)
                options.mask = .file(path: job.maskPath!, dataset: d)
            case let other: options.mask = other
            }
            switch s.monitor.map(MonitorSource.parse) ?? .auto {
            case .dataset(let f?, let d):
                job.monitorPath = resolve(f, against: base)
                options.monitor = .dataset(file: job.monitorPath, path: d)
            case let other: options.monitor = other
            }
            job.readOptions = options
            let inputKey = path + "\u{0}" + job.dataset
            if let first = seenInput[inputKey] {
                job.duplicateOf = "duplicate of scans[\(first)] (same file and dataset)"
            } else if let first = seenOutput[output] {
                job.duplicateOf = "output \(output) is also the output of scans[\(first)]"
            } else {
                seenInput[inputKey] = i; seenOutput[output] = i
            }
            return job
        }
    }
}

/// One scan of a manifest, resolved: what `donut reprocess` (and later `donut refine`) runs.
public struct ReprocessJob: Equatable, Sendable {
    public var index: Int
    /// "scans[i] <path as written>", for logs and the status file.
    public var name: String
    /// Absolute paths.
    public var scanPath: String
    public var dataset: String
    public var scanShape: (rows: Int, cols: Int)?
    /// "donut" or "fit".
    public var method: String
    /// The model (donut) or library (fit) file.
    public var modelPath: String
    public var roi: DetectorROI?
    /// Refinement iterations, nil when refinement is off.
    public var refineIterations: Int?
    public var batch: Int
    public var outputPath: String
    /// Why this entry is not processed (it repeats an earlier one), else nil.
    public var duplicateOf: String?
    /// Mask, monitor, hot pixels, scan order (manifest keys mask, monitor, scan_order,
    /// hot_pixel_threshold); mask and monitor files also in `maskPath`/`monitorPath`.
    public var readOptions = ScanReadOptions()
    /// A mask file or a monitor in another file (absolute), when the manifest names one.
    public var maskPath: String?
    public var monitorPath: String?

    public static func == (a: Self, b: Self) -> Bool {
        a.index == b.index && a.name == b.name && a.scanPath == b.scanPath && a.dataset == b.dataset
            && a.scanShape?.rows == b.scanShape?.rows && a.scanShape?.cols == b.scanShape?.cols
            && a.method == b.method && a.modelPath == b.modelPath && a.roi == b.roi
            && a.refineIterations == b.refineIterations && a.batch == b.batch && a.outputPath == b.outputPath
            && a.duplicateOf == b.duplicateOf && a.readOptions == b.readOptions
    }

    /// Every setting that decides the result, as text: each stored property of the job
    /// except where it comes from (`index`, `name`), where it goes (`outputPath`) and
    /// `duplicateOf` — read by reflection, so a setting added later (mask, monitor, …) is
    /// part of it without anyone remembering to add it here.
    public var settingsText: String {
        let skipped: Set<String> = ["index", "name", "outputPath", "duplicateOf"]
        return Mirror(reflecting: self).children.compactMap { child -> String? in
            guard let label = child.label, !skipped.contains(label) else { return nil }
            return "\(label)=\(String(describing: child.value))"
        }.joined(separator: "|")
    }

    /// The files whose content decides the result: every stored `…Path` property except
    /// `outputPath` (the scan, the model or library, and any mask or monitor file), non-empty,
    /// and the data files of a Dectris master scan (`ScanReader.frameFiles`).
    public var inputFiles: [String] {
        let files = Mirror(reflecting: self).children.compactMap { child -> String? in
            guard let label = child.label, label.hasSuffix("Path"), label != "outputPath" else { return nil }
            let value = (child.value as? String) ?? (child.value as? String?).flatMap { $0 }
            return value.flatMap { $0.isEmpty ? nil : $0 }
        }
        return files + ScanReader.frameFiles(path: scanPath, dataset: dataset).dropFirst()
    }

    /// What decides the result: the settings and the content of every input file
    /// (`ContentFingerprint`; modification times play no part). A rerun skips a scan whose
    /// status is done with the same fingerprint and whose result is verified intact.
    public func fingerprint(inputs: [FileContent]) -> String {
        ContentFingerprint.digest(ofText: settingsText + "|" + inputs.map { "\($0.path)=\($0.digest)" }.joined(separator: "|"))
    }
}

/// `p` if absolute, else `p` inside `base`; standardized.
private func resolve(_ p: String, against base: URL) -> String {
    p.hasPrefix("/") ? URL(fileURLWithPath: p).standardizedFileURL.path : base.appendingPathComponent(p).standardizedFileURL.path
}

/// "64x64" → (64, 64); nil when malformed.
public func parseScanShape(_ text: String) -> (rows: Int, cols: Int)? {
    let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
    guard parts.count == 2, let r = parts[0], let c = parts[1], r > 0, c > 0 else { return nil }
    return (r, c)
}
