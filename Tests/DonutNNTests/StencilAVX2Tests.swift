import XCTest
import DonutNN
import DonutKernelsAVX2

/// The AVX2 + FMA stencils (3×3 and 2×2) against the stencil sums computed in Double, on plane
/// widths that take the 16-output step, the 8-output step and the scalar tail. Skipped on a CPU
/// without AVX2 + FMA (the kernels are then never called).
final class StencilAVX2Tests: XCTestCase {
    typealias Stencil = (UnsafeMutablePointer<Float>, Int, Int, UnsafePointer<Float>, Int, UnsafePointer<Float>, Bool) -> Void
    typealias Gradient = (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int, Int, UnsafePointer<Float>, Int) -> Void

    /// A k×k `stencil` (y (yh, yw) (+)= Σ w[k·ky + kx]·x[oy + ky, ox + kx]) and its weight `gradient`
    /// (g[k·ky + kx] = Σ dy[oy, ox]·x[oy + ky, ox + kx]) on x with one spare column per row.
    func check(k: Int, seed: UInt64, sizes: [(Int, Int)], stencil: Stencil, gradient: Gradient) {
        var rng = SplitMix64(seed: seed)
        for (yh, yw) in sizes {
            let xw = yw + k, xh = yh + k - 1, taps = k * k
            let x = randomValues(xh * xw, &rng).map(Float.init), w = randomValues(taps, &rng).map(Float.init)
            let start = randomValues(yh * yw, &rng).map(Float.init), dy = randomValues(yh * yw, &rng).map(Float.init)
            func tap(_ oy: Int, _ ox: Int, _ t: Int) -> Double { Double(x[(oy + t / k) * xw + ox + t % k]) }
            for accumulate in [false, true] {
                var y = start
                y.withUnsafeMutableBufferPointer { yp in stencil(yp.baseAddress!, yh, yw, x, xw, w, accumulate) }
                for oy in 0..<yh {
                    for ox in 0..<yw {
                        var expected = accumulate ? Double(start[oy * yw + ox]) : 0
                        for t in 0..<taps { expected += Double(w[t]) * tap(oy, ox, t) }
                        XCTAssertEqual(Double(y[oy * yw + ox]), expected, accuracy: 1e-5,
                                       "\(k)×\(k) forward (\(yh), \(yw)) at (\(oy), \(ox)), accumulate \(accumulate)")
                    }
                }
            }
            var g = [Float](repeating: .nan, count: taps)
            g.withUnsafeMutableBufferPointer { gp in gradient(gp.baseAddress!, dy, yh, yw, x, xw) }
            for t in 0..<taps {
                var expected = 0.0
                for oy in 0..<yh { for ox in 0..<yw { expected += Double(dy[oy * yw + ox]) * tap(oy, ox, t) } }
                XCTAssertEqual(Double(g[t]), expected, accuracy: 1e-5 * max(1, Double(yh * yw).squareRoot()),
                               "\(k)×\(k) gradient (\(yh), \(yw)) tap \(t)")
            }
        }
    }

    func testStencilsMatchDoubleSums() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        check(k: 3, seed: 91, sizes: [(5, 37), (3, 16), (2, 8), (4, 3), (64, 64)],
              stencil: { StencilAVX2.stencil3x3($0, $1, $2, $3, $4, $5, accumulate: $6) }, gradient: StencilAVX2.stencilGradient3x3)
    }

    /// The dot product of `ConvBatchNormReLUPool`'s Gram matrix: lengths through the 32-wide
    /// step, the 8-wide step and the tail.
    func testDotMatchesDoubleSum() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        var rng = SplitMix64(seed: 93)
        for n in [0, 5, 8, 31, 32, 77, 4224] {
            let a = randomValues(n, &rng).map(Float.init), b = randomValues(n, &rng).map(Float.init)
            let expected = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(Double(StencilAVX2.dot(a, b, n)), expected, accuracy: 1e-5 * max(1, Double(n).squareRoot()), "n \(n)")
        }
    }

    /// The 2×2 kernels of `UpsampleConv2d`'s direct path.
    func testTwoByTwoStencilsMatchDoubleSums() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        check(k: 2, seed: 92, sizes: [(5, 37), (3, 16), (2, 8), (4, 3), (32, 32), (1, 25)],
              stencil: { StencilAVX2.stencil2x2($0, $1, $2, $3, $4, $5, accumulate: $6) }, gradient: StencilAVX2.stencilGradient2x2)
    }
}
