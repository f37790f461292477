import ArgumentParser
import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI

/// Which scan to read and how.
struct ScanOptions: ParsableArguments {
    @Option(name: .customLong("scan"), help: ArgumentHelp("Scan file (HDF5 or .npy).", valueName: "scan.h5"))
    var path: String
    @Option(help: "Dataset holding the frames (HDF5).") var dataset = "/entry/data/data"
    @Option(help: ArgumentHelp("Scan shape for 3-D (N, H, W) frames, as ROWSxCOLS.", valueName: "rowsxcols"))
    var scanShape: String?

    var shape: (rows: Int, cols: Int)? { get throws { try Self.parseShape(scanShape) } }

    /// "64x64" → (64, 64); nil stays nil.
    static func parseShape(_ text: String?) throws -> (rows: Int, cols: Int)? {
        guard let s = text else { return nil }
        guard let shape = parseScanShape(s) else { throw ValidationError("--scan-shape must look like 64x64 (got '\(s)')") }
        return shape
    }
}

/// The output files of a map-producing command: the NeXus file and its PNG quick-looks.
struct MapOutputs {
    let path: String
    let force: Bool
    let quickLooks: Bool

    /// `maps.h5` → `maps_strain.png`, … beside it.
    func quickLookPath(_ map: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingPathExtension().path + "_\(map).png"
    }

    /// Fails before any work when an output exists and --force was not given.
    func checkNothingIsOverwritten(maps: [String], comm: Communicator) throws {
        guard !force else { return }
        var clash = ""
        if comm.isRoot {
            let files = [path] + (quickLooks ? maps.map(quickLookPath) : [])
            clash = files.first { FileManager.default.fileExists(atPath: $0) } ?? ""
        }
        clash = comm.broadcast(clash)
        if !clash.isEmpty { throw DonutIOError(file: clash, "exists; pass --force to overwrite") }
    }
}

struct Fit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a scan with the published correlation method against a simulated library.",
        discussion: """
        Each library pattern is normalised to unit sum and correlated with every frame; the
        correlation cube is summed onto each parameter axis, each projection has its minimum
        subtracted, and the centre of mass is the estimate (Zhou et al.). Ranks split the library
        (each holds only its slab) and the output frames; one allreduce per frame batch makes the
        projections exact. Bad frames (NaN, negative, empty) become NaN with valid = 0.
        """)

    @OptionGroup(title: "Input") var scan: ScanOptions
    @Option(help: ArgumentHelp("Library file from `donut simulate library`.", valueName: "lib.h5")) var library: String
    @OptionGroup(title: "Output") var output: OutputOptions
    @Flag(inversion: .prefixedNo, help: "Write a PNG quick-look per map beside the output.") var quicklook = true
    @Option(help: "Frames per batch (one GEMM per batch and library chunk).") var batch = 256
    @OptionGroup(title: "Refinement") var refinement: RefinementOptions

    func validate() throws {
        guard batch > 0 else { throw ValidationError("--batch must be positive (got \(batch))") }
        _ = try scan.shape
    }

    func run() throws {
        try RunContext.run { ctx in
            let outputs = MapOutputs(path: output.path, force: output.force, quickLooks: quicklook)
            _ = try fitScan(ctx, scan: ScanInput(path: scan.path, dataset: scan.dataset, scanShape: scan.shape),
                            libraryPath: library, outputs: outputs, batch: batch, refineIterations: refinement.iterations)
        }
    }
}

/// The correlation fit of one scan, written as NeXus maps (+ quick-looks). Collective.
/// Rank-local failures (a read error on one rank) are agreed on before the next
/// collective, so every rank throws the same error and none hangs (`reprocess` relies on
/// it). Stage wall times go to `times`. Returns the number of frames.
@discardableResult
func fitScan(_ ctx: RunContext, scan: ScanInput, libraryPath: String, outputs: MapOutputs, batch: Int,
             refineIterations: Int? = nil, times: StageTimes = StageTimes()) throws -> Int {
    let comm = ctx.comm
    let mapNames = ["strain", "tilt_lr", "tilt_ud", "thickness", "residual", "valid"]
    try outputs.checkNothingIsOverwritten(maps: mapNames, comm: comm)
    let libraryFile = try LibraryReader(path: libraryPath, comm: comm)
    defer { try? libraryFile.close() }
    guard let libraryConfigJSON = libraryFile.configJSON else {
        throw DonutIOError.dataset(libraryPath, "/entry/process/config/data", "the library records no config")
    }
    let config = try ConfigFile.fromJSON(libraryConfigJSON, source: "\(libraryPath):/entry/process/config/data")
    let reader = try scan.open(config: config, comm: comm)
    defer { try? reader.close() }
    if let scanJSON = reader.configJSON {
        let scanConfig = try ConfigFile.fromJSON(scanJSON, source: "\(scan.path):/entry/process/config/data")
        let differing = config.patternKeysDiffering(from: scanConfig)
        guard differing.isEmpty else {
            throw DonutIOError(file: libraryPath, object: "/entry/process/config/data",
                               "library made with another config than the scan '\(scan.path)': \(differing.joined(separator: ", ")) differ")
        }
    }
    let grid = libraryFile.grid, layout = reader.layout, np = libraryFile.frameSize * libraryFile.frameSize
    ctx.log("fit: scan \(scan.path) \(layout.rows)×\(layout.cols) frames (\(reader.storedFrameShape.height)×\(reader.storedFrameShape.width) stored), library \(libraryPath) \(grid.shape.map(String.init).joined(separator: "×")) = \(grid.count) entries, \(comm.size) rank(s), batch \(batch)")
    let slab = shardRange(count: grid.count, parts: comm.size, index: comm.rank)
    let patterns = try times.time(\.read) { try ctx.agreeing { try libraryFile.readSlab(slab) } }
    var libraryChecksum = [ScanReader.frameChecksum(frames: patterns, firstIndex: slab.lowerBound, frameSize: libraryFile.frameSize)]
    comm.allreduceSum(&libraryChecksum)
    let fit = times.time(\.estimate) { CorrelationFit(grid: grid, entries: slab, patterns: patterns, pixelCount: np) }
    let keep = shardRange(count: layout.frameCount, parts: comm.size, index: comm.rank)
    let residualModel = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
    let run = CorrelationFitRun(frameCount: layout.frameCount, batch: batch, residualModel: residualModel)
    // Every rank reads every frame (the library is split); the checksum counts each rank's own block.
    let source = TimedFrameSource(reader: reader, times: times, checksummed: keep)
    var results = times.timeExcludingReads(\.estimate) {
        run.run(fit: fit, keep: keep, readFrames: source.readOrZeros, allreduceSum: { comm.allreduceSum($0) },
                progress: ctx.progress("fit frames"))
    }
    try ctx.agreeing { try source.throwIfFailed() }
    if let iterations = refineIterations {
        let refinement = PhysicsRefinement(config: config, fitThickness: grid.hasThicknessAxis, maxIterations: iterations)
        let rereads = TimedFrameSource(reader: reader, times: times, checksummed: 0..<0)
        try times.timeExcludingReads(\.refine) {
            try ctx.agreeing {
                try refinement.refine(&results, readFrames: rereads.read, progress: ctx.progress("physics refinement (rank 0)"))
            }
        }
    }
    var counts = [UInt64(results.valid.count - results.valid.reduce(0) { $0 + Int($1) })]
    comm.allreduceSum(&counts)
    let provenance = ctx.provenance(
        method: refineIterations == nil ? "correlation-fit" : "correlation-fit+physics-refine", config: libraryConfigJSON,
        inputs: [.init(path: relativePath(scan.path, from: outputs.path), dataset: reader.dataset.isEmpty ? "(npy)" : scan.dataset,
                       checksum: source.globalChecksum(comm)),
                 .init(path: relativePath(libraryPath, from: outputs.path), dataset: "/entry/library/patterns",
                       checksum: ScanReader.checksumString(libraryChecksum[0]))],
        modelID: "library:\(URL(fileURLWithPath: libraryPath).lastPathComponent) \(ScanReader.checksumString(libraryChecksum[0]))")
    try times.time(\.write) {
        try ctx.agreeing {
            try ResultMapsWriter.write(path: outputs.path, results: results, layout: layout, provenance: provenance,
                                       force: outputs.force, comm: comm)
        }
    }
    ctx.log("wrote \(outputs.path)\(counts[0] > 0 ? " (\(counts[0]) bad frame(s) marked valid = 0)" : "")")
    if outputs.quickLooks && comm.isRoot { try writeQuickLooks(outputs) }
    return layout.frameCount
}

/// One PNG per map of a result file (rank 0).
func writeQuickLooks(_ outputs: MapOutputs) throws {
    let maps = try ResultMapsReader.read(path: outputs.path)
    let r = maps.results, rows = maps.layout.rows, cols = maps.layout.cols
    var list: [(String, [Double], String, String)] = [
        ("strain", r.strain, "strain", ""), ("tilt_lr", r.tiltLRDeg, "tilt_lr (in-plane tilt)", "deg"),
        ("tilt_ud", r.tiltUDDeg, "tilt_ud (out-of-plane tilt)", "deg"),
    ]
    if let t = r.thicknessA { list.append(("thickness", t, "thickness", "angstrom")) }
    if let e = r.residual { list.append(("residual", e, "residual (MAE)", "counts")) }
    list.append(("valid", r.valid.map(Double.init), "valid", ""))
    for (name, values, title, units) in list {
        try QuickLook.write(path: outputs.quickLookPath(name), map: values, rows: rows, cols: cols,
                            title: "\(URL(fileURLWithPath: outputs.path).lastPathComponent): \(title)", units: units,
                            valid: name == "valid" ? nil : r.valid)
    }
}
