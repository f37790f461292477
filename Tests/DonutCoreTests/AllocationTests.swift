import XCTest
import CAllocationCounter
import DonutBLAS
import DonutNN
import DonutPhysics
import DonutCore

/// "No heap allocation inside a step" (issue 3), measured: `CAllocationCounter` replaces
/// malloc & co. for the whole test process and counts every call, from every thread. After
/// warm-up steps (worker threads started, metadata and lazy globals initialised), further
/// training steps of the default DONUT network must not move the count.
/// OpenBLAS runs the kernels this process loaded (no core-type re-exec as `donut` does, so
/// "Prescott" on the CI Xeons unless `OPENBLAS_CORETYPE` is set); `scripts/check-allocations`
/// counts the release binary with its own kernels.
final class AllocationTests: XCTestCase {
    /// Steps run before counting, and steps counted.
    static let warmUpSteps = 2, countedSteps = 3

    /// The counter sees Swift's allocations (an Array, a class instance) from this thread and a
    /// worker thread: without that, a zero below would prove nothing.
    func testCounterSeesAllocations() {
        let before = allocation_count()
        let values = [Double](repeating: 1, count: 1000)
        XCTAssertGreaterThanOrEqual(allocation_count() - before, 1, "an Array of 1,000 Doubles is one malloc")
        XCTAssertEqual(values.reduce(0, +), 1000)
        // Counted on the thread itself while this one only sleeps.
        final class Delta: @unchecked Sendable { var value: UInt = 0 }
        let delta = Delta()
        let thread = Thread {
            let before = allocation_count()
            let squares = (0..<100).map { $0 * $0 }
            delta.value = allocation_count() - before
            precondition(squares[99] == 9801)
        }
        thread.start()
        while !thread.isFinished { usleep(1000) }
        XCTAssertGreaterThanOrEqual(delta.value, 1, "another thread's allocations are counted")
    }

    /// The default DONUT network (published preset: 64×64 frames, batch 16) trained on
    /// paper-phantom frames, `threads` worker threads; returns the allocations of the counted steps.
    /// `synchronisedBatchNorm`: BatchNorm's statistics go through a reducer, as under MPI (here
    /// one replica's: the sums are left as they are), the path whose 2·channels + 1 sums leave
    /// the stack from 64 channels on.
    /// `masked`: the measured frames carry a mask (a module gap and hot pixels): inpainted
    /// input, both losses over measured pixels.
    func allocationsPerDonutSteps(threads: Int, synchronisedBatchNorm: Bool = false, masked: Bool = false) throws -> UInt {
        try Parallel.withThreads(threads) {
            let config = DonutConfig.srio3LSAT002
            var training = TrainingConfig.donutPaper
            training.schedule.validationFraction = 0
            let batch = training.schedule.batchSize, count = 2 * batch
            let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
            let maps = Phantom.paper.maps(rows: 1, cols: count, config: config, seed: 0)
            var frames = [Float](repeating: 0, count: count * model.pixelCount)
            frames.withUnsafeMutableBufferPointer {
                ScanSimulation.frames(of: maps, range: 0..<count, model: model, peakPhotons: 7, seed: 1, into: $0)
            }
            // Sized inside `withThreads`: physics shards and convolution scratch follow `Parallel.threads`.
            let network = try DonutNetwork<Float>(settings: training.network, optimiser: training.optimiser, config: config, seed: 0)
            var weights: [Float]?
            if masked {
                var w = [Float](repeating: 1, count: frames.count)
                for f in 0..<count {
                    for y in 0..<64 { for x in 40..<43 { w[f * 4096 + y * 64 + x] = 0 } }
                    w[f * 4096 + 31 * 64 + 17] = 0
                }
                for i in frames.indices where w[i] == 0 { frames[i] = 0 }
                weights = w
            }
            let trainer = try Trainer(network: network, training: training, mode: .donut,
                                      data: TrainingData(measured: frames, measuredCount: count, library: nil,
                                                         simulatedFraction: 0, peakPhotons: 7, measuredWeights: weights))
            if synchronisedBatchNorm { network.batchNormReducer = BatchNorm2d.Reducer { _, _ in } }
            return try countedSteps(trainer, order: Array(0..<count))
        }
    }

    /// NanobeamNN's supervised step on the default network: library frames (Poisson-sampled on
    /// the fly) with their labels, encoder and head only.
    func allocationsPerSupervisedSteps(threads: Int) throws -> UInt {
        try Parallel.withThreads(threads) {
            var config = DonutConfig.srio3LSAT002
            config.library = LibrarySteps(strain: 3, tiltLR: 3, tiltUD: 3, thickness: 1)
            var training = TrainingConfig.donutPaper
            training.schedule.validationFraction = 0
            let grid = LibraryGrid(config: config)
            let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
            let patterns = model.patterns((0..<grid.count).map(grid.parameters(at:)))
            let network = try DonutNetwork<Float>(settings: training.network, optimiser: training.optimiser, config: config, seed: 0)
            let trainer = try Trainer(network: network, training: training, mode: .nanobeamnn,
                                      data: TrainingData(measured: [], measuredCount: 0, library: (grid, patterns),
                                                         simulatedFraction: 1, peakPhotons: 30))
            return try countedSteps(trainer, order: Array(0..<grid.count))
        }
    }

    /// `warmUpSteps` uncounted steps, then the allocations of `countedSteps` steps.
    func countedSteps(_ trainer: Trainer, order: [Int]) throws -> UInt {
        for _ in 0..<Self.warmUpSteps { try trainer.trainStep(order: order) }
        let before = allocation_count()
        for _ in 0..<Self.countedSteps { try trainer.trainStep(order: order) }
        return allocation_count() - before
    }

    func testDonutStepAllocatesNothingOnOneThread() throws {
        XCTAssertEqual(try allocationsPerDonutSteps(threads: 1), 0, "heap allocations in \(Self.countedSteps) DONUT steps, 1 thread, OpenBLAS \(OpenBLASCore.current)")
    }

    func testDonutStepAllocatesNothingOnTwoThreads() throws {
        XCTAssertEqual(try allocationsPerDonutSteps(threads: 2), 0, "heap allocations in \(Self.countedSteps) DONUT steps, 2 threads, OpenBLAS \(OpenBLASCore.current)")
    }

    func testDonutStepWithSynchronisedBatchNormAllocatesNothing() throws {
        XCTAssertEqual(try allocationsPerDonutSteps(threads: 2, synchronisedBatchNorm: true), 0,
                       "heap allocations in \(Self.countedSteps) DONUT steps with synchronised BatchNorm, 2 threads")
    }

    func testMaskedDonutStepAllocatesNothing() throws {
        XCTAssertEqual(try allocationsPerDonutSteps(threads: 2, masked: true), 0,
                       "heap allocations in \(Self.countedSteps) DONUT steps on masked frames, 2 threads")
    }

    func testSupervisedStepAllocatesNothing() throws {
        for threads in [1, 2] {
            XCTAssertEqual(try allocationsPerSupervisedSteps(threads: threads), 0,
                           "heap allocations in \(Self.countedSteps) NanobeamNN steps, \(threads) thread(s), OpenBLAS \(OpenBLASCore.current)")
        }
    }
}
