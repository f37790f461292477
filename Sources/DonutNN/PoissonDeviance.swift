import DonutBLAS
import Foundation

/// Mean Poisson deviance of counts y under expected counts λ = ŷ + β:
/// L = (1/count) Σ 2[(λ − y) − y·log(λ/y)]  (the y·log y term is 0 where y = 0).
///
/// Why: photon-counting frames at a few photons per pixel are Poisson; the deviance is
/// −2·log-likelihood up to a constant, so minimising it is maximum likelihood, and with a
/// sum-normalised prediction (Σλ = Σy, the Poisson ML intensity scale) it is the profile
/// likelihood of the pattern's parameters. MAE's gradient is only sign(ŷ − y) and throws
/// away how far a count is from its expectation. `floor` β (counts) keeps λ > 0 where a model
/// predicts no intensity but a photon arrived (background the model does not describe).
public enum PoissonDeviance {
    /// The loss, accumulated in Double. `pixelWeights` (0/1, nil = all 1): the mean over
    /// weighted pixels only (masked pixels carry no measurement), Σ w·d / Σ w.
    public static func forward<T: GEMMScalar>(prediction: UnsafePointer<T>, target: UnsafePointer<T>,
                                              count: Int, floor: Double, pixelWeights: UnsafePointer<T>? = nil) -> Double {
        var sum = 0.0, n = 0.0
        for i in 0..<count {
            let w = pixelWeights.map { Double($0[i]) } ?? 1
            guard w > 0 else { continue }
            let lambda = max(Double(prediction[i]), 0) + floor, y = Double(target[i])
            sum += w * ((lambda - y) - (y > 0 ? y * log(lambda / y) : 0)); n += w
        }
        return n > 0 ? 2 * sum / n : 0
    }

    /// dPrediction = weight · w·2(1 − y/λ)/Σ w (0 where ŷ < 0, the clamp): **written** (=).
    public static func backward<T: GEMMScalar>(dPrediction: UnsafeMutablePointer<T>, prediction: UnsafePointer<T>,
                                               target: UnsafePointer<T>, count: Int, floor: Double, weight: Double = 1,
                                               pixelWeights: UnsafePointer<T>? = nil) {
        var n = Double(count)
        if let w = pixelWeights { n = 0; for i in 0..<count { n += Double(w[i]) } }
        let g = n > 0 ? 2 * weight / n : 0
        for i in 0..<count {
            let p = Double(prediction[i]), w = pixelWeights.map { Double($0[i]) } ?? 1
            dPrediction[i] = p < 0 ? 0 : T(w * g * (1 - Double(target[i]) / (p + floor)))
        }
    }
}
