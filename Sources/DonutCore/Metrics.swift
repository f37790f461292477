import Foundation

/// Accuracy of a map against ground truth, over the pixels where both are finite.
public enum MapMetrics {
    /// Root-mean-square error √(mean (estimate − truth)²); NaN when no pixel is usable.
    public static func rmse(_ estimate: [Double], _ truth: [Double]) -> Double {
        var s = 0.0, n = 0
        for (e, t) in zip(estimate, truth) where e.isFinite && t.isFinite { s += (e - t) * (e - t); n += 1 }
        return n > 0 ? (s / Double(n)).squareRoot() : .nan
    }

    /// Pearson correlation r of two maps over pixels where both are finite (NaN if either is constant).
    public static func pearson(_ a: [Double], _ b: [Double]) -> Double {
        let pairs = zip(a, b).filter { $0.0.isFinite && $0.1.isFinite }
        guard pairs.count > 1 else { return .nan }
        let n = Double(pairs.count)
        let ma = pairs.reduce(0) { $0 + $1.0 } / n, mb = pairs.reduce(0) { $0 + $1.1 } / n
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for (x, y) in pairs { sab += (x - ma) * (y - mb); saa += (x - ma) * (x - ma); sbb += (y - mb) * (y - mb) }
        return saa > 0 && sbb > 0 ? sab / (saa * sbb).squareRoot() : .nan
    }

    /// Crosstalk of parameter P into Q: |r| between Q's error and P's true map. Near 0 when
    /// errors in Q do not follow P (the correlation fit leaks tilt into strain and back).
    public static func crosstalk(errorOf estimate: [Double], truth: [Double], against other: [Double]) -> Double {
        abs(pearson(zip(estimate, truth).map { $0 - $1 }, other))
    }
}

/// Code version written into every result's provenance.
public let donutVersion = "0.1.0"

/// Frames per batch of the correlation fit and the encoder when none is given: one GEMM of
/// 256 × 4096 per library chunk or layer, large enough to run at the BLAS rate.
public let defaultFramesPerBatch = 256
