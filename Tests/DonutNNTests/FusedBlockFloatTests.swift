import XCTest
import DonutBLAS
import DonutNN

/// The Float kernels of the encoder's pooling blocks against Double on the same inputs (Float
/// values, exact in Double), within bounds derived from Float rounding as in
/// `ConvolutionFloatTests`: a value an expression tree of depth D computes is within γ_D·E of
/// the exact value (E the tree on absolute values, γ_D = D·u/(1 − D·u)), and the tolerance is
/// `ConvolutionFloatTests.tolerance(depth:)` (Float's γ_D plus the Double reference's). A max
/// pool and ReLU are 1-Lipschitz: a pooled value takes the largest bound of its window.
///
/// - `MaxPool2d` 2×2 (`FloatKernels.maxPool2ArgmaxRow`, 8 windows a step): a max rounds
///   nothing, so Float equals Double exactly, argmax included (ties: first; NaN wins).
/// - `BatchNormReLUPool` (the blocks after the first in a training pass without dropout) and
///   `ConvBatchNormReLUPool` on `.moments` / `.momentsAVX2` (the first block): the bounds of
///   each quantity are derived where it is checked (`checkBatchNormReLUPool`, `checkMoments`).
/// Backwards run from the same cache in both types (the Float forward's statistics, pooled
/// values, argmax and conv outputs at the maxima), so the ReLU gate and the windows' maxima
/// agree and only the backward's own rounding is compared.
final class FusedBlockFloatTests: XCTestCase {
    func tolerance(_ depth: Int) -> Double { ConvolutionFloatTests.tolerance(depth: depth) }

    /// |observed − expected| ≤ tolerance(depth)·magnitude (NaN fails); reports the first failure.
    func assertWithin(_ observed: Double, _ expected: Double, magnitude: Double, depth: Int, _ label: @autoclosure () -> String,
                      file: StaticString = #filePath, line: UInt = #line) -> Bool {
        let bound = tolerance(depth) * magnitude, error = abs(observed - expected)
        if error <= bound { return true }
        XCTFail("\(label()): Float \(observed), Double \(expected), |error| \(error) > γ_\(depth)·E = \(bound)", file: file, line: line)
        return false
    }

    /// The flat indices of window (q, oy, ox) of a 2×2 stride-2 pool over planes of h×w.
    func window(_ q: Int, _ oy: Int, _ ox: Int, height h: Int, width w: Int) -> [Int] {
        let top = q * h * w + 2 * oy * w + 2 * ox
        return [top, top + 1, top + w, top + w + 1]
    }

    // MARK: MaxPool2d

    func testMaxPoolInFloatEqualsDouble() {
        var rng = SplitMix64(seed: 900)
        for (b, c, h, w) in [(2, 3, 16, 16), (1, 2, 10, 35), (3, 1, 7, 17)] {
            let count = b * c * h * w, pooledCount = b * c * (h / 2) * (w / 2)
            var x = randomValues(count, &rng).map(Float.init)
            for i in stride(from: 0, to: count - 1, by: 7) { x[i + 1] = x[i] }   // ties inside windows
            x[count / 3] = .nan
            func pool<T: GEMMScalar>(_: T.Type) -> (values: [T], argmax: [Int32]) {
                let input = Buffer(x.map { T(Double($0)) }), output = Buffer<T>(repeating: 0, count: pooledCount)
                var argmax = [Int32](repeating: -1, count: pooledCount)
                argmax.withUnsafeMutableBufferPointer {
                    MaxPool2d.forward(output: output.pointer, argmax: $0.baseAddress!, input: input.const, batch: b, channels: c,
                                      height: h, width: w)
                }
                defer { keepAlive(input, output) }
                return (output.array, argmax)
            }
            let f = pool(Float.self), d = pool(Double.self)
            XCTAssertEqual(f.argmax, d.argmax, "argmax (\(b), \(c), \(h), \(w))")
            for i in 0..<pooledCount where !(f.values[i].isNaN && d.values[i].isNaN) {
                XCTAssertEqual(Double(f.values[i]), d.values[i], "pooled[\(i)] (\(b), \(c), \(h), \(w))")
            }
            XCTAssert(f.values.contains { $0.isNaN }, "a NaN in a window wins")
        }
    }

    // MARK: BatchNormReLUPool

    /// `BatchNormReLUPool` in Float (`Conv2d.affine` → `FloatKernels.affine`, `maxPool2ArgmaxRow`;
    /// backward `batchNormGradientSums`, `batchNormBaseGradient`) against Double. Both take the
    /// same plane statistics (exact sums in Double), from which the batch statistics are
    /// computed in Double and rounded to T: mean, 1/σ and the running statistics are Float's
    /// rounding of Double's, exactly.
    ///
    /// Forward, against y = max(s·(x − μ) + β, 0) in Double with Float's μ and 1/σ (s = γ·inv):
    /// Float rounds s, μ·s, β − μ·s, x·s and the sum (≤ 5 roundings on any path):
    /// |δy| ≤ γ_5·(|s|(|x| + |μ|) + |β|). argmax names a window element whose y is within twice
    /// that of the window's maximum, and pooledInput is x there, exactly.
    ///
    /// Backward (M = batch·H·W values per channel, Q = pooled values per plane, B = batch; g = the
    /// upstream gradient where the window is open, G = Σ|g|, GX = Σ|g||x − μ| over the windows):
    /// Σg and Σg(x − μ) per plane in Float (depth Q, Q + 2), planes totalled in Double (B), so
    /// dβ = T(Σg): depth Q + B + 1, E = G; dγ = T(Σg(x − μ)·inv): Q + B + 4, E = inv·GX;
    /// k = γ·inv (1), b = k·T(Σg/M) (Q + B + 4), a = k·T(Σg(x − μ)·inv/M)·inv (Q + B + 7);
    /// dx = −b − (x − μ)·a (+ k·g at a window's maximum): Q + B + 12,
    /// E = |k|g + |k|G/M + |x − μ||k|inv²GX/M; Σdx (the conv bias gradient): the plane's dx
    /// summed in Float (P = H·W) and the maxima's k·g, totalled in Double and rounded:
    /// Q + B + 14 + P, E = Σ E(dx).
    func checkBatchNormReLUPool(batch b: Int, channels c: Int, height h: Int, width w: Int, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let plane = h * w, count = b * c * plane, oh = h / 2, ow = w / 2, pooledPlane = oh * ow, pooledCount = b * c * pooledPlane
        let m = Double(b * plane)
        let x = randomValues(count, &rng, -1, 2).map(Float.init), dPooled = randomValues(pooledCount, &rng).map(Float.init)
        let gamma = (0..<c).map { k in Float((k % 2 == 0 ? 1.0 : -1.0) * rng.uniform(0.5, 1.5)) }
        let beta = randomValues(c, &rng, -0.3, 0.3).map(Float.init)
        let label = "BatchNormReLUPool (\(b), \(c), \(h), \(w))"
        var statistics = [Double](repeating: 0, count: 2 * b * c)
        for q in 0..<(b * c) {
            let v = x[(q * plane)..<((q + 1) * plane)].map(Double.init), sum = v.reduce(0, +), mean = sum / Double(plane)
            statistics[2 * q] = sum; statistics[2 * q + 1] = v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        }

        func forward<T: GEMMScalar>(_: T.Type) -> (pooled: [T], argmax: [Int32], pooledInput: [T], statistics: [T]) {
            let input = Buffer(x.map { T(Double($0)) }), g = Buffer(gamma.map { T(Double($0)) }), be = Buffer(beta.map { T(Double($0)) })
            let stats = Buffer(statistics)
            let pooled = Buffer<T>(repeating: .nan, count: pooledCount), pooledInput = Buffer<T>(repeating: .nan, count: pooledCount)
            let mean = Buffer<T>(repeating: .nan, count: c), invStd = Buffer<T>(repeating: .nan, count: c)
            let runningMean = Buffer<T>(repeating: 0.25, count: c), runningVar = Buffer<T>(repeating: 1.5, count: c)
            var argmax = [Int32](repeating: -1, count: pooledCount)
            argmax.withUnsafeMutableBufferPointer {
                BatchNormReLUPool.forwardTraining(pooled: pooled.pointer, argmax: $0.baseAddress!, pooledInput: pooledInput.pointer,
                                                  mean: mean.pointer, invStd: invStd.pointer, runningMean: runningMean.pointer,
                                                  runningVar: runningVar.pointer, input: input.const, planeStatistics: stats.const,
                                                  gamma: g.const, beta: be.const, batch: b, channels: c, height: h, width: w)
            }
            defer { keepAlive(input, g, be, stats, pooled, pooledInput, mean, invStd, runningMean, runningVar) }
            return (pooled.array, argmax, pooledInput.array, mean.array + invStd.array + runningMean.array + runningVar.array)
        }
        let f = forward(Float.self), d = forward(Double.self)
        XCTAssertEqual(f.statistics, d.statistics.map { Float($0) }, "\(label): mean, 1/σ, running statistics are Double's rounded")
        let mu = (0..<c).map { Double(f.statistics[$0]) }, inv = (0..<c).map { Double(f.statistics[c + $0]) }
        for q in 0..<(b * c) {
            let ch = q % c, s = Double(gamma[ch]) * inv[ch]
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let i = (q * oh + oy) * ow + ox, idx = window(q, oy, ox, height: h, width: w)
                    let y = idx.map { max(s * (Double(x[$0]) - mu[ch]) + Double(beta[ch]), 0) }
                    let e = idx.map { abs(s) * (abs(Double(x[$0])) + abs(mu[ch])) + abs(Double(beta[ch])) }.max()!
                    guard assertWithin(Double(f.pooled[i]), y.max()!, magnitude: e, depth: 5, "\(label) pooled[\(i)]") else { return }
                    guard let k = idx.firstIndex(of: Int(f.argmax[i])) else { return XCTFail("\(label): argmax[\(i)] outside its window") }
                    XCTAssertGreaterThanOrEqual(y[k], y.max()! - 2 * tolerance(5) * e, "\(label): argmax[\(i)] is a window maximum")
                    XCTAssertEqual(f.pooledInput[i], x[Int(f.argmax[i])], "\(label): pooledInput[\(i)] is x at the argmax")
                }
            }
        }
        XCTAssertTrue(zip(f.pooled, d.pooled).contains { Double($0) != $1 }, "\(label): Float pooled equals Double everywhere")

        func backward<T: GEMMScalar>(_: T.Type) -> (dx: [T], dGamma: [T], dBeta: [T], dBias: [T]) {
            func t(_ v: [Float]) -> Buffer<T> { Buffer(v.map { T(Double($0)) }) }
            let input = t(x), dp = t(dPooled), g = t(gamma), pooled = t(f.pooled), pooledInput = t(f.pooledInput)
            let mean = t(Array(f.statistics[0..<c])), invStd = t(Array(f.statistics[c..<(2 * c)]))
            let dx = Buffer<T>(repeating: .nan, count: count), dGamma = Buffer<T>(repeating: 0, count: c)
            let dBeta = Buffer<T>(repeating: 0, count: c), dBias = Buffer<T>(repeating: 0, count: c)
            f.argmax.withUnsafeBufferPointer {
                BatchNormReLUPool.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dInputSums: dBias.pointer,
                                                   dPooled: dp.const, pooled: pooled.const, argmax: $0.baseAddress!,
                                                   pooledInput: pooledInput.const, input: input.const, gamma: g.const, mean: mean.const,
                                                   invStd: invStd.const, batch: b, channels: c, height: h, width: w)
            }
            defer { keepAlive(input, dp, g, pooled, pooledInput, mean, invStd, dx, dGamma, dBeta, dBias) }
            return (dx.array, dGamma.array, dBeta.array, dBias.array)
        }
        let fb = backward(Float.self), db = backward(Double.self)
        // G, GX per channel and |g| at each window's maximum.
        var sumG = [Double](repeating: 0, count: c), sumGX = sumG, gAt = [Double](repeating: 0, count: count)
        for i in 0..<pooledCount where f.pooled[i] > 0 {
            let ch = (i / pooledPlane) % c, g = abs(Double(dPooled[i]))
            sumG[ch] += g; sumGX[ch] += g * abs(Double(f.pooledInput[i]) - mu[ch]); gAt[Int(f.argmax[i])] = g
        }
        let depth = pooledPlane + b
        var sumE = [Double](repeating: 0, count: c)
        for i in 0..<count {
            let ch = (i / plane) % c, k = abs(Double(gamma[ch])) * inv[ch]
            let e = k * gAt[i] + k * sumG[ch] / m + abs(Double(x[i]) - mu[ch]) * k * inv[ch] * inv[ch] * sumGX[ch] / m
            sumE[ch] += e
            guard assertWithin(Double(fb.dx[i]), db.dx[i], magnitude: e, depth: depth + 12, "\(label) dx[\(i)]") else { break }
        }
        for ch in 0..<c {
            _ = assertWithin(Double(fb.dBeta[ch]), db.dBeta[ch], magnitude: sumG[ch], depth: depth + 1, "\(label) dβ[\(ch)]")
            _ = assertWithin(Double(fb.dGamma[ch]), db.dGamma[ch], magnitude: inv[ch] * sumGX[ch], depth: depth + 4, "\(label) dγ[\(ch)]")
            _ = assertWithin(Double(fb.dBias[ch]), db.dBias[ch], magnitude: sumE[ch], depth: depth + 14 + plane, "\(label) Σdx[\(ch)]")
        }
        XCTAssertTrue(zip(fb.dx, db.dx).contains { Double($0) != $1 }, "\(label): Float dx equals Double everywhere")
    }

    /// The composition `statisticsThenBatchNormReLUPool` of a training pass without dropout:
    /// planes through the 8-window and 16-lane loops and their scalar tails (odd sizes).
    func testBatchNormReLUPoolInFloat() {
        checkBatchNormReLUPool(batch: 4, channels: 3, height: 16, width: 16, seed: 910)
        checkBatchNormReLUPool(batch: 2, channels: 2, height: 20, width: 34, seed: 911)
        checkBatchNormReLUPool(batch: 3, channels: 2, height: 9, width: 17, seed: 912)
    }

    // MARK: ConvBatchNormReLUPool

    /// `ConvBatchNormReLUPool` in Float on `path` (asserted to be the one planned for `target`)
    /// against Double on `.moments`, and against the naive conv in Double.
    ///
    /// Statistics. Per image n and input channel, the padded planes centred on the image's mean
    /// pixel, c̃; a patch value t at padded offset p is c̃_t(p). Float sums Σ c̃_t over a run of
    /// R = (H − 1)·pw + W offsets and the products Σ c̃_t·c̃_u (`dot`), then subtracts the same
    /// sums over the pw − W columns between rows (Z); the rest is Double. With
    /// q(p) = Σ_t |W_t||c̃_t(p)| for the channel's weights W:
    /// - the Gram matrix's quadratic form W·G·Wᵀ: E_G = Σ_R q² + Σ_Z q², depth ≤ R + 4 (a product,
    ///   the sum, the centring, the subtraction);
    /// - the patch sums: |W·δS̃| ≤ γ·B, B = Σ_R q + Σ_Z q; moving G to the image's mean patch
    ///   (−S̃S̃ᵀ/P) adds E = 2B²/P, recombining the images about the batch mean
    ///   (P·(m_n − c̄)(m_n − c̄)ᵀ) adds E = 2|x̄_n − x̄|(B_n + mean B), x̄_n the image's mean conv output;
    /// - μ = W·S/P + bias: E = Σ_n B_n/M + |μ|; v = Σ(x − μ)² = the sum over images of the three:
    ///   E_v, and 1/σ = (v/M + ε)^(−1/2): E = ½·inv³·E_v/M + inv; depth R + 10 for both (the Double
    ///   steps and the rounding to Float included).
    /// Forward, against y = max(s·(x − μ) + β, 0) in Double with Float's μ and 1/σ, x the naive conv:
    /// Float's conv (bias + patch products, depth patch + 2) then the affine of `BatchNormReLUPool`
    /// (5): depth patch + 7, E = |s|(E_x + |μ|) + |β|, E_x the conv on absolute values; argmax as
    /// there, and pooledInput is x at the argmax within γ_{patch+2}·E_x.
    /// Backward from the same cache (and the forward's moments) in both types: Σg, Σg(x − μ) as in
    /// `BatchNormReLUPool` and H_t = Σ g·c_t(argmax) per plane in Float (Q + 1), so with
    /// D = Q + B: dW_t = k·H_t − b·S_t − a·(W·G + offset·S)_t: depth D + 9,
    /// E = |k|·ΣgAbs·|c_t| + |k|G/M·|S_t| + |k|inv²GX/M·|(W·G + offset·S)_t|; dbias = k·Σg − b·P − a·P·offset:
    /// D + 9, E = 2|k|G + |k|inv²GX·|offset|; dγ, dβ as in `BatchNormReLUPool`.
    func checkMoments(_ s: Conv2dShape, path: ConvolutionPath, target: KernelTarget, seed: UInt64,
                      file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ConvBatchNormReLUPool.path(s, target: target), path, "\(s): planned", file: file, line: line)
        var rng = SplitMix64(seed: seed)
        let outC = s.outChannels, plane = s.height * s.width, oh = s.height / 2, ow = s.width / 2, pooledPlane = oh * ow
        let pooledCount = s.batch * outC * pooledPlane, patch = s.patchSize, taps = s.kernelH * s.kernelW
        let pixels = Double(s.batch * plane)
        // A positive input (frames are photon counts): the case the centred moments are for.
        let x = randomValues(s.inputCount, &rng, 0, 3).map(Float.init), weight = randomValues(s.weightCount, &rng).map(Float.init)
        let bias = randomValues(outC, &rng).map(Float.init), beta = randomValues(outC, &rng, -0.3, 0.3).map(Float.init)
        let gamma = (0..<outC).map { k in Float((k % 2 == 0 ? 1.0 : -1.0) * rng.uniform(0.5, 1.5)) }
        let dPooled = randomValues(pooledCount, &rng).map(Float.init)
        let label = "\(path) \(s)"
        let d64 = { (v: [Float]) in v.map(Double.init) }

        func forward<T: GEMMScalar>(_: T.Type, _ p: ConvolutionPath)
            -> (pooled: [T], argmax: [Int32], pooledInput: [T], mean: [T], invStd: [T], padded: [T], moments: [Double]) {
            func t(_ v: [Float]) -> Buffer<T> { Buffer(v.map { T(Double($0)) }) }
            let input = t(x), w = t(weight), bb = t(bias), g = t(gamma), be = t(beta)
            let pooled = Buffer<T>(repeating: .nan, count: pooledCount), pooledInput = Buffer<T>(repeating: .nan, count: pooledCount)
            let mean = Buffer<T>(repeating: .nan, count: outC), invStd = Buffer<T>(repeating: .nan, count: outC)
            let runningMean = Buffer<T>(repeating: 0.25, count: outC), runningVar = Buffer<T>(repeating: 1.5, count: outC)
            let padded = Buffer<T>(repeating: .nan, count: ConvBatchNormReLUPool.paddedCount(s))
            let moments = Buffer<Double>(repeating: .nan, count: ConvBatchNormReLUPool.momentsCount(s))
            let scratch = Buffer<T>(repeating: .nan, count: ConvBatchNormReLUPool.scratchCount(s))
            var argmax = [Int32](repeating: -1, count: pooledCount)
            argmax.withUnsafeMutableBufferPointer {
                ConvBatchNormReLUPool.forwardTraining(pooled: pooled.pointer, argmax: $0.baseAddress!, pooledInput: pooledInput.pointer,
                                                      mean: mean.pointer, invStd: invStd.pointer, runningMean: runningMean.pointer,
                                                      runningVar: runningVar.pointer, input: input.const, weight: w.const, bias: bb.const,
                                                      gamma: g.const, beta: be.const, shape: s, padded: padded.pointer,
                                                      moments: moments.pointer, scratch: scratch.pointer, path: p)
            }
            defer { keepAlive(input, w, bb, g, be, pooled, pooledInput, mean, invStd, runningMean, runningVar, padded, moments, scratch) }
            return (pooled.array, argmax, pooledInput.array, mean.array, invStd.array, padded.array, moments.array)
        }
        let f = forward(Float.self, path), d = forward(Double.self, .moments)

        // The conv in Double, on values and on absolute values; each image's mean conv output.
        let conv = naiveConv2d(d64(x), d64(weight), d64(bias), s)
        let convAbs = naiveConv2d(d64(x).map(abs), d64(weight).map(abs), d64(bias).map(abs), s)
        let pw = s.width + s.kernelW - 1, ph = s.height + s.kernelH - 1, paddedPlane = ph * pw
        let run = (s.height - 1) * pw + s.width
        let between = (0..<(s.height - 1)).flatMap { y in (s.width..<pw).map { y * pw + $0 } }
        func tapOffset(_ t: Int) -> Int { (t / taps) * paddedPlane + ((t % taps) / s.kernelW) * pw + (t % taps) % s.kernelW }
        // Statistics' magnitudes per channel: E_v, Σ_n B_n.
        var eV = [Double](repeating: 0, count: outC), sumB = eV
        var imageB = [[Double]](repeating: [Double](repeating: 0, count: s.batch), count: outC)
        var imageMean = imageB, batchMean = [Double](repeating: 0, count: outC)
        for n in 0..<s.batch {
            // The image's padded planes, centred on each input channel's mean pixel.
            var centred = [Double](repeating: 0, count: s.inChannels * paddedPlane)
            for ic in 0..<s.inChannels {
                let xs = x[((n * s.inChannels + ic) * plane)..<((n * s.inChannels + ic + 1) * plane)].map(Double.init)
                let a = xs.reduce(0, +) / Double(plane)
                for yy in 0..<ph {
                    for xx in 0..<pw {
                        let sy = yy - s.padding, sx = xx - s.padding
                        let v = sy >= 0 && sy < s.height && sx >= 0 && sx < s.width ? xs[sy * s.width + sx] : 0
                        centred[ic * paddedPlane + yy * pw + xx] = v - a
                    }
                }
            }
            for c in 0..<outC {
                func q(_ p: Int) -> Double { (0..<patch).reduce(0) { $0 + abs(Double(weight[c * patch + $1])) * abs(centred[tapOffset($1) + p]) } }
                let qRun = (0..<run).map(q), qBetween = between.map(q)
                let gram = qRun.reduce(0) { $0 + $1 * $1 } + qBetween.reduce(0) { $0 + $1 * $1 }
                let bn = qRun.reduce(0, +) + qBetween.reduce(0, +)
                eV[c] += gram + 2 * bn * bn / Double(plane)
                imageB[c][n] = bn; sumB[c] += bn
                let o = (n * outC + c) * plane
                imageMean[c][n] = conv[o..<(o + plane)].reduce(0, +) / Double(plane)
                batchMean[c] += imageMean[c][n] / Double(s.batch)
            }
        }
        let statisticsDepth = run + 10
        for c in 0..<outC {
            let meanB = sumB[c] / Double(s.batch)
            for n in 0..<s.batch { eV[c] += 2 * abs(imageMean[c][n] - batchMean[c]) * (imageB[c][n] + meanB) }
            let inv = d.invStd[c]
            _ = assertWithin(Double(f.mean[c]), d.mean[c], magnitude: sumB[c] / pixels + abs(d.mean[c]), depth: statisticsDepth,
                             "\(label) mean[\(c)]", file: file, line: line)
            _ = assertWithin(Double(f.invStd[c]), inv, magnitude: 0.5 * inv * inv * inv * eV[c] / pixels + inv, depth: statisticsDepth,
                             "\(label) invStd[\(c)]", file: file, line: line)
        }
        let paddedValues = s.batch * s.inChannels * paddedPlane   // then 4 elements of slack, never written
        XCTAssertEqual(Array(f.padded.prefix(paddedValues)), d.padded.prefix(paddedValues).map { Float($0) }, "\(label): padded input",
                       file: file, line: line)

        // Forward, against the naive conv with Float's statistics.
        let mu = f.mean.map(Double.init), inv = f.invStd.map(Double.init)
        let forwardDepth = patch + 7, convDepth = patch + 2
        forwardLoop: for q in 0..<(s.batch * outC) {
            let c = q % outC, scale = Double(gamma[c]) * inv[c]
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let i = (q * oh + oy) * ow + ox, idx = window(q, oy, ox, height: s.height, width: s.width)
                    let y = idx.map { max(scale * (conv[$0] - mu[c]) + Double(beta[c]), 0) }
                    let e = idx.map { abs(scale) * (convAbs[$0] + abs(mu[c])) + abs(Double(beta[c])) }.max()!
                    guard assertWithin(Double(f.pooled[i]), y.max()!, magnitude: e, depth: forwardDepth, "\(label) pooled[\(i)]",
                                       file: file, line: line),
                          let k = idx.firstIndex(of: Int(f.argmax[i])) else {
                        XCTFail("\(label): pooled[\(i)] or its argmax \(f.argmax[i]) wrong", file: file, line: line); break forwardLoop
                    }
                    XCTAssertGreaterThanOrEqual(y[k], y.max()! - 2 * tolerance(forwardDepth) * e, "\(label): argmax[\(i)] is a window maximum",
                                                file: file, line: line)
                    _ = assertWithin(Double(f.pooledInput[i]), conv[idx[k]], magnitude: convAbs[idx[k]], depth: convDepth,
                                     "\(label) pooledInput[\(i)]", file: file, line: line)
                }
            }
        }
        XCTAssertTrue(zip(f.pooled, d.pooled).contains { Double($0) != $1 }, "\(label): Float pooled equals Double everywhere",
                      file: file, line: line)

        // Backward from the Float forward's cache and moments.
        func backward<T: GEMMScalar>(_: T.Type, _ p: ConvolutionPath) -> (dWeight: [T], dBias: [T], dGamma: [T], dBeta: [T]) {
            func t(_ v: [Float]) -> Buffer<T> { Buffer(v.map { T(Double($0)) }) }
            let w = t(weight), bb = t(bias), g = t(gamma), dp = t(dPooled), pooled = t(f.pooled), pooledInput = t(f.pooledInput)
            let mean = t(f.mean), invStd = t(f.invStd), padded = t(f.padded), moments = Buffer(f.moments)
            let dWeight = Buffer<T>(repeating: 0, count: s.weightCount), dBias = Buffer<T>(repeating: 0, count: outC)
            let dGamma = Buffer<T>(repeating: 0, count: outC), dBeta = Buffer<T>(repeating: 0, count: outC)
            f.argmax.withUnsafeBufferPointer {
                ConvBatchNormReLUPool.backwardTraining(dWeight: dWeight.pointer, dBias: dBias.pointer, dGamma: dGamma.pointer,
                                                       dBeta: dBeta.pointer, dPooled: dp.const, pooled: pooled.const, argmax: $0.baseAddress!,
                                                       pooledInput: pooledInput.const, weight: w.const, bias: bb.const, gamma: g.const,
                                                       mean: mean.const, invStd: invStd.const, shape: s, padded: padded.const,
                                                       moments: moments.pointer, path: p)
            }
            defer { keepAlive(w, bb, g, dp, pooled, pooledInput, mean, invStd, padded, moments, dWeight, dBias, dGamma, dBeta) }
            return (dWeight.array, dBias.array, dGamma.array, dBeta.array)
        }
        let fb = backward(Float.self, path), db = backward(Double.self, .moments)
        // G, GX and Σ|g||c_t| at the maxima per channel; S and W·Gc from the forward's moments.
        var sumG = [Double](repeating: 0, count: outC), sumGX = sumG
        var gatherAbs = [Double](repeating: 0, count: outC * patch)
        for i in 0..<pooledCount where f.pooled[i] > 0 {
            let q = i / pooledPlane, c = q % outC, n = q / outC, g = abs(Double(dPooled[i]))
            sumG[c] += g; sumGX[c] += g * abs(Double(f.pooledInput[i]) - mu[c])
            let r = Int(f.argmax[i]) - q * plane, corner = n * s.inChannels * paddedPlane + (r / s.width) * pw + r % s.width
            for t in 0..<patch { gatherAbs[c * patch + t] += g * abs(Double(f.padded[corner + tapOffset(t)])) }
        }
        let mBlock = patch * (patch + 1), sTotal = Array(f.moments[(s.batch * mBlock)..<(s.batch * mBlock + patch)])
        let gram = Array(f.moments[(s.batch * mBlock + patch)..<(s.batch * mBlock + patch + patch * patch)])
        let depth = pooledPlane + s.batch
        for c in 0..<outC {
            let k = abs(Double(gamma[c])) * inv[c], aMagnitude = k * inv[c] * inv[c] * sumGX[c] / pixels
            let xMean = (0..<patch).reduce(Double(bias[c])) { $0 + Double(weight[c * patch + $1]) * sTotal[$1] / pixels }
            let offset = xMean - mu[c]
            for t in 0..<patch {
                let wg = (0..<patch).reduce(0.0) { $0 + Double(weight[c * patch + $1]) * gram[$1 * patch + t] }
                let e = k * gatherAbs[c * patch + t] + k * sumG[c] / pixels * abs(sTotal[t]) + aMagnitude * abs(wg + offset * sTotal[t])
                _ = assertWithin(Double(fb.dWeight[c * patch + t]), db.dWeight[c * patch + t], magnitude: e, depth: depth + 9,
                                 "\(label) dW[\(c), \(t)]", file: file, line: line)
            }
            _ = assertWithin(Double(fb.dBias[c]), db.dBias[c], magnitude: 2 * k * sumG[c] + aMagnitude * pixels * abs(offset),
                             depth: depth + 9, "\(label) dbias[\(c)]", file: file, line: line)
            _ = assertWithin(Double(fb.dBeta[c]), db.dBeta[c], magnitude: sumG[c], depth: depth + 1, "\(label) dβ[\(c)]", file: file, line: line)
            _ = assertWithin(Double(fb.dGamma[c]), db.dGamma[c], magnitude: inv[c] * sumGX[c], depth: depth + 4, "\(label) dγ[\(c)]",
                             file: file, line: line)
        }
        XCTAssertTrue(zip(fb.dWeight, db.dWeight).contains { Double($0) != $1 }, "\(label): Float dW equals Double everywhere",
                      file: file, line: line)
    }

    static let momentShapes = [
        Conv2dShape(batch: 3, inChannels: 1, height: 16, width: 16, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),   // pooled stencil (AVX2)
        Conv2dShape(batch: 2, inChannels: 1, height: 10, width: 20, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),   // odd pooled rows
        Conv2dShape(batch: 2, inChannels: 1, height: 8, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),     // < 16 wide: stencil, then pool
        Conv2dShape(batch: 2, inChannels: 5, height: 4, width: 6, outChannels: 3, kernelH: 1, kernelW: 1, padding: 0),     // patch 5: the generic gather
        Conv2dShape(batch: 2, inChannels: 1, height: 32, width: 34, outChannels: 16, kernelH: 3, kernelW: 3, padding: 1),  // the network's first block, 16 wide rows and tails
    ]

    /// `.moments`: the generic stencils, the Float window gather (`gather3x3`) in the backward.
    func testMomentsPathInFloat() {
        for (i, s) in Self.momentShapes.enumerated() {
            checkMoments(s, path: .moments, target: .generic, seed: 920 + UInt64(i))
        }
    }

    /// `.momentsAVX2`: `StencilAVX2.dot` for the moments, `stencil3x3PoolArgmax` (one input
    /// plane ≥ 16 wide) or the AVX2 stencils for the planes.
    func testMomentsAVX2PathInFloat() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        for (i, s) in Self.momentShapes.enumerated() {
            checkMoments(s, path: .momentsAVX2, target: .native(Float.self), seed: 930 + UInt64(i))
        }
    }
}
