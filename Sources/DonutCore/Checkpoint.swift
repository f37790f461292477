import DonutPhysics

/// One named tensor inside a flat buffer.
public struct TensorRecord: Codable, Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    /// Parameter group ("encoder", "physics", "decoder", or "buffer" for BatchNorm running statistics).
    public var group: String
    /// First element in the flat buffer.
    public var offset: Int
    public init(name: String, shape: [Int], group: String, offset: Int) {
        self.name = name; self.shape = shape; self.group = group; self.offset = offset
    }
    public var count: Int { shape.reduce(1, *) }
}

/// One line of the training log.
public struct LossRecord: Equatable, Sendable {
    public var step: Int
    public var epoch: Int
    /// Weighted training loss averaged over the steps since the previous record.
    public var train: Double
    /// Validation loss at this step (NaN when not evaluated).
    public var validation: Double
    /// Its parts: MAE of the decoder and of the physics head (NaN when not part of the loss).
    public var decoderMAE: Double
    public var physicsMAE: Double
    public init(step: Int, epoch: Int, train: Double, validation: Double, decoderMAE: Double, physicsMAE: Double) {
        self.step = step; self.epoch = epoch; self.train = train; self.validation = validation
        self.decoderMAE = decoderMAE; self.physicsMAE = physicsMAE
    }
}

/// Everything needed to continue training exactly where it stopped, or to infer: a model
/// file is the final checkpoint. Parameters, gradients' AdamW moments and BatchNorm
/// running statistics are flat buffers described by `tensors` / `buffers`.
public struct ModelCheckpoint: Equatable, Sendable {
    /// "donut" (unsupervised, physics + decoder) or "nanobeamnn" (supervised).
    public var method: String
    public var tensors: [TensorRecord]
    public var parameters: [Float]
    public var firstMoments: [Float]
    public var secondMoments: [Float]
    public var buffers: [TensorRecord]
    public var bufferValues: [Float]
    /// AdamW steps taken (the bias-correction count).
    public var step: Int
    /// Epochs completed and steps into the current epoch.
    public var epoch: Int
    public var stepInEpoch: Int
    /// State of the training RNG (shuffling, dropout, noise) after `step`.
    public var rngState: [UInt64]
    /// The instrument/sample config (JSON) and the training config (JSON).
    public var configJSON: String
    public var trainingJSON: String
    public var lossLog: [LossRecord]

    public init(method: String, tensors: [TensorRecord], parameters: [Float], firstMoments: [Float],
                secondMoments: [Float], buffers: [TensorRecord], bufferValues: [Float], step: Int, epoch: Int,
                stepInEpoch: Int, rngState: [UInt64], configJSON: String, trainingJSON: String, lossLog: [LossRecord]) {
        self.method = method; self.tensors = tensors; self.parameters = parameters
        self.firstMoments = firstMoments; self.secondMoments = secondMoments; self.buffers = buffers
        self.bufferValues = bufferValues; self.step = step; self.epoch = epoch; self.stepInEpoch = stepInEpoch
        self.rngState = rngState; self.configJSON = configJSON; self.trainingJSON = trainingJSON; self.lossLog = lossLog
    }
}
