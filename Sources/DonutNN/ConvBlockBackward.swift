import DonutBLAS

/// The backward of a whole encoder block, conv → BatchNorm → ReLU → MaxPool2d(2, 2), when the
/// conv's input gradient is not needed (the network's first block): the conv's weight and bias
/// gradients straight from ∂L/∂pooled, without the dense ∂L/∂x (the block's largest array, written
/// and read twice by `BatchNormReLUPool.backwardTraining` then `Conv2d.backward`).
///
/// With c_p the conv's input patch at output pixel p (patch values, zero outside), x_p = W·c_p + bias
/// and `BatchNormReLUPool`'s dx_p = k·g_p − b − (x_p − μ)·a (g_p nonzero only at the window maxima):
///
///     dW[oc, t] = Σ_p dx_p·c_p[t] = k·H[oc, t] − b·S[t] − a·(W·Gc + (x̄ − μ)·Sᵀ)[oc, t]
///     dbias[oc] = Σ_p dx_p       = k·Σ_p g_p − b·P − a·P·(x̄ − μ)
///
/// with H[oc, t] = Σ_windows g·c_argmax[t] (one gather per window maximum), S = Σ_p c_p,
/// Gc = Σ_p c_p c_pᵀ − S·Sᵀ/P (the patches' centred Gram matrix, input only) and x̄ = W·S/P + bias
/// the batch's mean of x (P pixels). S and Σ c cᵀ are summed in Double from exact Float products,
/// so the centring loses nothing; the result equals the two-layer backward up to rounding (checked
/// in Double to 1e-10 against `BatchNormReLUPool.backwardTraining` → `Conv2d.backward`).
public enum ConvBlockBackward {
    /// Patches at most this long: the Gram matrix costs patch² products per pixel (the encoder's
    /// first conv: 9).
    public static let maximumPatch = 16

    /// Whether a block whose conv has shape `s` takes this backward: stride 1, same-size output,
    /// a patch of at most `maximumPatch` values, even planes (the 2×2 pool).
    public static func applies(_ s: Conv2dShape) -> Bool {
        s.isSameSizeStride1 && s.patchSize <= maximumPatch && s.height % 2 == 0 && s.width % 2 == 0
    }

    /// T scratch: the zero-padded input planes of the batch (`paddedCount`), then per thread one
    /// image's centred patch columns (patch, H·W) and its Gram matrix (patch²). Depends on
    /// `Parallel.threads`, as `Conv2d.scratchCount`.
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        paddedCount(s) + Parallel.threads * workerScratch(s)
    }

    /// The padded planes, batch·inC·(H + kH − 1)·(W + kW − 1), and 4 elements of slack (the 3×3
    /// gather reads 4-wide rows).
    static func paddedCount(_ s: Conv2dShape) -> Int {
        s.batch * s.inChannels * (s.height + s.kernelH - 1) * (s.width + s.kernelW - 1) + 4
    }

    static func workerScratch(_ s: Conv2dShape) -> Int { s.patchSize * (s.height * s.width + s.patchSize) }

    /// Double scratch: per image and for the batch, S (patch) and a Gram matrix (patch²); per
    /// channel H (patch) and the sums.
    public static func doubleScratchCount(_ s: Conv2dShape) -> Int {
        (s.batch + 1) * s.patchSize * (s.patchSize + 1) + s.outChannels * (s.patchSize + 3) + 1
    }

    /// - dWeight (outC, inC, kH, kW), dBias, dGamma, dBeta (outC): **add** (+=), as the two layers' backwards.
    /// - dPooled, pooled, argmax, pooledInput, mean, invStd, gamma: as `BatchNormReLUPool.backwardTraining`.
    /// - input (batch, inC, H, W): the conv's input; weight, bias: the conv's.
    /// - synchronise: the forward's reducer (Σ g and Σ g·(x − μ) over every replica's batch).
    public static func backward<T: GEMMScalar>(
        dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dPooled: UnsafePointer<T>, pooled: UnsafePointer<T>, argmax: UnsafePointer<Int32>, pooledInput: UnsafePointer<T>,
        input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>,
        gamma: UnsafePointer<T>, mean: UnsafePointer<T>, invStd: UnsafePointer<T>, shape s: Conv2dShape,
        scratch: UnsafeMutablePointer<T>, doubles: UnsafeMutablePointer<Double>, synchronise reduce: BatchNorm2d.Reducer? = nil
    ) {
        precondition(applies(s))
        let patch = s.patchSize, m = patch * (patch + 1), channels = s.outChannels, plane = s.height * s.width
        let perImage = doubles, totals = doubles + s.batch * m, h = totals + m, sums = h + channels * patch
        // Input moments per image (parallel), then the batch's S and centred Gram in image order.
        serialBLAS {
            Parallel.forRanges(s.batch, work: s.batch * plane * patch, PatchMoments(moments: perImage, scratch: scratch, input: input, shape: s))
        }
        let pixels = Double(s.batch * plane), sTotal = totals, gram = totals + patch
        sTotal.update(repeating: 0, count: patch)
        for n in 0..<s.batch {
            for t in 0..<patch { sTotal[t] += perImage[n * m + t] }
        }
        // Σ_p (c − c̄)(c − c̄)ᵀ = Σ_n [G_n + P_n·(c̄_n − c̄)(c̄_n − c̄)ᵀ], G_n centred on image n's mean c̄_n.
        gram.update(repeating: 0, count: patch * patch)
        for n in 0..<s.batch {
            let image = perImage + n * m, g = image + patch, count = Double(plane)
            for t in 0..<patch {
                let dt = image[t] / count - sTotal[t] / pixels
                for u in 0..<patch {
                    gram[t * patch + u] += g[t * patch + u] + count * dt * (image[u] / count - sTotal[u] / pixels)
                }
            }
        }
        // Per channel: Σ g, Σ g·(x − μ) (the BatchNorm sums) and H.
        let gradients = WindowGradients(h: h, sums: sums, dPooled: dPooled, pooled: pooled, argmax: argmax, pooledInput: pooledInput,
                                        mean: mean, padded: scratch, shape: s)
        Parallel.forRanges(channels, work: s.batch * channels * plane / 4 * (patch + 3), gradients)
        for c in 0..<channels {
            BatchNorm2d.addAffineGradients(dGamma, dBeta, channel: c, sumDy: sums[c], sumDyXc: sums[channels + c], invStd: invStd[c])
        }
        let localG = sums + 2 * channels   // this replica's Σ g, kept for the bias gradient
        var total = Double(s.batch * plane)
        if let reduce {
            let shared = reduce.buffer(2 * channels + 1)
            shared.update(from: sums, count: 2 * channels)
            shared[2 * channels] = total
            for c in 0..<channels { localG[c] = sums[c] }
            reduce(shared, 2 * channels + 1)
            sums.update(from: shared, count: 2 * channels)
            total = shared[2 * channels]
        } else {
            for c in 0..<channels { localG[c] = sums[c] }
        }
        for c in 0..<channels {
            let (k, a, b) = BatchNorm2d.inputGradientCoefficients(gamma: gamma[c], invStd: invStd[c], sumDy: sums[c],
                                                                 sumDyXc: sums[channels + c], total: total)
            let w = weight + c * patch, kd = Double(k), ad = Double(a), bd = Double(b)
            var xMean = Double(bias[c])
            for t in 0..<patch { xMean += Double(w[t]) * sTotal[t] / pixels }
            let offset = xMean - Double(mean[c])
            for t in 0..<patch {
                var wg = 0.0
                for u in 0..<patch { wg += Double(w[u]) * gram[u * patch + t] }
                dWeight[c * patch + t] += T(kd * h[c * patch + t] - bd * sTotal[t] - ad * (wg + offset * sTotal[t]))
            }
            dBias[c] += T(kd * localG[c] - bd * pixels - ad * pixels * offset)
        }
    }

    /// Per image n of `images`: its input planes zero-padded into the scratch's first part (kept
    /// for the window pass), then moments[n] = (S_n (patch), G_n (patch × patch)): the sums of its
    /// patches and their Gram matrix centred on the image's mean patch, one GEMM over its centred
    /// columns (the centring keeps Float accumulation from cancelling; `backward` recombines the
    /// images exactly in Double).
    struct PatchMoments<T: GEMMScalar>: ParallelLoop {
        let moments: UnsafeMutablePointer<Double>, scratch: UnsafeMutablePointer<T>, input: UnsafePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, patch = s.patchSize, m = patch * (patch + 1), taps = s.kernelH * s.kernelW, plane = s.height * s.width
            let pw = s.width + s.kernelW - 1, paddedPlane = (s.height + s.kernelH - 1) * pw
            let columns = scratch + paddedCount(s) + worker * workerScratch(s), gram = columns + patch * plane
            for n in images {
                let planes = scratch + n * s.inChannels * paddedPlane, out = moments + n * m
                for ic in 0..<s.inChannels {
                    Conv2d.padPlane(planes + ic * paddedPlane, input + (n * s.inChannels + ic) * plane,
                                    s.height, s.width, padY: s.padding, padX: s.padding)
                }
                for t in 0..<patch {
                    // Tap t reads plane t / taps at offset (ky, kx) = ((t % taps) / kW, t % kW).
                    let tap = t % taps, row = columns + t * plane
                    let origin = planes + (t / taps) * paddedPlane + (tap / s.kernelW) * pw + tap % s.kernelW
                    for y in 0..<s.height { (row + y * s.width).update(from: origin + y * pw, count: s.width) }
                    let sum = Parallel.sum(UnsafePointer(row), plane)
                    out[t] = Double(sum)
                    let mean = sum / T(plane)
                    for i in 0..<plane { row[i] -= mean }
                }
                T.gemm(transA: false, transB: true, m: patch, n: patch, k: plane, alpha: 1, a: columns, lda: plane,
                       b: columns, ldb: plane, beta: 0, c: gram, ldc: patch)
                for i in 0..<(patch * patch) { out[patch + i] = Double(gram[i]) }
            }
        }
    }

    /// One plane's windows for a one-channel 3×3 conv: Σ g·(its maximum's patch) as three 4-wide
    /// rows (the 4th lane unused), Σ g and Σ g·(x − μ), in Float lanes. Branch-free: a shut window
    /// (pooled ≤ 0 or NaN) adds g = 0, and the maximum's row within its window is a select — both
    /// are coin flips that a branch mispredicted half the time. `plane`: the padded input plane
    /// (width + 2), `base`: the flat index of the conv output plane that argmax indexes into.
    @inline(__always)
    static func gather3x3(dPooled: UnsafePointer<Float>, pooled: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                          pooledInput: UnsafePointer<Float>, mu: Float, plane: UnsafePointer<Float>, base: Int, width w: Int,
                          height: Int) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, Float, Float) {
        let pw = w + 2, ow = w / 2, oh = height / 2
        var r0 = SIMD4<Float>(), r1 = SIMD4<Float>(), r2 = SIMD4<Float>(), sg: Float = 0, sgx: Float = 0
        for oy in 0..<oh {
            let o = oy * ow, top = base + 2 * oy * w, corners = UnsafeRawPointer(plane + 2 * oy * pw)
            for ox in 0..<ow {
                let i = o &+ ox
                let open: UInt32 = pooled[i] > 0 ? ~0 : 0   // a mask, not a branch
                let g = Float(bitPattern: dPooled[i].bitPattern & open)
                sg += g; sgx += g * (pooledInput[i] - mu)
                // Offset within the window's two rows, then the padded-plane offset of the patch corner.
                let r = Int(argmax[i]) &- top, down = r >= w ? pw &- w : 0
                let f = corners + 4 * (r &+ down), gf = SIMD4<Float>(repeating: g)
                r0 += gf * f.loadUnaligned(as: SIMD4<Float>.self)
                r1 += gf * f.loadUnaligned(fromByteOffset: 4 * pw, as: SIMD4<Float>.self)
                r2 += gf * f.loadUnaligned(fromByteOffset: 8 * pw, as: SIMD4<Float>.self)
            }
        }
        return (r0, r1, r2, sg, sgx)
    }

    /// Per channel c of `channels`, over every image: sums[c] = Σ g, sums[channels + c] =
    /// Σ g·(x − μ) (g = dPooled·[pooled > 0], x = pooledInput, as `BatchNormReLUPool`) and
    /// h[c, t] = Σ g·c_argmax[t], gathering each maximum's patch from the padded planes.
    struct WindowGradients<T: GEMMScalar>: ParallelLoop {
        let h: UnsafeMutablePointer<Double>, sums: UnsafeMutablePointer<Double>
        let dPooled: UnsafePointer<T>, pooled: UnsafePointer<T>, argmax: UnsafePointer<Int32>, pooledInput: UnsafePointer<T>
        let mean: UnsafePointer<T>, padded: UnsafePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            let s = shape, patch = s.patchSize, taps = s.kernelH * s.kernelW, channels = s.outChannels
            let w = s.width, plane = s.height * w, ow = w / 2, oh = s.height / 2
            let pw = w + s.kernelW - 1, paddedPlane = (s.height + s.kernelH - 1) * pw
            withUnsafeTemporaryAllocation(of: Double.self, capacity: patch) { acc in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: patch) { offsets in
                    // Offset of tap t from a pixel's top-left patch corner in the padded planes.
                    for t in 0..<patch {
                        let tap = t % taps
                        offsets[t] = (t / taps) * paddedPlane + (tap / s.kernelW) * pw + tap % s.kernelW
                    }
                    for c in range {
                        let mu = mean[c]
                        var sumG = 0.0, sumGX = 0.0
                        acc.initialize(repeating: 0)
                        for n in 0..<s.batch {
                            let q = n * channels + c, base = q * plane, planes = padded + n * s.inChannels * paddedPlane
                            var sg = T(0), sgx = T(0)
                            if T.self == Float.self && patch == 9 && taps == 9 {
                                let o = q * oh * ow
                                let (r0, r1, r2, g, gx) = gather3x3(dPooled: (dPooled + o).float, pooled: (pooled + o).float, argmax: argmax + o,
                                                                    pooledInput: (pooledInput + o).float, mu: Float(mu), plane: planes.float,
                                                                    base: base, width: w, height: s.height)
                                for kx in 0..<3 {
                                    acc[kx] += Double(r0[kx]); acc[3 + kx] += Double(r1[kx]); acc[6 + kx] += Double(r2[kx])
                                }
                                sg = T(g); sgx = T(gx)
                            } else {
                                // Each open window: g, and its maximum's patch from the padded planes.
                                for oy in 0..<oh {
                                    let o = (q * oh + oy) * ow, secondRow = base + (2 * oy + 1) * w
                                    for ox in 0..<ow {
                                        guard pooled[o + ox] > 0 else { continue }
                                        let g = dPooled[o + ox], index = Int(argmax[o + ox])
                                        sg += g; sgx += g * (pooledInput[o + ox] - mu)
                                        let y = index >= secondRow ? 2 * oy + 1 : 2 * oy, x = index - base - y * w
                                        let corner = planes + y * pw + x, gd = Double(g)
                                        for t in 0..<patch { acc[t] += gd * Double(corner[offsets[t]]) }
                                    }
                                }
                            }
                            sumG += Double(sg); sumGX += Double(sgx)
                        }
                        for t in 0..<patch { h[c * patch + t] = acc[t] }
                        sums[c] = sumG; sums[channels + c] = sumGX
                    }
                }
            }
        }
    }
}
