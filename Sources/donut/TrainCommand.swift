import ArgumentParser
import Foundation
import DonutPhysics
import DonutNN
import DonutCore
import DonutIO
import DonutMPI

/// Set by SIGTERM/SIGUSR1 (Slurm's warning before a time limit or requeue): finish the
/// step, write a checkpoint, exit with `Train.preemptedExitCode`.
nonisolated(unsafe) var stopRequested: sig_atomic_t = 0

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train DONUT (unsupervised, through the physics) or NanobeamNN (--supervised, on library labels).",
        discussion: """
        DONUT trains on the scan's own frames (no labels), on simulated library frames, or on both
        (--library with --mix F: a fraction F of every batch is Poisson-noised library frames).
        NanobeamNN (--supervised) trains the same encoder on library frames with MSE on scaled labels.
        A checkpoint is written atomically every schedule.checkpoint_every steps and on SIGTERM or
        SIGUSR1 (then the exit code is \(preemptedExitCode)); --resume continues to the same weights as
        an uninterrupted run. The final model (a checkpoint) goes to --out, the loss log beside it (.csv).
        """)
    static let preemptedExitCode: Int32 = 75

    @OptionGroup(title: "Input") var scanOptions: OptionalScanOptions
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

    func validate() throws {
        guard (0...1).contains(mix) else { throw ValidationError("--mix must be between 0 and 1 (got \(mix))") }
        if supervised || mix > 0 { guard library != nil else { throw ValidationError("--supervised and --mix need --library lib.h5") } }
        if !supervised && mix < 1 { guard scanOptions.path != nil else { throw ValidationError("training on measured frames needs --scan scan.h5 (or --mix 1 with --library)") } }
        if let e = epochs, e < 1 { throw ValidationError("--epochs must be ≥ 1 (got \(e))") }
    }

    func run() throws {
        signal(SIGTERM) { _ in stopRequested = 1 }
        signal(SIGUSR1) { _ in stopRequested = 1 }
        var completed = true
        try RunContext.run { ctx in
            var train = try training.map { try ConfigFile.load(TrainingConfig.self, path: $0) } ?? .donutPaper
            if let e = epochs { train.schedule.epochs = e }
            if let s = seed { train.schedule.seed = s }
            let request = TrainRequest(
                scanPath: scanOptions.path, dataset: scanOptions.dataset, scanShape: try scanOptions.shape, libraryPath: library,
                mix: mix, supervised: supervised, training: train, outPath: output.path, force: output.force,
                checkpointPath: checkpoint ?? output.path.replacingOccurrences(of: ".h5", with: "") + ".checkpoint.h5", resume: resume)
            completed = try trainModel(ctx, request)
        }
        if !completed { throw ExitCode(Train.preemptedExitCode) }
    }

}

/// The config a scan records (simulated scans do), for training without a library.
func scanConfig(_ path: String) throws -> DonutConfig {
        let file = try H5File.open(path)
        defer { try? file.close() }
        guard file.exists("/entry/process/config/data") else {
            throw DonutIOError.dataset(path, "/entry/process/config/data", "the scan records no config: give --library (its config is used)")
        }
        return try ConfigFile.fromJSON(try file.readString("/entry/process/config/data"), source: path)
}

/// Everything `donut train` was asked to do.
struct TrainRequest {
    var scanPath: String?
    var dataset: String
    var scanShape: (rows: Int, cols: Int)?
    var libraryPath: String?
    var mix: Double
    var supervised: Bool
    var training: TrainingConfig
    var outPath: String
    var force: Bool
    var checkpointPath: String
    var resume: String?
}

/// Trains a model and writes it to `r.outPath`; false when a signal stopped it (a
/// checkpoint was written for `--resume`).
func trainModel(_ ctx: RunContext, _ r: TrainRequest) throws -> Bool {
    guard ctx.comm.size == 1 else {
        throw ValidationError("data-parallel training across MPI ranks is not available yet: run `donut train` on one rank")
    }
    let train = r.training, supervised = r.supervised, mix = r.mix, library = r.libraryPath, resume = r.resume
    let mode: TrainingMode = supervised ? .nanobeamnn : .donut
    let checkpointPath = r.checkpointPath
    // Inputs and the instrument config: the library's, else the scan's; they must agree.
    var config: DonutConfig?
    var libraryData: (grid: LibraryGrid, patterns: [Float])?
    var inputs: [Provenance.Input] = []
    if let library {
        let reader = try LibraryReader(path: library)
        guard let json = reader.configJSON else { throw DonutIOError.dataset(library, "/entry/process/config/data", "the library records no config") }
        config = try ConfigFile.fromJSON(json, source: "\(library):/entry/process/config/data")
        let patterns = try reader.readSlab(0..<reader.grid.count)
        libraryData = (reader.grid, patterns)
        inputs.append(.init(path: relativePath(library, from: r.outPath), dataset: "/entry/library/patterns",
                            checksum: ScanReader.checksumString(ScanReader.frameChecksum(frames: patterns, firstIndex: 0, frameSize: reader.frameSize))))
        try reader.close()
    }
    var measured: [Float] = [], measuredCount = 0
    if let scanPath = r.scanPath, !supervised, mix < 1 {
        let probe = try config ?? scanConfig(scanPath)
        let reader = try ScanReader(path: scanPath, dataset: r.dataset, config: probe, scanShape: r.scanShape)
        if let json = reader.configJSON, let lib = config {
            let differing = lib.patternKeysDiffering(from: try ConfigFile.fromJSON(json, source: scanPath))
            guard differing.isEmpty else {
                throw DonutIOError(file: library ?? scanPath, "library made with another config than the scan '\(scanPath)': \(differing.joined(separator: ", ")) differ")
            }
        }
        config = probe
        let all = try reader.readFrames(0..<reader.layout.frameCount)
        let np = probe.model.frameSize * probe.model.frameSize
        var bad = 0
        for k in 0..<reader.layout.frameCount {
            let frame = all[(k * np)..<((k + 1) * np)]
            if frame.withUnsafeBufferPointer({ FrameProblem.inspect($0) }) != nil { bad += 1; continue }
            measured.append(contentsOf: frame); measuredCount += 1
        }
        guard measuredCount > 0 else { throw DonutIOError.dataset(scanPath, r.dataset, "no usable frame (all are NaN, negative or empty)") }
        if bad > 0 { ctx.log("skipping \(bad) bad frame(s) of \(scanPath)") }
        inputs.append(.init(path: relativePath(scanPath, from: r.outPath), dataset: r.dataset,
                            checksum: ScanReader.checksumString(try reader.globalFrameChecksum(0..<reader.layout.frameCount, comm: nil))))
        try reader.close()
    }
    guard let config else { throw ValidationError("no config: give --scan with a recorded config or --library") }
    let data = TrainingData(measured: measured, measuredCount: measuredCount, library: libraryData,
                            simulatedFraction: supervised ? 1 : mix, peakPhotons: config.noise.peakPhotons)
    let network = try DonutNetwork<Float>(settings: train.network, optimiser: train.optimiser, config: config,
                                          seed: UInt64(train.schedule.seed))
    let trainer = try Trainer(network: network, training: train, mode: mode, data: data)
    let configJSON = ConfigFile.json(config), trainingJSON = ConfigFile.json(of: train)
    if let resume {
        try trainer.restore(try CheckpointFile.read(path: resume))
        ctx.log("resumed from \(resume) at step \(trainer.step) (epoch \(trainer.epoch))")
    } else if !r.force {
        for path in [r.outPath, checkpointPath] where FileManager.default.fileExists(atPath: path) {
            throw DonutIOError(file: path, "exists; pass --force to overwrite (or --resume \(checkpointPath))")
        }
    }
    ctx.log("train \(mode.rawValue): \(measuredCount) measured frame(s)\(libraryData.map { ", library \($0.grid.count) entries" } ?? ""), mix \(data.simulatedFraction), \(network.store.count) parameters, batch \(train.schedule.batchSize), \(trainer.stepsPerEpoch) steps × \(train.schedule.epochs) epochs, seed \(train.schedule.seed)")
    let provenance = ctx.provenance(method: "train-\(mode.rawValue)", config: configJSON, inputs: inputs, modelID: "")
    let t0 = Date()
    try trainer.run(
        shouldStop: { stopRequested != 0 },
        checkpoint: { t in
            try CheckpointFile.write(t.checkpoint(configJSON: configJSON, trainingJSON: trainingJSON), path: checkpointPath,
                                     provenance: provenance, force: true)
        },
        log: { r in
            let rate = Double(r.step * train.schedule.batchSize) / Date().timeIntervalSince(t0)
            ctx.log(String(format: "step %6d epoch %3d  loss %.5f  %@  %.0f samples/s", r.step, r.epoch, r.train,
                           r.validation.isNaN ? "" : String(format: "validation %.5f", r.validation), rate))
        })
    if stopRequested != 0 {
        ctx.log("stopped by signal after step \(trainer.step); checkpoint \(checkpointPath); continue with --resume \(checkpointPath)")
        return false
    }
    let model = trainer.checkpoint(configJSON: configJSON, trainingJSON: trainingJSON)
    try CheckpointFile.write(model, path: r.outPath, provenance: provenance, force: r.force || resume != nil)
    try writeLossLog(model.lossLog, path: r.outPath.replacingOccurrences(of: ".h5", with: "") + ".loss.csv")
    ctx.log(String(format: "wrote %@ after %d steps in %.1f s", r.outPath, trainer.step, Date().timeIntervalSince(t0)))
    return true
}

/// `--scan` when a command can also run without one.
struct OptionalScanOptions: ParsableArguments {
    @Option(name: .customLong("scan"), help: ArgumentHelp("Scan file (HDF5 or .npy).", valueName: "scan.h5")) var path: String?
    @Option(help: "Dataset holding the frames (HDF5).") var dataset = "/entry/data/data"
    @Option(help: ArgumentHelp("Scan shape for 3-D (N, H, W) frames, as ROWSxCOLS.", valueName: "rowsxcols")) var scanShape: String?
    var shape: (rows: Int, cols: Int)? { get throws { try ScanOptions.parseShape(scanShape) } }
}

/// step, epoch, train, validation, decoder MAE, physics MAE — one line per log record (atomic).
func writeLossLog(_ log: [LossRecord], path: String) throws {
    var text = "step,epoch,train_loss,validation_loss,decoder_mae,physics_mae\n"
    for r in log { text += "\(r.step),\(r.epoch),\(r.train),\(r.validation),\(r.decoderMAE),\(r.physicsMAE)\n" }
    let temp = path + ".partial"
    try text.write(toFile: temp, atomically: false, encoding: .utf8)
    guard rename(temp, path) == 0 else { throw DonutIOError(file: path, "cannot rename the finished loss log into place") }
}
