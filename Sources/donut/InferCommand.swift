import ArgumentParser
import Foundation
import DonutPhysics
import DonutNN
import DonutCore
import DonutIO
import DonutMPI

struct Infer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Maps from a trained model (DONUT or NanobeamNN): strain, tilts[, thickness], residual, valid[, *_sigma].",
        discussion: """
        Ranks split the frames; each reads only its block and all write one NeXus file collectively.
        --mc-samples N adds MC-dropout standard deviations (*_sigma maps) from N passes with dropout on.
        """)

    @Option(help: ArgumentHelp("Model file from `donut train`.", valueName: "model.h5")) var model: String
    @OptionGroup(title: "Input") var scan: ScanOptions
    @OptionGroup(title: "Output") var output: OutputOptions
    @Flag(inversion: .prefixedNo, help: "Write a PNG quick-look per map beside the output.") var quicklook = true
    @Option(help: "Frames per batch.") var batch = 256
    @Option(help: "MC-dropout passes for *_sigma maps (0: none; 30 is typical).") var mcSamples = 0
    @OptionGroup(title: "Refinement") var refinement: RefinementOptions

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be positive (got \(batch))") }
        guard mcSamples == 0 || mcSamples >= 2 else { throw ValidationError("--mc-samples must be 0 or ≥ 2 (got \(mcSamples))") }
        guard mcSamples == 0 || !refinement.physicsRefine else {
            throw ValidationError("--mc-samples and --physics-refine both write *_sigma maps: choose one")
        }
        _ = try scan.shape
    }

    func run() throws {
        try RunContext.run { ctx in
            try inferScan(ctx, modelPath: model, scan: ScanInput(path: scan.path, dataset: scan.dataset, scanShape: try scan.shape),
                          outputs: MapOutputs(path: output.path, force: output.force, quickLooks: quicklook),
                          batch: batch, mcSamples: mcSamples, refineIterations: refinement.iterations)
        }
    }
}

/// Maps of one scan from a trained model, written collectively (+ quick-looks). Collective.
///
/// Each rank streams its block in chunks of `chunkFrames`: read once, encode, refine,
/// place into the (small) maps — memory is one chunk of frames, never a whole block. The
/// frame checksum for provenance is summed on the way. Rank-local failures are agreed on
/// before the next collective (see `RunContext.agreeing`). Stage times go to `times`.
/// Returns the number of frames.
@discardableResult
func inferScan(_ ctx: RunContext, modelPath model: String, scan: ScanInput, outputs: MapOutputs, batch: Int,
               mcSamples: Int, refineIterations: Int? = nil, times: StageTimes = StageTimes(),
               chunkFrames: Int = 4096) throws -> Int {
    let comm = ctx.comm
    try outputs.checkNothingIsOverwritten(maps: ["strain", "tilt_lr", "tilt_ud", "thickness", "residual", "valid"], comm: comm)
    let (checkpoint, config, network) = try ctx.agreeing {
        let checkpoint = try CheckpointFile.read(path: model)
        let config = try ConfigFile.fromJSON(checkpoint.configJSON, source: "\(model):/entry/process/config/data")
        let training = try ConfigFile.parse(TrainingConfig.self, yaml: checkpoint.trainingJSON, source: "\(model):/entry/model/training_config")
        let network = try DonutNetwork<Float>(settings: training.network, optimiser: training.optimiser, config: config, seed: 0)
        do { try network.load(checkpoint) } catch let e as ConfigError {
            throw DonutIOError(file: model, object: "/entry/model/layout", "\(e.message)")
        }
        if mcSamples > 0 && training.network.dropout == 0 {
            throw DonutIOError(file: model, object: "/entry/model/training_config",
                               "network.dropout is 0: MC-dropout sigmas (--mc-samples) need a model trained with dropout > 0; --physics-refine gives Fisher-information sigmas for any model")
        }
        return (checkpoint, config, network)
    }
    let reader = try scan.open(config: config, comm: comm)
    defer { try? reader.close() }
    if let json = reader.configJSON {
        let differing = config.patternKeysDiffering(from: try ConfigFile.fromJSON(json, source: scan.path))
        guard differing.isEmpty else {
            throw DonutIOError(file: model, object: "/entry/process/config/data",
                               "model trained for another instrument than the scan '\(scan.path)': \(differing.joined(separator: ", ")) differ")
        }
    }
    let layout = reader.layout
    let keep = shardRange(count: layout.frameCount, parts: comm.size, index: comm.rank)
    ctx.log("infer: model \(model) (\(checkpoint.method), step \(checkpoint.step), latent \(network.latentCount)), scan \(scan.path) \(layout.rows)×\(layout.cols), \(comm.size) rank(s), batch \(batch)\(mcSamples > 0 ? ", \(mcSamples) MC-dropout samples" : "")")
    let inference = NetworkInference(network: network, batch: min(batch, max(keep.count, 1)), monteCarloSamples: mcSamples)
    let refinement = refineIterations.map {
        PhysicsRefinement(config: config, fitThickness: network.mapping.predictsThickness, maxIterations: $0)
    }
    let source = TimedFrameSource(reader: reader, times: times, checksummed: keep)
    let progress = ctx.progress(refinement == nil ? "infer frames (rank 0)" : "infer + refine frames (rank 0)")
    var results = FrameResults(frameRange: keep)
    try ctx.agreeing {
        var start = keep.lowerBound
        repeat {
            let chunk = start..<min(start + chunkFrames, keep.upperBound)
            let frames = try source.read(chunk)
            // The encoder asks batch by batch (`batch` < chunk): hand it those frames of the chunk.
            let np = network.frameSize * network.frameSize
            let framesOf = { (r: Range<Int>) -> [Float] in
                r == chunk ? frames : Array(frames[((r.lowerBound - chunk.lowerBound) * np)..<((r.upperBound - chunk.lowerBound) * np)])
            }
            var part = times.time(\.estimate) { inference.run(frames: chunk, readFrames: framesOf) }
            if let refinement {
                times.time(\.refine) { refinement.refine(&part, batch: chunk.count, readFrames: framesOf) }
            }
            results.place(part)
            progress(chunk.upperBound - keep.lowerBound, keep.count)
            start = chunk.upperBound
        } while start < keep.upperBound
    }
    var invalid = [UInt64(results.valid.count - results.valid.reduce(0) { $0 + Int($1) })]
    comm.allreduceSum(&invalid)
    let modelChecksum = ScanReader.checksumString(ScanReader.frameChecksum(frames: checkpoint.parameters, firstIndex: 0, frameSize: 1))
    let provenance = ctx.provenance(
        method: refineIterations == nil ? checkpoint.method : checkpoint.method + "+physics-refine", config: checkpoint.configJSON,
        inputs: [.init(path: relativePath(scan.path, from: outputs.path), dataset: reader.dataset.isEmpty ? "(npy)" : scan.dataset,
                       checksum: source.globalChecksum(comm)),
                 .init(path: relativePath(model, from: outputs.path), dataset: "/entry/model/parameters", checksum: modelChecksum)],
        modelID: "\(URL(fileURLWithPath: model).lastPathComponent) step \(checkpoint.step) \(modelChecksum)")
    try times.time(\.write) {
        try ctx.agreeing {
            try ResultMapsWriter.write(path: outputs.path, results: results, layout: layout, provenance: provenance, force: outputs.force, comm: comm)
        }
    }
    ctx.log(String(format: "wrote %@ (%.0f frames/s encoder on rank 0)%@", outputs.path, Double(keep.count) / max(times.estimate, 1e-9),
                   invalid[0] > 0 ? " — \(invalid[0]) bad frame(s) marked valid = 0" : ""))
    if outputs.quickLooks && comm.isRoot { try writeQuickLooks(outputs) }
    return layout.frameCount
}
