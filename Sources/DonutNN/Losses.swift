import DonutBLAS

/// Mean absolute error L = (1/count) Σ |ŷ − y| over `count` elements (any shape).
public enum MAELoss {
    /// The loss, accumulated in Double.
    public static func forward<T: GEMMScalar>(prediction: UnsafePointer<T>, target: UnsafePointer<T>, count: Int) -> Double {
        var sum = 0.0
        return frames(prediction: prediction, target: target, frames: 1, framePixels: count, frameSums: &sum)
    }

    /// dPrediction = weight · sign(ŷ − y)/count, 0 where ŷ = y (subgradient): **written** (=).
    /// `weight` scales the loss (for weighted sums of losses; 1 for the plain mean).
    public static func backward<T: GEMMScalar>(dPrediction: UnsafeMutablePointer<T>, prediction: UnsafePointer<T>,
                                               target: UnsafePointer<T>, count: Int, weight: Double = 1) {
        var sum = 0.0
        _ = frames(prediction: prediction, target: target, frames: 1, framePixels: count, frameSums: &sum,
                   dPrediction: dPrediction, weight: weight)
    }

    /// The loss over `frames` frames of `framePixels` elements and, with `dPrediction`, its
    /// gradient (as `backward`, count = frames·framePixels) in the same pass, the frames split
    /// over the cores (a training step's two losses were ~1 % of it on one core). frameSums
    /// (`frames` Doubles, scratch) gets each frame's Σ |ŷ − y|; they are totalled in frame order,
    /// so the value does not depend on the thread count.
    ///
    /// `pixelWeights` (frames·framePixels, 0 or 1; nil = all 1): masked pixels (weight 0: a
    /// detector gap, a hot pixel) carry no measurement and are left out — the loss is the mean
    /// over weighted pixels, L = Σ w|ŷ − y| / Σ w, its gradient weight·w·sign(ŷ − y)/Σ w.
    public static func frames<T: GEMMScalar>(prediction: UnsafePointer<T>, target: UnsafePointer<T>, frames: Int, framePixels: Int,
                                             frameSums: UnsafeMutablePointer<Double>, dPrediction: UnsafeMutablePointer<T>? = nil,
                                             weight: Double = 1, pixelWeights: UnsafePointer<T>? = nil) -> Double {
        var count = Double(frames * framePixels)
        if let w = pixelWeights {
            count = 0
            for i in 0..<(frames * framePixels) { count += Double(w[i]) }
            guard count > 0 else {
                if let d = dPrediction { d.update(repeating: 0, count: frames * framePixels) }
                return 0
            }
        }
        Parallel.forRanges(frames, work: 3 * frames * framePixels,
                           AbsoluteErrorFrames(prediction: prediction, target: target, dPrediction: dPrediction,
                                               frameSums: frameSums, pixels: framePixels, g: T(weight / count), weights: pixelWeights))
        var sum = 0.0
        for f in 0..<frames { sum += frameSums[f] }
        return sum / count
    }
}

/// Σ |ŷ − y| per frame (blocks of 256 elements in eight T partial sums, totalled in Double) and,
/// when `dPrediction` is set, dPrediction = g·sign(ŷ − y), 0 where equal. With `weights`:
/// Σ w|ŷ − y| and g·w·sign(ŷ − y).
struct AbsoluteErrorFrames<T: GEMMScalar>: ParallelLoop {
    let prediction: UnsafePointer<T>, target: UnsafePointer<T>, dPrediction: UnsafeMutablePointer<T>?
    let frameSums: UnsafeMutablePointer<Double>, pixels: Int, g: T
    var weights: UnsafePointer<T>? = nil

    @_specialize(where T == Float)
    func run(_ frames: Range<Int>, worker: Int) {
        if let w = weights { runWeighted(frames, w); return }
        for f in frames {
            var total = 0.0, start = f * pixels
            let end = start + pixels
            while start < end {
                let stop = min(start + 256, end)
                var s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0), s4 = T(0), s5 = T(0), s6 = T(0), s7 = T(0)
                var i = start
                if let d = dPrediction {
                    let g = g
                    for j in start..<stop {
                        let e = prediction[j] - target[j]
                        d[j] = e > 0 ? g : (e < 0 ? -g : 0)
                    }
                }
                while i + 8 <= stop {
                    s0 += abs(prediction[i] - target[i]); s1 += abs(prediction[i + 1] - target[i + 1])
                    s2 += abs(prediction[i + 2] - target[i + 2]); s3 += abs(prediction[i + 3] - target[i + 3])
                    s4 += abs(prediction[i + 4] - target[i + 4]); s5 += abs(prediction[i + 5] - target[i + 5])
                    s6 += abs(prediction[i + 6] - target[i + 6]); s7 += abs(prediction[i + 7] - target[i + 7])
                    i += 8
                }
                while i < stop { s0 += abs(prediction[i] - target[i]); i += 1 }
                total += Double(((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
                start = stop
            }
            frameSums[f] = total
        }
    }

    @_specialize(where T == Float)
    func runWeighted(_ frames: Range<Int>, _ w: UnsafePointer<T>) {
        for f in frames {
            var total = 0.0, start = f * pixels
            let end = start + pixels
            while start < end {
                let stop = min(start + 256, end)
                var s = T(0)
                for j in start..<stop {
                    let e = prediction[j] - target[j]
                    s += w[j] * abs(e)
                    if let d = dPrediction { d[j] = e > 0 ? g * w[j] : (e < 0 ? -g * w[j] : 0) }
                }
                total += Double(s)
                start = stop
            }
            frameSums[f] = total
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
