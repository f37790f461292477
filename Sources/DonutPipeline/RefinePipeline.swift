import Foundation
import DonutCore
import DonutIO

/// Post-experiment refinement (`donut refine`): fine-tune a trained DONUT model on every
/// scan of a manifest (+ simulated frames), then re-infer every scan with it.
public struct RefineRequest {
    /// Trained DONUT model to start from.
    public var modelPath: String
    /// Manifest listing the scans (as for `reprocess`).
    public var manifestPath: String
    /// Simulated library for the augmentation frames (needed when `augment` > 0).
    public var libraryPath: String?
    /// Fraction of every batch drawn from Poisson-noised library frames (0…1).
    public var augment = 0.5
    /// Refined model (a checkpoint).
    public var outPath: String
    /// Passes over the measured frames (replaces the model's schedule.epochs).
    public var epochs = 5
    /// Factor on the model's three learning rates.
    public var learningRateScale = 1.0
    /// Replaces schedule.seed when given.
    public var seed: Int?
    /// Folder of the re-inferred maps and the status file; nil: `<out>_maps`.
    public var outDir: String?
    public var force = false
    /// Scan-reading settings from the command line (roi, mask, monitor, scan_order,
    /// hot_pixel_threshold), over the manifest's for every scan.
    public var scanRead: ReprocessManifest.Settings?
    /// Refine every scan's maps by per-frame Poisson maximum likelihood (overrides the manifest).
    public var physicsRefine = false
    /// Checkpoint file; nil: `<out>.checkpoint.h5`.
    public var checkpointPath: String?
    /// Continue the fine-tuning from this checkpoint.
    public var resume: String?
    public var syncBatchNorm = false
    /// Frames per streamed chunk and rank when re-inferring.
    public var chunkFrames = InferRequest.defaultChunkFrames
    /// See `TrainRequest.shouldStop`; asked also before every scan of the re-inference.
    public var shouldStop: () -> Bool = { StopSignal.requested }

    public init(modelPath: String, manifestPath: String, outPath: String) {
        self.modelPath = modelPath; self.manifestPath = manifestPath; self.outPath = outPath
    }

    /// `refined.h5` → `refined_maps`: the base model's maps stay where they are.
    public static func defaultMapsFolder(out: String) -> String { removingSuffix(".h5", from: out) + "_maps" }
}

/// How a refinement ended.
public struct RefineOutcome {
    /// The fine-tuning; when it did not complete (stop signal), no scan was re-inferred.
    public var training: TrainOutcome
    /// The re-inference of the manifest's scans (nil when training did not complete).
    public var reprocess: ReprocessOutcome?
}

/// Fine-tunes `request.modelPath` on the manifest's scans, then re-infers every scan with
/// the refined model. Collective (data-parallel training, then scan after scan).
public func refine(_ ctx: RunContext, _ request: RefineRequest) throws -> RefineOutcome {
    let manifest = request.manifestPath, model = request.modelPath, out = request.outPath
    let m = try ReprocessManifest.load(path: manifest, needsMethodInputs: false)
    let folder = request.outDir ?? RefineRequest.defaultMapsFolder(out: out)
    // Every scan is re-inferred with the refined model, whatever the manifest said.
    let refined = URL(fileURLWithPath: out).standardizedFileURL.path
    var jobs = m.jobs(manifestPath: manifest, outputDir: folder, override: request.scanRead)
    for i in jobs.indices {
        jobs[i].method = "donut"; jobs[i].modelPath = refined
        if request.physicsRefine { jobs[i].refineIterations = jobs[i].refineIterations ?? PhysicsRefinement.defaultMaxIterations }
    }
    let base = try CheckpointFile.read(path: model)
    guard base.method == TrainingMode.donut.rawValue else {
        throw DonutIOError(file: model, object: "/entry/model", "is a \(base.method) model; refine fine-tunes DONUT models (through the physics, without labels)")
    }
    var train = try ConfigFile.parse(TrainingConfig.self, yaml: base.trainingJSON, source: "\(model):\(CheckpointFile.trainingConfigDataset)")
    train.schedule.epochs = request.epochs
    if let seed = request.seed { train.schedule.seed = seed }
    train.optimiser.learningRateEncoder *= request.learningRateScale
    train.optimiser.learningRatePhysics *= request.learningRateScale
    train.optimiser.learningRateDecoder *= request.learningRateScale
    let scans = jobs.filter { $0.duplicateOf == nil }.map {
        ScanInput(path: $0.scanPath, dataset: $0.dataset, scanShape: $0.scanShape, roi: $0.roi, options: $0.readOptions)
    }
    var training = TrainRequest(
        scans: scans, libraryPath: request.augment > 0 ? request.libraryPath : nil, mix: request.augment, supervised: false,
        training: train, outPath: out, force: request.force, checkpointPath: request.checkpointPath, resume: request.resume)
    training.syncBatchNorm = request.syncBatchNorm
    training.initialModel = (model, base)
    training.skipUnusableScans = true
    training.method = "refine-donut"
    training.otherInputs = [("--manifest", manifest)] + (request.libraryPath.map { [("--library", $0)] } ?? [])
    training.shouldStop = request.shouldStop
    let trained = try trainModel(ctx, training)
    guard trained.completed else { return RefineOutcome(training: trained, reprocess: nil) }
    // A stop request during the re-inference ends it between two scans (exit 75); the same
    // command again finds the model finished and the done scans, and continues.
    let maps = try runReprocessJobs(ctx, jobs: jobs, manifest: manifest, folder: folder, force: request.force,
                                    quicklook: false, chunk: request.chunkFrames, shouldStop: request.shouldStop)
    return RefineOutcome(training: trained, reprocess: maps)
}
