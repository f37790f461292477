import DonutBLAS

/// Mean absolute error L = (1/count) Σ |ŷ − y| over `count` elements (any shape).
public enum MAELoss {
    /// The loss, accumulated in Double.
    public static func forward<T: GEMMScalar>(prediction: UnsafePointer<T>, target: UnsafePointer<T>, count: Int) -> Double {
        var sum = 0.0
        for i in 0..<count { sum += abs(Double(prediction[i] - target[i])) }
        return sum / Double(count)
    }

    /// dPrediction = weight · sign(ŷ − y)/count, 0 where ŷ = y (subgradient): **written** (=).
    /// `weight` scales the loss (for weighted sums of losses; 1 for the plain mean).
    public static func backward<T: GEMMScalar>(dPrediction: UnsafeMutablePointer<T>, prediction: UnsafePointer<T>,
                                               target: UnsafePointer<T>, count: Int, weight: Double = 1) {
        let g = T(weight / Double(count))
        for i in 0..<count {
            let d = prediction[i] - target[i]
            dPrediction[i] = d > 0 ? g : (d < 0 ? -g : 0)
        }
    }
}

/// Mean squared error L = (1/count) Σ (ŷ − y)² over `count` elements (any shape).
public enum MSELoss {
    /// The loss, accumulated in Double.
    public static func forward<T: GEMMScalar>(prediction: UnsafePointer<T>, target: UnsafePointer<T>, count: Int) -> Double {
        var sum = 0.0
        for i in 0..<count { let d = Double(prediction[i] - target[i]); sum += d * d }
        return sum / Double(count)
    }

    /// dPrediction = weight · 2(ŷ − y)/count: **written** (=). `weight` scales the loss (1 for the plain mean).
    public static func backward<T: GEMMScalar>(dPrediction: UnsafeMutablePointer<T>, prediction: UnsafePointer<T>,
                                               target: UnsafePointer<T>, count: Int, weight: Double = 1) {
        let g = T(2 * weight / Double(count))
        for i in 0..<count { dPrediction[i] = g * (prediction[i] - target[i]) }
    }
}
