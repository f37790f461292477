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

        Data-parallel under MPI (`mpirun -np N donut train …`, or srun): schedule.batch_size is the
        batch of each rank (global batch N·b); N ranks with batch b follow the same loss curve and
        reach the same weights as one rank with batch N·b (to rounding). Rank 0's initial weights
        are broadcast; each rank reads only its share of every epoch's frames (and of the library
        entries it simulates); the gradients, loss terms and stop flag are summed in one allreduce
        per step. BatchNorm is per-rank by default (each rank's batch, running statistics averaged
        every step); --sync-batchnorm uses the statistics of the global batch (the exact
        one-rank equivalent). Rank 0 logs and writes checkpoints. See docs/training.md.
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
    @Flag(help: "Data-parallel: BatchNorm statistics over the global batch (all ranks) instead of each rank's batch.")
    var syncBatchnorm = false
    @Flag(help: "Data-parallel debug: check after every step that all ranks hold identical weights (abort otherwise).")
    var checkReplicas = false
    @Option(help: "Data-parallel: the step's allreduce goes in buckets of at most this many bytes.")
    var bucketBytes = 4 << 20
    @Option(help: ArgumentHelp("Fault injection (tests): rank R exits abruptly during step STEP (default 1).", valueName: "R[:STEP]"))
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

    func run() throws {
        signal(SIGTERM) { _ in stopRequested = 1 }
        signal(SIGUSR1) { _ in stopRequested = 1 }
        var completed = true
        try RunContext.run { ctx in
            var train = try training.map { try ConfigFile.load(TrainingConfig.self, path: $0) } ?? .donutPaper
            if let e = epochs { train.schedule.epochs = e }
            if let s = seed { train.schedule.seed = s }
            let scans = try scanOptions.path.map { [ScanInput(path: $0, dataset: scanOptions.dataset, scanShape: try scanOptions.shape)] } ?? []
            let request = TrainRequest(
                scans: scans, libraryPath: library,
                mix: mix, supervised: supervised, training: train, outPath: output.path, force: output.force,
                checkpointPath: checkpoint ?? output.path.replacingOccurrences(of: ".h5", with: "") + ".checkpoint.h5", resume: resume,
                syncBatchNorm: syncBatchnorm, checkReplicas: checkReplicas, failRank: try failure, bucketBytes: bucketBytes)
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

/// Everything `donut train` (or `donut refine`) was asked to do.
struct TrainRequest {
    /// The scans whose usable frames are the measured training frames (one for `train`,
    /// every manifest scan for `refine`), concatenated in this order.
    var scans: [ScanInput]
    var libraryPath: String?
    var mix: Double
    var supervised: Bool
    var training: TrainingConfig
    var outPath: String
    var force: Bool
    var checkpointPath: String
    var resume: String?
    /// Data-parallel options (see `Train`).
    var syncBatchNorm = false
    var checkReplicas = false
    var failRank: (rank: Int, step: Int)? = nil
    var bucketBytes = 4 << 20
    /// Fine-tuning (`refine`): start from this model's weights and BatchNorm buffers (its
    /// AdamW moments are not taken: the optimiser starts afresh at step 0). Its config must
    /// agree with the library's and the scans'.
    var initialModel: (path: String, checkpoint: ModelCheckpoint)? = nil
    /// A scan that cannot be opened or holds no usable frame is logged and left out
    /// (`refine`) instead of ending the run (`train`).
    var skipUnusableScans = false
    /// Provenance method name (default "train-<mode>").
    var method: String? = nil
}

/// Trains a model and writes it to `r.outPath`; false when a signal stopped it (a
/// checkpoint was written for `--resume`). Collective: on N ranks, data-parallel (`Trainer`).
func trainModel(_ ctx: RunContext, _ r: TrainRequest) throws -> Bool {
    let comm = ctx.comm
    let train = r.training, supervised = r.supervised, mix = r.mix, library = r.libraryPath, resume = r.resume
    let mode: TrainingMode = supervised ? .nanobeamnn : .donut
    let checkpointPath = r.checkpointPath
    // Inputs and the instrument config: the library's, else the scan's; they must agree.
    // Every rank opens the files for independent reads and checks its contiguous shard
    // (checksums, bad frames); the frames themselves are read per epoch (`TrainingFileSource`).
    var config: DonutConfig?
    var libraryReader: LibraryReader?
    var libraryGrid: LibraryGrid?
    var inputs: [Provenance.Input] = []
    if let library {
        let reader = try LibraryReader(path: library)
        guard let json = reader.configJSON else { throw DonutIOError.dataset(library, "/entry/process/config/data", "the library records no config") }
        config = try ConfigFile.fromJSON(json, source: "\(library):/entry/process/config/data")
        var checksum: UInt64 = 0
        for chunk in chunks(shardRange(count: reader.grid.count, parts: comm.size, index: comm.rank)) {
            checksum &+= ScanReader.frameChecksum(frames: try reader.readSlab(chunk), firstIndex: chunk.lowerBound, frameSize: reader.frameSize)
        }
        var sum = [checksum]
        comm.allreduceSum(&sum)
        inputs.append(.init(path: relativePath(library, from: r.outPath), dataset: "/entry/library/patterns",
                            checksum: ScanReader.checksumString(sum[0])))
        libraryReader = reader; libraryGrid = reader.grid
    }
    // A base model (refine): its config is the reference every input must agree with.
    let baseConfig = try r.initialModel.map {
        try ConfigFile.fromJSON($0.checkpoint.configJSON, source: "\($0.path):/entry/process/config/data")
    }
    func checkAgreesWithBase(_ other: DonutConfig, _ what: String) throws {
        guard let baseConfig, let base = r.initialModel else { return }
        let differing = baseConfig.patternKeysDiffering(from: other)
        guard differing.isEmpty else {
            throw DonutIOError(file: base.path, object: "/entry/process/config/data",
                               "model trained for another instrument than \(what): \(differing.joined(separator: ", ")) differ")
        }
    }
    if let config, let library { try checkAgreesWithBase(config, "the library '\(library)'") }
    // Usable frames, as indices into the concatenation of the opened scans' frames.
    var usable: [Int] = []
    var scanReaders: [ScanReader] = []
    defer { for reader in scanReaders { try? reader.close() } }
    if !supervised, mix < 1 {
        var offset = 0
        for scan in r.scans {
            let scanPath = scan.path
            do {
                let (reader, mine, checksum) = try ctx.agreeing { () throws -> (ScanReader, [Double], UInt64) in
                    var probe = try config ?? baseConfig ?? scanConfig(scanPath)
                    if let roi = scan.roi { probe.instrument.roi = roi }
                    let reader = try ScanReader(path: scanPath, dataset: scan.dataset, config: probe, scanShape: scan.scanShape)
                    do {
                        if let json = reader.configJSON {
                            let recorded = try ConfigFile.fromJSON(json, source: scanPath)
                            if let lib = config, let library {
                                let differing = lib.patternKeysDiffering(from: recorded)
                                guard differing.isEmpty else {
                                    throw DonutIOError(file: library, "library made with another config than the scan '\(scanPath)': \(differing.joined(separator: ", ")) differ")
                                }
                            }
                            try checkAgreesWithBase(recorded, "the scan '\(scanPath)'")
                        }
                        if config == nil { config = probe }
                        let np = probe.model.frameSize * probe.model.frameSize
                        var checksum: UInt64 = 0, mine: [Double] = []
                        for chunk in chunks(shardRange(count: reader.layout.frameCount, parts: comm.size, index: comm.rank)) {
                            let frames = try reader.readFrames(chunk)
                            checksum &+= ScanReader.frameChecksum(frames: frames, firstIndex: chunk.lowerBound, frameSize: probe.model.frameSize)
                            frames.withUnsafeBufferPointer { all in
                                for k in 0..<chunk.count where FrameProblem.inspect(UnsafeBufferPointer(rebasing: all[(k * np)..<((k + 1) * np)])) == nil {
                                    mine.append(Double(offset + chunk.lowerBound + k))
                                }
                            }
                        }
                        return (reader, mine, checksum)
                    } catch {
                        try? reader.close()
                        throw error
                    }
                }
                // The usable frames of all shards, in frame order, on every rank.
                let gathered = comm.gather(mine).map { $0.flatMap { $0 } } ?? []
                let scanUsable = comm.broadcast(gathered).map { Int($0) }
                var sum = [checksum]
                comm.allreduceSum(&sum)
                guard !scanUsable.isEmpty else {
                    try? reader.close()
                    throw DonutIOError.dataset(scanPath, scan.dataset, "no usable frame (all are NaN, negative or empty)")
                }
                let bad = reader.layout.frameCount - scanUsable.count
                if bad > 0 { ctx.log("skipping \(bad) bad frame(s) of \(scanPath)") }
                inputs.append(.init(path: relativePath(scanPath, from: r.outPath), dataset: scan.dataset, checksum: ScanReader.checksumString(sum[0])))
                usable += scanUsable
                scanReaders.append(reader)
                offset += reader.layout.frameCount
            } catch {
                guard r.skipUnusableScans else { throw error }
                ctx.log("\(scanPath): left out of training: \(error)")
            }
        }
        if r.skipUnusableScans && !r.scans.isEmpty && scanReaders.isEmpty {
            throw ValidationError("none of the \(r.scans.count) scan(s) could be used for training (see the reasons above)")
        }
    }
    defer { try? libraryReader?.close() }
    guard let config = baseConfig ?? config else { throw ValidationError("no config: give --scan with a recorded config or --library") }
    let source = TrainingFileSource(scans: scanReaders, usable: usable, library: libraryReader)
    let data = TrainingData(measured: [], measuredCount: usable.count, library: libraryGrid.map { ($0, []) },
                            simulatedFraction: supervised ? 1 : mix, peakPhotons: config.noise.peakPhotons, source: source)
    let network = try DonutNetwork<Float>(settings: train.network, optimiser: train.optimiser, config: config,
                                          seed: UInt64(train.schedule.seed))
    let parallel = comm.size == 1 ? DataParallel.single : DataParallel(
        rank: comm.rank, size: comm.size,
        sumFloats: { comm.allreduceSum($0, count: $1, bucketBytes: r.bucketBytes) },
        sumDoubles: { comm.allreduceSum(UnsafeMutableBufferPointer(start: $0, count: $1)) },
        allEqual: { comm.allEqual($0) },
        synchronisedBatchNorm: r.syncBatchNorm, checkReplicas: r.checkReplicas)
    let trainer = try Trainer(network: network, training: train, mode: mode, data: data, parallel: parallel)
    let configJSON = ConfigFile.json(config), trainingJSON = ConfigFile.json(of: train)
    var baseModelID = ""
    if let base = r.initialModel {
        do { try network.load(base.checkpoint) } catch let e as ConfigError {
            throw DonutIOError(file: base.path, object: "/entry/model/layout", "\(e.message)")
        }
        let checksum = ScanReader.checksumString(ScanReader.frameChecksum(frames: base.checkpoint.parameters, firstIndex: 0, frameSize: 1))
        inputs.append(.init(path: relativePath(base.path, from: r.outPath), dataset: "/entry/model/parameters", checksum: checksum))
        baseModelID = "fine-tuned from \(URL(fileURLWithPath: base.path).lastPathComponent) step \(base.checkpoint.step) \(checksum)"
        ctx.log("fine-tuning \(base.path) (\(base.checkpoint.method), step \(base.checkpoint.step)); AdamW restarts at step 0")
    }
    if let resume {
        try trainer.restore(try CheckpointFile.read(path: resume))
        ctx.log("resumed from \(resume) at step \(trainer.step) (epoch \(trainer.epoch))")
    } else if !r.force {
        for path in [r.outPath, checkpointPath] where FileManager.default.fileExists(atPath: path) {
            throw DonutIOError(file: path, "exists; pass --force to overwrite (or --resume \(checkpointPath))")
        }
    }
    broadcastTrainingState(trainer, comm: comm)
    let batch = train.schedule.batchSize
    ctx.log("train \(mode.rawValue): \(usable.count) measured frame(s)\(libraryGrid.map { ", library \($0.count) entries" } ?? ""), mix \(data.simulatedFraction), \(network.store.count) parameters, batch \(batch)\(comm.size > 1 ? " per rank × \(comm.size) ranks = \(comm.size * batch), BatchNorm \(r.syncBatchNorm ? "synchronised" : "per rank")" : ""), \(trainer.stepsPerEpoch) steps × \(train.schedule.epochs) epochs, seed \(train.schedule.seed)")
    let provenance = ctx.provenance(method: r.method ?? "train-\(mode.rawValue)", config: configJSON, inputs: inputs, modelID: baseModelID)
    let t0 = Date(), firstStep = trainer.step
    try trainer.run(
        shouldStop: {
            if let f = r.failRank, f.rank == comm.rank, f.step == trainer.step {
                // Fault injection: die as a killed or crashed rank would, without MPI_Finalize.
                fputs("donut: rank \(comm.rank): --fail-rank: exiting abruptly during step \(trainer.step)\n", stderr)
                fflush(stderr)
                _exit(3)
            }
            return stopRequested != 0
        },
        checkpoint: { t in
            guard comm.isRoot else { return }
            try CheckpointFile.write(t.checkpoint(configJSON: configJSON, trainingJSON: trainingJSON), path: checkpointPath,
                                     provenance: provenance, force: true)
        },
        log: { rec in
            let rate = Double((rec.step - firstStep) * batch * comm.size) / Date().timeIntervalSince(t0)
            ctx.log(String(format: "step %6d epoch %3d  loss %.5f  %@  %.0f samples/s", rec.step, rec.epoch, rec.train,
                           rec.validation.isNaN ? "" : String(format: "validation %.5f", rec.validation), rate))
        })
    if trainer.stopAgreed {
        ctx.log("stopped by signal after step \(trainer.step); checkpoint \(checkpointPath); continue with --resume \(checkpointPath)")
        return false
    }
    if comm.isRoot {
        let model = trainer.checkpoint(configJSON: configJSON, trainingJSON: trainingJSON)
        try CheckpointFile.write(model, path: r.outPath, provenance: provenance, force: r.force || resume != nil)
        try writeLossLog(model.lossLog, path: r.outPath.replacingOccurrences(of: ".h5", with: "") + ".loss.csv")
    }
    ctx.log(String(format: "wrote %@ after %d steps in %.1f s", r.outPath, trainer.step, Date().timeIntervalSince(t0)))
    return true
}

/// Rank 0's parameters, AdamW moments and BatchNorm buffers on every rank: the replicas
/// start identical (fresh or resumed) whatever each rank built or read. Collective.
func broadcastTrainingState(_ trainer: Trainer, comm: Communicator) {
    guard comm.size > 1 else { return }
    let s = trainer.network.store, n = s.count
    for p in [s.parameters, s.firstMoments, s.secondMoments] {
        let values = comm.broadcast(Array(UnsafeBufferPointer(start: p, count: n)))
        values.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: n) }
    }
    trainer.network.buffers = comm.broadcast(trainer.network.buffers)
}

/// `range` in pieces of at most `size` items (bounded memory when checking a shard).
func chunks(_ range: Range<Int>, size: Int = 1024) -> [Range<Int>] {
    stride(from: range.lowerBound, to: range.upperBound, by: size).map { $0 ..< min($0 + size, range.upperBound) }
}

/// The frames a `Trainer` asks for, read from the scans (usable frames only) and the library:
/// consecutive indices in one hyperslab read each (a run that crosses from one scan into the
/// next is split there). Independent reads (any rank, any time).
final class TrainingFileSource: TrainingFrameSource {
    /// The scans in concatenation order; `usable` indexes their concatenated frames.
    let scans: [ScanReader], usable: [Int], library: LibraryReader?
    /// `firstFrame[s]`: index of scan s's frame 0 in the concatenation (+ the total at the end).
    let firstFrame: [Int]
    init(scans: [ScanReader], usable: [Int], library: LibraryReader?) {
        self.scans = scans; self.usable = usable; self.library = library
        firstFrame = scans.reduce(into: [0]) { $0.append($0.last! + $1.layout.frameCount) }
    }

    func measuredFrames(_ ids: [Int]) throws -> [Float] {
        guard !scans.isEmpty else { throw ValidationError("training asked for measured frames without a scan") }
        return try Self.runs(ids.map { usable[$0] }) { try concatenatedFrames($0) }
    }
    /// Frames `range` of the concatenated scans, one read per scan it touches.
    func concatenatedFrames(_ range: Range<Int>) throws -> [Float] {
        var out: [Float] = []
        for (s, scan) in scans.enumerated() {
            let part = range.clamped(to: firstFrame[s] ..< firstFrame[s + 1])
            guard !part.isEmpty else { continue }
            let frames = try scan.readFrames((part.lowerBound - firstFrame[s]) ..< (part.upperBound - firstFrame[s]))
            if out.isEmpty { out = frames } else { out.append(contentsOf: frames) }
        }
        return out
    }
    func libraryPatterns(_ ids: [Int]) throws -> [Float] {
        guard let library else { throw ValidationError("training asked for library frames without a library") }
        return try Self.runs(ids) { try library.readSlab($0) }
    }
    /// `read` over the maximal runs of consecutive values of the ascending `indices`, concatenated.
    static func runs(_ indices: [Int], _ read: (Range<Int>) throws -> [Float]) rethrows -> [Float] {
        var out: [Float] = [], start = 0
        while start < indices.count {
            var end = start + 1
            while end < indices.count && indices[end] == indices[end - 1] + 1 { end += 1 }
            out.append(contentsOf: try read(indices[start] ..< indices[end - 1] + 1))
            start = end
        }
        return out
    }
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
    try AtomicOutput.write(Data(text.utf8), to: path, force: true)
}
