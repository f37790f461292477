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
