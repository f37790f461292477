import ArgumentParser
import Foundation
import DonutBLAS
import DonutNN
import DonutPhysics
import DonutCore

/// Paper-phantom frames for benchmarks (box model, 7 photons, Poisson).
func benchFrames(_ config: DonutConfig, count: Int) -> [Float] {
    let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
    let maps = Phantom.paper.maps(rows: 64, cols: 64, config: config, seed: 0)
    var frames = [Float](repeating: 0, count: count * model.pixelCount)
    frames.withUnsafeMutableBufferPointer {
        ScanSimulation.frames(of: maps, range: 0..<count, model: model, peakPhotons: 7, seed: 1, into: $0)
    }
    return frames
}

/// The default DONUT network on the published preset, planned for `batch`, with paper-phantom frames
/// loaded; `showPlan` prints its plan (each conv layer's kernels) first.
func benchNetwork(batch: Int, training: Bool, showPlan: Bool = false) throws -> (DonutConfig, TrainingConfig, DonutNetwork<Float>) {
    let config = DonutConfig.srio3LSAT002, preset = TrainingConfig.donutPaper
    let net = try DonutNetwork<Float>(settings: preset.network, optimiser: preset.optimiser, config: config, seed: 0)
    net.plan(batch: batch, training: training)
    if showPlan, let plan = net.networkPlan { print(plan) }
    let frames = benchFrames(config, count: batch)
    frames.withUnsafeBufferPointer { net.loadInput($0.baseAddress!, count: batch) }
    return (config, preset, net)
}

/// FLOPs of one frame through the encoder and head (2 per multiply–add), counting the convs as
/// direct convolution (the figure compared across versions and with PyTorch), and `executed`:
/// with the multiply–adds the kernels `plan` chose for `pass` do (a Winograd conv: 16 per 2×2
/// tile and channel pair instead of 36). The plan is the only place that decides a kernel, so
/// the count reads it. Transforms and epilogues not counted in either.
func encoderFLOPs(_ s: NetworkSettings, plan: NetworkPlan, pass: PassKind = .inference) -> (direct: Double, executed: Double) {
    var direct = 0.0, executed = 0.0, features = 0
    for layer in plan.layers(pass).prefix(s.encoderChannels.count) {   // encoder layers first
        let c = layer.shape, macs = c.outChannels * c.inChannels * c.kernelH * c.kernelW * c.outHeight * c.outWidth
        direct += 2 * Double(macs)
        executed += layer.forward == .winograd ? 2 * Double(c.outChannels * c.inChannels * 16 * (c.outHeight / 2) * (c.outWidth / 2))
                                               : 2 * Double(macs)
        features = c.outChannels * (c.outHeight / 2) * (c.outWidth / 2)   // after the block's 2×2 pool
    }
    let head = s.hiddenUnits > 0 ? 2 * Double(features * s.hiddenUnits + s.hiddenUnits * 3) : 2 * Double(features * 3)
    return (direct + head, executed + head)
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train", abstract: "DONUT training samples/s and the share of a step per stage.")
    @Option(help: "Frames per step.") var batch = 16
    @Option(help: "Steps to time.") var steps = 40
    @Flag(help: "Print each conv layer's kernels (the network plan) before timing.") var showPlan = false
    func run() throws {
        let (config, training, net) = try benchNetwork(batch: batch, training: true, showPlan: showPlan)
        var rng = SplitMix64(seed: 1)
        var adam = AdamW()
        print("machine: \(machineSummary())")
        let fl = encoderFLOPs(training.network, plan: net.networkPlan!).direct
        print(String(format: "default DONUT network: %d parameters; encoder %.1f MFLOP/frame forward", net.store.count, fl / 1e6))
        // Stages, each timed on its own (best of 3 over `steps` repetitions).
        func time(_ body: () -> Void) -> Double { bestTime { for _ in 0..<steps { body() } } / Double(steps) }
        let tEncoder = time { net.forward(mode: .training, rng: &rng, physics: false, decoder: false) }
        let tPhysicsFwd = time { net.forward(mode: .training, rng: &rng, physics: true, decoder: false) } - tEncoder
        let tDecoderFwd = time { net.forward(mode: .training, rng: &rng, physics: false, decoder: true) } - tEncoder
        net.forward(mode: .training, rng: &rng, physics: true, decoder: true)
        let tBackward = time { net.store.zeroGradients(); _ = net.backwardUnsupervised(weights: training.loss) }
        let tPhysicsOnlyBwd = time { net.store.zeroGradients(); _ = net.backwardUnsupervised(weights: LossWeights(decoder: 0, physics: 5)) }
        let tAdam = time { adam.step(net.store) }
        // The real step: batch filling (frames copied from the scan), forward, backward, AdamW.
        var t = training
        t.schedule.batchSize = batch; t.schedule.validationFraction = 0
        let scan = benchFrames(config, count: 256)
        let trainer = try Trainer(network: net, training: t, mode: .donut,
                                  data: TrainingData(measured: scan, measuredCount: 256, library: nil, simulatedFraction: 0, peakPhotons: 7))
        let order = Array(0..<256)
        let tStep = time { _ = try? trainer.trainStep(order: order) }
        // Physics backward alone (the layer), to split the backward time.
        var grads = [Double](repeating: 0, count: 4 * batch)
        let up = [Float](repeating: 1e-4, count: batch * 4096)
        let tPhysicsBwd = time { net.backwardPhysics(upstream: up, gradients: &grads) }
        let tEncoderBwd = tPhysicsOnlyBwd - tPhysicsBwd
        let tDecoderBwd = tBackward - tPhysicsOnlyBwd
        print(String(format: "training, batch %d: %.0f samples/s (%.2f ms/step); PyTorch CPU reference on this machine ≈ 280 samples/s, target ≥ 600",
                     batch, Double(batch) / tStep, 1e3 * tStep))
        let parts: [(String, Double)] = [("encoder + head (fwd+bwd)", tEncoder + tEncoderBwd), ("physics (fwd+bwd)", tPhysicsFwd + tPhysicsBwd),
                                         ("decoder (fwd+bwd)", tDecoderFwd + tDecoderBwd), ("optimiser", tAdam)]
        let sum = parts.reduce(0) { $0 + $1.1 }
        for (name, t) in parts { print(String(format: "  %-26@ %6.2f ms  %4.1f%%", name as NSString, 1e3 * t, 100 * t / sum)) }
        let floor = sgemmRate(m: 1024, n: 1024, k: 1024)
        print(String(format: "encoder forward at %.1f GFLOP/s effective; sgemm 1024³ %.1f GFLOP/s (%.0f%% of it)",
                     fl * Double(batch) / tEncoder / 1e9, floor, 100 * fl * Double(batch) / tEncoder / 1e9 / floor))
    }
}

struct BenchInfer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "infer", abstract: "Inference frames/s of the default network (encoder + head; and with the physics residual).")
    @Option(help: "Frames per batch.") var batch = 256
    @Flag(help: "Print each conv layer's kernels (the network plan) before timing.") var showPlan = false
    func run() throws {
        let (config, training, net) = try benchNetwork(batch: batch, training: false, showPlan: showPlan)
        var rng = SplitMix64(seed: 1)
        print("machine: \(machineSummary())")
        let tEncoder = bestTime { net.forward(mode: .inference, rng: &rng, physics: false, decoder: false) }
        let tWithPhysics = bestTime { net.forward(mode: .inference, rng: &rng, physics: true, decoder: false) }
        let (fl, executed) = encoderFLOPs(training.network, plan: net.networkPlan!)
        let floor = sgemmRate(m: 1024, n: 1024, k: 1024)
        print(String(format: "inference, batch %d: %.0f frames/s (encoder + head; target ≥ 4,000), %.0f frames/s with the physics residual",
                     batch, Double(batch) / tEncoder, Double(batch) / tWithPhysics))
        let rate = fl * Double(batch) / tEncoder / 1e9, executedRate = executed * Double(batch) / tEncoder / 1e9
        print(String(format: "encoder %.1f MFLOP/frame as direct convs at %.1f GFLOP/s effective = %.0f%% of sgemm 1024³ (%.1f GFLOP/s); "
                     + "%.1f MFLOP/frame executed (Winograd convs) at %.1f GFLOP/s = %.0f%%",
                     fl / 1e6, rate, 100 * rate / floor, floor, executed / 1e6, executedRate, 100 * executedRate / floor))
    }
}
