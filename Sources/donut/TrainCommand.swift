import ArgumentParser
import DonutCore
import DonutIO
import DonutMPI
import DonutPipeline

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train DONUT (unsupervised, through the physics) or NanobeamNN (--supervised, on library labels).",
        discussion: """
        DONUT trains on the scan's own frames (no labels), on simulated library frames, or on both \
        (--library with --mix F: a fraction F of every batch is Poisson-noised library frames). \
        NanobeamNN (--supervised) trains the same encoder on library frames with MSE on scaled labels. \
        A checkpoint is written atomically every schedule.checkpoint_every steps and on SIGTERM or \
        SIGUSR1 (then the exit code is \(DonutExitCode.preempted.rawValue)); --resume continues to the same weights as \
        an uninterrupted run. The final model (a checkpoint) goes to --out, the loss log beside it (.csv), \
        and the held-out metrics (physics MAE, reduced Poisson deviance, ground-truth RMSE on the \
        validation frames; wall time, samples/s) in <out>.metrics.json.

        Reruns: models and checkpoints record the run's settings and the content of its inputs. \
        A finished model of the same settings and inputs is left alone (exit 0, nothing written); \
        a checkpoint is resumed (with or without --resume) only when it belongs to an unfinished run \
        of the same settings and inputs; a checkpoint or model of other settings is refused with the \
        differing keys named (--force starts afresh); a changed input (a repaired scan) trains again.

        Data-parallel under MPI (`mpirun -np N donut train …`, or srun): schedule.batch_size is the \
        batch of each rank (global batch N·b); N ranks with batch b follow the same loss curve and \
        reach the same weights as one rank with batch N·b (to rounding). Rank 0's initial weights \
        are broadcast; each rank reads only its share of every epoch's frames (and of the library \
        entries it simulates); the gradients, loss terms and stop flag are summed in one allreduce \
        per step. BatchNorm is per-rank by default (each rank's batch, running statistics averaged \
        every step); --sync-batchnorm uses the statistics of the global batch (the exact \
        one-rank equivalent). Rank 0 logs and writes checkpoints. See docs/training.md.
        """)

    @OptionGroup(title: "Input") var scanOptions: ScanOptions
    @Option(help: ArgumentHelp("Simulated library (needed with --supervised or --mix).", valueName: "lib.h5")) var library: String?
    @Option(help: "Fraction of every batch drawn from the library (0…1).") var mix: Double = 0
    @Flag(help: "NanobeamNN: supervised training on library frames and labels.") var supervised = false
    @Option(help: ArgumentHelp("Training preset (network, loss, optimiser, schedule); default: the built-in DONUT paper preset (= configs/train-donut.yaml).", valueName: "train.yaml"))
    var training: String?
    @Option(help: "Override schedule.epochs.") var epochs: Int?
    @Option(help: "Override schedule.seed.") var seed: Int?
    @OptionGroup(title: "Output") var output: OutputOptions
    @Option(help: ArgumentHelp("Checkpoint file (default: <out>.checkpoint.h5).", valueName: "ck.h5")) var checkpoint: String?
    @Option(help: ArgumentHelp("Continue from this checkpoint.", valueName: "ck.h5")) var resume: String?
    @Flag(help: "Data-parallel: BatchNorm statistics over the global batch (all ranks) instead of each rank's batch.")
    var syncBatchnorm = false
    @Option(help: "Data-parallel: the step's allreduce goes in buckets of at most this many bytes.")
    var bucketBytes = Communicator.defaultBucketBytes
    // Debug and test options: hidden from --help (docs/training.md describes them).
    @Flag(help: ArgumentHelp("Data-parallel debug: check after every step that all ranks hold identical weights (abort otherwise).",
                             visibility: .hidden))
    var checkReplicas = false
    @Option(help: ArgumentHelp("Fault injection (tests): rank R exits abruptly during step STEP (default 1).", valueName: "R[:STEP]",
                               visibility: .private))
    var failRank: String?

    /// `--fail-rank R[:STEP]`.
    var failure: (rank: Int, step: Int)? {
        get throws {
            guard let failRank else { return nil }
            let parts = failRank.split(separator: ":").map { Int($0) }
            guard (1...2).contains(parts.count), parts.allSatisfy({ $0 != nil && $0! >= 0 }) else {
                throw ValidationError("--fail-rank expects R or R:STEP with non-negative integers (got '\(failRank)')")
            }
            return (parts[0]!, parts.count > 1 ? parts[1]! : 1)
        }
    }

    func validate() throws {
        guard (0...1).contains(mix) else { throw ValidationError("--mix must be between 0 and 1 (got \(mix))") }
        if supervised || mix > 0 { guard library != nil else { throw ValidationError("--supervised and --mix need --library lib.h5") } }
        if !supervised && mix < 1 { guard scanOptions.path != nil else { throw ValidationError("training on measured frames needs --scan scan.h5 (or --mix 1 with --library)") } }
        if let e = epochs, e < 1 { throw ValidationError("--epochs must be ≥ 1 (got \(e))") }
        _ = try failure
        guard bucketBytes >= 4 else { throw ValidationError("--bucket-bytes must be at least 4 (one Float), got \(bucketBytes)") }
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions
    @OptionGroup(title: "Progress") var verboseOptions: VerboseOptions

    func run() throws {
        var completed = true
        try RunContext.run(quiet: progressOptions.quiet, verbose: verboseOptions.verbose) { ctx in
            StopSignal.install()   // again, should the MPI library have installed its own (Open MPI 4.1 does not)
            var train = try training.map { try ConfigFile.load(TrainingConfig.self, path: $0) } ?? .donutPaper
            if let e = epochs { train.schedule.epochs = e }
            if let s = seed { train.schedule.seed = s }
            let scans = try scanOptions.input.map { [$0] } ?? []
            var request = TrainRequest(
                scans: scans, libraryPath: library, mix: mix, supervised: supervised, training: train,
                outPath: output.path, force: output.force, checkpointPath: checkpoint, resume: resume)
            request.syncBatchNorm = syncBatchnorm; request.checkReplicas = checkReplicas
            request.failRank = try failure; request.bucketBytes = bucketBytes
            request.otherInputs = training.map { [("--training", $0)] } ?? []
            completed = try trainModel(ctx, request).completed
        }
        if !completed { throw ExitCode(DonutExitCode.preempted.rawValue) }
    }

}
