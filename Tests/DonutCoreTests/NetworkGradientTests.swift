import XCTest
import DonutNN
import DonutPhysics
import DonutCore

/// The whole network's backward against central differences of its loss in Double:
/// every layer, the latent mapping, the physics layer and both loss branches together.
final class NetworkGradientTests: XCTestCase {
    /// A 16×16 frame version of the preset (zone-plate grid 32) and a small network. The
    /// focal length is 0.1 m so the zone plate's annulus (0.39–0.75 mrad) fits the 16-pixel
    /// frame (±1.0 mrad); with the preset's 21.9 mm it would lie outside and every pattern be 0.
    static func smallSetup(thickness: Bool, dropout: Double) -> (DonutConfig, NetworkSettings) {
        var c = DonutConfig.srio3LSAT002
        c.model.frameSize = 16
        c.instrument.roi = DetectorROI(x: 0, y: 0, width: 32, height: 32)
        c.zonePlate.focalLengthM = 0.1
        return (c, NetworkSettings(encoderChannels: [3, 4], dropout: dropout, hiddenUnits: 5,
                                   predictThickness: thickness, decoder: true))
    }

    static func frames(_ config: DonutConfig, count: Int) -> [Double] {
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let maps = Phantom.domains.maps(rows: 1, cols: count, config: config, seed: 5)
        var f = [Float](repeating: 0, count: count * 256)
        f.withUnsafeMutableBufferPointer { ScanSimulation.frames(of: maps, range: 0..<count, model: model, peakPhotons: 30, seed: 2, into: $0) }
        return f.map { Double($0) + 0.01 }   // no exact zeros: keeps MAE away from its kink at the input
    }

    /// A whole training step (forward with dropout, both losses, backward) and an inference
    /// forward in Float give bit-identical losses, gradients and outputs with 1, 2 and 3 threads:
    /// the convolution chunks, direct kernels, physics shards and reductions are fixed by the
    /// shapes, not by the thread count. Batch 5 makes the thread shares uneven.
    func testResultsDoNotDependOnThreadCount() throws {
        let (config, _) = Self.smallSetup(thickness: false, dropout: 0.1)
        let settings = NetworkSettings(encoderChannels: [4, 8], dropout: 0.1, hiddenUnits: 6, predictThickness: false, decoder: true)
        let batch = 5
        let frames = Self.frames(config, count: batch).map(Float.init)
        func run(threads: Int) throws -> [[Float]] {
            try Parallel.withThreads(threads) {
                let net = try DonutNetwork<Float>(settings: settings, optimiser: TrainingConfig.donutPaper.optimiser, config: config, seed: 3)
                net.plan(batch: batch, training: true)
                frames.withUnsafeBufferPointer { net.loadInput($0.baseAddress!, count: batch) }
                var rng = SplitMix64(seed: 9)
                net.forward(mode: .training, rng: &rng, physics: true, decoder: true)
                net.store.zeroGradients()
                let losses = net.backwardUnsupervised(weights: LossWeights(decoder: 1, physics: 5))
                let gradients = Array(UnsafeBufferPointer(start: net.store.gradients, count: net.store.count))
                let reconstruction = Array(UnsafeBufferPointer(start: net.reconstruction, count: batch * 256))
                let physics = Array(UnsafeBufferPointer(start: net.physicsOutput, count: batch * 256))
                net.forward(mode: .inference, rng: &rng, physics: false, decoder: false)
                let latents = Array(UnsafeBufferPointer(start: net.latents, count: batch * net.latentCount))
                return [[Float(losses.total)], gradients, reconstruction, physics, latents]
            }
        }
        let reference = try run(threads: 1)
        XCTAssertTrue(reference[1].contains { $0 != 0 }, "gradients are all 0: the comparison would be vacuous")
        for threads in [2, 3] {
            let r = try run(threads: threads)
            for (k, name) in ["loss", "gradients", "reconstruction", "physics patterns", "inference latents"].enumerated() {
                XCTAssertTrue(zip(r[k], reference[k]).allSatisfy { $0.bitPattern == $1.bitPattern },
                              "\(name) with \(threads) threads differ from 1 thread")
            }
        }
    }

    func check(mode: TrainingMode, thickness: Bool, dropout: Double, physicsLoss: String = "mae") throws {
        let (config, settings) = Self.smallSetup(thickness: thickness, dropout: dropout)
        let net = try DonutNetwork<Double>(settings: settings, optimiser: TrainingConfig.donutPaper.optimiser, config: config, seed: 3)
        let batch = 3
        net.plan(batch: batch, training: true)
        let frames = Self.frames(config, count: batch)
        frames.withUnsafeBufferPointer { net.loadInput($0.baseAddress!, count: batch) }
        let labels: [Double] = (0..<batch).flatMap { k in [0.001 * Double(k), 0.01, -0.02, 120.0 + Double(k)] }
        let weights = LossWeights(decoder: 1, physics: 5, physicsLoss: physicsLoss)
        let saved = net.buffers
        func loss() -> Double {
            var rng = SplitMix64(seed: 99)   // the same dropout masks on every evaluation
            net.buffers = saved
            net.forward(mode: .training, rng: &rng, physics: mode == .donut, decoder: mode == .donut)
            net.store.zeroGradients()
            switch mode {
            case .donut: return net.backwardUnsupervised(weights: weights).total
            case .nanobeamnn: return labels.withUnsafeBufferPointer { net.backwardSupervised(labels: $0.baseAddress!, labelScale: [100, 10, 5, 0.01]).total }
            }
        }
        _ = loss()
        if mode == .donut {
            // Guard against a vacuous check: the physics branch must see light.
            let total = (0..<(batch * 256)).reduce(0.0) { $0 + abs(net.physicsOutput[$1]) }
            XCTAssertGreaterThan(total, 0, "physics patterns are empty: the check would not exercise the physics branch")
        }
        let analytic = Array(UnsafeBufferPointer(start: net.store.gradients, count: net.store.count))
        // Every tensor's first and last element and a random sample of the rest.
        var rng = SplitMix64(seed: 7)
        var indices = Set<Int>()
        for t in net.store.tensors { indices.insert(t.offset); indices.insert(t.offset + t.count - 1) }
        for _ in 0..<60 { indices.insert(Int(rng.next() % UInt64(net.store.count))) }
        let scale = analytic.map(abs).max()!
        var checked = 0
        for i in indices.sorted() {
            let p = net.store.parameters, original = p[i]
            let h = 1e-6 * max(1, abs(original))
            p[i] = original + h; let plus = loss()
            p[i] = original - h; let minus = loss()
            p[i] = original
            let fd = (plus - minus) / (2 * h)
            let name = net.store.tensors.last { $0.offset <= i }!.name
            // Relative 1e-4 (kinks of MAE/ReLU/max-pool are rarely within h; a crossed one
            // shows as a large mismatch) plus 1e-7 of the largest gradient.
            XCTAssertEqual(analytic[i], fd, accuracy: 1e-4 * abs(fd) + 1e-7 * scale,
                           "\(mode) thickness \(thickness): ∂L/∂\(name)[\(i - net.store.tensors.last { $0.offset <= i }!.offset)]")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 60)
    }

    func testDonutLossGradientMatchesCentralDifferences() throws {
        try check(mode: .donut, thickness: false, dropout: 0.2)
        try check(mode: .donut, thickness: true, dropout: 0)
        try check(mode: .donut, thickness: false, dropout: 0.2, physicsLoss: "poisson")
    }

    func testSupervisedLossGradientMatchesCentralDifferences() throws {
        try check(mode: .nanobeamnn, thickness: true, dropout: 0.2)
    }
}
