import Foundation
import DonutBLAS
import DonutNN
import DonutPhysics

/// Which loss trains the network.
public enum TrainingMode: String, Sendable, CaseIterable {
    /// DONUT (Luo et al., arXiv 2507.14038): no labels; w_d·MAE(decoder, frame) + w_f·MAE(physics, frame).
    case donut
    /// NanobeamNN (Luo et al., Sci. Rep. 2025): labels from the library; MSE on scaled parameters.
    case nanobeamnn
}

/// How a forward pass treats BatchNorm and Dropout.
public struct ForwardMode: Sendable {
    /// Batch statistics (and running-statistics updates) instead of the running statistics.
    public var batchStatistics: Bool
    /// Sample dropout masks (training, or MC-dropout inference).
    public var dropout: Bool
    public static let training = ForwardMode(batchStatistics: true, dropout: true)
    public static let inference = ForwardMode(batchStatistics: false, dropout: false)
    public static let monteCarlo = ForwardMode(batchStatistics: false, dropout: true)
}

/// The losses of the last forward (means over the batch). Backward accumulates the gradient
/// of `total` into the store's gradients (zeroed by the caller).
public struct NetworkLosses: Sendable {
    public var total: Double
    public var decoderMAE: Double
    public var physicsMAE: Double
    public var supervisedMSE: Double
}

/// A 3×3 convolution followed (optionally) by BatchNorm; the block's parameters and the
/// offsets of its BatchNorm running statistics in `DonutNetwork.buffers`.
struct ConvBN {
    let weight: TensorView, bias: TensorView
    let gamma: TensorView?, beta: TensorView?
    let runningMean: Int, runningVar: Int
    let inChannels: Int, outChannels: Int
}

struct LinearLayer {
    let weight: TensorView, bias: TensorView
    let inFeatures: Int, outFeatures: Int
}

/// The DONUT network:
///
///     frame x (1×64×64, scaled to mean 1)
///       → K encoder blocks [conv3×3 → BatchNorm → ReLU → Dropout → MaxPool2]
///       → Linear → ReLU → Linear → ScaledTanh → z ∈ (−1.7159, 1.7159)^L
///       → θ = (ε, ω, χ[, t]) in the configured ranges (`LatentMapping`)
///       → physics: smooth forward model at θ, sum-normalised to x (`PhysicsLayer`)
///     z → Linear → ReLU → K decoder blocks [Upsample2 → conv3×3 → BatchNorm → ReLU] (the last
///       without BatchNorm/ReLU) → reconstruction of x
///
/// The decoder's Upsample2 → conv3×3 runs fused on the low-resolution input (`UpsampleConv2d`,
/// 4/9 of the FLOPs, no up-sampled activation): four class GEMMs per block, and for the last
/// block (one output channel) four 2×2 direct stencils. In training without dropout each encoder
/// block's BatchNorm → ReLU → max pool is one layer (`BatchNormReLUPool`) on batch statistics
/// the conv writes per plane (`Conv2d.forward(planeStatistics:)`); with dropout, the layers one by one.
///
/// Parameters live in one `ParameterStore` in three AdamW groups: "encoder" (convolutions,
/// BatchNorm), "physics" (the head that maps features to the physical latent) and
/// "decoder". BatchNorm running statistics are buffers, not parameters. Activations and
/// their gradients are allocated by `plan(batch:training:)` and reused by every step.
public final class DonutNetwork<T: GEMMScalar> {
    public let settings: NetworkSettings
    public let mapping: LatentMapping
    public let frameSize: Int
    public let store: ParameterStore<T>
    public let encoderGroup: ParameterGroupID, physicsGroup: ParameterGroupID, decoderGroup: ParameterGroupID
    /// BatchNorm running means and variances, flat; `bufferRecords` names them.
    public var buffers: [T] = []
    public private(set) var bufferRecords: [TensorRecord] = []
    public let physics: PhysicsLayer<T>
    /// Data-parallel training: sums per-channel BatchNorm statistics over the replicas
    /// (synchronised BatchNorm, statistics of the global batch). nil: this batch's own.
    public var batchNormReducer: BatchNorm2d.Reducer?
    /// The id of each frame of the batch, keying its dropout mask (`Dropout`): global sample
    /// positions, so a frame gets the same mask whichever rank holds it. nil: one stream per call.
    public var dropoutSampleIDs: [Int]?
    /// One physics layer per thread (`physics` first): thread i computes frames
    /// [i·b/t, (i+1)·b/t) of a batch b, each frame whole (single-threaded GEMMs), so the result
    /// does not depend on the thread count.
    let physicsShards: [PhysicsLayer<T>]

    let encoder: [ConvBN]
    let head: [LinearLayer]
    let decoderInput: LinearLayer?
    let decoder: [ConvBN]
    /// Decoder blocks with BatchNorm (all but the last).
    var decoderBatchNormCount: Int { decoder.isEmpty ? 0 : decoder.count - 1 }
    /// Spatial size after the encoder and the feature count it hands to the head.
    let bottleneckSize: Int, featureCount: Int
    public var latentCount: Int { mapping.latentCount }

    public init(settings: NetworkSettings, optimiser: OptimiserSettings, config: DonutConfig, seed: UInt64) throws {
        let n = config.model.frameSize
        let blocks = settings.encoderChannels.count
        guard n % (1 << blocks) == 0 else {
            throw ConfigError(key: "network.encoder_channels", "\(blocks) max-pool blocks need the frame size (\(n)) divisible by \(1 << blocks)")
        }
        let store = ParameterStore<T>()
        let mapping = LatentMapping(config: config, predictThickness: settings.predictThickness)
        let encoderGroup = store.addGroup(name: "encoder", learningRate: optimiser.learningRateEncoder, weightDecay: optimiser.weightDecay)
        let physicsGroup = store.addGroup(name: "physics", learningRate: optimiser.learningRatePhysics, weightDecay: optimiser.weightDecay)
        let decoderGroup = store.addGroup(name: "decoder", learningRate: optimiser.learningRateDecoder, weightDecay: optimiser.weightDecay)

        var records: [TensorRecord] = []
        func buffer(_ name: String, _ count: Int) -> Int {
            let offset = records.last.map { $0.offset + $0.count } ?? 0
            records.append(TensorRecord(name: name, shape: [count], group: "buffer", offset: offset))
            return offset
        }
        func convBN(_ name: String, _ inC: Int, _ outC: Int, group: ParameterGroupID, batchNorm: Bool) -> ConvBN {
            let w = store.add(name: "\(name).conv.weight", shape: [outC, inC, 3, 3], group: group)
            let b = store.add(name: "\(name).conv.bias", shape: [outC], group: group)
            guard batchNorm else { return ConvBN(weight: w, bias: b, gamma: nil, beta: nil, runningMean: 0, runningVar: 0, inChannels: inC, outChannels: outC) }
            let g = store.add(name: "\(name).bn.weight", shape: [outC], group: group)
            let be = store.add(name: "\(name).bn.bias", shape: [outC], group: group)
            return ConvBN(weight: w, bias: b, gamma: g, beta: be, runningMean: buffer("\(name).bn.running_mean", outC),
                          runningVar: buffer("\(name).bn.running_var", outC), inChannels: inC, outChannels: outC)
        }
        func linear(_ name: String, _ inF: Int, _ outF: Int, group: ParameterGroupID) -> LinearLayer {
            LinearLayer(weight: store.add(name: "\(name).weight", shape: [outF, inF], group: group),
                        bias: store.add(name: "\(name).bias", shape: [outF], group: group), inFeatures: inF, outFeatures: outF)
        }
        let channels = settings.encoderChannels
        var inC = 1
        var enc: [ConvBN] = []
        for (k, c) in channels.enumerated() { enc.append(convBN("encoder.\(k)", inC, c, group: encoderGroup, batchNorm: true)); inC = c }
        let bottleneck = n >> blocks
        let features = channels.last! * bottleneck * bottleneck
        let latent = mapping.latentCount
        let headLayers: [LinearLayer]
        if settings.hiddenUnits > 0 {
            headLayers = [linear("head.0", features, settings.hiddenUnits, group: physicsGroup),
                          linear("head.1", settings.hiddenUnits, latent, group: physicsGroup)]
        } else {
            headLayers = [linear("head.0", features, latent, group: physicsGroup)]
        }
        var decIn: LinearLayer?
        var dec: [ConvBN] = []
        if settings.decoder {
            decIn = linear("decoder.input", latent, features, group: decoderGroup)
            let outs = Array(channels.reversed().dropFirst()) + [1]
            var c = channels.last!
            for (k, out) in outs.enumerated() {
                dec.append(convBN("decoder.\(k)", c, out, group: decoderGroup, batchNorm: k < outs.count - 1)); c = out
            }
        }
        store.finalize()
        self.store = store; self.settings = settings; self.mapping = mapping; frameSize = n
        self.encoderGroup = encoderGroup; self.physicsGroup = physicsGroup; self.decoderGroup = decoderGroup
        encoder = enc; head = headLayers; decoderInput = decIn; decoder = dec
        bottleneckSize = bottleneck; featureCount = features
        physicsShards = (0..<Parallel.threads).map { _ in
            PhysicsLayer(model: ForwardModel<T>(geometry: DiffractionGeometry(config: config), profile: .smooth), capacity: 1)
        }
        physics = physicsShards[0]
        bufferRecords = records
        buffers = [T](repeating: 0, count: records.last.map { $0.offset + $0.count } ?? 0)
        for block in encoder + decoder where block.gamma != nil {
            for i in 0..<block.outChannels { buffers[block.runningVar + i] = 1 }   // PyTorch: mean 0, var 1
        }
        var rng = SplitMix64(seed: seed)
        for block in encoder + decoder {
            store.initializePyTorchDefault(weight: block.weight, bias: block.bias, rng: &rng)
            if let g = block.gamma, let b = block.beta { store.initializeBatchNorm(gamma: g, beta: b) }
        }
        for l in head + (decoderInput.map { [$0] } ?? []) { store.initializePyTorchDefault(weight: l.weight, bias: l.bias, rng: &rng) }
    }

    // MARK: Activations

    /// Activations of one planned batch size. `training` adds the gradient buffers.
    final class Activations {
        let batch: Int
        var encoderInput: [UnsafeMutablePointer<T>] = []      // per block: its input (block 0: x)
        var convOut: [UnsafeMutablePointer<T>] = []
        /// Eval-mode BatchNorm as a per-channel affine (scale, shift), fused into the conv's output pass.
        var bnScale: [UnsafeMutablePointer<T>] = [], bnShift: [UnsafeMutablePointer<T>] = []
        var decScale: [UnsafeMutablePointer<T>] = [], decShift: [UnsafeMutablePointer<T>] = []
        /// BatchNorm → ReLU output (fused: BatchNorm's own output is not kept; its backward needs
        /// the conv output and the cached statistics, ReLU's the ReLU output).
        var reluOut: [UnsafeMutablePointer<T>] = [], dropOut: [UnsafeMutablePointer<T>] = []
        var dropMask: [UnsafeMutablePointer<T>] = [], mean: [UnsafeMutablePointer<T>] = [], invStd: [UnsafeMutablePointer<T>] = []
        var poolArgmax: [UnsafeMutablePointer<Int32>] = []
        /// Per encoder block, the conv's per-plane statistics (batch·outC·2) for BatchNorm.
        var planeStatistics: [UnsafeMutablePointer<Double>] = []
        /// Per encoder block, the conv output at each pooled maximum (`BatchNormReLUPool`).
        var pooledInput: [UnsafeMutablePointer<T>] = []
        /// The first block's padded input and patch moments when it trains as one
        /// `ConvBatchNormReLUPool` (training plans whose first conv takes it; its convOut is then unused).
        var firstBlockPadded: UnsafeMutablePointer<T>?, firstBlockMoments: UnsafeMutablePointer<Double>?
        /// The kind of the last forward: the backward follows that pass's plan. (Without dropout,
        /// reluOut, dropOut and dropMask are one-element placeholders: only the dropout passes use them.)
        var lastPass = PassKind.inference
        var features: UnsafeMutablePointer<T>               // last pool output (batch × featureCount)
        var headOut: [UnsafeMutablePointer<T>] = [], headRelu: UnsafeMutablePointer<T>?
        var latent: UnsafeMutablePointer<T>                  // z (batch × L)
        var parameters: [FrameParameters]
        var targetSums: [Double]
        var physicsOut: UnsafeMutablePointer<T>              // Î (batch × P)
        var decoderIn: UnsafeMutablePointer<T>?, decoderInRelu: UnsafeMutablePointer<T>?
        /// Up-sampled decoder inputs, only for blocks that do not fuse the up-sampling (`UpsampleConv2d`).
        var upOut: [UnsafeMutablePointer<T>?] = [], decConv: [UnsafeMutablePointer<T>] = []
        var decRelu: [UnsafeMutablePointer<T>] = []
        var decMean: [UnsafeMutablePointer<T>] = [], decInvStd: [UnsafeMutablePointer<T>] = []
        // Backward scratch: two ping-pong buffers of the largest activation, latent and θ gradients.
        var gradA: UnsafeMutablePointer<T>?, gradB: UnsafeMutablePointer<T>?
        var gradLatent: UnsafeMutablePointer<T>?, gradTheta: UnsafeMutablePointer<Double>?
        var gradPhysics: UnsafeMutablePointer<T>?, gradOutput: UnsafeMutablePointer<T>?
        /// Per-frame loss sums (`MAELoss.frames`).
        var frameLoss: UnsafeMutablePointer<Double>?
        var columns: UnsafeMutablePointer<T>
        private var owned: [UnsafeMutableRawPointer] = []

        init(batch: Int) {
            self.batch = batch
            features = .allocate(capacity: 1); latent = .allocate(capacity: 1); physicsOut = .allocate(capacity: 1)
            columns = .allocate(capacity: 1)
            parameters = []; targetSums = []
            owned = [features, latent, physicsOut, columns].map { UnsafeMutableRawPointer($0) }
        }
        func floats(_ count: Int) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            owned.append(UnsafeMutableRawPointer(p)); return p
        }
        func ints(_ count: Int) -> UnsafeMutablePointer<Int32> {
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
            owned.append(UnsafeMutableRawPointer(p)); return p
        }
        func doubles(_ count: Int) -> UnsafeMutablePointer<Double> {
            let p = UnsafeMutablePointer<Double>.allocate(capacity: max(count, 1))
            owned.append(UnsafeMutableRawPointer(p)); return p
        }
        deinit { for p in owned { p.deallocate() } }
    }

    public private(set) var plannedBatch = 0
    public private(set) var plannedForTraining = false
    /// Every conv layer's kernels for every kind of pass, decided by `plan(batch:training:)`;
    /// print it to see which kernels run.
    public private(set) var networkPlan: NetworkPlan?
    var acts: Activations?

    /// Decides every conv layer's kernels for `batch` frames (shapes, T, this CPU) and
    /// allocates every activation (and, for training, gradient) buffer they need.
    /// The only allocation of a run; steps reuse the buffers.
    public func plan(batch: Int, training: Bool) {
        if batch == plannedBatch && (plannedForTraining || !training) { return }
        let kernels = makePlan(batch: batch, training: training)
        let trainingLayers = kernels.layers(.training)
        let a = Activations(batch: batch)
        let n = frameSize, np = n * n, latent = mapping.latentCount
        var size = n, largest = batch * np, columns = 0
        a.encoderInput = [a.floats(batch * np)]   // block k's input; the last pool output becomes `features`
        for block in encoder {
            let count = batch * block.outChannels * size * size
            // The ReLU output and the dropout buffers exist only with dropout: without it training
            // takes `BatchNormReLUPool` and inference pools in the conv epilogue, neither stores them.
            let dropoutCount = settings.dropout > 0 ? count : 0
            a.convOut.append(a.floats(count)); a.reluOut.append(a.floats(dropoutCount))
            a.bnScale.append(a.floats(block.outChannels)); a.bnShift.append(a.floats(block.outChannels))
            a.dropOut.append(a.floats(dropoutCount)); a.dropMask.append(a.floats(dropoutCount))
            a.mean.append(a.floats(block.outChannels)); a.invStd.append(a.floats(block.outChannels))
            a.poolArgmax.append(a.ints(count / 4))
            a.planeStatistics.append(a.doubles(2 * batch * block.outChannels)); a.pooledInput.append(a.floats(count / 4))
            largest = max(largest, count)
            columns = max(columns, Conv2d.scratchCount(convShape(block, batch: batch, size: size)))
            size /= 2
            a.encoderInput.append(a.floats(count / 4))
        }
        a.features = a.encoderInput.removeLast()
        for l in head { a.headOut.append(a.floats(batch * l.outFeatures)) }
        if head.count > 1 { a.headRelu = a.floats(batch * head[0].outFeatures) }
        a.latent = a.floats(batch * latent)
        a.parameters = .init(repeating: FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: 0, thicknessA: 0), count: batch)
        a.targetSums = .init(repeating: Double(np), count: batch)
        a.physicsOut = a.floats(batch * np)
        for shard in physicsShards { shard.reserve((batch + physicsShards.count - 1) / physicsShards.count) }
        if let d = decoderInput {
            a.decoderIn = a.floats(batch * d.outFeatures); a.decoderInRelu = a.floats(batch * d.outFeatures)
            var s = bottleneckSize
            for block in decoder {
                let upCount = batch * block.inChannels * (2 * s) * (2 * s), outCount = batch * block.outChannels * (2 * s) * (2 * s)
                let shape = convShape(block, batch: batch, size: 2 * s), fused = trainingLayers[encoder.count + a.upOut.count].forward.isSubPixel
                a.upOut.append(fused ? nil : a.floats(upCount)); a.decConv.append(a.floats(outCount))
                if block.gamma != nil {
                    a.decRelu.append(a.floats(outCount))
                    a.decScale.append(a.floats(block.outChannels)); a.decShift.append(a.floats(block.outChannels))
                    a.decMean.append(a.floats(block.outChannels)); a.decInvStd.append(a.floats(block.outChannels))
                }
                largest = max(largest, max(upCount, outCount))
                columns = max(columns, fused ? UpsampleConv2d.scratchCount(shape) : Conv2d.scratchCount(shape))
                s *= 2
            }
        }
        if let first = trainingLayers.first, first.composition == .convBatchNormReLUPool {
            let shape = first.shape
            columns = max(columns, ConvBatchNormReLUPool.scratchCount(shape))
            a.firstBlockPadded = a.floats(ConvBatchNormReLUPool.paddedCount(shape))
            a.firstBlockMoments = a.doubles(ConvBatchNormReLUPool.momentsCount(shape))
        }
        a.columns = a.floats(columns)
        if training {
            a.gradA = a.floats(largest); a.gradB = a.floats(largest)
            a.gradLatent = a.floats(batch * latent); a.gradTheta = a.doubles(batch * 4)
            a.gradPhysics = a.floats(batch * np); a.gradOutput = a.floats(batch * np)
            a.frameLoss = a.doubles(batch)
        }
        acts = a; plannedBatch = batch; plannedForTraining = training; networkPlan = kernels
    }

    /// The plan of every kind of pass for `batch` frames: per conv layer the block composition
    /// and the kernels (`Conv2d.forwardPath`, `backwardPath`, `UpsampleConv2d.path`,
    /// `ConvBatchNormReLUPool.path`) on this CPU for T. Backward paths only with `training`.
    func makePlan(batch: Int, training: Bool) -> NetworkPlan {
        let target = KernelTarget.native(T.self)
        let passes = PassKind.allCases.map { kind -> [LayerPlan] in
            var layers: [LayerPlan] = []
            var size = frameSize
            for k in encoder.indices {
                let shape = convShape(encoder[k], batch: batch, size: size), name = "encoder.\(k)"
                let forward = Conv2d.forwardPath(shape, target: target)
                let backward = training && kind.trains ? Conv2d.backwardPath(shape, target: target) : nil
                switch kind {
                case .inference:
                    layers.append(LayerPlan(name: name, shape: shape, composition: .pooledEpilogue,
                                            forward: Conv2d.forwardPath(shape, target: target, pooled: true), backward: nil))
                case .monteCarlo:
                    layers.append(LayerPlan(name: name, shape: shape, composition: .epilogueThenDropoutPool, forward: forward, backward: nil))
                case .trainingWithDropout:
                    layers.append(LayerPlan(name: name, shape: shape, composition: .layers, forward: forward, backward: backward))
                case .training:
                    // The first block whole from its input's moments, where it applies and the
                    // backward buffers exist; the others: the conv's statistics → BatchNormReLUPool.
                    if k == 0, training, let moments = ConvBatchNormReLUPool.path(shape, target: target) {
                        layers.append(LayerPlan(name: name, shape: shape, composition: .convBatchNormReLUPool, forward: moments, backward: moments))
                    } else {
                        layers.append(LayerPlan(name: name, shape: shape, composition: .statisticsThenBatchNormReLUPool,
                                                forward: forward, backward: backward))
                    }
                }
                size /= 2
            }
            var s = bottleneckSize
            for k in decoder.indices {
                s *= 2
                let shape = convShape(decoder[k], batch: batch, size: s)
                // Up-sampling fused into the conv where `UpsampleConv2d` applies, else Upsample2d → Conv2d.
                let subPixel = UpsampleConv2d.path(shape, target: target)
                let forward = subPixel ?? Conv2d.forwardPath(shape, target: target)
                let backward = subPixel ?? Conv2d.backwardPath(shape, target: target)
                layers.append(LayerPlan(name: "decoder.\(k)", shape: shape,
                                        composition: decoder[k].gamma != nil ? .upConvBatchNormReLU : .upConv,
                                        forward: forward, backward: training && kind.trains ? backward : nil))
            }
            return layers
        }
        return NetworkPlan(batch: batch, scalar: T.self == Float.self ? "Float" : "\(T.self)", target: target, training: training,
                           dropout: settings.dropout, passes: passes)
    }

    func convShape(_ b: ConvBN, batch: Int, size: Int) -> Conv2dShape {
        Conv2dShape(batch: batch, inChannels: b.inChannels, height: size, width: size, outChannels: b.outChannels,
                    kernelH: 3, kernelW: 3, stride: 1, padding: 1)
    }

    /// The network's input: frame k scaled to mean 1 (sum = pixel count). Frames must be
    /// checked (`FrameProblem`) before; an empty frame would divide by zero.
    public func loadInput(_ frames: UnsafePointer<T>, count: Int) {
        precondition(count == plannedBatch, "batch \(count) differs from the planned \(plannedBatch): call plan(batch:training:) first")
        let np = frameSize * frameSize, x = acts!.encoderInput[0]
        Parallel.forRanges(count, work: count * np, InputScaling(networkInput: x, frames: frames, pixelCount: np))
    }

    /// `loadInput` on frames `frames`: x_k = frame_k · n²/Σ frame_k.
    struct InputScaling: ParallelLoop {
        let networkInput: UnsafeMutablePointer<T>, frames: UnsafePointer<T>, pixelCount: Int
        @_specialize(where T == Float)
        func run(_ frameRange: Range<Int>, worker: Int) {
            let np = pixelCount
            for k in frameRange {
                var s = 0.0
                for i in 0..<np { s += Double(frames[k * np + i]) }
                let scale = T(Double(np) / s)
                for i in 0..<np { networkInput[k * np + i] = frames[k * np + i] * scale }
            }
        }
    }

    /// Forward through encoder and head to the latent and parameters; `physics` and
    /// `decoder` choose which branches run (training DONUT: both; inference: physics for the residual).
    /// BLAS runs single-threaded in here: the layers split their work over the cores themselves (`serialBLAS`).
    public func forward(mode: ForwardMode, rng: inout SplitMix64, physics runPhysics: Bool, decoder runDecoder: Bool) {
        serialBLAS { forwardLayers(mode: mode, rng: &rng, physics: runPhysics, decoder: runDecoder) }
    }

    private func forwardLayers(mode: ForwardMode, rng: inout SplitMix64, physics runPhysics: Bool, decoder runDecoder: Bool) {
        let a = acts!, b = a.batch, p = store.parameters
        let kind = PassKind(mode, dropout: settings.dropout), layers = networkPlan!.passes[kind.rawValue]
        a.lastPass = kind
        var size = frameSize
        // Layers by index, not `for x in array`: iterating an array of structs unspecialised (debug
        // builds) allocates per element, and the allocation test (AllocationTests) runs in debug.
        for k in encoder.indices {
            let block = encoder[k], layer = layers[k]
            let shape = layer.shape, count = shape.outputCount
            let next = k + 1 < encoder.count ? a.encoderInput[k + 1] : a.features
            switch layer.composition {
            case .pooledEpilogue:
                // conv → BatchNorm → ReLU → max pool in one pass per plane (no argmax: no backward).
                convBNReLU(block, mode: mode, input: a.encoderInput[k], convOut: a.convOut[k], output: a.reluOut[k],
                           mean: a.mean[k], invStd: a.invStd[k], scale: a.bnScale[k], shift: a.bnShift[k], shape: shape,
                           pooled: next, path: layer.forward)
            case .convBatchNormReLUPool:
                // The first block whole, its conv output never stored (`ConvBatchNormReLUPool`).
                buffers.withUnsafeMutableBufferPointer { buf in
                    ConvBatchNormReLUPool.forwardTraining(
                        pooled: next, argmax: a.poolArgmax[k], pooledInput: a.pooledInput[k], mean: a.mean[k], invStd: a.invStd[k],
                        runningMean: buf.baseAddress! + block.runningMean, runningVar: buf.baseAddress! + block.runningVar,
                        input: a.encoderInput[k], weight: p + block.weight.offset, bias: p + block.bias.offset,
                        gamma: p + block.gamma!.offset, beta: p + block.beta!.offset, shape: shape,
                        padded: a.firstBlockPadded!, moments: a.firstBlockMoments!,
                        scratch: a.columns, synchronise: batchNormReducer, path: layer.forward)
                }
            case .statisticsThenBatchNormReLUPool:
                // The conv writes its planes' statistics, then BatchNorm, ReLU and the pool in one
                // pass (`BatchNormReLUPool`).
                Conv2d.forward(output: a.convOut[k], input: a.encoderInput[k], weight: p + block.weight.offset,
                               bias: p + block.bias.offset, columns: a.columns, shape: shape, planeStatistics: a.planeStatistics[k],
                               path: layer.forward)
                buffers.withUnsafeMutableBufferPointer { buf in
                    BatchNormReLUPool.forwardTraining(pooled: next, argmax: a.poolArgmax[k], pooledInput: a.pooledInput[k], mean: a.mean[k], invStd: a.invStd[k],
                                                      runningMean: buf.baseAddress! + block.runningMean,
                                                      runningVar: buf.baseAddress! + block.runningVar,
                                                      input: a.convOut[k], planeStatistics: a.planeStatistics[k],
                                                      gamma: p + block.gamma!.offset, beta: p + block.beta!.offset, batch: b,
                                                      channels: block.outChannels, height: size, width: size, synchronise: batchNormReducer)
                }
            default:
                // Layer by layer, with dropout (batch statistics in training, the epilogue in MC dropout).
                convBNReLU(block, mode: mode, input: a.encoderInput[k], convOut: a.convOut[k], output: a.reluOut[k],
                           mean: a.mean[k], invStd: a.invStd[k], scale: a.bnScale[k], shift: a.bnShift[k], shape: shape,
                           path: layer.forward)
                Dropout.forwardTraining(output: a.dropOut[k], mask: a.dropMask[k], input: a.reluOut[k],
                                        probability: settings.dropout, rng: &rng, count: count,
                                        sampleIDs: dropoutSampleIDs)
                MaxPool2d.forward(output: next, argmax: a.poolArgmax[k], input: a.dropOut[k], batch: b,
                                  channels: block.outChannels, height: size, width: size)
            }
            size /= 2
        }
        var input = UnsafePointer(a.features)
        for i in head.indices {
            let l = head[i]
            Linear.forward(output: a.headOut[i], input: input, weight: p + l.weight.offset, bias: p + l.bias.offset,
                           batch: b, inFeatures: l.inFeatures, outFeatures: l.outFeatures)
            if i + 1 < head.count {
                ReLU.forward(output: a.headRelu!, input: a.headOut[i], count: b * l.outFeatures)
                input = UnsafePointer(a.headRelu!)
            }
        }
        let latent = mapping.latentCount
        ScaledTanh.forward(output: a.latent, input: a.headOut[head.count - 1], count: b * latent)
        for k in 0..<b { a.parameters[k] = mapping.parameters(a.latent + k * latent) }
        if runPhysics {
            let np = frameSize * frameSize
            a.parameters.withUnsafeBufferPointer { params in
                a.targetSums.withUnsafeBufferPointer { sums in
                    Parallel.forWorkers(b, workers: physicsShards.count,
                                        PhysicsShardsForward(shards: physicsShards, parameters: params.baseAddress!,
                                                             targetSums: sums.baseAddress!, output: a.physicsOut, pixelCount: np))
                }
            }
        }
        if runDecoder, let d = decoderInput {
            Linear.forward(output: a.decoderIn!, input: a.latent, weight: p + d.weight.offset, bias: p + d.bias.offset,
                           batch: b, inFeatures: d.inFeatures, outFeatures: d.outFeatures)
            ReLU.forward(output: a.decoderInRelu!, input: a.decoderIn!, count: b * d.outFeatures)
            var s = bottleneckSize, x = UnsafePointer(a.decoderInRelu!)
            var bnIndex = 0
            for k in decoder.indices {
                let block = decoder[k], layer = layers[encoder.count + k], subPixel = layer.forward.isSubPixel
                // Up-sample → conv: fused on the low-res input on the sub-pixel paths.
                var input = x
                if !subPixel {
                    Upsample2d.forward(output: a.upOut[k]!, input: x, batch: b, channels: block.inChannels, height: s, width: s)
                    input = UnsafePointer(a.upOut[k]!)
                }
                s *= 2
                let shape = layer.shape
                if block.gamma != nil {
                    convBNReLU(block, mode: mode, input: input, convOut: a.decConv[k], output: a.decRelu[bnIndex],
                               mean: a.decMean[bnIndex], invStd: a.decInvStd[bnIndex], scale: a.decScale[bnIndex],
                               shift: a.decShift[bnIndex], shape: shape, upsampled: subPixel, path: layer.forward)
                    x = UnsafePointer(a.decRelu[bnIndex]); bnIndex += 1
                } else if subPixel {
                    UpsampleConv2d.forward(output: a.decConv[k], input: input, weight: p + block.weight.offset,
                                           bias: p + block.bias.offset, columns: a.columns, shape: shape, path: layer.forward)
                    x = UnsafePointer(a.decConv[k])
                } else {
                    Conv2d.forward(output: a.decConv[k], input: input, weight: p + block.weight.offset,
                                   bias: p + block.bias.offset, columns: a.columns, shape: shape, path: layer.forward)
                    x = UnsafePointer(a.decConv[k])
                }
            }
        }
    }

    /// The physics forward on frames `frames`, by worker `worker`'s own physics layer.
    struct PhysicsShardsForward: ParallelLoop {
        let shards: [PhysicsLayer<T>], parameters: UnsafePointer<FrameParameters>, targetSums: UnsafePointer<Double>
        let output: UnsafeMutablePointer<T>, pixelCount: Int
        /// Shard i caches the forward of its frames for its backward: the frames stay bound to it.
        static var fixedPartition: Bool { true }
        @_specialize(where T == Float)
        func run(_ frames: Range<Int>, worker: Int) {
            shards[worker].forward(parameters + frames.lowerBound, count: frames.count,
                                   targetSums: targetSums + frames.lowerBound, out: output + frames.lowerBound * pixelCount)
        }
    }

    /// conv3×3 → BatchNorm → ReLU into `output`. Batch statistics: the conv output is kept in
    /// `convOut` (BatchNorm's backward reads it) and BatchNorm+ReLU run as one pass caching mean
    /// and invStd. Running statistics: BatchNorm is a per-channel affine (`scale`, `shift`
    /// scratch) applied with the ReLU in the conv's own output pass; `convOut` is not written.
    /// `pooled`: running statistics only; the 2×2 max pool of the result goes there and
    /// `output` is not written. `path`: the conv's kernel from the plan.
    private func convBNReLU(_ block: ConvBN, mode: ForwardMode, input: UnsafePointer<T>, convOut: UnsafeMutablePointer<T>,
                            output: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
                            scale: UnsafeMutablePointer<T>, shift: UnsafeMutablePointer<T>, shape: Conv2dShape,
                            pooled: UnsafeMutablePointer<T>? = nil, upsampled: Bool = false, path: ConvolutionPath) {
        let p = store.parameters, gamma = p + block.gamma!.offset, beta = p + block.beta!.offset
        let columns = acts!.columns
        buffers.withUnsafeMutableBufferPointer { buf in
            let rm = buf.baseAddress! + block.runningMean, rv = buf.baseAddress! + block.runningVar
            if mode.batchStatistics {
                if upsampled {
                    UpsampleConv2d.forward(output: convOut, input: input, weight: p + block.weight.offset,
                                           bias: p + block.bias.offset, columns: columns, shape: shape, path: path)
                } else {
                    Conv2d.forward(output: convOut, input: input, weight: p + block.weight.offset,
                                   bias: p + block.bias.offset, columns: columns, shape: shape, path: path)
                }
                BatchNorm2d.forwardTraining(output: output, mean: mean, invStd: invStd, runningMean: rm, runningVar: rv,
                                            input: convOut, gamma: gamma, beta: beta, batch: shape.batch,
                                            channels: block.outChannels, height: shape.outHeight, width: shape.outWidth, relu: true,
                                            synchronise: batchNormReducer)
            } else {
                BatchNorm2d.evalAffine(scale: scale, shift: shift, gamma: gamma, beta: beta, runningMean: rm, runningVar: rv,
                                       channels: block.outChannels)
                if upsampled {
                    UpsampleConv2d.forward(output: output, input: input, weight: p + block.weight.offset, bias: p + block.bias.offset,
                                           columns: columns, shape: shape, scale: scale, shift: shift, relu: true, path: path)
                } else {
                    Conv2d.forward(output: output, input: input, weight: p + block.weight.offset, bias: p + block.bias.offset,
                                   columns: columns, shape: shape, scale: scale, shift: shift, relu: true, pooled: pooled, path: path)
                }
            }
        }
    }

    // MARK: Results of the last forward

    /// Parameters of frame k of the last forward.
    public func parameters(_ k: Int) -> FrameParameters { acts!.parameters[k] }
    /// The physics pattern (sum-normalised to the input) and the input of frame k.
    public var physicsOutput: UnsafePointer<T> { UnsafePointer(acts!.physicsOut) }
    public var input: UnsafePointer<T> { UnsafePointer(acts!.encoderInput[0]) }
    /// The decoder's reconstruction (batch × 1 × n × n), valid after a forward with the decoder.
    public var reconstruction: UnsafePointer<T> { UnsafePointer(acts!.decConv.last!) }
    public var latents: UnsafePointer<T> { UnsafePointer(acts!.latent) }

    // MARK: Losses and backward


    /// Expected counts added to the physics pattern under the Poisson loss: a photon where
    /// the smooth model predicts none (background, the 6σ cutoff) costs log(1/0.01), not ∞.
    public static var poissonFloorCounts: Double { 0.01 }

    /// DONUT: L = w_d·MAE(reconstruction, x) + w_f·D(Î, x), D = MAE (paper) or the Poisson
    /// deviance (`loss.physics_loss`); backward through both branches. `physicsMAE` is
    /// reported either way so logs stay comparable. `pixelWeights` (batch × n², 0/1; nil = all
    /// measured): both losses are means over measured pixels only — a masked pixel (filled
    /// for the input by `MaskInpainting`) is no target for the decoder or the physics.
    public func backwardUnsupervised(weights: LossWeights, pixelWeights: UnsafePointer<T>? = nil) -> NetworkLosses {
        serialBLAS { backwardUnsupervisedLayers(weights: weights, pixelWeights: pixelWeights) }
    }

    private func backwardUnsupervisedLayers(weights: LossWeights, pixelWeights: UnsafePointer<T>?) -> NetworkLosses {
        let a = acts!, b = a.batch, np = frameSize * frameSize, latent = mapping.latentCount
        let x = a.encoderInput[0]
        a.gradLatent!.update(repeating: 0, count: b * latent)
        var losses = NetworkLosses(total: 0, decoderMAE: .nan, physicsMAE: .nan, supervisedMSE: .nan)
        if weights.physics > 0 {
            if weights.physicsLoss == "poisson" {
                let floor = Self.poissonFloorCounts
                losses.physicsMAE = MAELoss.frames(prediction: a.physicsOut, target: x, frames: b, framePixels: np, frameSums: a.frameLoss!,
                                                   pixelWeights: pixelWeights)
                losses.total += weights.physics * PoissonDeviance.forward(prediction: a.physicsOut, target: x, count: b * np, floor: floor,
                                                                          pixelWeights: pixelWeights)
                PoissonDeviance.backward(dPrediction: a.gradPhysics!, prediction: a.physicsOut, target: x, count: b * np,
                                         floor: floor, weight: weights.physics, pixelWeights: pixelWeights)
            } else {
                losses.physicsMAE = MAELoss.frames(prediction: a.physicsOut, target: x, frames: b, framePixels: np, frameSums: a.frameLoss!,
                                                   dPrediction: a.gradPhysics!, weight: weights.physics, pixelWeights: pixelWeights)
                losses.total += weights.physics * losses.physicsMAE
            }
            backwardPhysics(upstream: a.gradPhysics!, gradients: a.gradTheta!)
            for k in 0..<b { mapping.addLatentGradient(a.gradTheta! + 4 * k, parameters: a.parameters[k], into: a.gradLatent! + k * latent) }
        }
        if weights.decoder > 0, decoderInput != nil {
            let y = a.decConv[decoder.count - 1]
            let mae = MAELoss.frames(prediction: y, target: x, frames: b, framePixels: np, frameSums: a.frameLoss!,
                                     dPrediction: a.gradOutput!, weight: weights.decoder, pixelWeights: pixelWeights)
            losses.decoderMAE = mae; losses.total += weights.decoder * mae
            backwardDecoder(from: a.gradOutput!)
        }
        backwardEncoder()
        return losses
    }

    /// The DONUT losses of the last forward, any pass kind, with no gradient: validation runs
    /// an inference pass (running BatchNorm statistics, no dropout), which has no backward.
    /// Same terms as `backwardUnsupervised`.
    public func unsupervisedLosses(weights: LossWeights, pixelWeights: UnsafePointer<T>? = nil) -> NetworkLosses {
        let a = acts!, b = a.batch, np = frameSize * frameSize, x = a.encoderInput[0]
        var losses = NetworkLosses(total: 0, decoderMAE: .nan, physicsMAE: .nan, supervisedMSE: .nan)
        if weights.physics > 0 {
            losses.physicsMAE = MAELoss.frames(prediction: a.physicsOut, target: x, frames: b, framePixels: np, frameSums: a.frameLoss!,
                                               pixelWeights: pixelWeights)
            losses.total += weights.physics * (weights.physicsLoss == "poisson"
                ? PoissonDeviance.forward(prediction: a.physicsOut, target: x, count: b * np, floor: Self.poissonFloorCounts,
                                          pixelWeights: pixelWeights)
                : losses.physicsMAE)
        }
        if weights.decoder > 0, decoderInput != nil {
            let mae = MAELoss.frames(prediction: reconstruction, target: x, frames: b, framePixels: np, frameSums: a.frameLoss!,
                                     pixelWeights: pixelWeights)
            losses.decoderMAE = mae; losses.total += weights.decoder * mae
        }
        return losses
    }

    /// The NanobeamNN loss of the last forward, any pass kind, with no gradient (validation).
    public func supervisedLosses(labels: UnsafePointer<Double>, labelScale: [Double]) -> NetworkLosses {
        let mse = supervisedMSE(labels: labels, labelScale: labelScale, gradients: nil)
        return NetworkLosses(total: mse, decoderMAE: .nan, physicsMAE: .nan, supervisedMSE: mse)
    }

    /// mean over frames and parameters of (s·(θ − θ*))²; with `gradients`, ∂L/∂θ (batch × 4)
    /// is written there and carried into gradLatent.
    private func supervisedMSE(labels: UnsafePointer<Double>, labelScale: [Double], gradients: UnsafeMutablePointer<Double>?) -> Double {
        let a = acts!, b = a.batch, latent = mapping.latentCount
        var sum = 0.0
        let count = Double(b * latent)
        for k in 0..<b {
            let p = a.parameters[k]
            for j in 0..<4 {
                guard j < latent else { gradients?[4 * k + j] = 0; continue }
                let value = j == 0 ? p.strain : j == 1 ? p.tiltLRDeg : j == 2 ? p.tiltUDDeg : p.thicknessA
                let d = labelScale[j] * (value - labels[4 * k + j])
                sum += d * d
                gradients?[4 * k + j] = 2 * labelScale[j] * d / count
            }
            if let gradients { mapping.addLatentGradient(gradients + 4 * k, parameters: p, into: a.gradLatent! + k * latent) }
        }
        return sum / count
    }

    /// NanobeamNN: L = mean over frames and parameters of (s·(θ − θ*))², s the label scale;
    /// `labels` holds θ* (batch × 4: ε, ω°, χ°, t).
    public func backwardSupervised(labels: UnsafePointer<Double>, labelScale: [Double]) -> NetworkLosses {
        serialBLAS { backwardSupervisedLayers(labels: labels, labelScale: labelScale) }
    }

    private func backwardSupervisedLayers(labels: UnsafePointer<Double>, labelScale: [Double]) -> NetworkLosses {
        let a = acts!
        a.gradLatent!.update(repeating: 0, count: a.batch * mapping.latentCount)
        let mse = supervisedMSE(labels: labels, labelScale: labelScale, gradients: a.gradTheta!)
        backwardEncoder()
        return NetworkLosses(total: mse, decoderMAE: .nan, physicsMAE: .nan, supervisedMSE: mse)
    }

    /// ∂L/∂θ (batch × 4, ε ω χ t) of the last forward's physics patterns from ∂L/∂Î (batch × n²),
    /// split over the threads as the forward.
    public func backwardPhysics(upstream: UnsafePointer<T>, gradients: UnsafeMutablePointer<Double>) {
        let b = acts!.batch, np = frameSize * frameSize
        serialBLAS {
            Parallel.forWorkers(b, workers: physicsShards.count,
                                PhysicsShardsBackward(shards: physicsShards, upstream: upstream, gradients: gradients, pixelCount: np))
        }
    }

    /// `backwardPhysics` on frames `frames`, by the physics layer that ran their forward.
    struct PhysicsShardsBackward: ParallelLoop {
        let shards: [PhysicsLayer<T>], upstream: UnsafePointer<T>, gradients: UnsafeMutablePointer<Double>, pixelCount: Int
        static var fixedPartition: Bool { true }
        @_specialize(where T == Float)
        func run(_ frames: Range<Int>, worker: Int) {
            shards[worker].backward(upstream: upstream + frames.lowerBound * pixelCount, gradients: gradients + 4 * frames.lowerBound)
        }
    }

    /// The gradient buffer to write next: whichever of the two ping-pong buffers `x` is not.
    @inline(__always)
    private func other(_ x: UnsafeMutablePointer<T>, _ a: Activations) -> UnsafeMutablePointer<T> {
        x == a.gradA! ? a.gradB! : a.gradA!
    }

    /// Decoder backward from ∂L/∂reconstruction; adds ∂L/∂z into gradLatent.
    private func backwardDecoder(from dOut: UnsafeMutablePointer<T>) {
        let a = acts!, b = a.batch, p = store.parameters, g = store.gradients
        let layers = trainedLayers(a)
        var cur = dOut
        var s = frameSize
        var bnIndex = decoderBatchNormCount - 1
        for k in stride(from: decoder.count - 1, through: 0, by: -1) {
            let block = decoder[k], layer = layers[encoder.count + k], shape = layer.shape, path = layer.backward!
            if block.gamma != nil {
                let u = other(cur, a)
                BatchNorm2d.backwardTraining(dInput: u, dGamma: g + block.gamma!.offset, dBeta: g + block.beta!.offset,
                                             dOutput: cur, input: a.decConv[k], gamma: p + block.gamma!.offset,
                                             mean: a.decMean[bnIndex], invStd: a.decInvStd[bnIndex],
                                             batch: b, channels: block.outChannels, height: s, width: s,
                                             reluOutput: a.decRelu[bnIndex], synchronise: batchNormReducer)
                cur = u; bnIndex -= 1
            }
            let t = other(cur, a)
            s /= 2
            if path.isSubPixel {
                // Fused up-sample → conv: the input gradient is the low-res one directly. Block k's
                // input is block k − 1's ReLU output (every block but the last has BatchNorm + ReLU).
                let input = k == 0 ? a.decoderInRelu! : a.decRelu[k - 1]
                UpsampleConv2d.backward(dInput: t, dWeight: g + block.weight.offset, dBias: g + block.bias.offset, dOutput: cur,
                                        input: input, weight: p + block.weight.offset, columns: a.columns, shape: shape, path: path)
                cur = t
                continue
            }
            Conv2d.backward(dInput: t, dWeight: g + block.weight.offset, dBias: g + block.bias.offset, dOutput: cur,
                            input: a.upOut[k]!, weight: p + block.weight.offset, columns: a.columns, shape: shape, path: path)
            let u = other(t, a)
            Upsample2d.backward(dInput: u, dOutput: t, batch: b, channels: block.inChannels, height: s, width: s)
            cur = u
        }
        let d = decoderInput!, t = other(cur, a)
        ReLU.backward(dInput: t, dOutput: cur, output: a.decoderInRelu!, count: b * d.outFeatures)
        Linear.backward(dInput: nil, dWeight: g + d.weight.offset, dBias: g + d.bias.offset, dOutput: t,
                        input: a.latent, weight: p + d.weight.offset, batch: b, inFeatures: d.inFeatures, outFeatures: d.outFeatures)
        // ∂L/∂z += ∂L/∂(decoder input) · W: added, the physics branch contributes too. Formed
        // transposed, (L × b) = Wᵀ · tᵀ in the (now free) column scratch, then added: OpenBLAS's
        // SkylakeX kernels allocate on every call whose output has ≤ 8 columns (here L = 3–4).
        let zT = a.columns
        T.gemm(transA: true, transB: true, m: d.inFeatures, n: b, k: d.outFeatures, alpha: 1, a: p + d.weight.offset, lda: d.inFeatures,
               b: t, ldb: d.outFeatures, beta: 0, c: zT, ldc: b)
        for n in 0..<b {
            for l in 0..<d.inFeatures { a.gradLatent![n * d.inFeatures + l] += zT[l * b + n] }
        }
    }

    /// The layers of the last forward's pass, which the backward follows; it must have been a training pass.
    private func trainedLayers(_ a: Activations) -> [LayerPlan] {
        precondition(a.lastPass.trains && plannedForTraining, "backward needs a training forward (ForwardMode.training) on a network planned for training")
        return networkPlan!.passes[a.lastPass.rawValue]
    }

    /// Head and encoder backward from gradLatent.
    private func backwardEncoder() {
        let a = acts!, b = a.batch, p = store.parameters, g = store.gradients, latent = mapping.latentCount
        let layers = trainedLayers(a)
        let dA = a.gradA!, dB = a.gradB!
        ScaledTanh.backward(dInput: dA, dOutput: a.gradLatent!, output: a.latent, count: b * latent)
        var dCurrent = dA, dOther = dB
        for i in stride(from: head.count - 1, through: 0, by: -1) {
            let l = head[i]
            let input = i > 0 ? UnsafePointer(a.headRelu!) : UnsafePointer(a.features)
            Linear.backward(dInput: dOther, dWeight: g + l.weight.offset, dBias: g + l.bias.offset, dOutput: dCurrent,
                            input: input, weight: p + l.weight.offset, batch: b, inFeatures: l.inFeatures, outFeatures: l.outFeatures)
            swap(&dCurrent, &dOther)
            if i > 0 {
                ReLU.backward(dInput: dOther, dOutput: dCurrent, output: a.headRelu!, count: b * l.inFeatures)
                swap(&dCurrent, &dOther)
            }
        }
        // dCurrent = ∂L/∂features (the last pool output).
        var size = frameSize >> encoder.count
        for k in stride(from: encoder.count - 1, through: 0, by: -1) {
            let block = encoder[k]
            size *= 2
            let layer = layers[k], shape = layer.shape, count = shape.outputCount, path = layer.backward!
            switch layer.composition {
            case .convBatchNormReLUPool:
                // No input gradient needed: the conv's gradients without the block's dense dx.
                let pooled = k + 1 < encoder.count ? a.encoderInput[k + 1] : a.features
                ConvBatchNormReLUPool.backwardTraining(
                    dWeight: g + block.weight.offset, dBias: g + block.bias.offset, dGamma: g + block.gamma!.offset,
                    dBeta: g + block.beta!.offset, dPooled: dCurrent, pooled: pooled, argmax: a.poolArgmax[k],
                    pooledInput: a.pooledInput[k], weight: p + block.weight.offset, bias: p + block.bias.offset,
                    gamma: p + block.gamma!.offset, mean: a.mean[k], invStd: a.invStd[k], shape: shape, padded: a.firstBlockPadded!,
                    moments: a.firstBlockMoments!, synchronise: batchNormReducer, path: path)
                continue
            case .statisticsThenBatchNormReLUPool:
                let pooled = k + 1 < encoder.count ? a.encoderInput[k + 1] : a.features
                BatchNormReLUPool.backwardTraining(dInput: dOther, dGamma: g + block.gamma!.offset, dBeta: g + block.beta!.offset,
                                                   dInputSums: g + block.bias.offset, dPooled: dCurrent, pooled: pooled,
                                                   argmax: a.poolArgmax[k], pooledInput: a.pooledInput[k], input: a.convOut[k],
                                                   gamma: p + block.gamma!.offset,
                                                   mean: a.mean[k], invStd: a.invStd[k], batch: b, channels: block.outChannels,
                                                   height: size, width: size, synchronise: batchNormReducer)
                swap(&dCurrent, &dOther)
                Conv2d.backward(dInput: k > 0 ? dOther : nil, dWeight: g + block.weight.offset, dBias: nil,
                                dOutput: dCurrent, input: a.encoderInput[k], weight: p + block.weight.offset,
                                columns: a.columns, shape: shape, path: path)
                swap(&dCurrent, &dOther)
                continue
            default:
                break
            }
            MaxPool2d.backward(dInput: dOther, dOutput: dCurrent, argmax: a.poolArgmax[k], batch: b,
                               channels: block.outChannels, height: size, width: size)
            swap(&dCurrent, &dOther)
            Dropout.backward(dInput: dOther, dOutput: dCurrent, mask: a.dropMask[k], count: count)
            swap(&dCurrent, &dOther)
            // ReLU's backward is fused into BatchNorm's (gated by the ReLU output).
            BatchNorm2d.backwardTraining(dInput: dOther, dGamma: g + block.gamma!.offset, dBeta: g + block.beta!.offset,
                                         dOutput: dCurrent, input: a.convOut[k], gamma: p + block.gamma!.offset,
                                         mean: a.mean[k], invStd: a.invStd[k], batch: b, channels: block.outChannels,
                                         height: size, width: size, reluOutput: a.reluOut[k], synchronise: batchNormReducer)
            swap(&dCurrent, &dOther)
            Conv2d.backward(dInput: k > 0 ? dOther : nil, dWeight: g + block.weight.offset, dBias: g + block.bias.offset,
                            dOutput: dCurrent, input: a.encoderInput[k], weight: p + block.weight.offset,
                            columns: a.columns, shape: shape, path: path)
            swap(&dCurrent, &dOther)
        }
    }
}
