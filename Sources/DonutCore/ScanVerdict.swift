import Foundation
import DonutPhysics

/// Whether a scan's maps can be trusted, and the warning that says why not: the fraction of
/// frames the model does not explain (gof above the threshold, valid = 0), where they point
/// (one unmasked pixel, or the whole frame), and constant maps from frames that differ.
///
/// Built block by block (`add`), as plain sums, so that ranks add theirs with one allreduce of
/// `sums` (`init(sums:…)` rebuilds it) and the verdict does not depend on the split.
public struct ScanVerdict: Sendable, Equatable {
    public let pixelCount: Int
    /// Frames seen; frames unusable before any fit (NaN, negative, empty after masking, or
    /// rejected by the method); frames with a goodness of fit; those above the threshold.
    public var frames = 0.0, unusable = 0.0, judged = 0.0, flagged = 0.0
    /// Sum of gof over flagged frames (their mean says how far off they are).
    public var flaggedGoodness = 0.0
    /// Per model pixel: flagged frames whose deviance that pixel leads with a share > ¼ (a few
    /// bad pixels hold most of it).
    public var dominantPixel: [Double]
    /// Over frames that stayed valid: n, Σv, Σv² of strain, tilt_lr, tilt_ud (constant maps).
    public var mapSums = [Double](repeating: 0, count: 9)
    /// Over usable frames: n, Σc, Σc², Σ var(c) of the frame centroid in x, then in y (pixels):
    /// the frames differ when the centroids spread more than their Poisson noise allows.
    public var centroidSums = [Double](repeating: 0, count: 7)

    /// Flagged fraction above which the command warns ("more than a few per cent").
    public static let warnFraction = 0.02
    /// A map is nearly constant when its standard deviation over valid frames is below this
    /// fraction of the configured range of its parameter.
    public static let constantFraction = 0.01
    /// Frames differ when their centroids' variance exceeds this multiple of the noise variance.
    public static let differFactor = 4.0

    public init(pixelCount: Int) {
        self.pixelCount = pixelCount
        dominantPixel = .init(repeating: 0, count: pixelCount)
    }

    /// Adds a block: `results` (the method's maps after `GoodnessOfFit.fill`, covering the
    /// block), the fits `fill` returned, and `usable[f]` = frame f of the block could be
    /// analysed at all.
    public mutating func add(_ block: FrameBlock, results: FrameResults, fits: [FrameFit?], usable: [Bool], threshold: Double) {
        precondition(fits.count == block.count && usable.count == block.count, "one fit and one usable flag per frame")
        let o = block.first - results.frameRange.lowerBound
        frames += Double(block.count)
        for f in 0..<block.count {
            guard usable[f] else { unusable += 1; continue }
            addCentroid(block, frame: f)
            guard let fit = fits[f] else { unusable += 1; continue }
            judged += 1
            if !(fit.goodness <= threshold) {
                flagged += 1
                if fit.goodness.isFinite { flaggedGoodness += fit.goodness }
                if fit.worstShare > 0.25, fit.worstPixel >= 0 { dominantPixel[fit.worstPixel] += 1 }
            } else if results.valid[o + f] == 1 {
                for (j, v) in [results.strain[o + f], results.tiltLRDeg[o + f], results.tiltUDDeg[o + f]].enumerated() where v.isFinite {
                    if j == 0 { mapSums[0] += 1 }
                    mapSums[1 + 2 * j] += v; mapSums[2 + 2 * j] += v * v
                }
            }
        }
    }

    /// Centroid of a frame over its measured pixels, counts capped at the frame's 99th
    /// percentile of non-zero measured counts (a few hot pixels cannot pin it), with its
    /// Poisson variance var(c) ≈ Σ k (x − c)² / (Σ k)².
    mutating func addCentroid(_ block: FrameBlock, frame f: Int) {
        let np = block.pixelCount, n = Int(Double(np).squareRoot().rounded())
        var values: [Float] = []
        for i in 0..<np where (block.weights?[f * np + i] ?? 1) > 0 && block.counts[f * np + i] > 0 { values.append(block.counts[f * np + i]) }
        guard !values.isEmpty else { return }
        values.sort()
        let cap = Double(values[min(values.count - 1, Int(0.99 * Double(values.count)))])
        var s = 0.0, sx = 0.0, sy = 0.0
        for i in 0..<np where (block.weights?[f * np + i] ?? 1) > 0 {
            let k = min(Double(block.counts[f * np + i]), cap)
            s += k; sx += k * Double(i % n); sy += k * Double(i / n)
        }
        guard s > 0 else { return }
        let cx = sx / s, cy = sy / s
        var vx = 0.0, vy = 0.0
        for i in 0..<np where (block.weights?[f * np + i] ?? 1) > 0 {
            let k = min(Double(block.counts[f * np + i]), cap)
            vx += k * (Double(i % n) - cx) * (Double(i % n) - cx); vy += k * (Double(i / n) - cy) * (Double(i / n) - cy)
        }
        centroidSums[0] += 1
        centroidSums[1] += cx; centroidSums[2] += cx * cx; centroidSums[3] += vx / (s * s)
        centroidSums[4] += cy; centroidSums[5] += cy * cy; centroidSums[6] += vy / (s * s)
    }

    /// Everything as one vector of sums (allreduce-sum it over ranks).
    public var sums: [Double] { [frames, unusable, judged, flagged, flaggedGoodness] + mapSums + centroidSums + dominantPixel }

    /// A verdict from `sums` (of the same pixel count).
    public init(sums s: [Double], pixelCount: Int) {
        precondition(s.count == 5 + 9 + 7 + pixelCount, "\(s.count) sums for a verdict of \(pixelCount) pixels")
        self.pixelCount = pixelCount
        frames = s[0]; unusable = s[1]; judged = s[2]; flagged = s[3]; flaggedGoodness = s[4]
        mapSums = Array(s[5..<14]); centroidSums = Array(s[14..<21]); dominantPixel = Array(s[21...])
    }

    /// Fraction of the scan's frames the model does not explain.
    public var flaggedFraction: Double { frames > 0 ? flagged / frames : 0 }

    /// Standard deviation of each map (strain, tilt_lr, tilt_ud) over valid frames.
    public var mapSpread: [Double] {
        let n = mapSums[0]
        guard n > 1 else { return [.nan, .nan, .nan] }
        return (0..<3).map { j in
            let mean = mapSums[1 + 2 * j] / n
            return max(0, mapSums[2 + 2 * j] / n - mean * mean).squareRoot()
        }
    }

    /// Variance of the frames' centroids across the scan over their mean Poisson variance,
    /// the larger of x and y (≈ 1 when the frames differ only by noise).
    public var centroidSpreadRatio: Double {
        let n = centroidSums[0]
        guard n > 1 else { return .nan }
        func ratio(_ o: Int) -> Double {
            let mean = centroidSums[o] / n, between = max(0, centroidSums[o + 1] / n - mean * mean), noise = centroidSums[o + 2] / n
            return noise > 0 ? between / noise : (between > 0 ? .infinity : 1)
        }
        return max(ratio(1), ratio(4))
    }

    /// True when every map is nearly constant (std < `constantFraction` of its range) while the
    /// frames differ (centroid spread > `differFactor` × noise).
    public func mapsNearlyConstant(ranges: ParameterRanges) -> Bool {
        let spread = mapSpread, widths = [ranges.strain, ranges.tiltLRDeg, ranges.tiltUDDeg].map { $0[1] - $0[0] }
        guard mapSums[0] > 1 else { return false }
        let constant = zip(spread, widths).allSatisfy { $0 < Self.constantFraction * $1 }
        return constant && centroidSpreadRatio > Self.differFactor
    }

    /// The warning for scan `scan`, nil when the maps can be trusted: when more than
    /// `warnFraction` of the frames are flagged, or when the maps are nearly constant while
    /// the frames differ. Names the scan, the fraction and the likely causes.
    public func warning(scan: String, ranges: ParameterRanges, threshold: Double) -> String? {
        var parts: [String] = []
        let n = Int(frames.rounded()), nf = Int(flagged.rounded())
        if flaggedFraction > Self.warnFraction {
            let meanGoodness = flaggedGoodness / max(flagged, 1)
            var text = String(format: "%d of %d frames (%.1f %%) are not explained by the model (goodness of fit > %g, mean %.3g; set valid = 0).",
                              nf, n, 100 * flaggedFraction, threshold, meanGoodness)
            let side = Int(Double(pixelCount).squareRoot().rounded())
            if let top = dominantPixel.indices.max(by: { dominantPixel[$0] < dominantPixel[$1] }), dominantPixel[top] > 0.5 * flagged {
                text += " In \(Int(dominantPixel[top])) of them a few pixels hold most of the deviance, first model pixel y = \(top / side), x = \(top % side): unmasked hot, dead or sentinel pixels — mask them (pixel_mask, --mask or the hot-pixel threshold)."
            } else {
                text += " Likely causes: the ROI misses or cuts the diffraction peak (choose it with `donut inspect`); bad pixels not masked; counts that are not photon counts (already divided by a monitor or a gain: give the raw counts and the monitor instead)."
            }
            parts.append(text)
        }
        if mapsNearlyConstant(ranges: ranges) {
            let s = mapSpread
            parts.append(String(format: "strain, tilt_lr and tilt_ud are nearly constant (std %.2g, %.2g°, %.2g°) although the frames differ (their centroids spread %.0f× more than noise): something other than the film — a hot pixel, the ROI or the mask — decides the maps.",
                                s[0], s[1], s[2], centroidSpreadRatio))
        }
        guard !parts.isEmpty else { return nil }
        return "warning: scan '\(scan)': " + parts.joined(separator: " ")
    }
}
