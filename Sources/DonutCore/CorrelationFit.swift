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
    /// `projections` (count × projectionLength, Double), which the caller zeroes.
    public func accumulateProjections(frames: UnsafePointer<Float>, count: Int, into projections: UnsafeMutablePointer<Double>) {
        guard count > 0, !entries.isEmpty else { return }
        let need = count * chunkEntries
        if need > correlationCapacity {
            correlations.deallocate(); correlations = .allocate(capacity: need); correlationCapacity = need
        }
        let length = projectionLength
        var start = 0
        while start < entries.count {
            let chunk = min(chunkEntries, entries.count - start)
            Float.gemm(transA: false, transB: true, m: count, n: chunk, k: pixelCount, alpha: 1,
                       a: frames, lda: pixelCount, b: library.baseAddress! + start * pixelCount, ldb: pixelCount,
                       beta: 0, c: correlations, ldc: chunk)
            for f in 0..<count {
                let p = projections + f * length, c = correlations + f * chunk
                for j in 0..<chunk {
                    let v = Double(c[j]), e = start + j
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

    public func run(fit: CorrelationFit, keep: Range<Int>,
                    readFrames: (Range<Int>) throws -> [Float],
                    allreduceSum: (UnsafeMutableBufferPointer<Double>) -> Void,
                    progress: ((Int, Int) -> Void)? = nil) rethrows -> FrameResults {
        var out = FrameResults(frameRange: keep)
        if fit.grid.hasThicknessAxis { out.thicknessA = .init(repeating: .nan, count: keep.count) }
        if residualModel != nil { out.residual = .init(repeating: .nan, count: keep.count) }
        let np = fit.pixelCount, length = fit.projectionLength
        var projections = [Double](repeating: 0, count: batch * length)
        var start = 0
        while start < frameCount {
            let range = start..<min(start + batch, frameCount)
            var frames = try readFrames(range)
            precondition(frames.count == range.count * np, "read \(frames.count) values for \(range.count) frames of \(np) pixels")
            var usable = [Bool](repeating: true, count: range.count)
            frames.withUnsafeMutableBufferPointer { buf in
                for f in 0..<range.count {
                    let frame = UnsafeMutableBufferPointer(rebasing: buf[(f * np)..<((f + 1) * np)])
                    if FrameProblem.inspect(UnsafeBufferPointer(frame)) != nil {
                        usable[f] = false
                        frame.update(repeating: 0)
                    }
                }
            }
            for i in 0..<(range.count * length) { projections[i] = 0 }
            frames.withUnsafeBufferPointer { f in
                projections.withUnsafeMutableBufferPointer { p in
                    fit.accumulateProjections(frames: f.baseAddress!, count: range.count, into: p.baseAddress!)
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
                    out.residual?[k.index] = frames.withUnsafeBufferPointer { f in
                        patterns.withUnsafeBufferPointer { m in
                            scaledMeanAbsoluteError(frame: UnsafeBufferPointer(rebasing: f[(k.frame * np)..<((k.frame + 1) * np)]),
                                                    model: UnsafeBufferPointer(rebasing: m[(j * np)..<((j + 1) * np)]))
                        }
                    }
                }
            }
            progress?(range.upperBound, frameCount)
            start = range.upperBound
        }
        return out
    }
}

/// Physics residual of a frame against a model pattern in photons: the model is scaled
/// by the least-squares factor s = ⟨frame, model⟩ / ⟨model, model⟩, then
/// MAE = mean |frame − s·model|.
public func scaledMeanAbsoluteError(frame: UnsafeBufferPointer<Float>, model: UnsafeBufferPointer<Float>) -> Double {
    var fm = 0.0, mm = 0.0
    for i in frame.indices { fm += Double(frame[i]) * Double(model[i]); mm += Double(model[i]) * Double(model[i]) }
    let s = mm > 0 ? fm / mm : 0
    var e = 0.0
    for i in frame.indices { e += abs(Double(frame[i]) - s * Double(model[i])) }
    return e / Double(frame.count)
}
