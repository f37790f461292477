/// Fills masked pixels (weight 0) of a frame from its measured neighbours, for the network's
/// input only (fits, losses and likelihoods leave masked pixels out instead).
///
/// Why: the network was trained on complete frames, where a pixel is close to its neighbours
/// (the patterns are smooth on the pixel scale); a masked pixel left at 0 would look like a
/// dark line or hole the forward model never makes, and the encoder would answer to it. A
/// hot pixel left in would be worse. Why this fill: each masked pixel gets the linear
/// interpolation between the nearest measured pixels of its row (value h over a span d_h) and
/// of its column (v over d_v), weighted by the inverse spans,
///
///     x̂ = (h/d_h + v/d_v) / (1/d_h + 1/d_v)
///
/// exact for a frame linear along either axis, the mean of the 4 neighbours for an isolated
/// pixel, and across a module gap the interpolation along the short direction dominates. One
/// pass, no iteration; the neighbour table is built once per distinct mask and reused by every
/// frame sharing it (the common case). The network's own reconstruction or the model at a first
/// estimate would fill better inside a wide gap over the peak, at the price of a second pass.
public final class MaskInpainting {
    public let frameSize: Int
    /// Per masked pixel: its index and up to four (source pixel, weight) terms, weights summing to 1.
    var targets: [Int32] = [], sources: [Int32] = [], weights: [Float] = []
    var mask: [Float] = []

    public init(frameSize: Int) { self.frameSize = frameSize }

    /// Fills the masked pixels of `frame` in place (the measured ones are not touched); a frame
    /// without measured pixels is left as it is.
    public func fill(_ frame: UnsafeMutableBufferPointer<Float>, weights w: UnsafeBufferPointer<Float>) {
        let np = frameSize * frameSize
        precondition(frame.count == np && w.count == np, "frame of \(frame.count) pixels, weights \(w.count), frame size \(frameSize)")
        if mask.count != np || !mask.elementsEqual(w) { plan(w) }
        for t in targets.indices {
            var v: Float = 0
            for j in (4 * t)..<(4 * t + 4) where weights[j] != 0 { v += weights[j] * frame[Int(sources[j])] }
            frame[Int(targets[t])] = v
        }
    }

    /// Neighbour table of the mask `w`.
    func plan(_ w: UnsafeBufferPointer<Float>) {
        let n = frameSize
        mask = Array(w); targets = []; sources = []; weights = []
        func measured(_ y: Int, _ x: Int) -> Bool { w[y * n + x] > 0 }
        for y in 0..<n {
            for x in 0..<n where !measured(y, x) {
                // Nearest measured pixels left/right and up/down.
                var l = x - 1; while l >= 0 && !measured(y, l) { l -= 1 }
                var r = x + 1; while r < n && !measured(y, r) { r += 1 }
                var u = y - 1; while u >= 0 && !measured(u, x) { u -= 1 }
                var d = y + 1; while d < n && !measured(d, x) { d += 1 }
                var terms: [(Int, Double)] = []
                // One axis: linear between two neighbours (weights by distance), or the one there is.
                func axis(_ a: Int?, _ da: Int, _ b: Int?, _ db: Int) -> (terms: [(Int, Double)], span: Double)? {
                    switch (a, b) {
                    case let (a?, b?): let s = Double(da + db); return ([(a, Double(db) / s), (b, Double(da) / s)], s)
                    case let (a?, nil): return ([(a, 1)], Double(2 * da))
                    case let (nil, b?): return ([(b, 1)], Double(2 * db))
                    default: return nil
                    }
                }
                let h = axis(l >= 0 ? y * n + l : nil, x - l, r < n ? y * n + r : nil, r - x)
                let v = axis(u >= 0 ? u * n + x : nil, y - u, d < n ? d * n + x : nil, d - y)
                let ih = h.map { 1 / $0.span } ?? 0, iv = v.map { 1 / $0.span } ?? 0
                guard ih + iv > 0 else { continue }
                for (p, c) in h?.terms ?? [] { terms.append((p, c * ih / (ih + iv))) }
                for (p, c) in v?.terms ?? [] { terms.append((p, c * iv / (ih + iv))) }
                targets.append(Int32(y * n + x))
                for j in 0..<4 {
                    sources.append(Int32(j < terms.count ? terms[j].0 : 0)); weights.append(Float(j < terms.count ? terms[j].1 : 0))
                }
            }
        }
    }
}
