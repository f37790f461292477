import DonutNN

/// The kinds of forward pass a `DonutNetwork` runs; each has its own block compositions.
public enum PassKind: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// Batch statistics without dropout (`ForwardMode.training` with dropout 0): the encoder
    /// blocks fused (`ConvBatchNormReLUPool`, `BatchNormReLUPool`).
    case training
    /// Batch statistics with dropout: the encoder blocks layer by layer.
    case trainingWithDropout
    /// Running statistics, no dropout (`ForwardMode.inference`): BatchNorm, ReLU and the pool in the conv's epilogue.
    case inference
    /// Running statistics with dropout (`ForwardMode.monteCarlo`): the epilogue without the pool, then dropout and the pool.
    case monteCarlo

    /// The pass a forward `mode` runs when the network's dropout probability is `dropout`.
    public init(_ mode: ForwardMode, dropout: Double) {
        let drops = mode.dropout && dropout > 0
        self = mode.batchStatistics ? (drops ? .trainingWithDropout : .training) : (drops ? .monteCarlo : .inference)
    }

    /// Whether the pass computes batch statistics and has a backward.
    public var trains: Bool { self == .training || self == .trainingWithDropout }

    public var description: String {
        switch self {
        case .training: return "training"
        case .trainingWithDropout: return "training with dropout"
        case .inference: return "inference"
        case .monteCarlo: return "MC dropout"
        }
    }
}

/// What a block runs around its convolution in one kind of pass (the raw value is what the plan prints):
/// - `layers`: encoder, training with dropout: conv → BatchNorm → ReLU → dropout → max pool, layer by layer;
/// - `statisticsThenBatchNormReLUPool`: encoder, training without dropout: the conv writes its planes'
///   statistics, then `BatchNormReLUPool`;
/// - `convBatchNormReLUPool`: the same for the first block, whole (`ConvBatchNormReLUPool`, conv output never stored);
/// - `pooledEpilogue`: encoder, inference: eval BatchNorm, ReLU and the 2×2 pool in the conv's epilogue;
/// - `epilogueThenDropoutPool`: encoder, MC dropout: eval BatchNorm and ReLU in the epilogue, then dropout and the pool;
/// - `upConvBatchNormReLU`: decoder block: (up-sampling →) conv → BatchNorm → ReLU (eval: in the epilogue);
/// - `upConv`: the decoder's last block: (up-sampling →) conv.
public enum BlockComposition: String, Sendable {
    case layers = "conv → BN → ReLU → dropout → pool",
         statisticsThenBatchNormReLUPool = "conv+statistics → BatchNormReLUPool",
         convBatchNormReLUPool = "ConvBatchNormReLUPool",
         pooledEpilogue = "conv+BN+ReLU+pool epilogue",
         epilogueThenDropoutPool = "conv+BN+ReLU epilogue → dropout → pool",
         upConvBatchNormReLU = "up ×2 → conv → BN → ReLU",
         upConv = "up ×2 → conv"
}

/// One convolution layer's plan: its shape, what runs around it and its kernels.
public struct LayerPlan: Sendable, Equatable {
    /// "encoder.k" or "decoder.k" (the parameter names' prefix).
    public var name: String
    /// The conv's shape (decoder: on the up-sampled image).
    public var shape: Conv2dShape
    public var composition: BlockComposition
    public var forward: ConvolutionPath
    /// nil: the pass has no backward, or the network was planned for inference only.
    public var backward: ConvolutionPath?
}

/// Every layer's kernels for every kind of pass, decided once by `DonutNetwork.plan(batch:training:)`
/// from the shapes, the scalar type and the CPU (`KernelTarget.native`). The forward and backward
/// follow it; `description` prints it (`donut bench … --show-plan`, `--verbose`).
public struct NetworkPlan: Sendable, CustomStringConvertible {
    public var batch: Int
    /// "Float" or "Double".
    public var scalar: String
    public var target: KernelTarget
    /// Planned with gradient buffers (training).
    public var training: Bool
    /// The network's dropout probability (which passes differ).
    public var dropout: Double
    /// Per `PassKind` (indexed by its raw value): encoder layers, then decoder layers.
    public var passes: [[LayerPlan]]

    public func layers(_ kind: PassKind) -> [LayerPlan] { passes[kind.rawValue] }

    /// The passes a run with this plan uses: training (ForwardMode.training) and inference
    /// (validation) for a training plan; inference and, with dropout, MC dropout otherwise.
    public var usedPasses: [PassKind] {
        let trainingPass = PassKind(.training, dropout: dropout)
        return training ? [trainingPass, .inference] : (dropout > 0 ? [.inference, .monteCarlo] : [.inference])
    }

    public var description: String {
        var lines = ["network plan: batch \(batch), \(scalar), \(target)\(training ? ", with gradients" : "")"]
        for kind in usedPasses {
            lines.append("  \(kind) pass:")
            let rows = layers(kind).map { l -> [String] in
                let s = l.shape
                return [l.name, "\(s.inChannels)→\(s.outChannels) \(s.kernelH)×\(s.kernelW) @ \(s.height)×\(s.width)",
                        l.composition.rawValue, l.forward.rawValue, l.backward?.rawValue ?? "-"]
            }
            let header = ["layer", "conv", "block", "forward", "backward"]
            let widths = (0..<header.count).map { c in ([header] + rows).map { $0[c].count }.max() ?? 0 }
            for row in [header] + rows {
                let cells = row.enumerated().map { c, cell in
                    c == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[c] - cell.count)
                }
                lines.append("    " + cells.joined(separator: "  "))
            }
        }
        return lines.joined(separator: "\n")
    }
}
