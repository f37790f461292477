import Foundation
import DonutPhysics
import DonutNN
import DonutCore
import DonutIO
import DonutMPI

/// Maps of one scan from a trained model (`donut infer`, `reprocess` with method `donut`,
/// the re-inference of `refine`).
public struct InferRequest {
    /// Model file from `donut train` (a checkpoint).
    public var modelPath: String
    public var scan: ScanInput
    public var outputs: MapOutputs
    /// Frames per encoder batch.
    public var batch: Int
    /// MC-dropout passes for *_sigma maps (0: none).
    public var mcSamples: Int
    /// Levenberg–Marquardt iterations of the per-frame physics refinement; nil: no refinement.
    public var refineIterations: Int?
    /// Frames per streamed chunk and rank (memory: one chunk of frames, never a block).
    public var chunkFrames: Int
    /// Further files the result must not replace (role, path), e.g. a reprocess manifest.
    public var otherInputs: [(role: String, path: String)] = []

    /// The streamed chunk when none is given: 4096 frames of 64×64 Float = 64 MiB.
    public static let defaultChunkFrames = 4096

    public init(modelPath: String, scan: ScanInput, outputs: MapOutputs, batch: Int = defaultFramesPerBatch, mcSamples: Int = 0,
                refineIterations: Int? = nil, chunkFrames: Int = InferRequest.defaultChunkFrames) {
        self.modelPath = modelPath; self.scan = scan; self.outputs = outputs; self.batch = batch
        self.mcSamples = mcSamples; self.refineIterations = refineIterations; self.chunkFrames = chunkFrames
    }
}

/// Maps of one scan from a trained model, written collectively (+ quick-looks). Collective.
///
/// Each rank streams its block in chunks of `chunkFrames`: read once, encode, refine,
/// place into the (small) maps — memory is one chunk of frames, never a whole block. The
/// frame checksum for provenance is summed on the way. Rank-local failures are agreed on
/// before the next collective (see `RunContext.agreeing`). Stage times go to `times`.
@discardableResult
public func inferScan(_ ctx: RunContext, _ request: InferRequest, times: StageTimes = StageTimes()) throws -> MapsOutcome {
    let comm = ctx.comm, model = request.modelPath, scan = request.scan, outputs = request.outputs
    let batch = request.batch, mcSamples = request.mcSamples, refineIterations = request.refineIterations
    let chunkFrames = request.chunkFrames
    try outputs.checkNothingIsOverwritten(inputs: [("--model", model), ("--scan", scan.path)] + request.otherInputs, comm: comm)
    let (checkpoint, config, network) = try ctx.agreeing {
        let checkpoint = try CheckpointFile.read(path: model)
        let config = try ConfigFile.fromJSON(checkpoint.configJSON, source: "\(model):\(configDataset)")
        let training = try ConfigFile.parse(TrainingConfig.self, yaml: checkpoint.trainingJSON, source: "\(model):\(CheckpointFile.trainingConfigDataset)")
        let network = try DonutNetwork<Float>(settings: training.network, optimiser: training.optimiser, config: config, seed: 0)
        do { try network.load(checkpoint) } catch let e as ConfigError {
            throw DonutIOError(file: model, object: CheckpointFile.layoutDataset, "\(e.message)")
        }
        if mcSamples > 0 && training.network.dropout == 0 {
            throw DonutIOError(file: model, object: CheckpointFile.trainingConfigDataset,
                               "network.dropout is 0: MC-dropout sigmas (--mc-samples) need a model trained with dropout > 0; --physics-refine gives Fisher-information sigmas for any model")
        }
        return (checkpoint, config, network)
    }
    let reader = try scan.open(config: config, comm: comm)
    defer { try? reader.close() }
    if let json = reader.configJSON {
        let differing = config.patternKeysDiffering(from: try ConfigFile.fromJSON(json, source: scan.path))
        guard differing.isEmpty else {
            throw DonutIOError(file: model, object: configDataset,
                               "model trained for another instrument than the scan '\(scan.path)': \(differing.joined(separator: ", ")) differ")
        }
    }
    let layout = reader.layout
    let keep = shardRange(count: layout.frameCount, parts: comm.size, index: comm.rank)
    ctx.log("infer: model \(model) (\(checkpoint.method), step \(checkpoint.step), latent \(network.latentCount)), scan \(scan.path) \(layout.rows)×\(layout.cols), \(comm.size) rank(s), batch \(batch)\(mcSamples > 0 ? ", \(mcSamples) MC-dropout samples" : "")")
    let inference = NetworkInference(network: network, batch: min(batch, max(keep.count, 1)), monteCarloSamples: mcSamples)
    network.plan(batch: inference.batch, training: false)   // as `inference.run` will: the plan is logged before
    ctx.logPlan(of: network)
    let refinement = refineIterations.map {
        PhysicsRefinement(config: config, fitThickness: network.mapping.predictsThickness, maxIterations: $0)
    }
    let source = TimedFrameSource(reader: reader, times: times, checksummed: keep)
    let progress = ctx.progress(refinement == nil ? "infer frames" : "infer + refine frames", total: layout.frameCount, share: keep.count, unit: "frames")
    var results = FrameResults(frameRange: keep)
    // The goodness of fit judges the final estimates (the refined ones with --physics-refine).
    let judge = FrameJudge(config: config)
    try ctx.agreeing {
        var start = keep.lowerBound
        repeat {
            let chunk = start..<min(start + chunkFrames, keep.upperBound)
            let frames = try source.readBlock(chunk)
            // The encoder asks batch by batch (`batch` < chunk): hand it those frames of the chunk.
            var part = times.time(\.estimate) {
                inference.run(frames: chunk, readBlock: { frames.frames($0) }, judge: refinement == nil ? judge : nil)
            }
            if let refinement {
                times.time(\.refine) { refinement.refine(&part, batch: chunk.count, readBlock: { frames.frames($0) }, judge: judge) }
            }
            results.place(part)
            progress.update(chunk.upperBound - keep.lowerBound)
            start = chunk.upperBound
        } while start < keep.upperBound
    }
    if let refinement {
        // Collective: every rank, not inside `ctx.log` (whose message only the root evaluates).
        let sigmaModel = refinement.finishSigmas(&results, allreduceSum: { comm.allreduceSum(&$0) })
        ctx.log("physics refinement σ: \(sigmaModel)")
    }
    results.invalidateNonFiniteEstimates()
    var invalid = [UInt64(results.valid.count - results.valid.reduce(0) { $0 + Int($1) })]
    comm.allreduceSum(&invalid)
    let warning = judge.scanWarning(scan: scan.path, config: config, comm: comm)
    let modelChecksum = ScanReader.checksumString(ScanReader.frameChecksum(frames: checkpoint.parameters, firstIndex: 0, frameSize: 1))
    let provenance = ctx.provenance(
        method: refineIterations == nil ? checkpoint.method : checkpoint.method + "+physics-refine", config: reader.provenanceConfigJSON(config, recorded: checkpoint.configJSON),
        inputs: [.init(path: relativePath(scan.path, from: outputs.path), dataset: reader.dataset.isEmpty ? "(npy)" : scan.dataset,
                       checksum: source.globalChecksum(comm)),
                 .init(path: relativePath(model, from: outputs.path), dataset: CheckpointFile.parametersDataset, checksum: modelChecksum)],
        modelID: "\(URL(fileURLWithPath: model).lastPathComponent) step \(checkpoint.step) \(modelChecksum)")
    try times.time(\.write) {
        try ctx.agreeing {
            try ResultMapsWriter.write(path: outputs.path, results: results, layout: layout, provenance: provenance, force: outputs.force,
                                       comm: comm, scan: reader.summary)
        }
    }
    ctx.log(String(format: "wrote %@ (%.0f frames/s encoder on rank 0)%@", outputs.path, Double(keep.count) / max(times.estimate, 1e-9),
                   invalid[0] > 0 ? " — \(invalid[0]) frame(s) marked valid = 0" : ""))
    if outputs.quickLooks && comm.isRoot { try outputs.writeQuickLooks() }
    if let warning { ctx.log(warning) }
    return MapsOutcome(frames: layout.frameCount, invalidFrames: Int(invalid[0]), warning: warning)
}
