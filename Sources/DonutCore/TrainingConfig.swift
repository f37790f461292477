import DonutPhysics

/// How a DONUT or NanobeamNN network is built and trained (`configs/train-*.yaml`).
/// The instrument, sample, σ of the smooth model and the parameter ranges come from the
/// `DonutConfig` of the scan or library; this file holds only the learning side.
public struct TrainingConfig: StrictConfig {
    public var network: NetworkSettings
    public var loss: LossWeights
    public var optimiser: OptimiserSettings
    public var schedule: Schedule
    public var supervised: SupervisedSettings

    public init(network: NetworkSettings, loss: LossWeights, optimiser: OptimiserSettings,
                schedule: Schedule, supervised: SupervisedSettings) {
        self.network = network; self.loss = loss; self.optimiser = optimiser
        self.schedule = schedule; self.supervised = supervised
    }

    /// The DONUT paper's settings: a 1→16→32→64→64 encoder, its mirror decoder, loss
    /// 1·MAE(decoder) + 5·MAE(physics), AdamW with lr 1e-4 (encoder, physics head) and
    /// 1e-5 (decoder), batch 16.
    public static let donutPaper = TrainingConfig(
        network: NetworkSettings(encoderChannels: [16, 32, 64, 64], dropout: 0, hiddenUnits: 128,
                                 predictThickness: false, decoder: true),
        loss: LossWeights(decoder: 1, physics: 5),
        optimiser: OptimiserSettings(learningRateEncoder: 1e-4, learningRatePhysics: 1e-4, learningRateDecoder: 1e-5,
                                     weightDecay: 1e-2, beta1: 0.9, beta2: 0.999),
        schedule: Schedule(batchSize: 16, epochs: 20, validationFraction: 0.1, checkpointEvery: 500, seed: 0),
        supervised: SupervisedSettings(labelScale: [100, 10, 5, 0.01]))

    public static var schemaExample: TrainingConfig { .donutPaper }
    public static var optionalKeys: Set<String> { ["loss.physics_loss"] }

    enum CodingKeys: String, CodingKey { case network, loss, optimiser, schedule, supervised }

    public func validate() throws {
        let n = network
        guard !n.encoderChannels.isEmpty, n.encoderChannels.allSatisfy({ $0 > 0 }) else {
            throw ConfigError(key: "network.encoder_channels", "needs one or more positive channel counts (got \(n.encoderChannels))")
        }
        guard n.dropout >= 0, n.dropout < 1 else { throw ConfigError(key: "network.dropout", "must be in [0, 1) (got \(n.dropout))") }
        guard n.hiddenUnits >= 0 else { throw ConfigError(key: "network.hidden_units", "must be ≥ 0 (got \(n.hiddenUnits))") }
        guard loss.decoder >= 0, loss.physics >= 0, loss.decoder + loss.physics > 0 else {
            throw ConfigError(key: "loss", "weights must be ≥ 0 and not both 0 (got decoder \(loss.decoder), physics \(loss.physics))")
        }
        guard LossWeights.physicsLosses.contains(loss.physicsLoss) else {
            throw ConfigError(key: "loss.physics_loss", "must be one of \(LossWeights.physicsLosses.joined(separator: ", ")) (got '\(loss.physicsLoss)')")
        }
        if !n.decoder && loss.decoder > 0 {
            throw ConfigError(key: "loss.decoder", "is \(loss.decoder) but network.decoder is false (set it to 0)")
        }
        let o = optimiser
        for (v, k) in [(o.learningRateEncoder, "lr_encoder"), (o.learningRatePhysics, "lr_physics"), (o.learningRateDecoder, "lr_decoder")] {
            guard v > 0, v.isFinite else { throw ConfigError(key: "optimiser.\(k)", "must be a positive learning rate (got \(v))") }
        }
        guard o.weightDecay >= 0 else { throw ConfigError(key: "optimiser.weight_decay", "must be ≥ 0 (got \(o.weightDecay))") }
        guard o.beta1 >= 0, o.beta1 < 1 else { throw ConfigError(key: "optimiser.beta1", "must be in [0, 1) (got \(o.beta1))") }
        guard o.beta2 >= 0, o.beta2 < 1 else { throw ConfigError(key: "optimiser.beta2", "must be in [0, 1) (got \(o.beta2))") }
        let s = schedule
        guard s.batchSize > 0 else { throw ConfigError(key: "schedule.batch_size", "must be positive (got \(s.batchSize))") }
        guard s.epochs > 0 else { throw ConfigError(key: "schedule.epochs", "must be positive (got \(s.epochs))") }
        guard s.epochs <= 1_000_000 else { throw ConfigError(key: "schedule.epochs", "must be at most 1000000 (got \(s.epochs)): a step count beyond any training") }
        guard s.validationFraction >= 0, s.validationFraction < 1 else {
            throw ConfigError(key: "schedule.validation_fraction", "must be in [0, 1) (got \(s.validationFraction))")
        }
        guard s.seed >= 0 else { throw ConfigError(key: "schedule.seed", "must be ≥ 0 (got \(s.seed))") }
        // Sizes that allocate: the weights of each 3×3 convolution (with gradient and two AdamW
        // moments) and of the hidden layer, checked before the network is built.
        var previous = 1
        for c in n.encoderChannels {
            if let why = Sizes.memoryProblem("a convolution's weights", factors: [("input channels", previous), ("network.encoder_channels", c), ("3×3 taps", 9)], bytesPerElement: 16) {
                throw ConfigError(key: "network.encoder_channels", why)
            }
            previous = c
        }
        if let why = Sizes.memoryProblem("the hidden layer", factors: [("network.hidden_units", n.hiddenUnits), ("network.encoder_channels (last)", previous)], bytesPerElement: 16) {
            throw ConfigError(key: "network.hidden_units", why)
        }
        guard s.batchSize <= 1 << 24 else { throw ConfigError(key: "schedule.batch_size", "\(s.batchSize) frames per batch is beyond any memory (at most \(1 << 24))") }
        guard s.checkpointEvery > 0 else { throw ConfigError(key: "schedule.checkpoint_every", "must be positive (got \(s.checkpointEvery))") }
        guard supervised.labelScale.count == 4, supervised.labelScale.allSatisfy({ $0 > 0 }) else {
            throw ConfigError(key: "supervised.label_scale", "must be 4 positive factors for (strain, tilt_lr, tilt_ud, thickness) (got \(supervised.labelScale))")
        }
    }
}

public struct NetworkSettings: Codable, Equatable, Sendable {
    /// Output channels of the encoder's blocks (conv 3×3 → BatchNorm → ReLU → dropout →
    /// max-pool 2); the decoder mirrors them.
    public var encoderChannels: [Int]
    /// Dropout probability after each encoder block (also drives MC-dropout uncertainty).
    /// 0 in the preset: dropout before the next block's BatchNorm makes the running variance
    /// (collected with dropout on) larger than the variance seen at inference (dropout off),
    /// so inference shrinks the latent — measured on the paper phantom with p = 0.1: slope of
    /// predicted vs true tilt_lr 0.79, strain 0.60; with p = 0: 1.04 and 0.90 (docs/training.md).
    public var dropout: Double
    /// Hidden units of the fully connected layer before the latent (0: straight to the latent).
    public var hiddenUnits: Int
    /// Predict thickness as a 4th latent (through a log scale over ranges.thickness_A).
    public var predictThickness: Bool
    /// DONUT's decoder branch (reconstructs the frame from the latent).
    public var decoder: Bool

    enum CodingKeys: String, CodingKey {
        case encoderChannels = "encoder_channels", dropout, hiddenUnits = "hidden_units"
        case predictThickness = "predict_thickness", decoder
    }
    public init(encoderChannels: [Int], dropout: Double, hiddenUnits: Int, predictThickness: Bool, decoder: Bool) {
        self.encoderChannels = encoderChannels; self.dropout = dropout; self.hiddenUnits = hiddenUnits
        self.predictThickness = predictThickness; self.decoder = decoder
    }
}

public struct LossWeights: Codable, Equatable, Sendable {
    /// w_d: weight of MAE(decoder output, frame).
    public var decoder: Double
    /// w_f: weight of the physics term (the smooth model's pattern vs the frame).
    public var physics: Double
    /// The physics term: "mae" (the DONUT paper) or "poisson" (mean Poisson deviance, i.e.
    /// maximum likelihood for photon counts; see `PoissonDeviance`).
    public var physicsLoss: String
    public init(decoder: Double, physics: Double, physicsLoss: String = "mae") {
        self.decoder = decoder; self.physics = physics; self.physicsLoss = physicsLoss
    }
    /// Physics-loss names `physics_loss` accepts.
    public static let physicsLosses = ["mae", "poisson"]
    enum CodingKeys: String, CodingKey { case decoder, physics, physicsLoss = "physics_loss" }
    /// `physics_loss` may be left out (presets and models written before it existed): "mae".
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.decoder = try c.decode(Double.self, forKey: .decoder)
        physics = try c.decode(Double.self, forKey: .physics)
        physicsLoss = try c.decodeIfPresent(String.self, forKey: .physicsLoss) ?? "mae"
    }
}

public struct OptimiserSettings: Codable, Equatable, Sendable {
    /// AdamW learning rates of the three parameter groups: the convolutional encoder, the
    /// head that maps features to the physical latent, the decoder.
    public var learningRateEncoder: Double
    public var learningRatePhysics: Double
    public var learningRateDecoder: Double
    /// Decoupled weight decay (AdamW), applied to every group.
    public var weightDecay: Double
    public var beta1: Double
    public var beta2: Double

    enum CodingKeys: String, CodingKey {
        case learningRateEncoder = "lr_encoder", learningRatePhysics = "lr_physics", learningRateDecoder = "lr_decoder"
        case weightDecay = "weight_decay", beta1, beta2
    }
    public init(learningRateEncoder: Double, learningRatePhysics: Double, learningRateDecoder: Double,
                weightDecay: Double, beta1: Double, beta2: Double) {
        self.learningRateEncoder = learningRateEncoder; self.learningRatePhysics = learningRatePhysics
        self.learningRateDecoder = learningRateDecoder; self.weightDecay = weightDecay
        self.beta1 = beta1; self.beta2 = beta2
    }
}

public struct Schedule: Codable, Equatable, Sendable {
    /// Frames per optimiser step (per rank under MPI).
    public var batchSize: Int
    /// Passes over the training frames.
    public var epochs: Int
    /// Fraction of frames held out for the validation loss.
    public var validationFraction: Double
    /// Steps between atomic checkpoints.
    public var checkpointEvery: Int
    /// Seed of initial weights, shuffling, dropout and on-the-fly noise.
    public var seed: Int

    enum CodingKeys: String, CodingKey {
        case batchSize = "batch_size", epochs, validationFraction = "validation_fraction"
        case checkpointEvery = "checkpoint_every", seed
    }
    public init(batchSize: Int, epochs: Int, validationFraction: Double, checkpointEvery: Int, seed: Int) {
        self.batchSize = batchSize; self.epochs = epochs; self.validationFraction = validationFraction
        self.checkpointEvery = checkpointEvery; self.seed = seed
    }
}

public struct SupervisedSettings: Codable, Equatable, Sendable {
    /// NanobeamNN label scaling (published: ε×100, ω×10, χ×5; thickness per Å).
    public var labelScale: [Double]
    enum CodingKeys: String, CodingKey { case labelScale = "label_scale" }
    public init(labelScale: [Double]) { self.labelScale = labelScale }
}
