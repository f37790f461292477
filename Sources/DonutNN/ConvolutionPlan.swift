import DonutBLAS
import CDonutCPU
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Which kernel computes a convolution is decided here, once per layer, from its shape, the
// scalar type and the CPU (`Conv2d.forwardPath`, `Conv2d.backwardPath`, `UpsampleConv2d.path`,
// `ConvBatchNormReLUPool.path`). The layers take the decision as an argument (`path:`) and
// only carry it out; a network keeps the decisions of all its layers (DonutCore's `NetworkPlan`).
// DonutNN.swift has the table of paths and when each is taken.

/// What the CPU can run beyond baseline x86-64, asked once (CPUID).
public enum CPUFeatures {
    /// AVX2 and FMA (with the OS saving YMM state): the `DonutKernelsAVX2` stencils may run.
    /// `DONUT_NO_AVX2=1` in the environment turns them off (to compare, or to rule them out).
    public static let avx2FMA: Bool = donut_cpu_has_avx2_fma() != 0 && getenv("DONUT_NO_AVX2") == nil
}

/// The kernels a layer may use beyond the generic (Swift SIMD) ones: the `DonutKernelsAVX2`
/// stencils, Float only and only on a CPU with AVX2 + FMA.
public struct KernelTarget: Sendable, Hashable, CustomStringConvertible {
    /// The AVX2 + FMA stencils may run.
    public var avx2: Bool

    public init(avx2: Bool) { self.avx2 = avx2 }

    /// What `T` runs on this CPU: the AVX2 stencils for Float where `CPUFeatures.avx2FMA`.
    public static func native<T: GEMMScalar>(_: T.Type) -> KernelTarget {
        KernelTarget(avx2: T.self == Float.self && CPUFeatures.avx2FMA)
    }

    /// The generic kernels only: what Double always runs, and Float for comparison.
    public static let generic = KernelTarget(avx2: false)

    public var description: String { avx2 ? "AVX2 + FMA stencils" : "generic kernels" }
}

/// The kernel that computes a convolution's forward or backward. The network's convolutions
/// are 3×3, stride 1, padding 1; the paths in the order DonutNN.swift's table lists them.
public enum ConvolutionPath: String, Sendable, CaseIterable, CustomStringConvertible {
    /// im2col + one GEMM per chunk of images; backward two GEMMs and col2im (`Conv2d`).
    case gemm = "im2col+GEMM"
    /// Winograd F(2×2, 3×3) transforms + 16 GEMMs per chunk (`Winograd`); forward only.
    case winograd = "Winograd F(2x2,3x3)"
    /// Direct stencils, one shifted plane per tap in Swift SIMD (`Conv2d.forwardDirect`).
    case stencil = "direct stencil"
    /// The direct path with `StencilAVX2`'s 3×3 / 2×2 FMA stencils.
    case stencilAVX2 = "direct stencil AVX2"
    /// The direct path whose conv planes are pooled in registers, never stored
    /// (`StencilAVX2.stencil3x3Pool`): inference, one input plane; forward only.
    case pooledStencilAVX2 = "pooled stencil AVX2"
    /// Nearest ×2 up-sampling → conv as four 2×2 class convs by GEMM (`UpsampleConv2d`).
    case subPixelGEMM = "sub-pixel GEMM"
    /// Up-sampling → conv as four 2×2 class stencils (one output channel; `UpsampleConv2d`).
    case subPixelStencil = "sub-pixel stencil"
    /// `subPixelStencil` with `StencilAVX2.stencil2x2`.
    case subPixelStencilAVX2 = "sub-pixel stencil AVX2"
    /// A training block conv → BatchNorm → ReLU → pool whole, from the input patches' moments,
    /// conv output never stored (`ConvBatchNormReLUPool`); forward and backward.
    case moments = "moment-based ConvBatchNormReLUPool"
    /// `moments` with the AVX2 stencils (`stencil3x3PoolArgmax` for one even input plane ≥ 16 wide).
    case momentsAVX2 = "moment-based ConvBatchNormReLUPool AVX2"

    public var description: String { rawValue }

    /// Whether the path runs `DonutKernelsAVX2` (Float only).
    public var usesAVX2: Bool {
        switch self {
        case .stencilAVX2, .pooledStencilAVX2, .subPixelStencilAVX2, .momentsAVX2: return true
        default: return false
        }
    }

    /// Whether the path is `UpsampleConv2d`'s (its input is the low-resolution image).
    public var isSubPixel: Bool { self == .subPixelGEMM || self == .subPixelStencil || self == .subPixelStencilAVX2 }
}

extension Conv2d {
    /// The kernel of `forward` for `s` on `target`. `pooled`: the call pools in its epilogue
    /// (`forward(pooled:)`, inference). One input or output channel at stride 1: direct
    /// stencils (AVX2 for 3×3 and 2×2 kernels; with `pooled`, one input plane, even planes ≥ 16
    /// wide, the pooled stencil); else Winograd for 3×3 pad-1 convs on even planes; else GEMM.
    public static func forwardPath(_ s: Conv2dShape, target: KernelTarget, pooled: Bool = false) -> ConvolutionPath {
        if usesDirect(s) {
            if pooled && target.avx2 && pooledStencilFits(s) { return .pooledStencilAVX2 }
            return target.avx2 && hasAVX2Stencil(s) ? .stencilAVX2 : .stencil
        }
        return usesWinograd(s) ? .winograd : .gemm
    }

    /// The kernel of `backward` for `s` on `target`: the direct stencils' adjoints where the
    /// forward is direct, else im2col + GEMM (also behind a Winograd forward).
    public static func backwardPath(_ s: Conv2dShape, target: KernelTarget) -> ConvolutionPath {
        if usesDirect(s) { return target.avx2 && hasAVX2Stencil(s) ? .stencilAVX2 : .stencil }
        return .gemm
    }

    /// Whether `forward` (or `backward`) can run `s` on `path`: the scratch (`scratchCount`) is
    /// sized for the shape's kind, direct or chunked, so a path may differ from the planned one
    /// only within that kind (generic instead of AVX2 stencils, GEMM instead of Winograd).
    public static func admits(_ path: ConvolutionPath, _ s: Conv2dShape, forward: Bool) -> Bool {
        switch path {
        case .gemm: return !usesDirect(s)
        case .winograd: return forward && usesWinograd(s)
        case .stencil: return usesDirect(s)
        case .stencilAVX2: return usesDirect(s)
        case .pooledStencilAVX2: return forward && usesDirect(s) && pooledStencilFits(s)
        default: return false
        }
    }

    /// A 3×3 or 2×2 kernel: the sizes `StencilAVX2` has (others take the generic stencil).
    static func hasAVX2Stencil(_ s: Conv2dShape) -> Bool {
        (s.kernelH == 3 && s.kernelW == 3) || (s.kernelH == 2 && s.kernelW == 2)
    }

    /// The shapes `StencilAVX2.stencil3x3Pool` / `stencil3x3PoolArgmax` take: one input plane,
    /// 3×3, stride 1, padding 1, even sizes and at least 16 columns (a pooled row of 8 lanes).
    static func pooledStencilFits(_ s: Conv2dShape) -> Bool {
        s.inChannels == 1 && s.kernelH == 3 && s.kernelW == 3 && s.stride == 1 && s.padding == 1
            && s.height % 2 == 0 && s.width % 2 == 0 && s.width >= 16
    }
}

extension UpsampleConv2d {
    /// The kernel of `forward` and `backward` for `s` (the conv on the up-sampled image) on
    /// `target`, or nil where the fused layer does not apply (`fuses`: then Upsample2d → Conv2d).
    public static func path(_ s: Conv2dShape, target: KernelTarget) -> ConvolutionPath? {
        guard fuses(s) else { return nil }
        guard usesDirect(s) else { return .subPixelGEMM }
        return target.avx2 ? .subPixelStencilAVX2 : .subPixelStencil
    }

    /// Whether `forward`/`backward` can run `s` on `path`: the GEMM for more than one output
    /// channel, the stencils (either) for one, as `scratchCount` sizes it.
    public static func admits(_ path: ConvolutionPath, _ s: Conv2dShape) -> Bool {
        fuses(s) && (usesDirect(s) ? path == .subPixelStencil || path == .subPixelStencilAVX2 : path == .subPixelGEMM)
    }
}

extension ConvBatchNormReLUPool {
    /// The kernel of a training block whose conv has shape `s` on `target`, or nil where the
    /// moment-based block does not apply (`applies`).
    public static func path(_ s: Conv2dShape, target: KernelTarget) -> ConvolutionPath? {
        guard applies(s) else { return nil }
        return target.avx2 ? .momentsAVX2 : .moments
    }
}
