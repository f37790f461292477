import DonutBLAS

/// Batch normalisation over (N, H, W) per channel, as PyTorch's `BatchNorm2d(C, eps: 1e-5, momentum: 0.1)`.
/// input and output (batch, channels, height, width); gamma, beta, runningMean, runningVar, mean,
/// invStd (channels). M = batch·height·width values per channel.
///
/// Training: μ = (1/M) Σ x, σ² = (1/M) Σ (x − μ)² (biased, used to normalise),
/// y = γ·(x − μ)/√(σ² + ε) + β; the running statistics move by
/// running ← (1 − momentum)·running + momentum·batch with the **unbiased** variance σ²·M/(M − 1)
/// (PyTorch's convention). Eval: y = γ·(x − runningMean)/√(runningVar + ε) + β.
///
/// The running statistics are buffers, not trainable parameters: the caller keeps them (and
/// checkpoints them) beside the `ParameterStore`.
public enum BatchNorm2d {
    public static let defaultEpsilon = 1e-5
    public static let defaultMomentum = 0.1

    /// Training-mode forward.
    /// - output (batch, channels, height, width): written; must not alias input. With `relu`,
    ///   max(y, 0) is written instead (BatchNorm → ReLU fused; ReLU's backward needs only this output).
    /// - mean, invStd (channels): written, **cached for backward**: batch mean μ and 1/√(σ² + ε).
    /// - runningMean, runningVar (channels): updated in place (momentum, unbiased variance).
    /// - Requires M = batch·height·width > 1 (PyTorch refuses one value per channel too).
    /// Statistics: two passes (mean, then squared deviations from it). Each plane (height·width
    /// values, ≤ 4096 here) is summed in T with eight partial sums, relative error ~√(plane/8)·ulp
    /// ≈ 1e-6 for Float, and the per-plane sums are totalled in Double, so the batch statistics
    /// keep the accuracy of a Double accumulation to ~1e-6 relative while the inner loops
    /// vectorise. Channels run in parallel (each channel whole on one thread: bit-identical).
    public static func forwardTraining<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
        runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int,
        epsilon: Double = defaultEpsilon, momentum: Double = defaultMomentum, relu: Bool = false
    ) {
        let plane = height * width, m = batch * plane
        precondition(m > 1, "BatchNorm2d training needs more than one value per channel")
        Parallel.forRanges(channels, work: 3 * batch * channels * plane) { r in
            for c in r {
                var sum = 0.0
                for n in 0..<batch { sum += Double(Parallel.sum(input + (n * channels + c) * plane, plane)) }
                let mu = sum / Double(m), muT = T(mu)
                var sq = 0.0
                for n in 0..<batch { sq += Double(Parallel.sumSquares(input + (n * channels + c) * plane, plane, minus: muT)) }
                // Σ(x − μ_T)² = Σ(x − μ)² + M·(μ − μ_T)²: remove the rounding of μ to T.
                let dm = mu - Double(muT)
                sq = max(0, sq - Double(m) * dm * dm)
                let variance = sq / Double(m)
                let inv = 1 / (variance + epsilon).squareRoot()
                mean[c] = muT; invStd[c] = T(inv)
                runningMean[c] = T((1 - momentum) * Double(runningMean[c]) + momentum * mu)
                runningVar[c] = T((1 - momentum) * Double(runningVar[c]) + momentum * sq / Double(m - 1))
                let scale = gamma[c] * T(inv), shift = beta[c] - muT * scale
                for n in 0..<batch {
                    let o = (n * channels + c) * plane
                    Conv2d.affine(output + o, input + o, plane, scale, shift, relu: relu)
                }
            }
        }
    }

    /// The eval-mode transform as y = scale·x + shift per channel: scale = γ/√(runningVar + ε),
    /// shift = β − runningMean·scale. scale, shift (channels) written.
    public static func evalAffine<T: GEMMScalar>(
        scale: UnsafeMutablePointer<T>, shift: UnsafeMutablePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>, channels: Int, epsilon: Double = defaultEpsilon
    ) {
        for c in 0..<channels {
            let inv = T(1 / (Double(runningVar[c]) + epsilon).squareRoot())
            scale[c] = gamma[c] * inv; shift[c] = beta[c] - runningMean[c] * scale[c]
        }
    }

    /// Eval-mode forward with the running statistics: output written (may alias input); with
    /// `relu`, max(y, 0). Nothing cached.
    public static func forwardEval<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, epsilon: Double = defaultEpsilon, relu: Bool = false
    ) {
        let plane = height * width
        Parallel.forRanges(batch * channels, work: batch * channels * plane) { r in
            for q in r {
                let c = q % channels
                let inv = T(1 / (Double(runningVar[c]) + epsilon).squareRoot())
                let scale = gamma[c] * inv, shift = beta[c] - runningMean[c] * scale
                Conv2d.affine(output + q * plane, input + q * plane, plane, scale, shift, relu: relu)
            }
        }
    }

    /// Training-mode backward, through the batch mean and variance. With x̂ = (x − μ)·invStd and
    /// g = dOutput·γ: dx = invStd · (g − mean(g) − x̂ · mean(g · x̂)) (means over the M values of a channel).
    /// - dInput (batch, channels, height, width): **written** (=).
    /// - dGamma (channels) += Σ dOutput · x̂; dBeta (channels) += Σ dOutput: **add**.
    /// - mean, invStd: the cache `forwardTraining` wrote.
    /// - reluOutput: when the forward was fused with ReLU, its output y; dOutput is then taken
    ///   as ∂L/∂(ReLU output) and gated by [y > 0] first (ReLU.backward fused). nil: no ReLU.
    /// Sums per plane in T (eight partial sums), totalled in Double; channels in parallel.
    public static func backwardTraining<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>,
        mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, reluOutput: UnsafePointer<T>? = nil
    ) {
        let plane = height * width, m = batch * plane
        Parallel.forRanges(channels, work: 3 * batch * channels * plane) { r in
            for c in r {
                let mu = mean[c], inv = invStd[c]
                var sumDy = 0.0, sumDyXc = 0.0
                for n in 0..<batch {
                    let o = (n * channels + c) * plane
                    let x = input + o, dy = dOutput + o
                    var s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0), t0 = T(0), t1 = T(0), t2 = T(0), t3 = T(0)
                    if let y = reluOutput.map({ $0 + o }) {
                        // Gate in place into dInput (written anyway below), then sum.
                        let dx = dInput + o
                        for i in 0..<plane { dx[i] = y[i] > 0 ? dy[i] : 0 }
                        sums(UnsafePointer(dx), x, plane, mu, &s0, &s1, &s2, &s3, &t0, &t1, &t2, &t3)
                    } else {
                        sums(dy, x, plane, mu, &s0, &s1, &s2, &s3, &t0, &t1, &t2, &t3)
                    }
                    sumDy += Double((s0 + s1) + (s2 + s3)); sumDyXc += Double((t0 + t1) + (t2 + t3))
                }
                let sumDyXhat = sumDyXc * Double(inv)
                dGamma[c] += T(sumDyXhat)
                dBeta[c] += T(sumDy)
                // dx = γ·inv·(dy − mean(dy) − x̂·mean(dy·x̂)) = k·dy − k·meanDy − (x − μ)·k·inv·meanDyXhat
                let k = gamma[c] * inv
                let a = k * T(sumDyXhat / Double(m)) * inv, b = k * T(sumDy / Double(m))
                for n in 0..<batch {
                    let o = (n * channels + c) * plane
                    let x = input + o, dx = dInput + o
                    let dy = reluOutput == nil ? dOutput + o : UnsafePointer(dx)
                    for i in 0..<plane { dx[i] = k * dy[i] - b - (x[i] - mu) * a }
                }
            }
        }
    }

    /// Σ dy and Σ dy·(x − μ) over n values, four partial sums each.
    @inline(__always)
    static func sums<T: GEMMScalar>(_ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int, _ mu: T,
                                    _ s0: inout T, _ s1: inout T, _ s2: inout T, _ s3: inout T,
                                    _ t0: inout T, _ t1: inout T, _ t2: inout T, _ t3: inout T) {
        var i = 0
        while i + 4 <= n {
            s0 += dy[i]; s1 += dy[i + 1]; s2 += dy[i + 2]; s3 += dy[i + 3]
            t0 += dy[i] * (x[i] - mu); t1 += dy[i + 1] * (x[i + 1] - mu)
            t2 += dy[i + 2] * (x[i + 2] - mu); t3 += dy[i + 3] * (x[i + 3] - mu)
            i += 4
        }
        while i < n { s0 += dy[i]; t0 += dy[i] * (x[i] - mu); i += 1 }
    }

    /// Eval-mode backward (statistics are constants): dx = dOutput·γ/√(runningVar + ε) **written** (=);
    /// dGamma += Σ dOutput·x̂ with x̂ = (x − runningMean)/√(runningVar + ε), dBeta += Σ dOutput: **add**.
    public static func backwardEval<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, epsilon: Double = defaultEpsilon
    ) {
        let plane = height * width
        for c in 0..<channels {
            let inv = T(1 / (Double(runningVar[c]) + epsilon).squareRoot())
            let mu = runningMean[c], k = gamma[c] * inv
            var sumDy = T(0), sumDyXhat = T(0)
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane, dy = dOutput + (n * channels + c) * plane
                let dx = dInput + (n * channels + c) * plane
                for i in 0..<plane {
                    let g = dy[i]
                    sumDy += g
                    sumDyXhat += g * (x[i] - mu) * inv
                    dx[i] = g * k
                }
            }
            dGamma[c] += sumDyXhat
            dBeta[c] += sumDy
        }
    }
}
