import Foundation
import DonutPhysics
import DonutNN
import DonutBLAS

/// Measured-like frames from ground-truth maps: each frame is the forward model at its
/// pixel's parameters, scaled so that its brightest pixel holds `peakPhotons` (the
/// published normalisation), then Poisson-sampled with its own random stream
/// (`SplitMix64.seeded(seed, stream: frameIndex)`), so any subset of frames is reproducible.
public enum ScanSimulation {
    /// Frames `range` of the scan (range.count × n × n) into `out`; `batch` frames per GEMM call.
    public static func frames(of maps: PhantomMaps, range: Range<Int>, model: ForwardModel<Float>,
                              peakPhotons: Double, seed: UInt64, noise: Bool = true,
                              into out: UnsafeMutableBufferPointer<Float>, batch: Int = 256) {
        let np = model.pixelCount
        precondition(out.count >= range.count * np)
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(start + batch, range.upperBound)
            let slice = UnsafeMutableBufferPointer(rebasing: out[((start - range.lowerBound) * np)..<((end - range.lowerBound) * np)])
            model.patterns((start..<end).map(maps.parameters(at:)), into: slice)
            for f in start..<end {
                let frame = UnsafeMutableBufferPointer(rebasing: slice[((f - start) * np)..<((f - start + 1) * np)])
                let peak = Double(frame.max() ?? 0)
                let scale = peak > 0 ? peakPhotons / peak : 0
                var rng = SplitMix64.seeded(seed, stream: UInt64(f))
                for i in 0..<np {
                    let lambda = Double(frame[i]) * scale
                    frame[i] = Float(noise ? rng.poisson(lambda) : lambda)
                }
            }
            start = end
        }
    }
}
