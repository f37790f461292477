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
    /// - output (batch, channels, height, width): written; must not alias input.
    /// - mean, invStd (channels): written, **cached for backward**: batch mean μ and 1/√(σ² + ε).
    /// - runningMean, runningVar (channels): updated in place (momentum, unbiased variance).
    /// - Requires M = batch·height·width > 1 (PyTorch refuses one value per channel too).
    /// Statistics are accumulated in Double (two passes) for every T.
    public static func forwardTraining<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, mean: UnsafeMutablePointer<T>, invStd: UnsafeMutablePointer<T>,
        runningMean: UnsafeMutablePointer<T>, runningVar: UnsafeMutablePointer<T>,
        input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int,
        epsilon: Double = defaultEpsilon, momentum: Double = defaultMomentum
    ) {
        let plane = height * width, m = batch * plane
        precondition(m > 1, "BatchNorm2d training needs more than one value per channel")
        for c in 0..<channels {
            var sum = 0.0
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane
                for i in 0..<plane { sum += Double(x[i]) }
            }
            let mu = sum / Double(m)
            var sq = 0.0
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane
                for i in 0..<plane { let d = Double(x[i]) - mu; sq += d * d }
            }
            let variance = sq / Double(m)
            let inv = 1 / (variance + epsilon).squareRoot()
            mean[c] = T(mu); invStd[c] = T(inv)
            runningMean[c] = T((1 - momentum) * Double(runningMean[c]) + momentum * mu)
            runningVar[c] = T((1 - momentum) * Double(runningVar[c]) + momentum * sq / Double(m - 1))
            let scale = gamma[c] * T(inv), shift = beta[c] - T(mu) * scale
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane, y = output + (n * channels + c) * plane
                for i in 0..<plane { y[i] = x[i] * scale + shift }
            }
        }
    }

    /// Eval-mode forward with the running statistics: output written (may alias input). Nothing cached.
    public static func forwardEval<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>, beta: UnsafePointer<T>,
        runningMean: UnsafePointer<T>, runningVar: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, epsilon: Double = defaultEpsilon
    ) {
        let plane = height * width
        for c in 0..<channels {
            let inv = T(1 / (Double(runningVar[c]) + epsilon).squareRoot())
            let scale = gamma[c] * inv, shift = beta[c] - runningMean[c] * scale
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane, y = output + (n * channels + c) * plane
                for i in 0..<plane { y[i] = x[i] * scale + shift }
            }
        }
    }

    /// Training-mode backward, through the batch mean and variance. With x̂ = (x − μ)·invStd and
    /// g = dOutput·γ: dx = invStd · (g − mean(g) − x̂ · mean(g · x̂)) (means over the M values of a channel).
    /// - dInput (batch, channels, height, width): **written** (=).
    /// - dGamma (channels) += Σ dOutput · x̂; dBeta (channels) += Σ dOutput: **add**.
    /// - mean, invStd: the cache `forwardTraining` wrote.
    public static func backwardTraining<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dGamma: UnsafeMutablePointer<T>, dBeta: UnsafeMutablePointer<T>,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, gamma: UnsafePointer<T>,
        mean: UnsafePointer<T>, invStd: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int
    ) {
        let plane = height * width, m = batch * plane
        for c in 0..<channels {
            let mu = mean[c], inv = invStd[c]
            var sumDy = 0.0, sumDyXhat = 0.0
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane, dy = dOutput + (n * channels + c) * plane
                for i in 0..<plane {
                    let g = Double(dy[i])
                    sumDy += g
                    sumDyXhat += g * Double((x[i] - mu) * inv)
                }
            }
            dGamma[c] += T(sumDyXhat)
            dBeta[c] += T(sumDy)
            // dx = γ·inv·(dy − mean(dy) − x̂·mean(dy·x̂))
            let k = gamma[c] * inv
            let meanDy = T(sumDy / Double(m)), meanDyXhat = T(sumDyXhat / Double(m))
            for n in 0..<batch {
                let x = input + (n * channels + c) * plane, dy = dOutput + (n * channels + c) * plane
                let dx = dInput + (n * channels + c) * plane
                for i in 0..<plane {
                    let xhat = (x[i] - mu) * inv
                    dx[i] = k * (dy[i] - meanDy - xhat * meanDyXhat)
                }
            }
        }
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
