import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI

/// A correlation fit of one scan against a simulated library (`donut fit`, `reprocess`
/// with method `fit`).
public struct FitRequest {
    public var scan: ScanInput
    /// Library file from `donut simulate library`.
    public var libraryPath: String
    public var outputs: MapOutputs
    /// Frames per batch (one GEMM per batch and library chunk).
    public var batch: Int
    /// Levenberg–Marquardt iterations of the per-frame physics refinement; nil: no refinement.
    public var refineIterations: Int?
    /// Further files the result must not replace (role, path), e.g. a reprocess manifest.
    public var otherInputs: [(role: String, path: String)] = []

    public init(scan: ScanInput, libraryPath: String, outputs: MapOutputs, batch: Int = defaultFramesPerBatch, refineIterations: Int? = nil) {
        self.scan = scan; self.libraryPath = libraryPath; self.outputs = outputs; self.batch = batch
        self.refineIterations = refineIterations
    }
}

/// The correlation fit of one scan, written as NeXus maps (+ quick-looks). Collective.
/// Rank-local failures (a read error on one rank) are agreed on before the next
/// collective, so every rank throws the same error and none hangs (`reprocess` relies on
/// it). Stage wall times go to `times`.
@discardableResult
public func fitScan(_ ctx: RunContext, _ request: FitRequest, times: StageTimes = StageTimes()) throws -> MapsOutcome {
    let comm = ctx.comm, scan = request.scan, libraryPath = request.libraryPath, outputs = request.outputs
    let batch = request.batch, refineIterations = request.refineIterations
    try outputs.checkNothingIsOverwritten(inputs: [("--scan", scan.path), ("--library", libraryPath)] + request.otherInputs, comm: comm)
    let libraryFile = try LibraryReader(path: libraryPath, comm: comm)
    defer { try? libraryFile.close() }
    guard let libraryConfigJSON = libraryFile.configJSON else {
        throw DonutIOError.dataset(libraryPath, configDataset, "the library records no config")
    }
    let config = try ConfigFile.fromJSON(libraryConfigJSON, source: "\(libraryPath):\(configDataset)")
    let reader = try scan.open(config: config, comm: comm)
    defer { try? reader.close() }
    if let scanJSON = reader.configJSON {
        let scanConfig = try ConfigFile.fromJSON(scanJSON, source: "\(scan.path):\(configDataset)")
        let differing = config.patternKeysDiffering(from: scanConfig)
        guard differing.isEmpty else {
            throw DonutIOError(file: libraryPath, object: configDataset,
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
    // A batch larger than the scan buys nothing and would allocate for frames that do not exist.
    let run = CorrelationFitRun(frameCount: layout.frameCount, batch: min(batch, max(layout.frameCount, 1)), residualModel: residualModel)
    // Every rank reads every frame (the library is split); the checksum counts each rank's own block.
    let source = TimedFrameSource(reader: reader, times: times, checksummed: keep)
    // The goodness of fit judges the final estimates: the refined ones when refinement follows
    // (a frame the fit's grid places coarsely is not rejected before refinement sees it).
    let judge = FrameJudge(config: config)
    var results = times.timeExcludingReads(\.estimate) {
        run.run(fit: fit, keep: keep, readBlock: source.readBlockOrZeros, allreduceSum: { comm.allreduceSum($0) },
                judge: refineIterations == nil ? judge : nil, progress: ctx.progressCallback("fit frames", unit: "frames"))
    }
    try ctx.agreeing { try source.throwIfFailed() }
    if let iterations = refineIterations {
        let refinement = PhysicsRefinement(config: config, fitThickness: grid.hasThicknessAxis, maxIterations: iterations)
        let rereads = TimedFrameSource(reader: reader, times: times, checksummed: 0..<0)
        try times.timeExcludingReads(\.refine) {
            try ctx.agreeing {
                try refinement.refine(&results, readBlock: rereads.readBlock, judge: judge,
                                      progress: ctx.progressCallback("physics refinement", total: layout.frameCount, unit: "frames"))
            }
        }
        // Collective: every rank, not inside `ctx.log` (whose message only the root evaluates).
        let sigmaModel = refinement.finishSigmas(&results, allreduceSum: { comm.allreduceSum(&$0) })
        ctx.log("physics refinement σ: \(sigmaModel)")
    }
    results.invalidateNonFiniteEstimates()
    let warning = judge.scanWarning(scan: scan.path, config: config, comm: comm)
    var counts = [UInt64(results.valid.count - results.valid.reduce(0) { $0 + Int($1) })]
    comm.allreduceSum(&counts)
    let provenance = ctx.provenance(
        method: refineIterations == nil ? "correlation-fit" : "correlation-fit+physics-refine", config: reader.provenanceConfigJSON(config, recorded: libraryConfigJSON),
        inputs: [.init(path: relativePath(scan.path, from: outputs.path), dataset: reader.dataset.isEmpty ? "(npy)" : scan.dataset,
                       checksum: source.globalChecksum(comm)),
                 .init(path: relativePath(libraryPath, from: outputs.path), dataset: libraryPatternsDataset,
                       checksum: ScanReader.checksumString(libraryChecksum[0]))],
        modelID: "library:\(URL(fileURLWithPath: libraryPath).lastPathComponent) \(ScanReader.checksumString(libraryChecksum[0]))")
    try times.time(\.write) {
        try ctx.agreeing {
            try ResultMapsWriter.write(path: outputs.path, results: results, layout: layout, provenance: provenance,
                                       force: outputs.force, comm: comm, scan: reader.summary)
        }
    }
    ctx.log("wrote \(outputs.path)\(counts[0] > 0 ? " (\(counts[0]) frame(s) marked valid = 0)" : "")")
    if outputs.quickLooks && comm.isRoot { try outputs.writeQuickLooks() }
    if let warning { ctx.log(warning) }
    return MapsOutcome(frames: layout.frameCount, invalidFrames: Int(counts[0]), warning: warning)
}
