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

    /// T scratch: the zero-padded input planes of the batch (batch·inC·(H + kH − 1)·(W + kW − 1)).
    public static func scratchCount(_ s: Conv2dShape) -> Int {
        s.batch * s.inChannels * (s.height + s.kernelH - 1) * (s.width + s.kernelW - 1)
    }

    /// Double scratch: per image S and Σ c cᵀ, their totals, per channel H, and the sums.
    public static func doubleScratchCount(_ s: Conv2dShape) -> Int {
        let m = s.patchSize * (s.patchSize + 1)
        return (s.batch + 1) * m + s.outChannels * (s.patchSize + 3) + 1
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
        // Input moments per image (parallel), totalled in image order.
        Parallel.forRanges(s.batch, work: s.batch * plane * m, PatchMoments(moments: perImage, padded: scratch, input: input, shape: s))
        totals.update(repeating: 0, count: m)
        for n in 0..<s.batch {
            for i in 0..<m { totals[i] += perImage[n * m + i] }
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
        // Gc = Σ c cᵀ − S·Sᵀ/P (upper triangle stored row-wise after S, see PatchMoments).
        let pixels = Double(s.batch * plane), sTotal = totals
        func centredGram(_ t: Int, _ u: Int) -> Double {
            let (i, j) = t <= u ? (t, u) : (u, t)
            return totals[patch + triangleIndex(i, j, patch)] - sTotal[i] * sTotal[j] / pixels
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
                for u in 0..<patch { wg += Double(w[u]) * centredGram(u, t) }
                dWeight[c * patch + t] += T(kd * h[c * patch + t] - bd * sTotal[t] - ad * (wg + offset * sTotal[t]))
            }
            dBias[c] += T(kd * localG[c] - bd * pixels - ad * pixels * offset)
        }
    }

    /// Index of (i, j), i ≤ j, in the row-wise upper triangle of an n×n matrix.
    @inline(__always)
    static func triangleIndex(_ i: Int, _ j: Int, _ n: Int) -> Int { i * n - i * (i - 1) / 2 + (j - i) }

    /// Per image n of `images`: its input planes zero-padded into `padded` (kept for the window
    /// pass), then moments[n] = (S (patch), Σ c cᵀ (upper triangle, row-wise)) over its pixels.
    /// Row products are exact in Double (Float · Float) and summed in Double.
    struct PatchMoments<T: GEMMScalar>: ParallelLoop {
        let moments: UnsafeMutablePointer<Double>, padded: UnsafeMutablePointer<T>, input: UnsafePointer<T>, shape: Conv2dShape

        @_specialize(where T == Float)
        func run(_ images: Range<Int>, worker: Int) {
            let s = shape, patch = s.patchSize, m = patch * (patch + 1), taps = s.kernelH * s.kernelW
            let pw = s.width + s.kernelW - 1, ph = s.height + s.kernelH - 1, paddedPlane = ph * pw
            for n in images {
                let planes = padded + n * s.inChannels * paddedPlane, out = moments + n * m
                for ic in 0..<s.inChannels {
                    Conv2d.padPlane(planes + ic * paddedPlane, input + (n * s.inChannels + ic) * s.height * s.width,
                                    s.height, s.width, padY: s.padding, padX: s.padding)
                }
                // Tap t reads plane t / taps at offset (ky, kx) = ((t % taps) / kW, t % kW).
                func origin(_ t: Int) -> UnsafePointer<T> {
                    let tap = t % taps
                    return UnsafePointer(planes + (t / taps) * paddedPlane + (tap / s.kernelW) * pw + tap % s.kernelW)
                }
                for t in 0..<patch {
                    let a = origin(t)
                    var sum = 0.0
                    for y in 0..<s.height { sum += rowDot(a + y * pw, nil, s.width) }
                    out[t] = sum
                    for u in t..<patch {
                        let b = origin(u)
                        var product = 0.0
                        for y in 0..<s.height { product += rowDot(a + y * pw, b + y * pw, s.width) }
                        out[patch + triangleIndex(t, u, patch)] = product
                    }
                }
            }
        }
    }

    /// Σ_i a[i]·b[i] (b nil: Σ a[i]) in Double over n values: Float products are exact in Double.
    @inline(__always)
    static func rowDot<T: GEMMScalar>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>?, _ n: Int) -> Double {
        var i = 0
        var total = 0.0
        if T.self == Float.self {
            let af = a.float, bf = b?.float
            var acc0 = SIMD8<Double>(), acc1 = SIMD8<Double>()
            while i + 16 <= n {
                let x0 = SIMD8<Double>(UnsafeRawPointer(af + i).loadUnaligned(as: SIMD8<Float>.self))
                let x1 = SIMD8<Double>(UnsafeRawPointer(af + i + 8).loadUnaligned(as: SIMD8<Float>.self))
                if let bf {
                    acc0 += x0 * SIMD8<Double>(UnsafeRawPointer(bf + i).loadUnaligned(as: SIMD8<Float>.self))
                    acc1 += x1 * SIMD8<Double>(UnsafeRawPointer(bf + i + 8).loadUnaligned(as: SIMD8<Float>.self))
                } else {
                    acc0 += x0; acc1 += x1
                }
                i += 16
            }
            total = (acc0 + acc1).sum()
        }
        while i < n {
            total += Double(a[i]) * (b.map { Double($0[i]) } ?? 1)
            i += 1
        }
        return total
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
