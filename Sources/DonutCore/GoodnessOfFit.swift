import Foundation
import DonutBLAS
import DonutNN
import DonutPhysics

/// Expected Poisson deviance of one pixel, e(μ) = E[d(k; μ)] for k ~ Poisson(μ), with
/// d(k; μ) = 2[k·log(k/μ) − (k − μ)] (the k·log k term is 0 at k = 0).
///
/// Why not 1: the χ² limit E[d] → 1 holds only for many counts; at the few photons per pixel
/// of a nanobeam frame most pixels have μ ≪ 1 and e(μ) ≈ −2μ·log μ → 0, so a deviance must be
/// compared with its own expectation, pixel by pixel:
///
///     e(μ) = 2(E[k log k] − μ log μ)                      (E[k − μ] = 0)
///          = 2 Σ_k p_k(μ)·[k log(k/μ) − (k − μ)]          exact, p_k = e^{−μ} μ^k / k!
///          ≈ 1 + 1/(6μ) + 1/(6μ²)                          μ ≥ 50 (error < 3e-6, measured)
///          ≈ −2μ log μ + 2μ² log 2                          μ < 1e-4 (the k ≤ 2 terms; error < 1e-12)
///
/// Between 1e-4 and 50 the exact sum is tabulated on a logarithmic grid (2048 points) and
/// interpolated linearly in log μ (error < 2e-5, `GoodnessOfFitTests`).
public enum PoissonDevianceExpectation {
    static let lower = 1e-4, upper = 50.0, points = 2048
    static let logLower = log(lower), logStep = (log(upper) - log(lower)) / Double(points - 1)
    static let table: [Double] = (0..<points).map { exact(exp(logLower + Double($0) * logStep)) }

    /// e(μ) by the exact sum over the Poisson pmf (k up to μ + 12√μ + 25: the tail beyond is < 1e-25).
    public static func exact(_ mu: Double) -> Double {
        guard mu > 0 else { return 0 }
        let kMax = Int(mu + 12 * mu.squareRoot() + 25)
        // log p_k by recurrence from log p_0 = −μ (no underflow of e^{−μ} for large μ).
        var logP = -mu, sum = exp(logP) * mu   // k = 0: d = 2μ, times ½ (the factor 2 comes last)
        let logMu = log(mu)
        for k in 1...kMax {
            let kd = Double(k)
            logP += logMu - log(kd)
            sum += exp(logP) * (kd * (log(kd) - logMu) - (kd - mu))
        }
        return 2 * sum
    }

    /// e(μ) (table, asymptotes); 0 for μ ≤ 0.
    @inline(__always)
    public static func value(_ mu: Double) -> Double {
        if mu >= upper { let r = 1 / mu; return 1 + r / 6 + r * r / 6 }
        if mu < lower { return mu > 0 ? -2 * mu * log(mu) + 2 * mu * mu * M_LN2 : 0 }
        let x = (log(mu) - logLower) / logStep
        let i = min(Int(x), points - 2), f = x - Double(i)
        return table[i] + f * (table[i + 1] - table[i])
    }
}

/// Goodness of fit of one frame: the reduced Poisson deviance
///
///     gof = D / E[D | μ],   D = 2 Σ_i w_i [k_i log(k_i/μ_i) − (k_i − μ_i)],   E[D | μ] = Σ_i w_i e(μ_i)
///
/// over the measured pixels (w = 1; masked pixels carry no information and are left out),
/// with μ the expected counts of the model (`GoodnessOfFit`: at the frame's optimum). ≈ 1 (spread ~√(2/E[D]))
/// for a frame the model explains, whatever the count level; ≫ 1 for an unmasked hot pixel,
/// a wrong ROI, counts that are not Poisson (already divided by a monitor or a gain).
public struct FrameFit: Sendable, Equatable {
    /// D / E[D]; NaN when no pixel is measured.
    public var goodness: Double
    public var deviance: Double
    public var expected: Double
    /// The pixel contributing most to D (flat index y·n + x) and its share of D: a share near 1
    /// on frames with gof ≫ 1 is one bad (hot, dead, sentinel) pixel the mask missed.
    public var worstPixel: Int
    public var worstShare: Double
    /// Pixels of weight 1.
    public var measuredPixels: Int
}

/// Goodness of fit for every method, against ONE model and at ONE point: the smooth
/// (differentiable) forward model at its maximum-likelihood parameters for the frame, found by
/// the physics refinement started from the method's estimate (a few Levenberg–Marquardt steps),
/// μ_i = m·a·I_i(θ̂) + b, m the frame's monitor, a the frame's intensity scale (free), b = `floor`.
///
/// Why at the optimum and not at the method's estimate: then gof is a property of the frame
/// and the model, not of the estimator, and means exactly the same for the fit, DONUT,
/// NanobeamNN and the refinement (for the refinement it is the deviance it minimised). It
/// answers "can this frame be explained by a film's diffraction pattern at all?" — it cannot
/// with an unmasked hot pixel, a sentinel in the ROI, a ROI off the peak, counts that are not
/// Poisson — while a coarse but honest estimate (the fit's library grid, a small network) is
/// not flagged for being coarse (measured: on `domains` frames the fit's own estimates give
/// gof 3.8 at 7 photons and 43 at 100, their optimum 0.98 and 1.13). How far a method's
/// estimate is from the optimum is its accuracy, which `*_sigma`, the benchmarks and the
/// constant-map check (`ScanVerdict`) speak to.
///
/// Why the smooth model for all: it is the model the refinement maximises the likelihood of
/// and the model of DONUT's physics branch; it is defined for every parameter value and never
/// exactly 0 where the film scatters: the box model's hard edges put μ = 0 next to its edges,
/// where a peak displaced by a fraction of a pixel would give D = ∞. The box–smooth difference
/// costs gof 0.98 → 1.13 (median) from 7 to 100 photons at the peak on box-model frames.
///
/// The monitor cancels from gof (a is free per frame: the methods estimate shape, not
/// brightness); it only fixes what a means (brightness per unit incident intensity).
public final class GoodnessOfFit {
    public let model: ForwardModel<Float>
    let config: DonutConfig
    /// Expected counts added to every pixel (photons): the refinement's background, so that a
    /// photon where the model is dark costs a finite 2[log(k/b) − 1] ≈ 12, not ∞.
    public let floor: Double
    /// Frames with gof above this get valid = 0 (`GoodnessOfFit.defaultThreshold`).
    public var threshold: Double
    var patterns: [Float] = []
    /// Refinements (with and without thickness) finding the optimum, one per thread.
    var refinements: [Bool: [PhysicsRefinement]] = [:]

    public init(config: DonutConfig, floor: Double = 1e-3, threshold: Double = GoodnessOfFit.defaultThreshold) {
        model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .smooth)
        self.config = config; self.floor = floor; self.threshold = threshold
    }

    /// Calibrated from simulation (docs/benchmarks.md, "Goodness of fit"): at the optimum,
    /// correctly modelled frames stay below 1.10 (smooth- and box-model scans at 7 photons, the
    /// smooth ones at 100) and 1.21 (box-model frames at 100 photons, the model mismatch); an
    /// unmasked hot pixel gives ≥ 100, counts doubled (not Poisson) 2. 2 leaves room for the
    /// mismatch of real frames at higher counts.
    public static let defaultThreshold = 2.0

    /// gof of one frame against expected counts `mu` (all > 0) over pixels with weight 1
    /// (all when `weights` is nil).
    public static func evaluate(counts: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>?,
                                expected mu: UnsafeBufferPointer<Float>) -> FrameFit {
        precondition(counts.count == mu.count && (weights?.count ?? counts.count) == counts.count, "frame, weights and model differ in size")
        var d = 0.0, e = 0.0, worst = 0.0, worstPixel = -1, measured = 0
        for i in counts.indices where weights.map({ $0[i] > 0 }) ?? true {
            let k = Double(counts[i]), m = Double(mu[i])
            let di = 2 * ((k > 0 ? k * log(k / m) : 0) - (k - m))
            d += di; e += PoissonDevianceExpectation.value(m); measured += 1
            if di > worst { worst = di; worstPixel = i }
        }
        return FrameFit(goodness: measured > 0 && e > 0 ? d / e : .nan, deviance: d, expected: e,
                        worstPixel: worstPixel, worstShare: d > 0 ? worst / d : 0, measuredPixels: measured)
    }

    /// gof of each frame of `block` listed in `frames` (indices within the block) at the given
    /// estimates (one per listed frame), not at the optimum: the smooth model at each estimate,
    /// scaled by the frame's ML intensity scale and its monitor, plus the floor (how well an
    /// estimate explains the frame, e.g. to rank networks: `HeldOutMetrics`).
    public func evaluate(_ block: FrameBlock, frames: [Int], estimates: [FrameParameters]) -> [FrameFit] {
        precondition(frames.count == estimates.count, "\(frames.count) frames, \(estimates.count) estimates")
        let np = block.pixelCount
        precondition(np == model.pixelCount, "frames of \(np) pixels, the model has \(model.pixelCount)")
        guard !frames.isEmpty else { return [] }
        if patterns.count < frames.count * np { patterns = .init(repeating: 0, count: frames.count * np) }
        patterns.withUnsafeMutableBufferPointer { model.patterns(estimates, into: $0) }
        var out: [FrameFit] = []
        out.reserveCapacity(frames.count)
        block.counts.withUnsafeBufferPointer { c in
            patterns.withUnsafeMutableBufferPointer { p in
                block.weights.withOptionalBuffer { allWeights in
                    for (j, f) in frames.enumerated() {
                        let pixels = (f * np)..<((f + 1) * np)
                        let frame = UnsafeBufferPointer(rebasing: c[pixels])
                        let mu = UnsafeMutableBufferPointer(rebasing: p[(j * np)..<((j + 1) * np)])
                        let w = allWeights.map { UnsafeBufferPointer(rebasing: $0[pixels]) }
                        scaleToFrame(mu, frame: frame, weights: w, monitor: block.monitor?[f] ?? 1)
                        out.append(GoodnessOfFit.evaluate(counts: frame, weights: w, expected: UnsafeBufferPointer(mu)))
                    }
                }
            }
        }
        return out
    }

    /// μ = m·a·I + b in place, a = Σ w k / Σ w m I (the Poisson ML scale over measured pixels).
    func scaleToFrame(_ pattern: UnsafeMutableBufferPointer<Float>, frame: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>?, monitor m: Double) {
        var sk = 0.0, si = 0.0
        for i in pattern.indices where weights.map({ $0[i] > 0 }) ?? true { sk += Double(frame[i]); si += Double(pattern[i]) }
        let a = si > 0 ? sk / (m * si) : 0, s = m * a
        for i in pattern.indices { pattern[i] = Float(s * Double(pattern[i]) + floor) }
    }

    /// Fills `results.goodnessOfFit` for the frames of `block` that are valid in `results`
    /// (NaN elsewhere) — gof at the optimum found from each frame's estimate — and sets valid = 0
    /// where gof exceeds `threshold` (the parameters are kept: valid says they cannot be
    /// trusted). Returns the per-frame fits (nil where not judged) for the scan verdict.
    /// `results.frameRange` must contain the block. Frames are shared by `Parallel.threads` threads.
    @discardableResult
    public func fill(_ results: inout FrameResults, block: FrameBlock) -> [FrameFit?] {
        let o = block.first - results.frameRange.lowerBound
        precondition(o >= 0 && o + block.count <= results.frameRange.count, "block \(block.range) outside the results \(results.frameRange)")
        if results.goodnessOfFit == nil { results.goodnessOfFit = .init(repeating: .nan, count: results.frameRange.count) }
        let thickness = results.thicknessA != nil
        var starts: [FrameParameters] = [], skip: [Bool] = []
        for f in 0..<block.count {
            let i = o + f
            let t = results.thicknessA?[i]
            let p = FrameParameters(strain: results.strain[i], tiltLRDeg: results.tiltLRDeg[i], tiltUDDeg: results.tiltUDDeg[i],
                                    thicknessA: t?.isFinite == true ? t! : model.geometry.defaultThicknessA)
            starts.append(p)
            skip.append(results.valid[i] != 1 || !(p.strain.isFinite && p.tiltLRDeg.isFinite && p.tiltUDDeg.isFinite))
        }
        if refinements[thickness] == nil {
            refinements[thickness] = (0..<max(Parallel.threads, 1)).map { _ in
                PhysicsRefinement(config: config, fitThickness: thickness, maxIterations: 8, background: floor, modelMismatch: false)
            }
        }
        let workers = refinements[thickness]!
        let optima = workers[0].refine(block: block, from: starts, skip: skip, helpers: Array(workers.dropFirst()))
        var fits = [FrameFit?](repeating: nil, count: block.count)
        for f in 0..<block.count {
            guard let fit = optima[f]?.fit else { continue }
            fits[f] = fit
            results.goodnessOfFit![o + f] = fit.goodness
            if !(fit.goodness <= threshold) { results.valid[o + f] = 0 }
        }
        return fits
    }
}

extension Optional where Wrapped == [Float] {
    /// The array's buffer, or nil.
    func withOptionalBuffer<R>(_ body: (UnsafeBufferPointer<Float>?) -> R) -> R {
        switch self {
        case .some(let a): return a.withUnsafeBufferPointer { body($0) }
        case .none: return body(nil)
        }
    }
}

/// Judges a method's frames as it goes: fills `goodnessOfFit`, sets valid = 0 above the
/// threshold and keeps the scan's verdict (`ScanVerdict`). One per scan and rank; the
/// pipeline reduces `verdict.sums` over ranks and prints `warning` at the end.
public final class FrameJudge {
    public let goodness: GoodnessOfFit
    public private(set) var verdict: ScanVerdict

    public init(config: DonutConfig, threshold: Double = GoodnessOfFit.defaultThreshold) {
        goodness = GoodnessOfFit(config: config, threshold: threshold)
        verdict = ScanVerdict(pixelCount: goodness.model.pixelCount)
    }

    /// Judges the frames of `block` (inside `results.frameRange`); `usable[f]`: frame f could be
    /// analysed at all (false for NaN, negative or empty frames).
    public func judge(_ results: inout FrameResults, block: FrameBlock, usable: [Bool]) {
        let fits = goodness.fill(&results, block: block)
        verdict.add(block, results: results, fits: fits, usable: usable, threshold: goodness.threshold)
    }
}

extension FrameBlock {
    /// Frames `range` (scan indices inside `self.range`) as a block of their own.
    public func frames(_ range: Range<Int>) -> FrameBlock {
        precondition(range.lowerBound >= first && range.upperBound <= first + count, "frames \(range) outside the block \(self.range)")
        if range == self.range { return self }
        let o = range.lowerBound - first, pixels = (o * pixelCount)..<((o + range.count) * pixelCount)
        return FrameBlock(first: range.lowerBound, count: range.count, pixelCount: pixelCount, counts: Array(counts[pixels]),
                          weights: weights.map { Array($0[pixels]) }, monitor: monitor.map { Array($0[o..<(o + range.count)]) })
    }
}
