import Foundation
import DonutPhysics
import DonutNN
import DonutCore
import DonutIO
import DonutMPI
import CDonutSignals

/// Set by SIGTERM/SIGUSR1 (Slurm's warning before a time limit or requeue, a preemption,
/// `kill`): a training asks it at every phase before its first step — then it ends at once,
/// writing nothing — and before every step — then it finishes the step, writes a checkpoint
/// and returns `TrainOutcome.completed == false` (exit 75).
///
/// The flag and its handlers live in `CDonutSignals`, installed before any other code of
/// the `donut` process when the command is train, refine or sweep: a signal during the
/// dynamic loading of the libraries, argument parsing or MPI_Init is a stop request too.
public enum StopSignal {
    /// Whether a stop signal arrived (since the process started).
    public static var requested: Bool { donut_stop_requested() != 0 }

    /// The signal's name ("SIGTERM", "SIGUSR1"), nil if none arrived.
    public static var signalName: String? {
        switch donut_stop_signal() {
        case SIGTERM: return "SIGTERM"
        case SIGUSR1: return "SIGUSR1"
        default: return nil
        }
    }

    /// Routes SIGTERM and SIGUSR1 to `requested` (instead of ending the process) and makes
    /// sure they are not blocked (a launcher's thread may have started us with them blocked:
    /// a child inherits the mask). Already done before `main` for train/refine/sweep; call it
    /// again after MPI_Init, in case an MPI library installs handlers of its own (Open MPI
    /// 4.1 does not for these two). A signal arrived before is kept (`requested`).
    public static func install() { donut_stop_install() }

    /// Runs `body`, which may `execv` this program afresh (`OpenBLASCore.reexecWithBetterCoreIfNeeded`),
    /// with SIGTERM/SIGUSR1 blocked and a stop request already received re-raised as pending:
    /// both survive exec, so the new image's early handler receives it; nothing is lost or fatal.
    public static func preservedAcrossExec(_ body: () -> Void) {
        donut_stop_before_exec()
        body()
        donut_stop_after_exec()
    }
}

/// Everything `donut train` (or `donut refine`) was asked to do.
public struct TrainRequest {
    /// The scans whose usable frames are the measured training frames (one for `train`,
    /// every manifest scan for `refine`), concatenated in this order.
    public var scans: [ScanInput]
    public var libraryPath: String?
    /// Fraction of every batch drawn from Poisson-noised library frames (0…1).
    public var mix: Double
    /// NanobeamNN: supervised on library frames and labels.
    public var supervised: Bool
    public var training: TrainingConfig
    public var outPath: String
    public var force: Bool
    public var checkpointPath: String
    public var resume: String?
    /// Data-parallel options (see `donut train --help`).
    public var syncBatchNorm = false
    public var checkReplicas = false
    /// Fault injection (tests): this rank exits abruptly during this step.
    public var failRank: (rank: Int, step: Int)? = nil
    public var bucketBytes = Communicator.defaultBucketBytes
    /// Fine-tuning (`refine`): start from this model's weights and BatchNorm buffers (its
    /// AdamW moments are not taken: the optimiser starts afresh at step 0). Its config must
    /// agree with the library's and the scans'.
    public var initialModel: (path: String, checkpoint: ModelCheckpoint)? = nil
    /// A scan that cannot be opened or holds no usable frame is logged and left out
    /// (`refine`) instead of ending the run (`train`).
    public var skipUnusableScans = false
    /// Provenance method name (default "train-<mode>").
    public var method: String? = nil
    /// Further files no output may replace (role, path): the training preset, a manifest.
    public var otherInputs: [(role: String, path: String)] = []
    /// Asked before every step (on every rank; the ranks agree): true stops after a
    /// checkpoint. Default: a SIGTERM/SIGUSR1 arrived (`StopSignal`).
    public var shouldStop: () -> Bool = { StopSignal.requested }
    /// Asked at the end of every phase before the first step (on every rank; the ranks
    /// agree): true ends the training there, with nothing written. Default: `StopSignal`.
    public var shouldStopBeforeFirstStep: () -> Bool = { StopSignal.requested }

    public init(scans: [ScanInput], libraryPath: String? = nil, mix: Double = 0, supervised: Bool = false,
                training: TrainingConfig, outPath: String, force: Bool = false, checkpointPath: String? = nil,
                resume: String? = nil) {
        self.scans = scans; self.libraryPath = libraryPath; self.mix = mix; self.supervised = supervised
        self.training = training; self.outPath = outPath; self.force = force
        self.checkpointPath = checkpointPath ?? TrainRequest.defaultCheckpointPath(out: outPath)
        self.resume = resume
    }

    /// `model.h5` → `model.checkpoint.h5`.
    public static func defaultCheckpointPath(out: String) -> String { removingSuffix(".h5", from: out) + ".checkpoint.h5" }
    /// `model.h5` → `model.loss.csv`: the loss log beside the model.
    public static func lossLogPath(out: String) -> String { removingSuffix(".h5", from: out) + ".loss.csv" }
}

/// How a training ended.
public struct TrainOutcome {
    /// False when a stop signal ended it early: a checkpoint was written for `--resume`.
    public var completed: Bool
    /// Optimiser steps taken in total (including those before a resume).
    public var steps: Int
    /// True when `outPath` was already a finished model of the same inputs and settings:
    /// nothing was trained or written.
    public var alreadyDone = false
}

/// The config a scan records (simulated scans do), for training without a library.
func scanConfig(_ path: String) throws -> DonutConfig {
    let file = try H5File.open(path)
    defer { try? file.close() }
    guard file.exists(configDataset) else {
        throw DonutIOError.dataset(path, configDataset, "the scan records no config: give --library (its config is used)")
    }
    return try ConfigFile.fromJSON(try file.readString(configDataset), source: path)
}

/// Trains a model and writes it to `r.outPath` (and its loss log beside it). Collective:
/// on N ranks, data-parallel (`Trainer`).
public func trainModel(_ ctx: RunContext, _ r: TrainRequest) throws -> TrainOutcome {
    let comm = ctx.comm
    let train = r.training, supervised = r.supervised, mix = r.mix, library = r.libraryPath
    let mode: TrainingMode = supervised ? .nanobeamnn : .donut
    let checkpointPath = r.checkpointPath
    try train.validate()   // command-line overrides (--seed, --epochs) included
    try checkTrainingOutputs(r, comm: comm)
    /// A stop request (`r.shouldStopBeforeFirstStep`) before the first step ends the training at once, at
    /// the end of the phase it arrived in: nothing has been written yet (no checkpoint, model,
    /// loss log or temporary file), so a rerun resumes the checkpoint it would have resumed
    /// or starts afresh. Collective: every rank asks, any rank's request stops all (one rank
    /// leaving alone would leave the others waiting in the next collective).
    func stoppedDuringStartUp(_ phase: String, resuming checkpoint: String? = nil) -> TrainOutcome? {
        var requests = [r.shouldStopBeforeFirstStep() ? 1.0 : 0.0]
        comm.allreduceSum(&requests)
        guard requests[0] > 0 else { return nil }
        let next = checkpoint.map { "the checkpoint \($0) is unchanged: continue with --resume \($0) (or the same command again)" }
            ?? "no checkpoint exists yet: run the same command again to start the training"
        ctx.log("stopped by signal during start-up (\(phase)\(StopSignal.signalName.map { ", " + $0 } ?? "")), before the first step: nothing written; \(next)")
        return TrainOutcome(completed: false, steps: 0)
    }
    if let stopped = stoppedDuringStartUp("parsing the options and starting MPI") { return stopped }
    // Rerun: finished, resumable, stale or someone else's? Decided on rank 0 from the run
    // records of the model and checkpoint files, before anything is read or computed.
    var run: TrainingRun?
    var verdict = ""   // "done", "resume:<path>", "fresh:<0|1><why>", "refuse:<file>\u{0}<message>"
    if comm.isRoot {
        do {
            let recorded = [r.outPath, checkpointPath, r.resume].compactMap { $0 }
                .compactMap { try? CheckpointFile.readRun(path: $0) }.flatMap(\.inputs)
            let current = TrainingRun(settingsText: trainingRunSettings(r), inputs: try TrainingRun.inputs(trainingRunInputs(r), reusing: recorded))
            run = current
            switch TrainingRerun.decide(current: current, out: r.outPath, checkpoint: checkpointPath, resume: r.resume, force: r.force) {
            case .alreadyDone: verdict = "done"
            case .resume(let path): verdict = "resume:" + path
            case .fresh(let replace, let why): verdict = "fresh:" + (replace ? "1" : "0") + why
            case .refuse(let file, let message): verdict = "refuse:" + file + "\u{0}" + message
            }
        } catch {
            verdict = "refuse:" + ((error as? DonutIOError)?.file ?? r.outPath) + "\u{0}" + ((error as? DonutIOError)?.message ?? "\(error)")
        }
    }
    verdict = comm.broadcast(verdict)
    if verdict.hasPrefix("refuse:") {
        let parts = verdict.dropFirst(7).split(separator: "\u{0}", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        throw DonutIOError(file: parts[0], parts.count > 1 ? parts[1] : "")
    }
    if verdict == "done" {
        var steps = 0
        if comm.isRoot { steps = (try? CheckpointFile.read(path: r.outPath).step) ?? 0 }
        steps = Int(comm.broadcast([Double(steps)])[0])
        ctx.log("\(r.outPath) is finished (\(steps) steps) with the same inputs and settings: nothing to do (--force trains again)")
        return TrainOutcome(completed: true, steps: steps, alreadyDone: true)
    }
    let resume = verdict.hasPrefix("resume:") ? String(verdict.dropFirst(7)) : nil
    let replace = verdict.hasPrefix("fresh:1")
    if verdict.hasPrefix("fresh:"), verdict.count > 7 { ctx.log(String(verdict.dropFirst(7))) }
    if let stopped = stoppedDuringStartUp("fingerprinting the inputs", resuming: resume) { return stopped }
    try checkLossLogIsFree(r, replace: replace || resume != nil, comm: comm)
    // Inputs and the instrument config: the library's, else the scan's; they must agree.
    // Every rank opens the files for independent reads and checks its contiguous shard
    // (checksums, bad frames); the frames themselves are read per epoch (`TrainingFileSource`).
    var config: DonutConfig?
    var libraryReader: LibraryReader?
    var libraryGrid: LibraryGrid?
    var inputs: [Provenance.Input] = []
    if let library {
        let reader = try LibraryReader(path: library)
        guard let json = reader.configJSON else { throw DonutIOError.dataset(library, configDataset, "the library records no config") }
        config = try ConfigFile.fromJSON(json, source: "\(library):\(configDataset)")
        var checksum: UInt64 = 0
        for chunk in chunks(shardRange(count: reader.grid.count, parts: comm.size, index: comm.rank)) {
            checksum &+= ScanReader.frameChecksum(frames: try reader.readSlab(chunk), firstIndex: chunk.lowerBound, frameSize: reader.frameSize)
        }
        var sum = [checksum]
        comm.allreduceSum(&sum)
        inputs.append(.init(path: relativePath(library, from: r.outPath), dataset: libraryPatternsDataset,
                            checksum: ScanReader.checksumString(sum[0])))
        libraryReader = reader; libraryGrid = reader.grid
        if let stopped = stoppedDuringStartUp("checking the library \(library)", resuming: resume) {
            try? reader.close()
            return stopped
        }
    }
    // A base model (refine): its config is the reference every input must agree with.
    let baseConfig = try r.initialModel.map {
        try ConfigFile.fromJSON($0.checkpoint.configJSON, source: "\($0.path):\(configDataset)")
    }
    func checkAgreesWithBase(_ other: DonutConfig, _ what: String) throws {
        guard let baseConfig, let base = r.initialModel else { return }
        let differing = baseConfig.patternKeysDiffering(from: other)
        guard differing.isEmpty else {
            throw DonutIOError(file: base.path, object: configDataset,
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
                    if let roi = scan.options.roi ?? scan.roi { probe.instrument.roi = roi }  // the model records the ROI it was trained on
                    let reader = try ScanReader(path: scanPath, dataset: scan.dataset, config: probe, scanShape: scan.scanShape, options: scan.options)
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
                            // As methods see them: masked pixels 0 (a frame empty after masking is unusable).
                            let frames = try reader.readBlock(chunk).counts
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
                inputs.append(.init(path: relativePath(scanPath, from: r.outPath), dataset: scan.dataset, checksum: ScanReader.checksumString(sum[0]),
                                    framesSource: reader.summary.framesSource))
                usable += scanUsable
                scanReaders.append(reader)
                offset += reader.layout.frameCount
                if let stopped = stoppedDuringStartUp("checking the scan \(scanPath)", resuming: resume) { return stopped }
            } catch {
                guard r.skipUnusableScans else { throw error }
                ctx.log("\(scanPath): left out of training: \(error)")
            }
        }
        if r.skipUnusableScans && !r.scans.isEmpty && scanReaders.isEmpty {
            throw PipelineError("none of the \(r.scans.count) scan(s) could be used for training (see the reasons above)")
        }
    }
    defer { try? libraryReader?.close() }
    guard let config = baseConfig ?? config else { throw PipelineError("no config: give --scan with a recorded config or --library") }
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
            throw DonutIOError(file: base.path, object: CheckpointFile.layoutDataset, "\(e.message)")
        }
        let checksum = ScanReader.checksumString(ScanReader.frameChecksum(frames: base.checkpoint.parameters, firstIndex: 0, frameSize: 1))
        inputs.append(.init(path: relativePath(base.path, from: r.outPath), dataset: CheckpointFile.parametersDataset, checksum: checksum))
        baseModelID = "fine-tuned from \(URL(fileURLWithPath: base.path).lastPathComponent) step \(base.checkpoint.step) \(checksum)"
        ctx.log("fine-tuning \(base.path) (\(base.checkpoint.method), step \(base.checkpoint.step)); AdamW restarts at step 0")
    }
    if let resume {
        // A checkpoint continues only the training it was made for: same instrument, same network.
        let saved = try CheckpointFile.read(path: resume)
        let savedConfig = try ConfigFile.fromJSON(saved.configJSON, source: "\(resume):\(configDataset)")
        let differing = config.patternKeysDiffering(from: savedConfig)
        guard differing.isEmpty else {
            throw DonutIOError(file: resume, object: configDataset,
                               "checkpoint made for another instrument than this training's inputs: \(differing.joined(separator: ", ")) differ")
        }
        do { try trainer.restore(saved) } catch let e as ConfigError {
            throw DonutIOError(file: resume, object: CheckpointFile.layoutDataset, "checkpoint of another network than the training preset's: \(e.message)")
        }
        ctx.log("resumed from \(resume) at step \(trainer.step) (epoch \(trainer.epoch)): the same inputs and settings, unfinished")
    }
    broadcastTrainingState(trainer, comm: comm)
    if let stopped = stoppedDuringStartUp("building the network", resuming: resume) { return stopped }
    let batch = train.schedule.batchSize
    ctx.log("train \(mode.rawValue): \(usable.count) measured frame(s)\(libraryGrid.map { ", library \($0.count) entries" } ?? ""), mix \(data.simulatedFraction), \(network.store.count) parameters, batch \(batch)\(comm.size > 1 ? " per rank × \(comm.size) ranks = \(comm.size * batch), BatchNorm \(r.syncBatchNorm ? "synchronised" : "per rank")" : ""), \(trainer.stepsPerEpoch) steps × \(train.schedule.epochs) epochs, seed \(train.schedule.seed)")
    ctx.logPlan(of: network)
    let provenance = ctx.provenance(method: r.method ?? "train-\(mode.rawValue)", config: configJSON, inputs: inputs, modelID: baseModelID)
    let t0 = Date(), firstStep = trainer.step
    let progress = ctx.progress("train \(mode.rawValue) steps", total: trainer.stepsPerEpoch * train.schedule.epochs,
                                already: firstStep, unit: "steps")
    var latest = ""   // the last logged loss, shown beside the bar
    try trainer.run(
        onStep: { step in progress.update(step, detail: latest) },
        shouldStop: {
            if let f = r.failRank, f.rank == comm.rank, f.step == trainer.step {
                // Fault injection: die as a killed or crashed rank would, without MPI_Finalize.
                fputs("donut: error: rank \(comm.rank) exits abruptly during step \(trainer.step) (--fail-rank fault injection)\n", stderr)
                fflush(stderr)
                _exit(3)
            }
            return r.shouldStop()
        },
        checkpoint: { t in
            guard comm.isRoot else { return }
            try CheckpointFile.write(t.checkpoint(configJSON: configJSON, trainingJSON: trainingJSON), path: checkpointPath,
                                     provenance: provenance, force: true, run: run)
        },
        log: { rec in
            latest = String(format: "epoch %d  loss %.5f", rec.epoch, rec.train)
            guard !rec.validation.isNaN else { return }   // end of an epoch: a permanent line
            let rate = Double((rec.step - firstStep) * batch * comm.size) / Date().timeIntervalSince(t0)
            ctx.log(String(format: "epoch %d/%d done (step %d): loss %.5f  validation %.5f  %.0f samples/s", rec.epoch,
                           train.schedule.epochs, rec.step, rec.train, rec.validation, rate))
        })
    progress.finish(detail: latest)
    if trainer.stopAgreed {
        ctx.log("stopped by signal after step \(trainer.step); checkpoint \(checkpointPath); continue with --resume \(checkpointPath)")
        return TrainOutcome(completed: false, steps: trainer.step)
    }
    let wall = Date().timeIntervalSince(t0)
    if comm.isRoot {
        let model = trainer.checkpoint(configJSON: configJSON, trainingJSON: trainingJSON)
        var finished = run
        finished?.finished = true
        try CheckpointFile.write(model, path: r.outPath, provenance: provenance, force: r.force || replace || resume != nil, run: finished)
        try writeLossLog(model.lossLog, path: TrainRequest.lossLogPath(out: r.outPath), force: r.force || replace || resume != nil)
        let heldOut = try heldOutMetrics(trainer, config: config, source: source, libraryOnly: supervised || mix >= 1 || usable.isEmpty)
        let metrics = SweepPointMetrics(
            heldOutFrames: heldOut.frames, heldOutPhysicsMAE: heldOut.physicsMAE, heldOutDeviance: heldOut.deviance,
            groundTruthRMSE: heldOut.groundTruthRMSE,
            validationLoss: model.lossLog.last(where: { $0.validation.isFinite })?.validation ?? .nan,
            wallSeconds: wall, samplesPerSecond: Double((trainer.step - firstStep) * batch * comm.size) / max(wall, 1e-9),
            steps: trainer.step)
        try AtomicOutput.write(try metrics.json(), to: SweepPointMetrics.path(forModel: r.outPath), force: true)
        if heldOut.frames > 0 {
            ctx.log(String(format: "held-out frames: %d, physics MAE %.4g counts, reduced Poisson deviance %.4g%@", heldOut.frames,
                           heldOut.physicsMAE, heldOut.deviance,
                           heldOut.groundTruthRMSE.keys.sorted().map { String(format: ", RMSE %@ %.3g", $0, heldOut.groundTruthRMSE[$0]!) }.joined()))
        }
    }
    ctx.log(String(format: "wrote %@ after %d steps in %.1f s", r.outPath, trainer.step, Date().timeIntervalSince(t0)))
    return TrainOutcome(completed: true, steps: trainer.step)
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
/// next is split there). Independent reads (any rank, any time). Measured frames are read as
/// `FrameBlock`s (masked pixels 0); their weights are kept for `measuredWeights` of the same
/// ids, which the trainer asks for right after. The monitor is not applied: the network's
/// input is each frame scaled to mean 1, where it cancels.
final class TrainingFileSource: TrainingFrameSource {
    /// Weights of the last `measuredFrames` read (nil: no pixel masked) and its ids.
    var lastWeights: (ids: [Int], weights: [Float]?)?
    /// The scans in concatenation order; `usable` indexes their concatenated frames.
    let scans: [ScanReader], usable: [Int], library: LibraryReader?
    /// `firstFrame[s]`: index of scan s's frame 0 in the concatenation (+ the total at the end).
    let firstFrame: [Int]
    init(scans: [ScanReader], usable: [Int], library: LibraryReader?) {
        self.scans = scans; self.usable = usable; self.library = library
        firstFrame = scans.reduce(into: [0]) { $0.append($0.last! + $1.layout.frameCount) }
    }

    func measuredFrames(_ ids: [Int]) throws -> [Float] {
        guard !scans.isEmpty else { throw PipelineError("training asked for measured frames without a scan") }
        var weights: [Float] = [], masked = false
        let frames = try Self.runs(ids.map { usable[$0] }) { range -> [Float] in
            let blocks = try concatenatedBlocks(range)
            for b in blocks {
                if let w = b.weights { weights.append(contentsOf: w); masked = true }
                else { weights.append(contentsOf: repeatElement(1, count: b.counts.count)) }
            }
            return blocks.flatMap(\.counts)
        }
        lastWeights = (ids, masked ? weights : nil)
        return frames
    }
    func measuredWeights(_ ids: [Int]) throws -> [Float]? {
        if let last = lastWeights, last.ids == ids { return last.weights }
        _ = try measuredFrames(ids)
        return lastWeights?.weights
    }
    /// Frames `range` of the concatenated scans, one read per scan it touches.
    func concatenatedBlocks(_ range: Range<Int>) throws -> [FrameBlock] {
        var out: [FrameBlock] = []
        for (s, scan) in scans.enumerated() {
            let part = range.clamped(to: firstFrame[s] ..< firstFrame[s + 1])
            guard !part.isEmpty else { continue }
            out.append(try scan.readBlock((part.lowerBound - firstFrame[s]) ..< (part.upperBound - firstFrame[s])))
        }
        return out
    }
    func libraryPatterns(_ ids: [Int]) throws -> [Float] {
        guard let library else { throw PipelineError("training asked for library frames without a library") }
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

/// step, epoch, train, validation, decoder MAE, physics MAE — one line per log record (atomic).
func writeLossLog(_ log: [LossRecord], path: String, force: Bool) throws {
    var text = "step,epoch,train_loss,validation_loss,decoder_mae,physics_mae\n"
    for r in log { text += "\(r.step),\(r.epoch),\(r.train),\(r.validation),\(r.decoderMAE),\(r.physicsMAE)\n" }
    try AtomicOutput.write(Data(text.utf8), to: path, force: force)
}

/// Before any work (rank 0 decides, every rank throws): no output (model, checkpoint, loss
/// log) is the same file as an input or as another output — the checkpoint may be the
/// `--resume` file it continues —, and none is a folder or special file. Whether an
/// existing model or checkpoint may be replaced is the rerun decision's (`TrainingRerun`).
func checkTrainingOutputs(_ r: TrainRequest, comm: Communicator) throws {
    var verdict = ""
    if comm.isRoot {
        let lossLog = TrainRequest.lossLogPath(out: r.outPath)
        let inputs = r.scans.map { (role: "--scan", path: $0.path) } + (r.libraryPath.map { [("--library", $0)] } ?? [])
            + (r.initialModel.map { [("--model", $0.path)] } ?? []) + r.otherInputs
        let resumed = r.resume.map { [(role: "--resume", path: $0)] } ?? []
        do {
            try FileIdentity.checkDistinct(outputs: [("--out", r.outPath), ("the loss log", lossLog)], inputs: inputs + resumed)
            try FileIdentity.checkDistinct(outputs: [("--out", r.outPath), ("the loss log", lossLog), ("--checkpoint", r.checkpointPath)], inputs: inputs)
            for path in [r.outPath, r.checkpointPath, lossLog] {
                if let kind = FileKind.nonRegular(path) { throw DonutIOError(file: path, "exists and is \(kind), not a regular file: refusing to replace it") }
            }
        } catch { verdict = "\(error)" }
    }
    verdict = comm.broadcast(verdict)
    if !verdict.isEmpty { throw PipelineError(verdict) }
}

/// A loss log that exists is replaced only with --force or by a training that replaces or
/// continues its own model (`replace`); someone's `<out>.loss.csv` is not overwritten.
func checkLossLogIsFree(_ r: TrainRequest, replace: Bool, comm: Communicator) throws {
    var verdict = ""
    let lossLog = TrainRequest.lossLogPath(out: r.outPath)
    if comm.isRoot, !r.force, !replace, FileManager.default.fileExists(atPath: lossLog) {
        verdict = "\(DonutIOError(file: lossLog, "exists; pass --force to overwrite"))"
    }
    verdict = comm.broadcast(verdict)
    if !verdict.isEmpty { throw PipelineError(verdict) }
}

/// What decides a training's weights besides the content of its input files, one `key=value`
/// per line (the training preset flattened to dotted keys, so a refusal can name what differs).
func trainingRunSettings(_ r: TrainRequest) -> String {
    func absolute(_ p: String) -> String { URL(fileURLWithPath: p).standardizedFileURL.path }
    var lines = ["mode=\(r.supervised ? TrainingMode.nanobeamnn.rawValue : TrainingMode.donut.rawValue)",
                 "method=\(r.method ?? "train")", "mix=\(r.mix)", "sync_batchnorm=\(r.syncBatchNorm)"]
    for (i, scan) in r.scans.enumerated() {
        for child in Mirror(reflecting: scan).children {
            guard let label = child.label else { continue }
            let value = label.lowercased().hasSuffix("path") ? ((child.value as? String).map(absolute) ?? "\(child.value)") : "\(child.value)"
            lines.append("scans[\(i)].\(label)=\(value)")
        }
    }
    if let library = r.libraryPath { lines.append("library=\(absolute(library))") }
    if let base = r.initialModel { lines.append("base_model=\(absolute(base.path))") }
    if let tree = try? JSONSerialization.jsonObject(with: Data(ConfigFile.json(of: r.training).utf8)) as? [String: Any] {
        func flatten(_ prefix: String, _ value: Any) {
            if let d = value as? [String: Any] {
                for k in d.keys.sorted() { flatten(prefix.isEmpty ? k : prefix + "." + k, d[k]!) }
            } else if let data = try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys]) {
                lines.append("\(prefix)=\(String(decoding: data, as: UTF8.self))")
            }
        }
        flatten("", tree)
    }
    return lines.joined(separator: "\n")
}

/// The files whose content decides a training: its scans with their mask and monitor files,
/// the library, the base model.
func trainingRunInputs(_ r: TrainRequest) -> [String] {
    var files: [String] = []
    for scan in r.scans {
        files += ScanReader.frameFiles(path: scan.path, dataset: scan.options.dataset ?? scan.dataset)  // with a master's data files
        if case .file(let path, _) = scan.options.mask { files.append(path) }
        if case .dataset(let file?, _) = scan.options.monitor { files.append(file) }
    }
    if let library = r.libraryPath { files.append(library) }
    if let base = r.initialModel { files.append(base.path) }
    return files
}

/// The trained network on the trainer's held-out (validation) measured frames, with ground-truth
/// RMSE when every scan has ground truth. Library-only training has no measured held-out frames.
func heldOutMetrics(_ trainer: Trainer, config: DonutConfig, source: TrainingFileSource, libraryOnly: Bool) throws -> HeldOutMetrics {
    let ids = libraryOnly ? [] : trainer.validationIndices
    var truth: [String: [Double]] = [:]
    let maps = try source.scans.map { try $0.groundTruth() }
    if !ids.isEmpty, maps.allSatisfy({ $0 != nil }) {
        let names = maps.map { Set($0!.keys) }.reduce(Set(SweepSummary.groundTruthMaps)) { $0.intersection($1) }
        for name in names {
            truth[name] = ids.map { id -> Double in
                let global = source.usable[id]
                let s = source.firstFrame.lastIndex(where: { $0 <= global })!
                return maps[s]![name]![global - source.firstFrame[s]]
            }
        }
    }
    let np = config.model.frameSize * config.model.frameSize
    return try HeldOutMetrics.evaluate(network: trainer.network, config: config, batch: trainer.training.schedule.batchSize,
                                       count: ids.count, readBlock: { r in
        let part = Array(ids[r])
        return FrameBlock(first: r.lowerBound, count: r.count, pixelCount: np, counts: try source.measuredFrames(part),
                          weights: try source.measuredWeights(part))
    }, truth: truth)
}
