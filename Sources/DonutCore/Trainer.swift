import Foundation
import DonutBLAS
import DonutNN
import DonutPhysics

/// What a network trains on: measured frames (the scan's own), simulated library frames
/// (Poisson-noised on the fly), or both mixed in every batch.
public struct TrainingData {
    /// Measured frames, `measuredCount × pixelCount`, already checked (bad frames removed).
    public var measured: [Float]
    public var measuredCount: Int
    /// Library patterns (entries × pixelCount) and their grid, for simulated frames and labels.
    public var library: (grid: LibraryGrid, patterns: [Float])?
    /// Fraction of each batch drawn from the library (0: measured only; 1: library only).
    public var simulatedFraction: Double
    /// Photons at the peak of a simulated frame before Poisson sampling.
    public var peakPhotons: Double

    public init(measured: [Float], measuredCount: Int, library: (grid: LibraryGrid, patterns: [Float])?,
                simulatedFraction: Double, peakPhotons: Double) {
        self.measured = measured; self.measuredCount = measuredCount; self.library = library
        self.simulatedFraction = simulatedFraction; self.peakPhotons = peakPhotons
    }
}

/// Why training stopped early.
public struct TrainingDiverged: Error, CustomStringConvertible {
    public let step: Int
    public let loss: Double
    public var description: String {
        "training stopped at step \(step): loss \(loss) is not finite or exploded (> 100× the first steps' loss); the last checkpoint is the last good state"
    }
}

/// The training loop: batches, forward, loss, backward, optional gradient reduction
/// (data-parallel ranks), AdamW. Deterministic: the shuffle of epoch e comes from
/// (seed, e) and the dropout masks and Poisson noise of step s from (seed, s), so a run
/// resumed from the checkpoint of any step reaches the same weights as an uninterrupted one.
public final class Trainer {
    public let network: DonutNetwork<Float>
    public let training: TrainingConfig
    public let mode: TrainingMode
    public let data: TrainingData
    public var optimiser: AdamW
    public private(set) var epoch = 0
    public private(set) var stepInEpoch = 0
    public private(set) var lossLog: [LossRecord] = []
    /// Indices (into measured frames, or library entries for library-only training) for
    /// training and validation; fixed by the seed.
    public let trainIndices: [Int], validationIndices: [Int]
    let batchSize: Int, simulatedPerBatch: Int
    var batchFrames: [Float], batchLabels: [Double]
    /// Indices of the frames being loaded (scratch, sized once).
    var batchIDs: [Int]
    let pixelCount: Int
    var firstLosses: [Double] = []
    var pendingLosses: (sum: Double, decoder: Double, physics: Double, count: Int) = (0, 0, 0, 0)

    public init(network: DonutNetwork<Float>, training: TrainingConfig, mode: TrainingMode, data: TrainingData) throws {
        self.network = network; self.training = training; self.mode = mode; self.data = data
        optimiser = AdamW(beta1: training.optimiser.beta1, beta2: training.optimiser.beta2)
        pixelCount = network.frameSize * network.frameSize
        batchSize = training.schedule.batchSize
        guard batchSize >= 2 else { throw ConfigError(key: "schedule.batch_size", "must be ≥ 2: BatchNorm needs more than one frame (got \(batchSize))") }
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
        let measuredPerBatch = batchSize - simulatedPerBatch
        if !sourceIsLibraryOnly(mode, data) {
            guard trainIndices.count >= measuredPerBatch else {
                throw ConfigError(key: "schedule.batch_size", "\(measuredPerBatch) measured frames per batch but only \(trainIndices.count) training frames")
            }
        }
        batchFrames = [Float](repeating: 0, count: batchSize * pixelCount)
        batchLabels = [Double](repeating: 0, count: batchSize * 4)
        batchIDs = [Int](repeating: 0, count: batchSize)
        network.plan(batch: batchSize, training: true)
    }

    /// Steps in one epoch: one pass over the training indices (measured frames, or library
    /// entries for library-only training), whole batches only.
    public var stepsPerEpoch: Int {
        let perBatch = sourceIsLibraryOnly(mode, data) ? batchSize : batchSize - simulatedPerBatch
        return max(1, trainIndices.count / max(perBatch, 1))
    }
    public var totalSteps: Int { stepsPerEpoch * training.schedule.epochs }
    public var step: Int { optimiser.stepCount }

    /// The training order of epoch `e`.
    func epochOrder(_ e: Int) -> [Int] {
        var rng = SplitMix64(seed: UInt64(training.schedule.seed) &* 0xA076_1D64_78BD_642F &+ UInt64(e))
        return trainIndices.shuffled(using: &rng)
    }

    /// One optimiser step. `reduce` averages the flat gradient buffer across ranks (nil on one rank).
    @discardableResult
    public func trainStep(order: [Int], reduce: ((UnsafeMutablePointer<Float>, Int) -> Void)? = nil) throws -> NetworkLosses {
        var rng = SplitMix64(seed: UInt64(training.schedule.seed) &* 0xD1B5_4A32_D192_ED03 &+ UInt64(step))
        fillBatch(order: order, rng: &rng)
        batchFrames.withUnsafeBufferPointer { network.loadInput($0.baseAddress!, count: batchSize) }
        network.store.zeroGradients()
        network.forward(mode: .training, rng: &rng, physics: mode == .donut, decoder: mode == .donut)
        let losses: NetworkLosses
        switch mode {
        case .donut: losses = network.backwardUnsupervised(weights: training.loss)
        case .nanobeamnn:
            losses = batchLabels.withUnsafeBufferPointer {
                network.backwardSupervised(labels: $0.baseAddress!, labelScale: training.supervised.labelScale)
            }
        }
        if let reduce { reduce(network.store.gradients, network.store.count) }
        guard losses.total.isFinite else { throw TrainingDiverged(step: step, loss: losses.total) }
        if firstLosses.count < 10 { firstLosses.append(losses.total) }
        else if losses.total > 100 * firstLosses.reduce(0, +) / Double(firstLosses.count) {
            throw TrainingDiverged(step: step, loss: losses.total)
        }
        optimiser.step(network.store)
        pendingLosses.sum += losses.total; pendingLosses.count += 1
        pendingLosses.decoder += losses.decoderMAE.isNaN ? 0 : losses.decoderMAE
        pendingLosses.physics += losses.physicsMAE.isNaN ? 0 : losses.physicsMAE
        stepInEpoch += 1
        if stepInEpoch == stepsPerEpoch { epoch += 1; stepInEpoch = 0 }
        return losses
    }

    /// Runs until `training.schedule.epochs` are done or `shouldStop()` says so (checked
    /// after every step: a signal handler's flag). Calls `checkpoint` every
    /// `checkpoint_every` steps and at the end, `log` once per `logEvery` steps.
    public func run(reduce: ((UnsafeMutablePointer<Float>, Int) -> Void)? = nil, logEvery: Int = 50,
                    shouldStop: () -> Bool = { false }, checkpoint: (Trainer) throws -> Void,
                    log: (LossRecord) -> Void) throws {
        var order = epochOrder(epoch), orderEpoch = epoch   // shuffled once per epoch, not per step
        while epoch < training.schedule.epochs {
            if orderEpoch != epoch { order = epochOrder(epoch); orderEpoch = epoch }
            try trainStep(order: order, reduce: reduce)
            let endOfEpoch = stepInEpoch == 0
            if step % logEvery == 0 || endOfEpoch {
                let record = LossRecord(step: step, epoch: epoch, train: pendingLosses.sum / Double(max(pendingLosses.count, 1)),
                                        validation: endOfEpoch ? validationLoss() : .nan,
                                        decoderMAE: pendingLosses.decoder / Double(max(pendingLosses.count, 1)),
                                        physicsMAE: pendingLosses.physics / Double(max(pendingLosses.count, 1)))
                lossLog.append(record); log(record)
                pendingLosses = (0, 0, 0, 0)
            }
            if step % training.schedule.checkpointEvery == 0 { try checkpoint(self) }
            if shouldStop() { try checkpoint(self); return }
        }
        try checkpoint(self)
    }

    /// Mean loss over the validation frames in inference mode (running BatchNorm statistics,
    /// no dropout), in whole batches; NaN without validation frames.
    public func validationLoss() -> Double {
        let perBatch = batchSize
        guard validationIndices.count >= perBatch else { return .nan }
        var total = 0.0, batches = 0
        let savedBuffers = network.buffers
        var start = 0
        while start + perBatch <= validationIndices.count {
            for j in 0..<perBatch { batchIDs[j] = validationIndices[start + j] }
            var rng = SplitMix64(seed: UInt64(training.schedule.seed) &+ 0x5EED &+ UInt64(start))
            loadFrames(count: perBatch, fromLibrary: sourceIsLibraryOnly(mode, data), into: 0, rng: &rng)
            batchFrames.withUnsafeBufferPointer { network.loadInput($0.baseAddress!, count: batchSize) }
            network.forward(mode: .inference, rng: &rng, physics: mode == .donut, decoder: mode == .donut)
            network.store.zeroGradients()
            let l: NetworkLosses = mode == .donut ? network.backwardUnsupervised(weights: training.loss)
                : batchLabels.withUnsafeBufferPointer { network.backwardSupervised(labels: $0.baseAddress!, labelScale: training.supervised.labelScale) }
            total += l.total; batches += 1
            start += perBatch
        }
        network.buffers = savedBuffers
        network.store.zeroGradients()
        return total / Double(batches)
    }

    /// Fills the batch: measured frames of this step from `order`, then simulated frames.
    func fillBatch(order: [Int], rng: inout SplitMix64) {
        if sourceIsLibraryOnly(mode, data) {
            for j in 0..<batchSize { batchIDs[j] = order[(stepInEpoch * batchSize + j) % order.count] }
            loadFrames(count: batchSize, fromLibrary: true, into: 0, rng: &rng)
            return
        }
        let measuredPerBatch = batchSize - simulatedPerBatch
        for j in 0..<measuredPerBatch { batchIDs[j] = order[(stepInEpoch * measuredPerBatch + j) % order.count] }
        loadFrames(count: measuredPerBatch, fromLibrary: false, into: 0, rng: &rng)
        if simulatedPerBatch > 0, let lib = data.library {
            for j in 0..<simulatedPerBatch { batchIDs[j] = Int(rng.next() % UInt64(lib.grid.count)) }
            loadFrames(count: simulatedPerBatch, fromLibrary: true, into: measuredPerBatch, rng: &rng)
        }
    }

    /// Copies frames `batchIDs[0..<count]` to batch slots from `slot`: measured as they are;
    /// library entries scaled to the peak photons and Poisson-sampled, with their labels.
    func loadFrames(count: Int, fromLibrary: Bool, into slot: Int, rng: inout SplitMix64) {
        let np = pixelCount
        batchFrames.withUnsafeMutableBufferPointer { out in
            for j in 0..<count {
                let id = batchIDs[j]
                let dst = out.baseAddress! + (slot + j) * np
                if fromLibrary, let lib = data.library {
                    lib.patterns.withUnsafeBufferPointer { src in
                        let p = src.baseAddress! + id * np
                        var peak: Float = 0
                        for i in 0..<np { peak = max(peak, p[i]) }
                        let scale = peak > 0 ? data.peakPhotons / Double(peak) : 0
                        var total: Float = 0
                        for i in 0..<np { dst[i] = Float(rng.poisson(Double(p[i]) * scale)); total += dst[i] }
                        if total == 0 { dst[np / 2 + network.frameSize / 2] = 1 }   // never an empty frame
                    }
                    let params = lib.grid.parameters(at: id)
                    let b = (slot + j) * 4
                    batchLabels[b] = params.strain; batchLabels[b + 1] = params.tiltLRDeg
                    batchLabels[b + 2] = params.tiltUDDeg; batchLabels[b + 3] = params.thicknessA
                } else {
                    data.measured.withUnsafeBufferPointer { src in dst.update(from: src.baseAddress! + id * np, count: np) }
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
