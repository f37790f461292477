import ArgumentParser
import DonutPipeline

struct Refine: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Post-experiment refinement: fine-tune a trained DONUT model on all scans of a manifest (+ simulated frames), then re-infer every scan.",
        usage: "donut refine --model <model.h5> --manifest <scans.yaml>\n--out <refined.h5> [<options>]",
        discussion: """
        Starts from --model's weights and BatchNorm statistics with its training preset (network, loss, \
        optimiser, schedule), a fresh AdamW state (step 0) and --epochs passes (default 5) over the usable \
        frames of every manifest scan. --augment F draws a fraction F of every batch from Poisson-noised \
        library frames (train's --mix). The model, the library and every scan must be for the same \
        instrument (the error names the file and the differing config keys). A scan that cannot be opened \
        or has no usable frame is logged and left out of training (its re-inference then fails in the status).

        Training is `donut train`'s (data-parallel under mpirun/srun, checkpoints every \
        schedule.checkpoint_every steps and on SIGTERM/SIGUSR1 with exit code \(DonutExitCode.preempted.rawValue), --resume). \
        The refined model goes to --out (atomic; provenance names the base model), then every scan is \
        re-inferred with it exactly as `donut reprocess` does (status file, failed scans skipped, --force) \
        into --out-dir (default: <out>_maps beside the model, so the base model's maps stay). The manifest's \
        per-scan method and model are replaced by the refined model; dataset, scan_shape, roi, batch and \
        physics_refine are kept. SIGTERM/SIGUSR1 during the re-inference: exit \(DonutExitCode.preempted.rawValue) after the \
        current scan; the same command again infers the rest. See docs/training.md.
        """)

    @Option(help: ArgumentHelp("Trained DONUT model to start from (from donut train).", valueName: "model.h5")) var model: String
    @Option(help: ArgumentHelp("Manifest listing the scans (YAML, as for donut reprocess).", valueName: "scans.yaml")) var manifest: String
    @Option(help: ArgumentHelp("Simulated library for the augmentation frames (needed when --augment > 0).", valueName: "lib.h5"))
    var library: String?
    @Option(help: "Fraction of every batch drawn from Poisson-noised library frames (0…1).") var augment = 0.5
    @Option(help: ArgumentHelp("Refined model (a checkpoint).", valueName: "refined.h5")) var out: String
    @Option(help: "Passes over the measured frames (overrides the model's schedule.epochs).") var epochs = 5
    @Option(help: "Factor on the model's three learning rates (lr_encoder, lr_physics, lr_decoder).") var lrScale = 1.0
    @Option(help: "Override schedule.seed (shuffling, dropout, noise).") var seed: Int?
    @Option(help: ArgumentHelp("Folder of the re-inferred maps and the status file (default: <out>_maps).", valueName: "dir"))
    var outDir: String?
    @Flag(help: "Overwrite the refined model and redo every scan's maps.") var force = false
    @Flag(help: "Refine every scan's maps by per-frame Poisson maximum likelihood (overrides the manifest's physics_refine).")
    var physicsRefine = false
    @Option(help: ArgumentHelp("Checkpoint file (default: <out>.checkpoint.h5).", valueName: "ck.h5")) var checkpoint: String?
    @Option(help: ArgumentHelp("Continue the fine-tuning from this checkpoint.", valueName: "ck.h5")) var resume: String?
    @OptionGroup(title: "Raw detector files (these win over the manifest's keys)") var read: ScanReadFlags
    @Flag(help: "Data-parallel: BatchNorm statistics over the global batch (all ranks) instead of each rank's batch.")
    var syncBatchnorm = false
    @Option(help: "Frames per streamed chunk and rank when re-inferring.") var chunk = InferRequest.defaultChunkFrames

    func validate() throws {
        guard (0...1).contains(augment) else { throw ValidationError("--augment must be between 0 and 1 (got \(augment))") }
        if augment > 0 { guard library != nil else { throw ValidationError("--augment \(augment) needs --library lib.h5 (or --augment 0)") } }
        guard epochs >= 1 else { throw ValidationError("--epochs must be ≥ 1 (got \(epochs))") }
        guard lrScale > 0, lrScale.isFinite else { throw ValidationError("--lr-scale must be positive (got \(lrScale))") }
        guard chunk >= 1 else { throw ValidationError("--chunk must be positive (got \(chunk))") }
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions
    @OptionGroup(title: "Progress") var verboseOptions: VerboseOptions

    func run() throws {
        var outcome: RefineOutcome?
        try RunContext.run(quiet: progressOptions.quiet, verbose: verboseOptions.verbose) { ctx in
            StopSignal.install()   // again, should the MPI library have installed its own (Open MPI 4.1 does not)
            var request = RefineRequest(modelPath: model, manifestPath: manifest, outPath: out)
            request.libraryPath = library; request.augment = augment; request.epochs = epochs
            request.learningRateScale = lrScale; request.seed = seed; request.outDir = outDir; request.force = force
            request.physicsRefine = physicsRefine; request.checkpointPath = checkpoint; request.resume = resume
            request.syncBatchNorm = syncBatchnorm; request.chunkFrames = chunk
            request.scanRead = try read.manifestOverride
            outcome = try refine(ctx, request)
        }
        if outcome?.training.completed == false || outcome?.reprocess?.interrupted == true { throw ExitCode(DonutExitCode.preempted.rawValue) }
        if let maps = outcome?.reprocess, maps.failed > 0 { throw maps.failure() }
    }
}
