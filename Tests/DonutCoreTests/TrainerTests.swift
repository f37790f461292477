import XCTest
import DonutNN
import DonutPhysics
import DonutCore

final class TrainerTests: XCTestCase {
    /// 16×16 frames (see NetworkGradientTests.smallSetup), a tiny network, 24 measured frames.
    func makeTrainer(mode: TrainingMode = .donut, epochs: Int = 3, seed: Int = 4, library: Bool = false) throws -> Trainer {
        let (config, settings) = NetworkGradientTests.smallSetup(thickness: false, dropout: 0.1)
        var training = TrainingConfig.donutPaper
        training.network = settings
        training.schedule = Schedule(batchSize: 4, epochs: epochs, validationFraction: 0.2, checkpointEvery: 1000, seed: seed)
        training.optimiser.learningRateEncoder = 1e-3; training.optimiser.learningRatePhysics = 1e-3
        let frames = NetworkGradientTests.frames(config, count: 24).map(Float.init)
        var lib: (grid: LibraryGrid, patterns: [Float])?
        if library || mode == .nanobeamnn {
            var c = config
            c.library = LibrarySteps(strain: 3, tiltLR: 3, tiltUD: 3, thickness: 1)
            let grid = LibraryGrid(config: c)
            let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: c), profile: .box)
            lib = (grid, model.patterns((0..<grid.count).map(grid.parameters(at:))))
        }
        let data = TrainingData(measured: mode == .nanobeamnn ? [] : frames, measuredCount: mode == .nanobeamnn ? 0 : 24,
                                library: lib, simulatedFraction: library ? 0.5 : 0, peakPhotons: 30)
        let net = try DonutNetwork<Float>(settings: settings, optimiser: training.optimiser, config: config, seed: UInt64(seed))
        return try Trainer(network: net, training: training, mode: mode, data: data)
    }

    func weights(_ t: Trainer) -> [Float] { Array(UnsafeBufferPointer(start: t.network.store.parameters, count: t.network.store.count)) }

    func testSameSeedSameWeights() throws {
        let a = try makeTrainer(library: true), b = try makeTrainer(library: true)
        try a.run(checkpoint: { _ in }, log: { _ in })
        try b.run(checkpoint: { _ in }, log: { _ in })
        XCTAssertGreaterThan(a.step, 5)
        XCTAssertEqual(weights(a), weights(b), "same seed, same weights")
        XCTAssertEqual(a.network.buffers, b.network.buffers, "same BatchNorm statistics")
        let c = try makeTrainer(seed: 5, library: true)
        try c.run(checkpoint: { _ in }, log: { _ in })
        XCTAssertNotEqual(weights(a), weights(c), "another seed, other weights")
    }

    /// Stop after some steps (as SIGTERM would), restore into a fresh trainer, finish:
    /// bit-identical to the uninterrupted run.
    func testResumeReachesTheSameWeights() throws {
        for mode in TrainingMode.allCases {
            let full = try makeTrainer(mode: mode, library: true)
            try full.run(checkpoint: { _ in }, log: { _ in })
            let first = try makeTrainer(mode: mode, library: true)
            var saved: ModelCheckpoint?
            var calls = 0
            try first.run(shouldStop: { calls += 1; return calls == 7 }, checkpoint: { saved = $0.checkpoint(configJSON: "c", trainingJSON: "t") }, log: { _ in })
            XCTAssertEqual(saved?.step, 7, "\(mode): stopped after step 7")
            let second = try makeTrainer(mode: mode, library: true)
            try second.restore(saved!)
            try second.run(checkpoint: { _ in }, log: { _ in })
            XCTAssertEqual(second.step, full.step, "\(mode): same number of steps")
            XCTAssertEqual(weights(second), weights(full), "\(mode): resumed run ends with the uninterrupted run's weights")
            XCTAssertEqual(second.network.buffers, full.network.buffers, "\(mode): and its BatchNorm statistics")
        }
    }

    /// The loss falls: the physics MAE after training is below its start (unsupervised),
    /// the label MSE too (supervised).
    func testLossDecreases() throws {
        for mode in TrainingMode.allCases {
            let t = try makeTrainer(mode: mode, epochs: mode == .donut ? 12 : 8)
            var log: [LossRecord] = []
            try t.run(logEvery: 1, checkpoint: { _ in }, log: { log.append($0) })
            let early = log.prefix(3).map(\.train).reduce(0, +) / 3, late = log.suffix(3).map(\.train).reduce(0, +) / 3
            XCTAssertLessThan(late, 0.9 * early, "\(mode): training loss \(early) → \(late)")
            XCTAssert(log.contains { !$0.validation.isNaN }, "\(mode): validation loss evaluated")
        }
    }

    func testDivergenceStops() throws {
        let t = try makeTrainer()
        t.network.store.parameters[0] = .nan
        XCTAssertThrowsError(try t.run(checkpoint: { _ in }, log: { _ in })) { XCTAssert("\($0)".contains("not finite")) }
    }
}

/// `size` replicas on threads of one process, with the collectives `DataParallel` needs:
/// a stand-in for MPI ranks. Values are exchanged and summed in rank order, so results do not
/// depend on which thread arrives first.
final class ThreadReplicas {
    let size: Int
    private let condition = NSCondition()
    private var deposits: [[Double]?], generation = 0, results: [[Double]] = []

    init(size: Int) { self.size = size; deposits = Array(repeating: nil, count: size) }

    /// Every replica's `values`, by rank (a barrier).
    func exchange(_ rank: Int, _ values: [Double]) -> [[Double]] {
        condition.lock(); defer { condition.unlock() }
        let mine = generation
        deposits[rank] = values
        if deposits.allSatisfy({ $0 != nil }) {
            results = deposits.map { $0! }
            deposits = Array(repeating: nil, count: size)
            generation += 1
            condition.broadcast()
        } else {
            while generation == mine { condition.wait() }
        }
        return results
    }

    func sum(_ rank: Int, _ values: [Double]) -> [Double] {
        let all = exchange(rank, values)
        return (0..<values.count).map { i in all.reduce(0.0) { $0 + $1[i] } }
    }

    func parallel(rank: Int, synchronisedBatchNorm: Bool, checkReplicas: Bool = true) -> DataParallel {
        DataParallel(rank: rank, size: size,
                     sumFloats: { p, n in
                         // Float sums in Float, in rank order (as MPI_SUM on MPI_FLOAT).
                         let all = self.exchange(rank, (0..<n).map { Double(p[$0]) })
                         for i in 0..<n { var s = Float(0); for r in 0..<self.size { s += Float(all[r][i]) }; p[i] = s }
                     },
                     sumDoubles: { p, n in
                         let s = self.sum(rank, (0..<n).map { p[$0] })
                         for i in 0..<n { p[i] = s[i] }
                     },
                     allEqual: { v in
                         let all = self.exchange(rank, [Double(v >> 32), Double(v & 0xFFFF_FFFF)])
                         return all.allSatisfy { $0 == all[0] }
                     },
                     synchronisedBatchNorm: synchronisedBatchNorm, checkReplicas: checkReplicas)
    }

    /// Runs `body(rank)` on `size` threads and waits; the first error thrown, if any, is rethrown.
    func run(_ body: @escaping (Int) throws -> Void) throws {
        let group = DispatchGroup()
        final class Errors: @unchecked Sendable { let lock = NSLock(); var list: [Error] = [] }
        let errors = Errors()
        for rank in 0..<size {
            group.enter()
            let t = Thread {
                do { try body(rank) } catch { errors.lock.lock(); errors.list.append(error); errors.lock.unlock() }
                group.leave()
            }
            t.stackSize = 8 << 20
            t.start()
        }
        group.wait()
        if let e = errors.list.first { throw e }
    }
}

final class DataParallelTrainerTests: XCTestCase {
    func makeTrainer(mode: TrainingMode, batch: Int, parallel: DataParallel = .single, epochs: Int = 3) throws -> Trainer {
        let (config, settings) = NetworkGradientTests.smallSetup(thickness: false, dropout: 0.1)
        var training = TrainingConfig.donutPaper
        training.network = settings
        training.schedule = Schedule(batchSize: batch, epochs: epochs, validationFraction: 0.25, checkpointEvery: 1000, seed: 9)
        training.optimiser.learningRateEncoder = 1e-3; training.optimiser.learningRatePhysics = 1e-3
        let frames = NetworkGradientTests.frames(config, count: 24).map(Float.init)
        var c = config
        c.library = LibrarySteps(strain: 3, tiltLR: 3, tiltUD: 3, thickness: 1)
        let grid = LibraryGrid(config: c)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: c), profile: .box)
        let lib = (grid, model.patterns((0..<grid.count).map(grid.parameters(at:))))
        let data = TrainingData(measured: mode == .nanobeamnn ? [] : frames, measuredCount: mode == .nanobeamnn ? 0 : 24,
                                library: lib, simulatedFraction: mode == .nanobeamnn ? 1 : 0.5, peakPhotons: 30)
        let net = try DonutNetwork<Float>(settings: settings, optimiser: training.optimiser, config: config, seed: 9)
        return try Trainer(network: net, training: training, mode: mode, data: data, parallel: parallel)
    }

    func weights(_ t: Trainer) -> [Float] { Array(UnsafeBufferPointer(start: t.network.store.parameters, count: t.network.store.count)) }

    /// Serves frames from arrays and records what was asked (as the command's file reader).
    final class ArraySource: TrainingFrameSource {
        let measured: [Float], library: [Float], pixels: Int
        var measuredRequests: [[Int]] = [], libraryRequests: [[Int]] = []
        init(_ data: TrainingData, pixels: Int) { measured = data.measured; library = data.library?.patterns ?? []; self.pixels = pixels }
        func measuredFrames(_ ids: [Int]) throws -> [Float] {
            measuredRequests.append(ids)
            return ids.flatMap { measured[($0 * pixels)..<(($0 + 1) * pixels)] }
        }
        func libraryPatterns(_ ids: [Int]) throws -> [Float] {
            libraryRequests.append(ids)
            return ids.flatMap { library[($0 * pixels)..<(($0 + 1) * pixels)] }
        }
    }

    /// The same trainer reading its frames per epoch through a source: the same weights as with
    /// everything in memory; on two replicas each reads only its share of an epoch (half of the
    /// measured frames, plus its validation rows), and the shares cover every frame trained on.
    func testFramesReadPerEpochShare() throws {
        for mode in TrainingMode.allCases {
            let memory = try makeTrainer(mode: mode, batch: 4)
            try memory.run(checkpoint: { _ in }, log: { _ in })
            var data = memory.data
            let source = ArraySource(data, pixels: memory.network.frameSize * memory.network.frameSize)
            data.measured = []; data.library = data.library.map { ($0.grid, []) }; data.source = source
            let read = try Trainer(network: try DonutNetwork<Float>(settings: memory.training.network, optimiser: memory.training.optimiser,
                                                                    config: NetworkGradientTests.smallSetup(thickness: false, dropout: 0.1).0, seed: 9),
                                   training: memory.training, mode: mode, data: data)
            try read.run(checkpoint: { _ in }, log: { _ in })
            XCTAssertEqual(weights(read), weights(memory), "\(mode): frames read per epoch train as frames in memory")
            XCTAssertEqual((mode == .donut ? source.measuredRequests : source.libraryRequests).count, memory.training.schedule.epochs, "\(mode): one read per epoch")
        }
        // Two replicas, DONUT with measured frames only: 18 training + 6 validation frames,
        // 2 measured frames per replica per step, 4 steps per epoch (16 of 18 frames used).
        let replicas = ThreadReplicas(size: 2)
        var sources: [ArraySource?] = [nil, nil]
        try replicas.run { rank in
            let base = try self.makeTrainer(mode: .donut, batch: 2)
            var data = base.data
            data.simulatedFraction = 0
            let source = ArraySource(data, pixels: base.network.frameSize * base.network.frameSize)
            data.measured = []; data.source = source
            let net = try DonutNetwork<Float>(settings: base.training.network, optimiser: base.training.optimiser,
                                              config: NetworkGradientTests.smallSetup(thickness: false, dropout: 0.1).0, seed: 9)
            let t = try Trainer(network: net, training: base.training, mode: .donut, data: data,
                                parallel: replicas.parallel(rank: rank, synchronisedBatchNorm: true))
            XCTAssertEqual(t.stepsPerEpoch, 4)
            try t.run(checkpoint: { _ in }, log: { _ in })
            sources[rank] = source
        }
        let trainer = try makeTrainer(mode: .donut, batch: 4)
        for epoch in 0..<3 {
            let a = Set(sources[0]!.measuredRequests[epoch]), b = Set(sources[1]!.measuredRequests[epoch])
            let validation = Set(trainer.validationIndices)
            XCTAssertEqual(a.subtracting(validation).count, 8, "epoch \(epoch): rank 0 reads its 4 steps × 2 frames")
            XCTAssertEqual(b.subtracting(validation).count, 8, "epoch \(epoch): rank 1 likewise")
            XCTAssert(a.subtracting(validation).isDisjoint(with: b.subtracting(validation)), "epoch \(epoch): disjoint shares")
            XCTAssertEqual(a.intersection(validation).count, 2, "epoch \(epoch): half of the 4 validation frames of the one global batch")
            XCTAssert(a.union(b).subtracting(validation).isSubset(of: Set(trainer.trainIndices)))
        }
    }

    /// Two replicas with batch b and synchronised BatchNorm follow one trainer with batch 2b:
    /// same loss log and weights to 1e-5 (summation order differs), identical replicas.
    func testTwoReplicasMatchOneTrainerWithTheDoubledBatch() throws {
        for mode in TrainingMode.allCases {
            let one = try makeTrainer(mode: mode, batch: 4)
            var oneLog: [LossRecord] = []
            try one.run(logEvery: 1, checkpoint: { _ in }, log: { oneLog.append($0) })
            let replicas = ThreadReplicas(size: 2)
            var trainers: [Trainer?] = [nil, nil], logs: [[LossRecord]] = [[], []]
            try replicas.run { rank in
                let t = try self.makeTrainer(mode: mode, batch: 2, parallel: replicas.parallel(rank: rank, synchronisedBatchNorm: true))
                var log: [LossRecord] = []
                try t.run(logEvery: 1, checkpoint: { _ in }, log: { log.append($0) })
                trainers[rank] = t; logs[rank] = log
            }
            let a = trainers[0]!, b = trainers[1]!
            XCTAssertEqual(a.step, one.step, "\(mode): same global steps")
            XCTAssertGreaterThan(one.step, 10)
            XCTAssertEqual(weights(a), weights(b), "\(mode): replicas identical")
            XCTAssertEqual(a.network.buffers, b.network.buffers, "\(mode): replicas' BatchNorm statistics identical")
            let w1 = weights(one), w2 = weights(a)
            let scale = w1.map { abs(Double($0)) }.max()!
            for i in w1.indices { XCTAssertEqual(Double(w1[i]), Double(w2[i]), accuracy: 1e-5 * scale, "\(mode): weight \(i)") }
            XCTAssertEqual(oneLog.count, logs[0].count)
            for (x, y) in zip(oneLog, logs[0]) {
                XCTAssertEqual(x.train, y.train, accuracy: 1e-5 * abs(x.train), "\(mode): loss at step \(x.step)")
                if !x.validation.isNaN { XCTAssertEqual(x.validation, y.validation, accuracy: 1e-5 * abs(x.validation), "\(mode): validation at step \(x.step)") }
            }
            XCTAssert(oneLog.contains { !$0.validation.isNaN }, "\(mode): validation evaluated")
            // Per-replica BatchNorm: replicas stay identical (averaged running statistics) but
            // follow another curve than the one-trainer run.
            try replicas.run { rank in
                let t = try self.makeTrainer(mode: mode, batch: 2, parallel: replicas.parallel(rank: rank, synchronisedBatchNorm: false))
                try t.run(checkpoint: { _ in }, log: { _ in })
                trainers[rank] = t
            }
            XCTAssertEqual(weights(trainers[0]!), weights(trainers[1]!), "\(mode): per-rank BatchNorm replicas identical")
            XCTAssertEqual(trainers[0]!.network.buffers, trainers[1]!.network.buffers)
            XCTAssertNotEqual(weights(trainers[0]!), w1, "\(mode): per-rank BatchNorm is not the one-trainer computation")
        }
    }

    /// The replica check fails every replica together when one holds another weight.
    func testReplicaCheckCatchesADivergedReplica() throws {
        let replicas = ThreadReplicas(size: 2)
        var failures = [String](repeating: "", count: 2)
        try replicas.run { rank in
            let t = try self.makeTrainer(mode: .donut, batch: 2, parallel: replicas.parallel(rank: rank, synchronisedBatchNorm: true))
            if rank == 1 { t.network.store.parameters[5] += 1e-3 }
            do { try t.run(checkpoint: { _ in }, log: { _ in }) } catch { failures[rank] = "\(error)" }
        }
        for rank in 0..<2 { XCTAssert(failures[rank].contains("ranks hold different weights after step 1"), "rank \(rank): \(failures[rank])") }
    }

    /// A stop request on one replica stops both after the same step.
    func testOneReplicasStopRequestStopsAll() throws {
        let replicas = ThreadReplicas(size: 2)
        var steps = [0, 0]
        try replicas.run { rank in
            let t = try self.makeTrainer(mode: .donut, batch: 2, parallel: replicas.parallel(rank: rank, synchronisedBatchNorm: false))
            var calls = 0
            try t.run(shouldStop: { calls += 1; return rank == 1 && calls == 4 }, checkpoint: { _ in }, log: { _ in })
            steps[rank] = t.step
        }
        XCTAssertEqual(steps, [4, 4])
    }
}
