import XCTest
import DonutNN
import DonutPhysics
import DonutCore

/// The kernels `DonutNetwork.plan` decides for the default DONUT network (encoder 16, 32, 64, 64
/// on 64×64 frames; decoder back to one channel), by the rules of DonutNN's ConvolutionPlan.swift:
/// the first encoder block direct (one input plane), the others Winograd forward and GEMM
/// backward, the decoder's up-sampling convs sub-pixel (the last one by stencils), the AVX2
/// stencils only for Float on a CPU that has them.
final class NetworkPlanTests: XCTestCase {
    func preset(dropout: Double) -> TrainingConfig {
        var preset = TrainingConfig.donutPaper
        preset.network.dropout = dropout
        return preset
    }

    func network(_ type: Float.Type, dropout: Double = 0) throws -> DonutNetwork<Float> {
        let p = preset(dropout: dropout)
        return try DonutNetwork<Float>(settings: p.network, optimiser: p.optimiser, config: DonutConfig.srio3LSAT002, seed: 0)
    }

    func network(_ type: Double.Type, dropout: Double = 0) throws -> DonutNetwork<Double> {
        let p = preset(dropout: dropout)
        return try DonutNetwork<Double>(settings: p.network, optimiser: p.optimiser, config: DonutConfig.srio3LSAT002, seed: 0)
    }

    func paths(_ layers: [LayerPlan]) -> [String] {
        layers.map { "\($0.name) \($0.composition.rawValue) | \($0.forward) | \($0.backward.map { "\($0)" } ?? "-")" }
    }

    func testFloatPlanOfTheDefaultNetwork() throws {
        let net = try network(Float.self)
        net.plan(batch: 16, training: true)
        let plan = try XCTUnwrap(net.networkPlan)
        let avx2 = CPUFeatures.avx2FMA
        XCTAssertEqual(plan.target, KernelTarget(avx2: avx2))
        XCTAssertEqual(PassKind(.training, dropout: 0), .training)
        let stencil: ConvolutionPath = avx2 ? .stencilAVX2 : .stencil, moments: ConvolutionPath = avx2 ? .momentsAVX2 : .moments
        let lastDecoder: ConvolutionPath = avx2 ? .subPixelStencilAVX2 : .subPixelStencil
        XCTAssertEqual(paths(plan.layers(.training)), [
            "encoder.0 ConvBatchNormReLUPool | \(moments) | \(moments)",
            "encoder.1 conv+statistics → BatchNormReLUPool | Winograd F(2x2,3x3) | im2col+GEMM",
            "encoder.2 conv+statistics → BatchNormReLUPool | Winograd F(2x2,3x3) | im2col+GEMM",
            "encoder.3 conv+statistics → BatchNormReLUPool | Winograd F(2x2,3x3) | im2col+GEMM",
            "decoder.0 up ×2 → conv → BN → ReLU | sub-pixel GEMM | sub-pixel GEMM",
            "decoder.1 up ×2 → conv → BN → ReLU | sub-pixel GEMM | sub-pixel GEMM",
            "decoder.2 up ×2 → conv → BN → ReLU | sub-pixel GEMM | sub-pixel GEMM",
            "decoder.3 up ×2 → conv | \(lastDecoder) | \(lastDecoder)",
        ])
        let inference = plan.layers(.inference)
        XCTAssertEqual(inference.map(\.forward), [avx2 ? .pooledStencilAVX2 : .stencil, .winograd, .winograd, .winograd,
                                                   .subPixelGEMM, .subPixelGEMM, .subPixelGEMM, lastDecoder])
        XCTAssertTrue(inference.allSatisfy { $0.backward == nil }, "inference has no backward")
        XCTAssertEqual(inference[0].composition, .pooledEpilogue)
        // Shapes: the conv's, decoder ones on the up-sampled image.
        XCTAssertEqual(inference.map { [$0.shape.inChannels, $0.shape.outChannels, $0.shape.height] },
                       [[1, 16, 64], [16, 32, 32], [32, 64, 16], [64, 64, 8], [64, 64, 8], [64, 32, 16], [32, 16, 32], [16, 1, 64]])
        XCTAssertTrue(plan.layers(.monteCarlo)[0].forward == stencil)
        // The printout names every layer and its kernels, for the passes the run uses.
        let text = "\(plan)"
        for layer in plan.layers(.training) + inference {
            XCTAssertTrue(text.contains(layer.name) && text.contains(layer.forward.rawValue), "\(layer.name) missing from\n\(text)")
        }
        XCTAssertTrue(text.contains("training pass") && text.contains("inference pass"), text)
    }

    /// Double runs the generic kernels only; with dropout, training runs the blocks layer by layer
    /// (direct stencils forward and backward for the first); an inference-only plan has no backward.
    func testDoubleAndDropoutPlans() throws {
        let double = try network(Double.self, dropout: 0.1)
        double.plan(batch: 4, training: true)
        let plan = try XCTUnwrap(double.networkPlan)
        XCTAssertEqual(plan.target, .generic)
        XCTAssertEqual(PassKind(.training, dropout: 0.1), .trainingWithDropout)
        XCTAssertEqual(plan.usedPasses, [.trainingWithDropout, .inference])
        XCTAssertFalse(plan.passes.joined().contains { $0.forward.usesAVX2 || $0.backward?.usesAVX2 == true })
        let training = plan.layers(.trainingWithDropout)
        XCTAssertEqual(training.map(\.composition), [.layers, .layers, .layers, .layers,
                                                     .upConvBatchNormReLU, .upConvBatchNormReLU, .upConvBatchNormReLU, .upConv])
        XCTAssertEqual(training[0].forward, .stencil); XCTAssertEqual(training[0].backward, .stencil)
        XCTAssertEqual(plan.layers(.monteCarlo)[0].composition, .epilogueThenDropoutPool)

        let inferenceOnly = try network(Float.self, dropout: 0.1)
        inferenceOnly.plan(batch: 8, training: false)
        let p = try XCTUnwrap(inferenceOnly.networkPlan)
        XCTAssertEqual(p.usedPasses, [.inference, .monteCarlo])
        XCTAssertTrue(p.passes.joined().allSatisfy { $0.backward == nil })
        // Without gradient buffers the first block cannot keep ConvBatchNormReLUPool's moments.
        XCTAssertEqual(p.layers(.training)[0].composition, .statisticsThenBatchNormReLUPool)
    }
}
