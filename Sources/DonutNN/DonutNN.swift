// DonutNN: the CNN core, llm.c style. Each layer is a stateless enum with forward and backward
// side by side; arguments in the order outputs, inputs, parameters, cached values, sizes.
// Backward adds (+=) into parameter gradients and writes (=) input gradients; no allocation
// inside forward/backward (scratch sizes from `scratchCount`). Layout NCHW, row-major; generic
// over GEMMScalar (Float runs, Double checks against finite differences in DonutNNTests). Every Float kernel
// (the `T.self == Float.self` branches, the AVX2 stencils) is checked against Double within a bound derived from
// Float rounding: ConvolutionFloatTests (each ConvolutionPath but moments), BatchNormFloatTests, and
// FusedBlockFloatTests (MaxPool2d, BatchNormReLUPool, ConvBatchNormReLUPool on moments and momentsAVX2).
//   ConvolutionPlan.swift ConvolutionPath (which kernel runs a conv) and the functions that decide it; CPUFeatures,
//                         KernelTarget (what T and the CPU allow)
//   Conv2d.swift          Conv2dShape, Conv2d (im2col + one GEMM per chunk of images, col2im backward)
//   WinogradConv2d.swift  Conv2d's forward for 3×3 pad-1 convs on even planes: Winograd F(2×2, 3×3), 16 GEMMs per chunk
//   DirectConv2d.swift    Conv2d's direct stencil path (one input or one output channel; the Float 3×3 and 2×2
//                         stencils of the DonutKernelsAVX2 module on the AVX2 paths)
//   Upsample2d.swift      nearest ×s upsampling (the decoder: upsample then conv)
//   UpsampleConv2d.swift  nearest ×2 upsample → 3×3 conv fused (sub-pixel: four 2×2 convs on the low-res input,
//                         as class GEMMs, or 2×2 direct stencils for one output channel)
//   BatchNorm2d.swift     training (batch statistics, PyTorch running-stat update) and eval
//   BatchNormReLUPool.swift  training BatchNorm → ReLU → 2×2 max pool fused (the encoder block's tail),
//                         batch statistics from the conv's per-plane statistics
//   FloatKernels.swift    Float SIMD loops the generic layers call for T == Float (epilogue affine, 2×2 pools,
//                         BatchNorm sums and gradients, sub-pixel interleave); Winograd's are in WinogradConv2d.swift
//   Activations.swift     ReLU, ScaledTanh (LeCun 1.7159·tanh(2x/3))
//   MaxPool2d.swift       k×k stride-s max pooling with an Int32 argmax cache
//   Linear.swift          y = x·Wᵀ + b by GEMM
//   Dropout.swift         inverted dropout, mask cached, seeded by SplitMix64
//   Losses.swift          MAELoss, MSELoss (value and gradient w.r.t. the prediction)
//   Random.swift          SplitMix64 (seeded initialisation and dropout masks)
//   ParameterStore.swift  flat parameter/gradient/moment buffers, named views, groups, init helpers
//   AdamW.swift           torch.optim.AdamW over the flat buffers, per-group lr and weight decay
//   Parallel.swift        loops over the cores as `ParallelLoop` values (own range first, then the back of the
//                         others': items computed whole by one thread, results thread-count independent)
//   WorkerPool.swift      the pthreads behind `Parallel` (spin, then sleep; no allocation per job)
//
// Convolution kernels (`ConvolutionPath`, ConvolutionPlan.swift). Each conv layer's kernel, forward and backward,
// is decided once from its shape, the scalar type and the CPU (`KernelTarget`: the AVX2 + FMA stencils for Float
// where CPUID has them, `DONUT_NO_AVX2=1` turns them off); the layers take the decision as `path:` and a network
// keeps all of them (DonutCore's `NetworkPlan`, printed by `donut bench train|infer --show-plan` and by
// train, infer, refine and reprocess at `--verbose`).
//   path                 forward/backward  taken when (decided by)
//   gemm                 both              no other path fits; backward of every conv with more than one input and
//                                          output channel (`Conv2d.forwardPath`, `backwardPath`)
//   winograd             forward           3×3, stride 1, pad 1, even planes, >1 input and output channel (encoder 2…)
//   stencil              both              stride 1 with one input or one output channel, generic kernels
//                                          (Double; Float without AVX2; kernels other than 3×3 and 2×2)
//   stencilAVX2          both              as `stencil`, Float 3×3 or 2×2 on an AVX2 + FMA CPU
//   pooledStencilAVX2    forward           inference with the pool in the epilogue, one input plane, 3×3 pad 1,
//                                          even planes ≥ 16 wide, Float on AVX2 (the encoder's first block)
//   subPixelGEMM         both              up ×2 → 3×3 pad 1 on even planes, >1 input and output channel
//                                          (`UpsampleConv2d.path`; the decoder's blocks but the last)
//   subPixelStencil(AVX2) both             up ×2 → 3×3 with one output channel (the decoder's last block)
//   moments(AVX2)        both              training without dropout, first encoder block: stride 1, same size,
//                                          patch ≤ 16, even planes (`ConvBatchNormReLUPool.path`)
import DonutBLAS
