import XCTest
import DonutNN
import DonutKernelsAVX2

/// The AVX2 + FMA stencils (3×3 and 2×2) against the stencil sums computed in Double, on plane widths that
/// take the 16-output step, the 8-output step and the scalar tail. Skipped on a CPU without
/// AVX2 + FMA (the kernels are then never called).
final class StencilAVX2Tests: XCTestCase {
    func testStencilsMatchDoubleSums() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        var rng = SplitMix64(seed: 91)
        for (yh, yw) in [(5, 37), (3, 16), (2, 8), (4, 3), (64, 64)] {
            let xw = yw + 2, xh = yh + 2
            let x = randomValues(xh * xw, &rng).map(Float.init), w = randomValues(9, &rng).map(Float.init)
            let start = randomValues(yh * yw, &rng).map(Float.init), dy = randomValues(yh * yw, &rng).map(Float.init)
            func tap(_ oy: Int, _ ox: Int, _ t: Int) -> Double { Double(x[(oy + t / 3) * xw + ox + t % 3]) }
            for accumulate in [false, true] {
                var y = start
                y.withUnsafeMutableBufferPointer { yp in
                    StencilAVX2.stencil3x3(yp.baseAddress!, yh, yw, x, xw, w, accumulate: accumulate)
                }
                for oy in 0..<yh {
                    for ox in 0..<yw {
                        var expected = accumulate ? Double(start[oy * yw + ox]) : 0
                        for t in 0..<9 { expected += Double(w[t]) * tap(oy, ox, t) }
                        XCTAssertEqual(Double(y[oy * yw + ox]), expected, accuracy: 1e-5, "forward (\(yh), \(yw)) at (\(oy), \(ox)), accumulate \(accumulate)")
                    }
                }
            }
            var g = [Float](repeating: .nan, count: 9)
            g.withUnsafeMutableBufferPointer { gp in StencilAVX2.stencilGradient3x3(gp.baseAddress!, dy, yh, yw, x, xw) }
            for t in 0..<9 {
                var expected = 0.0
                for oy in 0..<yh { for ox in 0..<yw { expected += Double(dy[oy * yw + ox]) * tap(oy, ox, t) } }
                XCTAssertEqual(Double(g[t]), expected, accuracy: 1e-5 * max(1, Double(yh * yw).squareRoot()), "gradient (\(yh), \(yw)) tap \(t)")
            }
        }
    }

    /// The 2×2 kernels of `UpsampleConv2d`'s direct path, the same way.
    func testTwoByTwoStencilsMatchDoubleSums() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        var rng = SplitMix64(seed: 92)
        for (yh, yw) in [(5, 37), (3, 16), (2, 8), (4, 3), (32, 32), (1, 25)] {
            let xw = yw + 3, xh = yh + 1
            let x = randomValues(xh * xw, &rng).map(Float.init), w = randomValues(4, &rng).map(Float.init)
            let start = randomValues(yh * yw, &rng).map(Float.init), dy = randomValues(yh * yw, &rng).map(Float.init)
            func tap(_ oy: Int, _ ox: Int, _ t: Int) -> Double { Double(x[(oy + t / 2) * xw + ox + t % 2]) }
            for accumulate in [false, true] {
                var y = start
                y.withUnsafeMutableBufferPointer { yp in
                    StencilAVX2.stencil2x2(yp.baseAddress!, yh, yw, x, xw, w, accumulate: accumulate)
                }
                for oy in 0..<yh {
                    for ox in 0..<yw {
                        var expected = accumulate ? Double(start[oy * yw + ox]) : 0
                        for t in 0..<4 { expected += Double(w[t]) * tap(oy, ox, t) }
                        XCTAssertEqual(Double(y[oy * yw + ox]), expected, accuracy: 1e-5, "forward (\(yh), \(yw)) at (\(oy), \(ox)), accumulate \(accumulate)")
                    }
                }
            }
            var g = [Float](repeating: .nan, count: 4)
            g.withUnsafeMutableBufferPointer { gp in StencilAVX2.stencilGradient2x2(gp.baseAddress!, dy, yh, yw, x, xw) }
            for t in 0..<4 {
                var expected = 0.0
                for oy in 0..<yh { for ox in 0..<yw { expected += Double(dy[oy * yw + ox]) * tap(oy, ox, t) } }
                XCTAssertEqual(Double(g[t]), expected, accuracy: 1e-5 * max(1, Double(yh * yw).squareRoot()), "gradient (\(yh), \(yw)) tap \(t)")
            }
        }
    }
}
