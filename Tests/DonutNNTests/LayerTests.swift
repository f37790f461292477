import XCTest
import DonutBLAS
import Foundation
import DonutNN

/// Shapes (batch, channels, height, width) swept by the element-wise layers: odd, non-square,
/// batch 1 and 3, channels 1 and 3.
let imageShapes = [(1, 1, 5, 7), (3, 3, 5, 7), (1, 3, 4, 6), (3, 1, 7, 5)]

final class UpsampleTests: XCTestCase {
    /// y[n, c, oy, ox] = x[n, c, oy / s, ox / s], exactly (a copy).
    func testForwardIsNearestNeighbour() {
        var rng = SplitMix64(seed: 10)
        for (b, c, h, w) in imageShapes {
            for scale in [1, 2, 3] {
                let x = Buffer(randomValues(b * c * h * w, &rng))
                let oh = h * scale, ow = w * scale
                let y = Buffer<Double>(repeating: .nan, count: b * c * oh * ow)
                Upsample2d.forward(output: y.pointer, input: x.const, batch: b, channels: c, height: h, width: w, scale: scale)
                var expected = [Double](repeating: 0, count: y.count)
                for p in 0..<(b * c) {
                    for oy in 0..<oh { for ox in 0..<ow { expected[(p * oh + oy) * ow + ox] = x[(p * h + oy / scale) * w + ox / scale] } }
                }
                XCTAssertEqual(y.array, expected, "upsample ×\(scale) (\(b), \(c), \(h), \(w)): a copy must be exact")
            }
        }
    }

    func testBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 11)
        for (b, c, h, w) in imageShapes {
            for scale in [2, 3] {
                let n = b * c * h * w, m = n * scale * scale
                let x = Buffer(randomValues(n, &rng)), g = Buffer(randomValues(m, &rng)), y = Buffer<Double>(repeating: 0, count: m)
                let loss = {
                    Upsample2d.forward(output: y.pointer, input: x.const, batch: b, channels: c, height: h, width: w, scale: scale)
                    return dot(g.const, y.const, m)
                }
                let dx = Buffer<Double>(repeating: 7, count: n)
                Upsample2d.backward(dInput: dx.pointer, dOutput: g.const, batch: b, channels: c, height: h, width: w, scale: scale)
                checkAgainstCentralDifferences("upsample ×\(scale) (\(b), \(c), \(h), \(w))", [FDVariable("input", x, dx.array)], loss: loss)
            }
        }
    }
}

final class ActivationTests: XCTestCase {
    func testReLUBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 12)
        for count in [1, 35, 105] {
            let x = Buffer(randomAwayFromZero(count, &rng)), g = Buffer(randomValues(count, &rng)), y = Buffer<Double>(repeating: 0, count: count)
            if count == 1 { x[0] = 0.3 }   // a lone negative input would have an all-zero gradient
            let loss = { ReLU.forward(output: y.pointer, input: x.const, count: count); return dot(g.const, y.const, count) }
            _ = loss()
            let dx = Buffer<Double>(repeating: 7, count: count)
            ReLU.backward(dInput: dx.pointer, dOutput: g.const, output: y.const, count: count)
            checkAgainstCentralDifferences("relu count \(count)", [FDVariable("input", x, dx.array)], loss: loss)
        }
    }

    func testReLUForwardValuesAndInPlace() {
        let x = Buffer<Float>([-2, -0.5, 0, 0.25, 3, .nan])
        ReLU.forward(output: x.pointer, input: x.const, count: 6)
        XCTAssertEqual(Array(x.array.prefix(5)), [0, 0, 0, 0.25, 3])
        XCTAssertTrue(x[5].isNaN, "NaN propagates (PyTorch), so a diverging run shows")
    }

    /// f(x) = 1.7159·tanh(2x/3): values against Foundation's tanh (f(1) ≈ 1, f(−1) ≈ −1).
    func testScaledTanhForwardValues() {
        let xs: [Double] = [-3, -1, -0.2, 0, 0.7, 1, 4]
        let y = Buffer<Double>(repeating: .nan, count: xs.count)
        let x = Buffer(xs)
        ScaledTanh.forward(output: y.pointer, input: x.const, count: xs.count)
        keepAlive(x)
        assertClose(y.array, xs.map { 1.7159 * tanh(2 * $0 / 3) }, atol: 1e-15, rtol: 1e-15, "scaled tanh")
        XCTAssertEqual(y[5], 1, accuracy: 1e-3)
        XCTAssertEqual(y[1], -1, accuracy: 1e-3)
        let yf = Buffer<Float>(repeating: .nan, count: xs.count)
        let xf = Buffer(xs.map(Float.init))
        ScaledTanh.forward(output: yf.pointer, input: xf.const, count: xs.count)
        assertClose(yf.array, xs.map { 1.7159 * tanh(2 * $0 / 3) }, atol: 1e-6, rtol: 1e-6, "scaled tanh Float")
    }

    func testScaledTanhBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 13)
        for count in [1, 35, 105] {
            let x = Buffer(randomValues(count, &rng, -3, 3)), g = Buffer(randomValues(count, &rng)), y = Buffer<Double>(repeating: 0, count: count)
            let loss = { ScaledTanh.forward(output: y.pointer, input: x.const, count: count); return dot(g.const, y.const, count) }
            _ = loss()
            let dx = Buffer<Double>(repeating: 7, count: count)
            ScaledTanh.backward(dInput: dx.pointer, dOutput: g.const, output: y.const, count: count)
            checkAgainstCentralDifferences("scaled tanh count \(count)", [FDVariable("input", x, dx.array)], loss: loss)
        }
    }
}

final class MaxPoolTests: XCTestCase {
    static let cases = [(2, 2), (3, 2), (3, 1)]   // (kernel, stride): the decoder's 2/2, overlapping windows

    /// Forward equals the window maximum and argmax points at it.
    func testForwardMatchesNaiveMaximum() {
        var rng = SplitMix64(seed: 14)
        for (b, c, h, w) in imageShapes {
            for (k, st) in Self.cases {
                let x = Buffer(randomValues(b * c * h * w, &rng))
                let oh = (h - k) / st + 1, ow = (w - k) / st + 1
                let y = Buffer<Double>(repeating: .nan, count: b * c * oh * ow)
                let arg = UnsafeMutablePointer<Int32>.allocate(capacity: y.count); defer { arg.deallocate() }
                MaxPool2d.forward(output: y.pointer, argmax: arg, input: x.const, batch: b, channels: c, height: h, width: w, kernel: k, stride: st)
                for p in 0..<(b * c) {
                    for oy in 0..<oh {
                        for ox in 0..<ow {
                            var best = -Double.infinity
                            for a in 0..<k { for d in 0..<k { best = max(best, x[(p * h + oy * st + a) * w + ox * st + d]) } }
                            let o = (p * oh + oy) * ow + ox
                            XCTAssertEqual(y[o], best, "maxpool k\(k) s\(st) (\(b), \(c), \(h), \(w)) output \(o)")
                            XCTAssertEqual(x[Int(arg[o])], best, "maxpool argmax \(o)")
                        }
                    }
                }
            }
        }
    }

    /// The Float 2×2 path (SIMD blocks of 8 outputs, scalar tail) against the definition in
    /// row-major window order: a later element wins only if greater, NaN over a number. Values
    /// from a small set so ties are common, a few NaNs; widths 16 (SIMD only), 22 (8 + 3 tail), 6 (tail only).
    func testFloatTwoByTwoPathMatchesDefinitionWithTiesAndNaN() {
        var rng = SplitMix64(seed: 15)
        for (b, c, h, w) in [(2, 3, 8, 16), (1, 2, 6, 22), (3, 1, 4, 6)] {
            let n = b * c * h * w
            let x = Buffer((0..<n).map { _ in Float(Int(rng.next() % 5)) - 2 })
            for i in stride(from: 7, to: n, by: 37) { x[i] = .nan }
            let oh = h / 2, ow = w / 2
            let y = Buffer<Float>(repeating: 0, count: b * c * oh * ow)
            let arg = UnsafeMutablePointer<Int32>.allocate(capacity: y.count); defer { arg.deallocate() }
            MaxPool2d.forward(output: y.pointer, argmax: arg, input: x.const, batch: b, channels: c, height: h, width: w)
            for p in 0..<(b * c) {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        let first = (p * h + 2 * oy) * w + 2 * ox
                        var best = first
                        for i in [first + 1, first + w, first + w + 1] where x[i] > x[best] || (x[i].isNaN && !x[best].isNaN) { best = i }
                        let o = (p * oh + oy) * ow + ox
                        XCTAssertEqual(Int(arg[o]), best, "(\(b), \(c), \(h), \(w)) output \(o): argmax")
                        XCTAssertTrue(y[o] == x[best] || (y[o].isNaN && x[best].isNaN), "(\(b), \(c), \(h), \(w)) output \(o): value")
                    }
                }
            }
            keepAlive(x, y)
        }
    }

    /// Away from ties (distinct inputs ≥ 0.009 apart), the gradient goes to the argmax.
    func testBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 15)
        for (b, c, h, w) in imageShapes {
            for (k, st) in Self.cases {
                let n = b * c * h * w, oh = (h - k) / st + 1, ow = (w - k) / st + 1, m = b * c * oh * ow
                let x = Buffer(randomDistinct(n, &rng)), g = Buffer(randomValues(m, &rng)), y = Buffer<Double>(repeating: 0, count: m)
                let arg = UnsafeMutablePointer<Int32>.allocate(capacity: m); defer { arg.deallocate() }
                let loss = {
                    MaxPool2d.forward(output: y.pointer, argmax: arg, input: x.const, batch: b, channels: c, height: h, width: w, kernel: k, stride: st)
                    return dot(g.const, y.const, m)
                }
                _ = loss()
                let dx = Buffer<Double>(repeating: 7, count: n)
                MaxPool2d.backward(dInput: dx.pointer, dOutput: g.const, argmax: arg, batch: b, channels: c, height: h, width: w, kernel: k, stride: st)
                checkAgainstCentralDifferences("maxpool k\(k) s\(st) (\(b), \(c), \(h), \(w))", [FDVariable("input", x, dx.array)], loss: loss)
            }
        }
    }
}

final class DropoutTests: XCTestCase {
    /// With the mask fixed (the same seed on every evaluation), dropout is linear and its backward
    /// is the mask: checked against central differences.
    func testBackwardWithFixedMaskMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 16)
        for (count, p) in [(1, 0.0), (35, 0.3), (105, 0.5)] {
            let x = Buffer(randomValues(count, &rng)), g = Buffer(randomValues(count, &rng))
            let y = Buffer<Double>(repeating: 0, count: count), mask = Buffer<Double>(repeating: 0, count: count)
            let loss = { () -> Double in
                var maskRNG = SplitMix64(seed: 99)
                Dropout.forwardTraining(output: y.pointer, mask: mask.pointer, input: x.const, probability: p, rng: &maskRNG, count: count)
                return dot(g.const, y.const, count)
            }
            _ = loss()
            let dx = Buffer<Double>(repeating: 7, count: count)
            Dropout.backward(dInput: dx.pointer, dOutput: g.const, mask: mask.const, count: count)
            checkAgainstCentralDifferences("dropout p \(p) count \(count)", [FDVariable("input", x, dx.array)], loss: loss)
        }
    }

    /// Same seed → same mask; another seed → another mask; kept values are x/(1 − p) and the kept
    /// fraction is within 5 standard deviations of 1 − p; eval mode is the identity.
    func testMaskIsSeededInvertedAndEvalIsIdentity() {
        let count = 20_000, p = 0.3
        var rng = SplitMix64(seed: 17)
        let x = Buffer(randomAwayFromZero(count, &rng).map(Float.init))
        func run(seed: UInt64) -> (y: [Float], mask: [Float]) {
            let y = Buffer<Float>(repeating: .nan, count: count), mask = Buffer<Float>(repeating: .nan, count: count)
            var r = SplitMix64(seed: seed)
            Dropout.forwardTraining(output: y.pointer, mask: mask.pointer, input: x.const, probability: p, rng: &r, count: count)
            return (y.array, mask.array)
        }
        let a = run(seed: 5), b = run(seed: 5), c = run(seed: 6)
        XCTAssertEqual(a.mask, b.mask, "same seed must give the same mask")
        XCTAssertEqual(a.y, b.y)
        XCTAssertNotEqual(a.mask, c.mask, "another seed should give another mask")
        let scale = Float(1 / (1 - p))
        var kept = 0
        for i in 0..<count {
            if a.mask[i] == 0 {
                XCTAssertEqual(a.y[i], 0)
            } else {
                kept += 1
                XCTAssertEqual(a.mask[i], scale)
                XCTAssertEqual(a.y[i], x[i] * scale, "kept value \(i) is x/(1 − p)")
            }
        }
        let expected = Double(count) * (1 - p), sigma = (Double(count) * p * (1 - p)).squareRoot()
        XCTAssertLessThan(abs(Double(kept) - expected), 5 * sigma, "kept \(kept) of \(count), expected \(expected) ± \(5 * sigma)")
        let e = Buffer<Float>(repeating: .nan, count: count)
        Dropout.forwardEval(output: e.pointer, input: x.const, count: count)
        XCTAssertEqual(e.array, x.array, "eval mode is the identity")
        // p = 1 drops everything.
        let z = Buffer<Float>(repeating: .nan, count: 10), zm = Buffer<Float>(repeating: .nan, count: 10)
        var r = SplitMix64(seed: 1)
        Dropout.forwardTraining(output: z.pointer, mask: zm.pointer, input: x.const, probability: 1, rng: &r, count: 10)
        XCTAssertEqual(z.array, [Float](repeating: 0, count: 10))
    }
}

extension DropoutTests {
    /// With sample ids, a row's mask depends on its id only: rows 2 and 3 of a 4-row call equal
    /// a 2-row call given ids 2 and 3 (as the rank holding the second half of a global batch);
    /// other ids give other masks; a plain call is the one-row case (id 0).
    func testMaskRowsFollowTheirSampleIDs() {
        let row = 5000, p = 0.4   // rows longer than a block: two blocks per row
        var rng = SplitMix64(seed: 18)
        let x = Buffer(randomAwayFromZero(4 * row, &rng).map(Float.init))
        func masks(_ ids: [Int]?, rows: Int, from first: Int = 0) -> [Float] {
            let y = Buffer<Float>(repeating: .nan, count: rows * row), mask = Buffer<Float>(repeating: .nan, count: rows * row)
            var r = SplitMix64(seed: 5)
            Dropout.forwardTraining(output: y.pointer, mask: mask.pointer, input: x.const + first * row, probability: p, rng: &r,
                                    count: rows * row, sampleIDs: ids)
            return mask.array
        }
        let all = masks([0, 1, 2, 3], rows: 4)
        XCTAssertEqual(masks([2, 3], rows: 2, from: 2), Array(all[(2 * row)...]), "rows keyed by id, not position")
        XCTAssertEqual(masks([1, 0], rows: 2), Array(all[row ..< 2 * row] + all[0 ..< row]), "swapped ids swap the masks")
        XCTAssertNotEqual(Array(all[0 ..< row]), Array(all[row ..< 2 * row]), "different ids, different masks")
        XCTAssertEqual(masks(nil, rows: 1), masks([0], rows: 1), "no ids = one row with id 0")
    }
}

final class LossTests: XCTestCase {
    /// Hand values: ŷ = (1, 2, 4), y = (0, 2, 1): MAE = (1 + 0 + 3)/3, MSE = (1 + 0 + 9)/3; the MAE
    /// gradient is sign/3 with 0 at equality, the MSE gradient 2(ŷ − y)/3.
    func testValuesAndGradientsByHand() {
        let yhat = Buffer<Double>([1, 2, 4]), y = Buffer<Double>([0, 2, 1]), d = Buffer<Double>(repeating: .nan, count: 3)
        XCTAssertEqual(MAELoss.forward(prediction: yhat.const, target: y.const, count: 3), 4.0 / 3, accuracy: 1e-15)
        XCTAssertEqual(MSELoss.forward(prediction: yhat.const, target: y.const, count: 3), 10.0 / 3, accuracy: 1e-15)
        MAELoss.backward(dPrediction: d.pointer, prediction: yhat.const, target: y.const, count: 3)
        assertClose(d.array, [1.0 / 3, 0, 1.0 / 3], atol: 1e-16, rtol: 1e-15, "MAE gradient")
        MSELoss.backward(dPrediction: d.pointer, prediction: yhat.const, target: y.const, count: 3, weight: 0.5)
        assertClose(d.array, [0.5 * 2.0 / 3, 0, 0.5 * 6.0 / 3], atol: 1e-16, rtol: 1e-15, "MSE gradient, weight 0.5")
    }

    /// `MAELoss.frames` over several frames (pixel counts off the 8- and 256-element blocks):
    /// the value against a plain Double sum, the gradient against `backward`'s sign/count, in
    /// Double and Float, and the same bits on one thread as on two.
    func testFramesMatchPlainSumOnAnyThreadCount() {
        var rng = SplitMix64(seed: 19)
        for (frames, pixels) in [(1, 3), (3, 301), (5, 1201)] {
            let count = frames * pixels
            let target = randomValues(count, &rng), offsets = randomValues(count, &rng)
            var prediction = (0..<count).map { target[$0] + offsets[$0] }
            prediction[0] = target[0]   // an exact match: gradient 0
            let expected = (0..<count).reduce(0.0) { $0 + abs(prediction[$1] - target[$1]) } / Double(count)
            func check<T: GEMMScalar>(_: T.Type, rtol: Double) {
                let p = Buffer(prediction.map { T($0) }), t = Buffer(target.map { T($0) }), sums = Buffer<Double>(repeating: .nan, count: frames)
                let pe = p.array.map(Double.init), te = t.array.map(Double.init)
                let exact = (0..<count).reduce(0.0) { $0 + abs(pe[$1] - te[$1]) } / Double(count)
                var values: [Double] = [], gradients: [[T]] = []
                for threads in [1, 2] {
                    let d = Buffer<T>(repeating: 7, count: count)
                    let value = Parallel.withThreads(threads) {
                        MAELoss.frames(prediction: p.const, target: t.const, frames: frames, framePixels: pixels, frameSums: sums.pointer,
                                       dPrediction: d.pointer, weight: 1.5)
                    }
                    values.append(value); gradients.append(d.array)
                }
                let label = "\(frames) × \(pixels) \(T.self)"
                XCTAssertEqual(values[0], exact, accuracy: rtol * exact, label)
                XCTAssertEqual(values[0], expected, accuracy: (T.self == Double.self ? 1e-14 : 1e-6) * expected, label)
                XCTAssertEqual(values[0].bitPattern, values[1].bitPattern, "\(label): one thread and two")
                XCTAssertEqual(gradients[0], gradients[1], "\(label): gradient, one thread and two")
                let g = T(1.5 / Double(count))
                XCTAssertEqual(gradients[0], (0..<count).map { pe[$0] > te[$0] ? g : pe[$0] < te[$0] ? -g : 0 }, "\(label): gradient")
            }
            check(Double.self, rtol: 1e-14)
            check(Float.self, rtol: 1e-6)
        }
    }

    func testGradientsMatchCentralDifferences() {
        var rng = SplitMix64(seed: 18)
        for count in [1, 35, 105] {
            let target = Buffer(randomValues(count, &rng))
            // Predictions ≥ 0.05 away from the target: |·| is smooth there.
            let offsets = randomAwayFromZero(count, &rng)
            let yhat = Buffer((0..<count).map { target[$0] + offsets[$0] })
            let d = Buffer<Double>(repeating: 7, count: count)
            MAELoss.backward(dPrediction: d.pointer, prediction: yhat.const, target: target.const, count: count, weight: 1.5)
            checkAgainstCentralDifferences("MAE count \(count)", [FDVariable("prediction", yhat, d.array)]) {
                1.5 * MAELoss.forward(prediction: yhat.const, target: target.const, count: count)
            }
            MSELoss.backward(dPrediction: d.pointer, prediction: yhat.const, target: target.const, count: count)
            checkAgainstCentralDifferences("MSE count \(count)", [FDVariable("prediction", yhat, d.array)]) {
                MSELoss.forward(prediction: yhat.const, target: target.const, count: count)
            }
            // Poisson deviance: counts (some 0) vs positive expectations.
            let counts = Buffer((0..<count).map { Double(rng.poisson(2 * abs(target[$0]))) })
            let lambda = Buffer((0..<count).map { 0.1 + abs(yhat[$0]) })
            PoissonDeviance.backward(dPrediction: d.pointer, prediction: lambda.const, target: counts.const, count: count, floor: 0.01, weight: 0.7)
            checkAgainstCentralDifferences("Poisson deviance count \(count)", [FDVariable("prediction", lambda, d.array)]) {
                0.7 * PoissonDeviance.forward(prediction: lambda.const, target: counts.const, count: count, floor: 0.01)
            }
        }
    }

    /// The deviance by hand: λ = ŷ + β with β = 0.5, ŷ = (1.5, 0.5), y = (2, 0):
    /// D = (2/2)·[(2 − 2 − 2·log(2/2)) + (1 − 0)] = 1; zero when λ = y everywhere.
    func testPoissonDevianceByHand() {
        let yhat = Buffer<Double>([1.5, 0.5]), y = Buffer<Double>([2, 0]), d = Buffer<Double>(repeating: .nan, count: 2)
        XCTAssertEqual(PoissonDeviance.forward(prediction: yhat.const, target: y.const, count: 2, floor: 0.5), 1, accuracy: 1e-15)
        let exact = Buffer<Double>([3, 7])
        XCTAssertEqual(PoissonDeviance.forward(prediction: exact.const, target: exact.const, count: 2, floor: 0), 0, accuracy: 1e-15)
        PoissonDeviance.backward(dPrediction: d.pointer, prediction: yhat.const, target: y.const, count: 2, floor: 0.5)
        assertClose(d.array, [0, 1], atol: 1e-16, rtol: 1e-15, "deviance gradient 2(1 − y/λ)/count")
    }
}
