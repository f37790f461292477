import Foundation
import Dispatch
import DonutBLAS
import DonutNN
import DonutPhysics

/// What a network trains on: measured frames (the scan's own), simulated library frames
/// (Poisson-noised on the fly), or both mixed in every batch.
public struct TrainingData {
    /// Measured frames, `measuredCount × pixelCount`, already checked (bad frames removed);
    /// empty when `source` reads them.
    public var measured: [Float]
    public var measuredCount: Int
    /// Weights of the measured frames' pixels (measuredCount × pixelCount, 0 = masked, 1 =
    /// measured; nil = every pixel measured, or `source` gives them): masked pixels are filled
    /// from their neighbours for the input (`MaskInpainting`) and left out of both losses.
    public var measuredWeights: [Float]?
    /// Library patterns (entries × pixelCount; empty when `source` reads them) and their grid,
    /// for simulated frames and labels.
    public var library: (grid: LibraryGrid, patterns: [Float])?
    /// Fraction of each batch drawn from the library (0: measured only; 1: library only).
    public var simulatedFraction: Double
    /// Photons at the peak of a simulated frame before Poisson sampling.
    public var peakPhotons: Double
    /// Reads frames on demand: the trainer then holds only the frames of its share of the
    /// current epoch and of the validation set (data-parallel ranks: ~1/np of each). nil: the
    /// arrays above hold everything.
    public var source: TrainingFrameSource?

    public init(measured: [Float], measuredCount: Int, library: (grid: LibraryGrid, patterns: [Float])?,
                simulatedFraction: Double, peakPhotons: Double, source: TrainingFrameSource? = nil, measuredWeights: [Float]? = nil) {
        precondition(measuredWeights.map { $0.count == measured.count } ?? true, "weights and measured frames differ in size")
        self.measured = measured; self.measuredCount = measuredCount; self.library = library; self.measuredWeights = measuredWeights
        self.simulatedFraction = simulatedFraction; self.peakPhotons = peakPhotons; self.source = source
    }
}

/// Frames by index, read when a trainer needs them (the command's HDF5 readers).
public protocol TrainingFrameSource: AnyObject {
    /// Measured frames `ids` (indices among the usable measured frames, ascending), pixelCount each, in that order.
    func measuredFrames(_ ids: [Int]) throws -> [Float]
    /// Library patterns of entries `ids` (ascending), pixelCount each, in that order.
    func libraryPatterns(_ ids: [Int]) throws -> [Float]
    /// Pixel weights (0 = masked, 1 = measured) of measured frames `ids`, as `measuredFrames`;
    /// nil when every pixel is measured.
    func measuredWeights(_ ids: [Int]) throws -> [Float]?
}

extension TrainingFrameSource {
    /// No mask: every pixel measured.
    public func measuredWeights(_ ids: [Int]) throws -> [Float]? { nil }
}

/// How a trainer shares the work with data-parallel replicas (MPI ranks). DonutCore knows
/// nothing of MPI: the command wires the closures to its communicator. Every closure is
/// collective: all replicas call it in the same order.
public struct DataParallel {
    public var rank: Int, size: Int
    /// Allreduce-sum of Floats in place (the packed gradient buffer, once per step).
    public var sumFloats: (UnsafeMutablePointer<Float>, Int) -> Void
    /// Allreduce-sum of Doubles in place (validation sums, synchronised BatchNorm statistics).
    public var sumDoubles: (UnsafeMutablePointer<Double>, Int) -> Void
    /// True on every replica when every replica passed the same value.
    public var allEqual: (UInt64) -> Bool
    /// BatchNorm with the statistics of the global batch (two reductions per layer forward,
    /// one backward). false: each replica normalises with its own batch (no extra
    /// communication) and the running statistics are averaged over replicas every step.
    public var synchronisedBatchNorm: Bool
    /// After every step, compare a checksum of parameters, moments and BatchNorm buffers
    /// across replicas; `ReplicasDiverged` on a mismatch (a debug and test mode).
    public var checkReplicas: Bool

    public init(rank: Int, size: Int, sumFloats: @escaping (UnsafeMutablePointer<Float>, Int) -> Void,
                sumDoubles: @escaping (UnsafeMutablePointer<Double>, Int) -> Void, allEqual: @escaping (UInt64) -> Bool,
                synchronisedBatchNorm: Bool, checkReplicas: Bool) {
        self.rank = rank; self.size = size; self.sumFloats = sumFloats; self.sumDoubles = sumDoubles
        self.allEqual = allEqual; self.synchronisedBatchNorm = synchronisedBatchNorm; self.checkReplicas = checkReplicas
    }

    /// One replica: nothing to share.
    public static let single = DataParallel(rank: 0, size: 1, sumFloats: { _, _ in }, sumDoubles: { _, _ in }, allEqual: { _ in true },
                                            synchronisedBatchNorm: false, checkReplicas: false)
}

/// Why training stopped early.
public struct TrainingDiverged: Error, CustomStringConvertible {
    public let step: Int
    public let loss: Double
    public var description: String {
        "training stopped at step \(step): loss \(loss) is not finite or exploded (> 100× the first steps' loss); the last checkpoint is the last good state"
    }
}

/// The replica check found ranks holding different weights.
public struct ReplicasDiverged: Error, CustomStringConvertible {
    public let step: Int
    public var description: String { "ranks hold different weights after step \(step) (replica checksum mismatch)" }
}

/// Time and bytes of the collective reductions, shared with the network's BatchNorm reducer.
public final class CommunicationClock {
    /// Wall seconds in reductions (transfer and waiting for the slowest replica).
    public internal(set) var seconds = 0.0
    /// CPU seconds of this process in reductions (MPI polls while it waits).
    public internal(set) var cpuSeconds = 0.0
    /// Bytes this replica contributed to reductions.
    public internal(set) var bytes = 0
    func time(_ bytes: Int, _ body: () -> Void) {
        let t0 = DispatchTime.now().uptimeNanoseconds, c0 = Self.processCPUSeconds()
        body()
        seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        cpuSeconds += Self.processCPUSeconds() - c0
        self.bytes += bytes
    }
    /// CPU seconds used by this process (all threads) so far.
    public static func processCPUSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
        return Double(t.tv_sec) + 1e-9 * Double(t.tv_nsec)
    }
}

/// The training loop: batches, forward, loss, backward, gradient reduction over
/// data-parallel replicas, AdamW. Deterministic: the shuffle of epoch e comes from
/// (seed, e), the dropout masks, Poisson noise and library picks of step s from (seed, s)
/// and each frame's **global** batch position, so a run resumed from the checkpoint of any
/// step reaches the same weights as an uninterrupted one, and np replicas with batch b
/// train on the same global batches as one with batch np·b.
///
/// Data parallelism (as PyTorch's DistributedSampler + DDP): global batch s of epoch e is
/// π_e[s·B ..< (s+1)·B] with B = np·b (measured frames; simulated slots likewise), replica
/// r takes rows r·b ..< (r+1)·b of it. Each replica's loss is the mean over its b frames; the
/// gradients are summed over replicas and divided by np (= the gradient of the mean over the
/// global batch), in one reduction per step that also carries the loss terms, the stop flag
/// and (per-replica BatchNorm) the running statistics, so all replicas agree on logging,
/// divergence and stopping.
public final class Trainer {
    public let network: DonutNetwork<Float>
    public let training: TrainingConfig
    public let mode: TrainingMode
    public let data: TrainingData
    public let parallel: DataParallel
    public var optimiser: AdamW
    public private(set) var epoch = 0
    public private(set) var stepInEpoch = 0
    public private(set) var lossLog: [LossRecord] = []
    /// Indices (into measured frames, or library entries for library-only training) for
    /// training and validation; fixed by the seed.
    public let trainIndices: [Int], validationIndices: [Int]
    /// Frames per step on this replica (schedule.batch_size) and how many of them are simulated.
    let batchSize: Int, simulatedPerBatch: Int
    var batchFrames: [Float], batchLabels: [Double]
    /// Pixel weights of the batch (library frames: 1), used when measured frames carry a mask.
    var batchWeights: [Float]
    /// Indices of the frames being loaded (scratch, sized once).
    var batchIDs: [Int]
    let pixelCount: Int
    /// Sum and count of the first 10 steps' losses: the reference of the divergence test (a
    /// sum, not an array: appending would allocate inside the first steps).
    var firstLosses: (sum: Double, count: Int) = (0, 0)
    var pendingLosses: (sum: Double, decoder: Double, physics: Double, count: Int) = (0, 0, 0, 0)
    /// The step's reduction buffer: gradients, [running statistics], loss, decoder MAE, physics MAE, stop.
    var reduceBuffer: [Float]
    /// True when the last step's reduction carried a stop request from any replica.
    public private(set) var stopAgreed = false
    /// Collective time and bytes of this replica (`donut bench scaling`).
    public let clock = CommunicationClock()
    /// Frames held: rows of `data.measured` / library patterns, or (with `data.source`) the
    /// frames of this replica's share of epoch `residentEpoch` and of the validation set.
    var measuredResident: [Float], libraryResident: [Float]
    /// Weights of the resident measured frames (nil: every pixel measured); those frames are
    /// already inpainted (`MaskInpainting`) when this is set.
    var measuredWeightsResident: [Float]?
    let inpainting: MaskInpainting
    var measuredRows: [Int: Int]?, libraryRows: [Int: Int]?
    var residentEpoch = -1
    /// Convolution biases that feed a BatchNorm. BatchNorm subtracts the channel mean, so the
    /// loss does not depend on them: their exact gradient is 0 and the computed one is
    /// rounding noise (~1e-9), which AdamW (m/√v) would turn into ±learning-rate steps that
    /// differ with the summation order (rank count, threads). Their gradient is set to 0: the
    /// bias keeps its initial value (weight decay aside), the network's function is unchanged.
    let cancelledBiases: [TensorView]

    public init(network: DonutNetwork<Float>, training: TrainingConfig, mode: TrainingMode, data: TrainingData,
                parallel: DataParallel = .single) throws {
        self.network = network; self.training = training; self.mode = mode; self.data = data; self.parallel = parallel
        optimiser = AdamW(beta1: training.optimiser.beta1, beta2: training.optimiser.beta2)
        pixelCount = network.frameSize * network.frameSize
        batchSize = training.schedule.batchSize
        guard batchSize >= 2 || (parallel.size > 1 && parallel.synchronisedBatchNorm && batchSize >= 1) else {
            throw ConfigError(key: "schedule.batch_size", "must be ≥ 2: BatchNorm needs more than one frame (got \(batchSize))")
        }
        if mode == .nanobeamnn || data.simulatedFraction > 0 || data.measuredCount == 0 {
            guard data.library != nil else { throw ConfigError(key: "library", "\(mode == .nanobeamnn ? "supervised training" : "simulated frames") need a library") }
        }
        simulatedPerBatch = sourceIsLibraryOnly(mode, data) ? batchSize : Int((data.simulatedFraction * Double(batchSize)).rounded())
        let population = sourceIsLibraryOnly(mode, data) ? data.library!.grid.count : data.measuredCount
        var rng = SplitMix64(seed: UInt64(training.schedule.seed) &* 0x9E37_79B9 &+ 17)
        var order = Array(0..<population)
        order.shuffle(using: &rng)
        let validation = Int((training.schedule.validationFraction * Double(population)).rounded(.down))
        validationIndices = Array(order.prefix(validation)).sorted()
        trainIndices = Array(order.dropFirst(validation)).sorted()
        let perGlobalBatch = parallel.size * (sourceIsLibraryOnly(mode, data) ? batchSize : batchSize - simulatedPerBatch)
        guard trainIndices.count >= perGlobalBatch else {
            throw ConfigError(key: "schedule.batch_size", "\(perGlobalBatch) \(sourceIsLibraryOnly(mode, data) ? "library" : "measured") frames per global batch (\(parallel.size) rank(s)) but only \(trainIndices.count) training frames")
        }
        batchFrames = [Float](repeating: 0, count: batchSize * pixelCount)
        batchLabels = [Double](repeating: 0, count: batchSize * 4)
        batchWeights = [Float](repeating: 1, count: batchSize * pixelCount)
        inpainting = MaskInpainting(frameSize: network.frameSize)
        batchIDs = [Int](repeating: 0, count: batchSize)
        let averagedBuffers = parallel.size > 1 && !parallel.synchronisedBatchNorm ? network.buffers.count : 0
        reduceBuffer = [Float](repeating: 0, count: parallel.size > 1 ? network.store.count + averagedBuffers + 4 : 0)
        measuredResident = data.source == nil ? data.measured : []
        measuredWeightsResident = data.source == nil ? data.measuredWeights : nil
        libraryResident = data.source == nil ? (data.library?.patterns ?? []) : []
        let names = Set(network.store.tensors.map(\.name))
        cancelledBiases = network.store.tensors.filter {
            $0.name.hasSuffix(".conv.bias") && names.contains($0.name.dropLast(".conv.bias".count) + ".bn.weight")
        }
        network.plan(batch: batchSize, training: true)
        inpaintResident()
        // Dropout ids: the frames' global batch positions (measured rows, then simulated rows).
        let m = batchSize - simulatedPerBatch, globalMeasured = parallel.size * m
        network.dropoutSampleIDs = (0..<batchSize).map { j in
            j < m ? parallel.rank * m + j : globalMeasured + parallel.rank * simulatedPerBatch + (j - m)
        }
        if parallel.size > 1 && parallel.synchronisedBatchNorm {
            let sum = parallel.sumDoubles, clock = clock
            network.batchNormReducer = BatchNorm2d.Reducer { p, n in clock.time(8 * n) { sum(p, n) } }
        }
    }

    /// Steps in one epoch: one pass over the training indices (measured frames, or library
    /// entries for library-only training), whole global batches only.
    public var stepsPerEpoch: Int {
        let perBatch = sourceIsLibraryOnly(mode, data) ? batchSize : batchSize - simulatedPerBatch
        return max(1, trainIndices.count / max(parallel.size * perBatch, 1))
    }
    public var totalSteps: Int { stepsPerEpoch * training.schedule.epochs }
    public var step: Int { optimiser.stepCount }

    /// The training order of epoch `e` (the same on every replica).
    func epochOrder(_ e: Int) -> [Int] {
        var rng = SplitMix64(seed: UInt64(training.schedule.seed) &* 0xA076_1D64_78BD_642F &+ UInt64(e))
        return trainIndices.shuffled(using: &rng)
    }

    /// The seed of global step `s`: dropout seeds (one draw per layer) and, with a frame's
    /// global position as the stream, its Poisson noise and library pick.
    func stepSeed(_ s: Int) -> UInt64 { UInt64(training.schedule.seed) &* 0xD1B5_4A32_D192_ED03 &+ UInt64(s) }

    /// The library entry of the simulated frame at global position `key` of the step with seed `seed`.
    func libraryPick(seed: UInt64, key: Int) -> Int {
        var g = SplitMix64.seeded(seed ^ 0x5851_F42D_4C95_7F2D, stream: UInt64(key))
        return Int(g.next() % UInt64(data.library!.grid.count))
    }

    /// One optimiser step. `stop`: this replica's stop request (a signal), agreed over the
    /// replicas in the step's reduction (`stopAgreed`). Returns the losses of the global batch.
    /// With `data.source`, go through `run` (it reads each epoch's frames first).
    @discardableResult
    public func trainStep(order: [Int], stop: Bool = false) throws -> NetworkLosses {
        let seed = stepSeed(step)
        var rng = SplitMix64(seed: seed)
        fillBatch(order: order, seed: seed)
        batchFrames.withUnsafeBufferPointer { network.loadInput($0.baseAddress!, count: batchSize) }
        network.store.zeroGradients()
        network.forward(mode: .training, rng: &rng, physics: mode == .donut, decoder: mode == .donut)
        var losses: NetworkLosses
        switch mode {
        case .donut: losses = withLossWeights { network.backwardUnsupervised(weights: training.loss, pixelWeights: $0) }
        case .nanobeamnn:
            losses = batchLabels.withUnsafeBufferPointer {
                network.backwardSupervised(labels: $0.baseAddress!, labelScale: training.supervised.labelScale)
            }
        }
        // By index: iterating an array of structs unspecialised (debug builds) allocates per element.
        for i in cancelledBiases.indices {
            let t = cancelledBiases[i]
            network.store.gradient(t).update(repeating: 0, count: t.count)
        }
        stopAgreed = stop
        if parallel.size > 1 { reduce(&losses) }
        guard losses.total.isFinite else { throw TrainingDiverged(step: step, loss: losses.total) }
        if firstLosses.count < 10 { firstLosses.sum += losses.total; firstLosses.count += 1 }
        else if losses.total > 100 * firstLosses.sum / Double(firstLosses.count) {
            throw TrainingDiverged(step: step, loss: losses.total)
        }
        optimiser.step(network.store)
        if parallel.checkReplicas, !parallel.allEqual(replicaChecksum()) { throw ReplicasDiverged(step: step) }
        pendingLosses.sum += losses.total; pendingLosses.count += 1
        pendingLosses.decoder += losses.decoderMAE.isNaN ? 0 : losses.decoderMAE
        pendingLosses.physics += losses.physicsMAE.isNaN ? 0 : losses.physicsMAE
        stepInEpoch += 1
        if stepInEpoch == stepsPerEpoch { epoch += 1; stepInEpoch = 0 }
        return losses
    }

    /// The step's one reduction: gradients (summed, then ÷ np: the gradient of the mean loss
    /// over the global batch), per-replica BatchNorm running statistics (averaged), the loss
    /// terms (averaged: equal batches), and the stop flag (any replica).
    func reduce(_ losses: inout NetworkLosses) {
        let n = network.store.count, nb = reduceBuffer.count - n - 4, np = Float(parallel.size)
        let g = network.store.gradients
        reduceBuffer.withUnsafeMutableBufferPointer { b in
            let p = b.baseAddress!
            p.update(from: g, count: n)
            network.buffers.withUnsafeBufferPointer { p.advanced(by: n).update(from: $0.baseAddress!, count: nb) }
            p[n + nb] = Float(losses.total); p[n + nb + 1] = Float(losses.decoderMAE)
            p[n + nb + 2] = Float(losses.physicsMAE); p[n + nb + 3] = stopAgreed ? 1 : 0
            clock.time(4 * b.count) { parallel.sumFloats(p, b.count) }
            for i in 0..<n { g[i] = p[i] / np }
            network.buffers.withUnsafeMutableBufferPointer { for i in 0..<nb { $0[i] = p[n + i] / np } }
            losses.total = Double(p[n + nb]) / Double(np); losses.decoderMAE = Double(p[n + nb + 1]) / Double(np)
            losses.physicsMAE = Double(p[n + nb + 2]) / Double(np)
            stopAgreed = p[n + nb + 3] > 0
        }
    }

    /// FNV-1a-64 over the bits of parameters, AdamW moments and BatchNorm buffers: equal on
    /// all replicas exactly when they hold the same state (to hash collisions).
    public func replicaChecksum() -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ p: UnsafePointer<Float>, _ count: Int) {
            for i in 0..<count { h = (h ^ UInt64(p[i].bitPattern)) &* 0x0000_0100_0000_01b3 }
        }
        let s = network.store
        mix(s.parameters, s.count); mix(s.firstMoments, s.count); mix(s.secondMoments, s.count)
        network.buffers.withUnsafeBufferPointer { mix($0.baseAddress!, $0.count) }
        return h &+ UInt64(step)
    }

    /// Runs until `training.schedule.epochs` are done or `shouldStop()` says so (asked once
    /// per step, before the step's reduction: a signal handler's flag; any replica's request
    /// stops all after the same step). Calls `checkpoint` every `checkpoint_every` steps and
    /// at the end, `log` once per `logEvery` steps (on every replica: the caller prints on one),
    /// `onStep` after every step with the step count (progress bars).
    public func run(logEvery: Int = 50, onStep: (Int) -> Void = { _ in }, shouldStop: () -> Bool = { false },
                    checkpoint: (Trainer) throws -> Void, log: (LossRecord) -> Void) throws {
        var order = epochOrder(epoch), orderEpoch = epoch   // shuffled once per epoch, not per step
        while epoch < training.schedule.epochs {
            if orderEpoch != epoch { order = epochOrder(epoch); orderEpoch = epoch }
            try prepare(epoch: epoch)
            try trainStep(order: order, stop: shouldStop())
            let endOfEpoch = stepInEpoch == 0
            if step % logEvery == 0 || endOfEpoch {
                let record = LossRecord(step: step, epoch: epoch, train: pendingLosses.sum / Double(max(pendingLosses.count, 1)),
                                        validation: endOfEpoch ? validationLoss() : .nan,
                                        decoderMAE: pendingLosses.decoder / Double(max(pendingLosses.count, 1)),
                                        physicsMAE: pendingLosses.physics / Double(max(pendingLosses.count, 1)))
                lossLog.append(record); log(record)
                pendingLosses = (0, 0, 0, 0)
            }
            onStep(step)
            if step % training.schedule.checkpointEvery == 0 { try checkpoint(self) }
            if stopAgreed { try checkpoint(self); return }
        }
        try checkpoint(self)
    }

    /// Reads (with `data.source`) the frames this replica uses in epoch `e` — its rows of every
    /// global batch, its simulated frames' library entries — and its validation frames,
    /// dropping the previous epoch's. Without a source everything is already resident.
    func prepare(epoch e: Int) throws {
        guard let source = data.source, residentEpoch != e else { return }
        let libraryOnly = sourceIsLibraryOnly(mode, data), np = parallel.size, r = parallel.rank
        let order = epochOrder(e)
        var measuredIDs = Set<Int>(), libraryIDs = Set<Int>()
        if libraryOnly {
            let global = np * batchSize
            for s in 0..<stepsPerEpoch { for j in 0..<batchSize { libraryIDs.insert(order[(s * global + r * batchSize + j) % order.count]) } }
        } else {
            let m = batchSize - simulatedPerBatch, globalMeasured = np * m
            for s in 0..<stepsPerEpoch {
                for j in 0..<m { measuredIDs.insert(order[(s * globalMeasured + r * m + j) % order.count]) }
                let seed = stepSeed(e * stepsPerEpoch + s)
                for j in 0..<simulatedPerBatch { libraryIDs.insert(libraryPick(seed: seed, key: globalMeasured + r * simulatedPerBatch + j)) }
            }
        }
        for id in validationShare() {
            if libraryOnly { libraryIDs.insert(id) } else { measuredIDs.insert(id) }
        }
        let measuredList = measuredIDs.sorted(), libraryList = libraryIDs.sorted()
        measuredResident = []; libraryResident = []   // release before reading the next share
        measuredResident = measuredList.isEmpty ? [] : try source.measuredFrames(measuredList)
        measuredWeightsResident = measuredList.isEmpty ? nil : try source.measuredWeights(measuredList)
        inpaintResident()
        libraryResident = libraryList.isEmpty ? [] : try source.libraryPatterns(libraryList)
        measuredRows = Dictionary(uniqueKeysWithValues: measuredList.enumerated().map { ($1, $0) })
        libraryRows = Dictionary(uniqueKeysWithValues: libraryList.enumerated().map { ($1, $0) })
        residentEpoch = e
    }

    /// Fills the masked pixels of the resident measured frames from their neighbours (the
    /// network's input must not see a masked pixel as a zero count); once per resident set.
    func inpaintResident() {
        guard let w = measuredWeightsResident else { return }
        precondition(w.count == measuredResident.count, "\(w.count) weights for \(measuredResident.count) measured values")
        let np = pixelCount
        measuredResident.withUnsafeMutableBufferPointer { f in
            w.withUnsafeBufferPointer { wb in
                for k in 0..<(f.count / np) {
                    let frame = UnsafeMutableBufferPointer(rebasing: f[(k * np)..<((k + 1) * np)])
                    guard FrameProblem.inspect(UnsafeBufferPointer(frame)) == nil else { continue }
                    inpainting.fill(frame, weights: UnsafeBufferPointer(rebasing: wb[(k * np)..<((k + 1) * np)]))
                }
            }
        }
    }

    /// The batch's pixel weights for the losses, nil when no measured frame carries a mask.
    func withLossWeights<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        guard measuredWeightsResident != nil else { return body(nil) }
        return batchWeights.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Validation batches are global too: batch v is validationIndices[v·B ..< (v+1)·B], B = np·b,
    /// this replica's rows r·b ..< (r+1)·b of each. The indices this replica evaluates, in order.
    func validationShare() -> [Int] {
        let global = parallel.size * batchSize
        var ids: [Int] = []
        for v in 0..<(validationIndices.count / global) {
            ids.append(contentsOf: validationIndices[(v * global + parallel.rank * batchSize) ..< (v * global + (parallel.rank + 1) * batchSize)])
        }
        return ids
    }

    /// Mean loss over the validation frames in inference mode (running BatchNorm statistics,
    /// no dropout), in whole global batches, summed over replicas; NaN without a whole batch.
    /// Collective with data-parallel replicas.
    public func validationLoss() -> Double {
        let share = validationShare()
        guard !share.isEmpty else { return .nan }
        var total = 0.0, batches = 0
        let savedBuffers = network.buffers
        let libraryOnly = sourceIsLibraryOnly(mode, data), global = parallel.size * batchSize
        for v in 0..<(share.count / batchSize) {
            for j in 0..<batchSize { batchIDs[j] = share[v * batchSize + j] }
            // Poisson noise of a library validation frame: keyed by its global validation position.
            loadFrames(count: batchSize, fromLibrary: libraryOnly, into: 0, seed: UInt64(training.schedule.seed) &+ 0x5EED,
                       firstKey: v * global + parallel.rank * batchSize)
            batchFrames.withUnsafeBufferPointer { network.loadInput($0.baseAddress!, count: batchSize) }
            var rng = SplitMix64(seed: 0)   // no dropout in inference mode
            network.forward(mode: .inference, rng: &rng, physics: mode == .donut, decoder: mode == .donut)
            let l: NetworkLosses = mode == .donut ? withLossWeights { network.unsupervisedLosses(weights: training.loss, pixelWeights: $0) }
                : batchLabels.withUnsafeBufferPointer { network.supervisedLosses(labels: $0.baseAddress!, labelScale: training.supervised.labelScale) }
            total += l.total; batches += 1
        }
        network.buffers = savedBuffers
        network.store.zeroGradients()
        var sums = [total, Double(batches)]
        if parallel.size > 1 { sums.withUnsafeMutableBufferPointer { parallel.sumDoubles($0.baseAddress!, 2) } }
        return sums[0] / sums[1]
    }

    /// Fills this replica's rows of the global batch: measured frames of this step from
    /// `order`, then simulated frames (library picks and Poisson noise keyed by global position).
    func fillBatch(order: [Int], seed: UInt64) {
        let np = parallel.size, r = parallel.rank
        if sourceIsLibraryOnly(mode, data) {
            let first = stepInEpoch * np * batchSize + r * batchSize
            for j in 0..<batchSize { batchIDs[j] = order[(first + j) % order.count] }
            loadFrames(count: batchSize, fromLibrary: true, into: 0, seed: seed, firstKey: r * batchSize)
            return
        }
        let m = batchSize - simulatedPerBatch, globalMeasured = np * m
        for j in 0..<m { batchIDs[j] = order[(stepInEpoch * globalMeasured + r * m + j) % order.count] }
        loadFrames(count: m, fromLibrary: false, into: 0, seed: seed, firstKey: r * m)
        if simulatedPerBatch > 0 {
            let firstKey = globalMeasured + r * simulatedPerBatch
            for j in 0..<simulatedPerBatch { batchIDs[j] = libraryPick(seed: seed, key: firstKey + j) }
            loadFrames(count: simulatedPerBatch, fromLibrary: true, into: m, seed: seed, firstKey: firstKey)
        }
    }

    /// Copies frames `batchIDs[0..<count]` to batch slots from `slot`: measured as they are;
    /// library entries scaled to the peak photons and Poisson-sampled (stream `firstKey + j`
    /// of `seed`), with their labels.
    func loadFrames(count: Int, fromLibrary: Bool, into slot: Int, seed: UInt64, firstKey: Int) {
        let np = pixelCount
        batchFrames.withUnsafeMutableBufferPointer { out in
            for j in 0..<count {
                let id = batchIDs[j]
                let dst = out.baseAddress! + (slot + j) * np
                if fromLibrary, let lib = data.library {
                    let row = libraryRows.map { $0[id]! } ?? id
                    var rng = SplitMix64.seeded(seed, stream: UInt64(firstKey + j))
                    libraryResident.withUnsafeBufferPointer { src in
                        let p = src.baseAddress! + row * np
                        var peak: Float = 0
                        for i in 0..<np { peak = max(peak, p[i]) }
                        let scale = peak > 0 ? data.peakPhotons / Double(peak) : 0
                        var total: Float = 0
                        for i in 0..<np { dst[i] = Float(rng.poisson(Double(p[i]) * scale)); total += dst[i] }
                        if total == 0 { dst[np / 2 + network.frameSize / 2] = 1 }   // never an empty frame
                    }
                    if measuredWeightsResident != nil {
                        batchWeights.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: (slot + j) * np).update(repeating: 1, count: np) }
                    }
                    let params = lib.grid.parameters(at: id)
                    let b = (slot + j) * 4
                    batchLabels[b] = params.strain; batchLabels[b + 1] = params.tiltLRDeg
                    batchLabels[b + 2] = params.tiltUDDeg; batchLabels[b + 3] = params.thicknessA
                } else {
                    let row = measuredRows.map { $0[id]! } ?? id
                    measuredResident.withUnsafeBufferPointer { src in dst.update(from: src.baseAddress! + row * np, count: np) }
                    if let w = measuredWeightsResident {
                        w.withUnsafeBufferPointer { src in
                            batchWeights.withUnsafeMutableBufferPointer { $0.baseAddress!.advanced(by: (slot + j) * np).update(from: src.baseAddress! + row * np, count: np) }
                        }
                    }
                }
            }
        }
    }

    // MARK: Checkpoints

    public func checkpoint(configJSON: String, trainingJSON: String) -> ModelCheckpoint {
        let s = network.store, n = s.count
        return ModelCheckpoint(
            method: mode.rawValue,
            tensors: s.tensors.map { TensorRecord(name: $0.name, shape: $0.shape, group: s.groups[$0.group.index].name, offset: $0.offset) },
            parameters: Array(UnsafeBufferPointer(start: s.parameters, count: n)),
            firstMoments: Array(UnsafeBufferPointer(start: s.firstMoments, count: n)),
            secondMoments: Array(UnsafeBufferPointer(start: s.secondMoments, count: n)),
            buffers: network.bufferRecords, bufferValues: network.buffers,
            step: step, epoch: epoch, stepInEpoch: stepInEpoch,
            rngState: [UInt64(training.schedule.seed), UInt64(step)],
            configJSON: configJSON, trainingJSON: trainingJSON, lossLog: lossLog)
    }

    /// Continues from `c`: parameters, moments, BatchNorm buffers, counters and log.
    public func restore(_ c: ModelCheckpoint) throws {
        try network.load(c)
        let n = network.store.count
        c.firstMoments.withUnsafeBufferPointer { network.store.firstMoments.update(from: $0.baseAddress!, count: n) }
        c.secondMoments.withUnsafeBufferPointer { network.store.secondMoments.update(from: $0.baseAddress!, count: n) }
        optimiser.stepCount = c.step
        epoch = c.epoch; stepInEpoch = c.stepInEpoch; lossLog = c.lossLog
    }
}

/// Library-only batches: supervised training, or DONUT without measured frames.
func sourceIsLibraryOnly(_ mode: TrainingMode, _ data: TrainingData) -> Bool {
    mode == .nanobeamnn || data.measuredCount == 0
}

extension DonutNetwork {
    /// Loads parameters and BatchNorm buffers from a checkpoint of the same architecture;
    /// a mismatch names the first tensor that differs.
    public func load(_ c: ModelCheckpoint) throws {
        guard c.tensors.count == store.tensors.count, c.parameters.count == store.count else {
            throw ConfigError(key: "network", "the model has \(c.tensors.count) tensors (\(c.parameters.count) values), this network \(store.tensors.count) (\(store.count)): architecture or latent size differ")
        }
        for (a, b) in zip(c.tensors, store.tensors) where a.name != b.name || a.shape != b.shape {
            throw ConfigError(key: "network", "tensor '\(a.name)' \(a.shape) in the model vs '\(b.name)' \(b.shape) in this network")
        }
        guard c.bufferValues.count == buffers.count else {
            throw ConfigError(key: "network", "the model has \(c.bufferValues.count) BatchNorm statistics, this network \(buffers.count)")
        }
        for i in 0..<store.count { store.parameters[i] = T(c.parameters[i]) }
        buffers = c.bufferValues.map { T($0) }
    }
}
