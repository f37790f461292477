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
    /// The loss, accumulated in Double.
    public static func forward<T: GEMMScalar>(prediction: UnsafePointer<T>, target: UnsafePointer<T>,
                                              count: Int, floor: Double) -> Double {
        var sum = 0.0
        for i in 0..<count {
            let lambda = max(Double(prediction[i]), 0) + floor, y = Double(target[i])
            sum += (lambda - y) - (y > 0 ? y * log(lambda / y) : 0)
        }
        return 2 * sum / Double(count)
    }

    /// dPrediction = weight · 2(1 − y/λ)/count (0 where ŷ < 0, the clamp): **written** (=).
    public static func backward<T: GEMMScalar>(dPrediction: UnsafeMutablePointer<T>, prediction: UnsafePointer<T>,
                                               target: UnsafePointer<T>, count: Int, floor: Double, weight: Double = 1) {
        let g = 2 * weight / Double(count)
        for i in 0..<count {
            let p = Double(prediction[i])
            dPrediction[i] = p < 0 ? 0 : T(g * (1 - Double(target[i]) / (p + floor)))
        }
    }
}
