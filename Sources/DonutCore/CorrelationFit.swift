import Foundation
import DonutPhysics
import DonutBLAS

/// The conventional correlation fit (Zhou et al.), on one rank's slab of the library.
///
/// Each library pattern is normalised to unit sum; a frame's correlation with entry e is
/// c_e = ⟨frame, pattern_e⟩. The correlation cube c(ε, ω, χ[, t]) is summed onto each
/// parameter axis, each projection has its minimum subtracted, and the centre of mass
/// along the axis is the estimate. The projections are plain sums over entries, so a
/// library split across ranks gives the exact answer after one allreduce of the
/// per-frame projection vectors (length nε + nω + nχ + nt).
///
/// The correlations are one GEMM per (frame batch × library chunk): C = F·Lᵀ.
///
/// **Masked pixels** (weight w_i = 0: gaps, hot or dead pixels) are left out exactly: the
/// frame is correlated with each pattern over its measured pixels only, the pattern normalised
/// to unit sum over that same pixel set (as if the library had been simulated with the mask):
///
///     c_e = Σ_i w_i x_i p_e,i / Σ_i w_i p_e,i        (p_e unit-sum over all pixels)
///
/// The numerators are the GEMM above with x ⊙ w; the denominators are one more GEMM of the
/// distinct weight rows against the same library, D = W·Lᵀ, computed once per distinct mask
/// of a batch (frames sharing one mask — the common case — cost one GEMV-sized row), so the
/// cost stays BLAS-shaped. Without masked pixels every denominator is 1 and c is the
/// published correlation. An entry with no intensity on the measured pixels (w·p_e < 1e-6:
/// its peak entirely in a gap) correlates 0, not 0/0.
///
/// **Monitor**: frames are divided by their monitor. The estimates do not depend on it (each
/// frame's projections are min-subtracted and located by their centre of mass, which is
/// invariant to the frame's scale); the correlation values are then per unit incident intensity.
public final class CorrelationFit {
    public let grid: LibraryGrid
    /// Flat library entries held here.
    public let entries: Range<Int>
    public let pixelCount: Int
    /// Unit-sum patterns, entries.count × pixelCount, row-major.
    private let library: UnsafeMutableBufferPointer<Float>
    /// Offsets of each local entry's four axis bins in the projection vector.
    private let binStrain, binTiltLR, binTiltUD, binThickness: [Int32]
    /// Library entries per GEMM: C (batch × chunk) stays cache-sized.
    public let chunkEntries: Int
    private var correlations: UnsafeMutablePointer<Float>
    private var correlationCapacity = 0

    /// Projection vector layout: [ε bins | ω bins | χ bins | t bins].
    public var projectionLength: Int {
        grid.strain.count + grid.tiltLRDeg.count + grid.tiltUDDeg.count + grid.thicknessA.count
    }

    /// Takes this rank's patterns (entries.count × pixelCount) and normalises each to unit
    /// sum. A pattern with zero sum (outside every detector pixel) stays zero.
    public init(grid: LibraryGrid, entries: Range<Int>, patterns: [Float], pixelCount: Int, chunkEntries: Int = 2048) {
        precondition(patterns.count == entries.count * pixelCount, "slab holds \(patterns.count) values, expected \(entries.count) × \(pixelCount)")
        self.grid = grid; self.entries = entries; self.pixelCount = pixelCount
        self.chunkEntries = max(1, chunkEntries)
        library = .allocate(capacity: max(patterns.count, 1))
        _ = library.initialize(from: patterns)
        for e in 0..<entries.count {
            let row = UnsafeMutableBufferPointer(rebasing: library[(e * pixelCount)..<((e + 1) * pixelCount)])
            let sum = row.reduce(0.0) { $0 + Double($1) }
            if sum > 0 { let inv = Float(1 / sum); for i in row.indices { row[i] *= inv } }
        }
        let nE = grid.strain.count, nW = grid.tiltLRDeg.count, nC = grid.tiltUDDeg.count
        var bs = [Int32](), bw = [Int32](), bc = [Int32](), bt = [Int32]()
        for flat in entries {
            let i = grid.indices(of: flat)
            bs.append(Int32(i.strain)); bw.append(Int32(nE + i.tiltLR))
            bc.append(Int32(nE + nW + i.tiltUD)); bt.append(Int32(nE + nW + nC + i.thickness))
        }
        binStrain = bs; binTiltLR = bw; binTiltUD = bc; binThickness = bt
        correlations = .allocate(capacity: 1)
    }
    deinit { library.deallocate(); correlations.deallocate() }

    /// Adds this slab's projections of `count` frames (count × pixelCount) into
    /// `projections` (count × projectionLength, Double), which the caller zeroes. `weights`
    /// (count × pixelCount, 0/1; nil = every pixel measured): the masked correlation above;
    /// the frames must hold 0 at weight 0 (as `FrameBlock.counts` do).
    public func accumulateProjections(frames: UnsafePointer<Float>, weights: UnsafePointer<Float>? = nil, count: Int,
                                      into projections: UnsafeMutablePointer<Double>) {
        guard count > 0, !entries.isEmpty else { return }
        // Distinct weight rows of the batch (usually one) and which one each frame uses.
        var maskRows: [Int] = [], maskOf = [Int](repeating: 0, count: weights == nil ? 0 : count)
        if let w = weights {
            for f in 0..<count {
                if let k = maskRows.firstIndex(where: { memcmp(w + $0 * pixelCount, w + f * pixelCount, pixelCount * 4) == 0 }) {
                    maskOf[f] = k
                } else { maskOf[f] = maskRows.count; maskRows.append(f) }
            }
            if maskRows.count == 1, !(0..<pixelCount).contains(where: { w[$0] != 1 }) { maskRows = []; maskOf = [] }
        }
        let need = (count + maskRows.count) * chunkEntries
        if need > correlationCapacity {
            correlations.deallocate(); correlations = .allocate(capacity: need); correlationCapacity = need
        }
        var masks: [Float] = []
        if let w = weights, !maskRows.isEmpty {
            masks = .init(repeating: 0, count: maskRows.count * pixelCount)
            for (k, f) in maskRows.enumerated() { for i in 0..<pixelCount { masks[k * pixelCount + i] = w[f * pixelCount + i] } }
        }
        let length = projectionLength
        var start = 0
        while start < entries.count {
            let chunk = min(chunkEntries, entries.count - start)
            let lib = library.baseAddress! + start * pixelCount
            Float.gemm(transA: false, transB: true, m: count, n: chunk, k: pixelCount, alpha: 1,
                       a: frames, lda: pixelCount, b: lib, ldb: pixelCount,
                       beta: 0, c: correlations, ldc: chunk)
            let denominators = correlations + count * chunk
            if !maskRows.isEmpty {
                masks.withUnsafeBufferPointer { m in
                    Float.gemm(transA: false, transB: true, m: maskRows.count, n: chunk, k: pixelCount, alpha: 1,
                               a: m.baseAddress!, lda: pixelCount, b: lib, ldb: pixelCount,
                               beta: 0, c: denominators, ldc: chunk)
                }
            }
            for f in 0..<count {
                let p = projections + f * length, c = correlations + f * chunk
                let d: UnsafeMutablePointer<Float>? = maskRows.isEmpty ? nil : denominators + maskOf[f] * chunk
                for j in 0..<chunk {
                    var v = Double(c[j])
                    if let d { let dj = Double(d[j]); v = dj > 1e-6 ? v / dj : 0 }
                    let e = start + j
                    p[Int(binStrain[e])] += v; p[Int(binTiltLR[e])] += v
                    p[Int(binTiltUD[e])] += v; p[Int(binThickness[e])] += v
                }
            }
            start += chunk
        }
    }

    /// Centre of mass of each min-subtracted projection, on the library axes. NaN where a
    /// projection is flat (nothing to locate). Without a thickness axis, thickness is the
    /// grid's single (nominal) value.
    public static func estimate(projection p: UnsafePointer<Double>, grid: LibraryGrid) -> FrameParameters {
        func centreOfMass(_ offset: Int, _ axis: [Double]) -> Double {
            guard axis.count > 1 else { return axis[0] }
            var lo = Double.infinity
            for i in 0..<axis.count { lo = min(lo, p[offset + i]) }
            var w = 0.0, wx = 0.0
            for i in 0..<axis.count { let d = p[offset + i] - lo; w += d; wx += d * axis[i] }
            return w > 0 && w.isFinite ? wx / w : .nan
        }
        let nE = grid.strain.count, nW = grid.tiltLRDeg.count, nC = grid.tiltUDDeg.count
        return FrameParameters(strain: centreOfMass(0, grid.strain),
                               tiltLRDeg: centreOfMass(nE, grid.tiltLRDeg),
                               tiltUDDeg: centreOfMass(nE + nW, grid.tiltUDDeg),
                               thicknessA: centreOfMass(nE + nW + nC, grid.thicknessA))
    }
}

/// Runs the correlation fit over a whole scan, the same way on every rank:
/// every rank walks the same frame batches (its library slab must see every frame),
/// adds its projections, `allreduceSum` makes them global, and the rank keeps the
/// estimates of the frames in `keep` (its block of the output maps). The reduction is a
/// sum over ranks, so the answer does not depend on how the library is split beyond
/// floating-point summation order.
public struct CorrelationFitRun {
    public var frameCount: Int
    public var batch: Int = 128
    /// Box (library) model for the per-frame residual; nil skips the residual.
    public var residualModel: ForwardModel<Float>?

    public init(frameCount: Int, batch: Int = 128, residualModel: ForwardModel<Float>? = nil) {
        self.frameCount = frameCount; self.batch = batch; self.residualModel = residualModel
    }

    /// The fit over frames read as plain counts (every pixel measured, no monitor).
    public func run(fit: CorrelationFit, keep: Range<Int>,
                    readFrames: (Range<Int>) throws -> [Float],
                    allreduceSum: (UnsafeMutableBufferPointer<Double>) -> Void,
                    judge: FrameJudge? = nil,
                    progress: ((Int, Int) -> Void)? = nil) rethrows -> FrameResults {
        try run(fit: fit, keep: keep, readBlock: { r in FrameBlock(first: r.lowerBound, count: r.count, pixelCount: fit.pixelCount, counts: try readFrames(r)) },
                allreduceSum: allreduceSum, judge: judge, progress: progress)
    }

    /// The fit over `FrameBlock`s: masked pixels left out (`CorrelationFit`), counts divided by
    /// the monitor, the residual over measured pixels; `judge` fills the goodness of fit of the
    /// frames in `keep`, sets valid = 0 above its threshold and adds them to its verdict.
    public func run(fit: CorrelationFit, keep: Range<Int>,
                    readBlock: (Range<Int>) throws -> FrameBlock,
                    allreduceSum: (UnsafeMutableBufferPointer<Double>) -> Void,
                    judge: FrameJudge? = nil,
                    progress: ((Int, Int) -> Void)? = nil) rethrows -> FrameResults {
        var out = FrameResults(frameRange: keep)
        if fit.grid.hasThicknessAxis { out.thicknessA = .init(repeating: .nan, count: keep.count) }
        if residualModel != nil { out.residual = .init(repeating: .nan, count: keep.count) }
        let np = fit.pixelCount, length = fit.projectionLength
        var projections = [Double](repeating: 0, count: batch * length)
        var start = 0
        while start < frameCount {
            let range = start..<min(start + batch, frameCount)
            let block = try readBlock(range)
            precondition(block.counts.count == range.count * np && block.first == range.lowerBound,
                         "read \(block.counts.count) values from frame \(block.first) for \(range.count) frames of \(np) pixels from \(range.lowerBound)")
            var usable = [Bool](repeating: true, count: range.count)
            // The correlation's input: counts ⊙ w / monitor; a bad frame all zero (correlates 0).
            var frames = block.counts
            frames.withUnsafeMutableBufferPointer { buf in
                for f in 0..<range.count {
                    let frame = UnsafeMutableBufferPointer(rebasing: buf[(f * np)..<((f + 1) * np)])
                    if FrameProblem.inspect(UnsafeBufferPointer(frame)) != nil {
                        usable[f] = false
                        frame.update(repeating: 0)
                        continue
                    }
                    let scale = Float(1 / (block.monitor?[f] ?? 1))
                    if let w = block.weights {
                        for i in 0..<np { frame[i] *= w[f * np + i] * scale }
                    } else if scale != 1 {
                        for i in 0..<np { frame[i] *= scale }
                    }
                }
            }
            for i in 0..<(range.count * length) { projections[i] = 0 }
            frames.withUnsafeBufferPointer { f in
                projections.withUnsafeMutableBufferPointer { p in
                    if let w = block.weights {
                        w.withUnsafeBufferPointer { fit.accumulateProjections(frames: f.baseAddress!, weights: $0.baseAddress!, count: range.count, into: p.baseAddress!) }
                    } else {
                        fit.accumulateProjections(frames: f.baseAddress!, count: range.count, into: p.baseAddress!)
                    }
                }
            }
            projections.withUnsafeMutableBufferPointer { p in
                allreduceSum(UnsafeMutableBufferPointer(rebasing: p[0..<(range.count * length)]))
            }
            let mine = range.clamped(to: keep)
            var kept: [(index: Int, frame: Int, params: FrameParameters)] = []
            for frame in mine where usable[frame - range.lowerBound] {
                let p = projections.withUnsafeBufferPointer {
                    CorrelationFit.estimate(projection: $0.baseAddress! + (frame - range.lowerBound) * length, grid: fit.grid)
                }
                let i = frame - keep.lowerBound
                guard p.strain.isFinite, p.tiltLRDeg.isFinite, p.tiltUDDeg.isFinite, p.thicknessA.isFinite else { continue }
                out.strain[i] = p.strain; out.tiltLRDeg[i] = p.tiltLRDeg; out.tiltUDDeg[i] = p.tiltUDDeg
                out.thicknessA?[i] = p.thicknessA
                out.valid[i] = 1
                kept.append((i, frame - range.lowerBound, p))
            }
            if let model = residualModel, !kept.isEmpty {
                let patterns = model.patterns(kept.map(\.params))
                for (j, k) in kept.enumerated() {
                    let pixels = (k.frame * np)..<((k.frame + 1) * np)
                    out.residual?[k.index] = block.counts.withUnsafeBufferPointer { f in
                        patterns.withUnsafeBufferPointer { m in
                            block.weights.withOptionalBuffer { w in
                                scaledMeanAbsoluteError(frame: UnsafeBufferPointer(rebasing: f[pixels]),
                                                        model: UnsafeBufferPointer(rebasing: m[(j * np)..<((j + 1) * np)]),
                                                        weights: w.map { UnsafeBufferPointer(rebasing: $0[pixels]) })
                            }
                        }
                    }
                }
            }
            if let judge, !mine.isEmpty {
                judge.judge(&out, block: block.frames(mine), usable: mine.map { usable[$0 - range.lowerBound] })
            }
            progress?(range.upperBound, frameCount)
            start = range.upperBound
        }
        return out
    }
}

/// Physics residual of a frame against a model pattern in photons, over the measured pixels
/// (weight 1; all when `weights` is nil): the model is scaled by the least-squares factor
/// s = ⟨frame, model⟩_w / ⟨model, model⟩_w, then MAE = Σ w |frame − s·model| / Σ w.
public func scaledMeanAbsoluteError(frame: UnsafeBufferPointer<Float>, model: UnsafeBufferPointer<Float>,
                                    weights: UnsafeBufferPointer<Float>? = nil) -> Double {
    var fm = 0.0, mm = 0.0, n = 0.0
    for i in frame.indices where weights.map({ $0[i] > 0 }) ?? true {
        fm += Double(frame[i]) * Double(model[i]); mm += Double(model[i]) * Double(model[i]); n += 1
    }
    let s = mm > 0 ? fm / mm : 0
    var e = 0.0
    for i in frame.indices where weights.map({ $0[i] > 0 }) ?? true { e += abs(Double(frame[i]) - s * Double(model[i])) }
    return n > 0 ? e / n : .nan
}
