import XCTest
import DonutBLAS
import DonutNN

/// BatchNorm2d's training forward (fused ReLU) and backward in Float (`FloatKernels`' SIMD sums,
/// gate and input gradient) against the same layer in Double on the same inputs (Float values,
/// exact in Double), within first-order rounding bounds γ_D·E derived per quantity
/// (`ConvolutionFloatTests` states γ_D; P = height·width values per plane, M = batch·P per channel):
///
/// - μ: planes summed in Float (error ≤ γ_P Σ|x|), totalled in Double, rounded to Float:
///   |δμ| ≤ γ_{P+1}·(mean|x| + |μ|).
/// - inv = 1/√(σ² + ε): the squares about μ_T summed in Float (x − μ_T, square, sum: γ_{P+3}
///   relative), the rounding of μ_T removed exactly in Double; δinv/inv ≤ ½γ_{P+3} + u ≤ γ_{P+4}.
/// - y = max(x·s + (β − μ_T·s), 0), s = γ·inv_T: the scale error times |x − μ|·|s|, δμ times |s|,
///   five roundings of s, μ·s, the shift, x·s and the sum: |δy| ≤ γ_{P+8}·(|s|(|x| + |μ| + mean|x|) + |β|).
/// - Backward, given the same cache (the Float forward's μ, inv and y in both runs, so the ReLU
///   gate is the same): Σg and Σg(x − μ) per plane in Float (γ_P, γ_{P+2}), the coefficients
///   k = γ·inv, b = k·Σg/M, a = k·inv²·Σg(x − μ)/M (≤ 3 roundings each), dx = k·g − b − (x − μ)·a
///   (≤ 5): |δdx| ≤ γ_{P+8}·(|k||g| + |k|Σ|g|/M + |x − μ||k|inv²Σ|g||x − μ|/M);
///   dγ = Σg(x − μ)·inv: γ_{P+4}·inv·Σ|g||x − μ|; dβ = Σg: γ_{P+2}·Σ|g|.
final class BatchNormFloatTests: XCTestCase {
    func check(batch: Int, channels: Int, height: Int, width: Int, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let plane = height * width, m = batch * plane, count = batch * channels * plane
        let x = randomValues(count, &rng, -0.7, 1.3).map(Float.init), dy = randomValues(count, &rng).map(Float.init)
        let gamma = randomValues(channels, &rng, 0.5, 1.5).enumerated().map { Float($0.offset % 2 == 0 ? $0.element : -$0.element) }
        let beta = randomValues(channels, &rng).map(Float.init)
        func channelOf(_ i: Int) -> Int { (i / plane) % channels }
        func tolerance(_ depth: Int) -> Double { ConvolutionFloatTests.tolerance(depth: depth) }
        let label = "BatchNorm2d (\(batch), \(channels), \(height), \(width))"

        // Forward, Float and Double.
        func forward<T: GEMMScalar>(_: T.Type) -> (y: [T], mean: [T], invStd: [T]) {
            let xb = Buffer(x.map { T(Double($0)) }), g = Buffer(gamma.map { T(Double($0)) }), b = Buffer(beta.map { T(Double($0)) })
            let y = Buffer<T>(repeating: .nan, count: count), mean = Buffer<T>(repeating: .nan, count: channels)
            let inv = Buffer<T>(repeating: .nan, count: channels)
            let rm = Buffer<T>(repeating: 0, count: channels), rv = Buffer<T>(repeating: 1, count: channels)
            BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: inv.pointer, runningMean: rm.pointer,
                                        runningVar: rv.pointer, input: xb.const, gamma: g.const, beta: b.const,
                                        batch: batch, channels: channels, height: height, width: width, relu: true)
            defer { keepAlive(xb, g, b, y, mean, inv, rm, rv) }
            return (y.array, mean.array, inv.array)
        }
        let f = forward(Float.self), d = forward(Double.self)
        var meanAbs = [Double](repeating: 0, count: channels)
        for i in 0..<count { meanAbs[channelOf(i)] += abs(Double(x[i])) / Double(m) }
        for c in 0..<channels {
            let muBound = tolerance(plane + 1) * (meanAbs[c] + abs(d.mean[c]))
            XCTAssertLessThanOrEqual(abs(Double(f.mean[c]) - d.mean[c]), muBound, "\(label) mean[\(c)]")
            XCTAssertLessThanOrEqual(abs(Double(f.invStd[c]) - d.invStd[c]), tolerance(plane + 4) * d.invStd[c], "\(label) invStd[\(c)]")
        }
        var worst = 0.0
        for i in 0..<count {
            let c = channelOf(i), s = abs(Double(gamma[c])) * d.invStd[c]
            let e = s * (abs(Double(x[i])) + abs(d.mean[c]) + meanAbs[c]) + abs(Double(beta[c]))
            let error = abs(Double(f.y[i]) - d.y[i])
            worst = max(worst, error / (tolerance(plane + 8) * e))
            if !(error <= tolerance(plane + 8) * e) { XCTFail("\(label) y[\(i)]: Float \(f.y[i]), Double \(d.y[i]), bound \(tolerance(plane + 8) * e)"); break }
        }
        XCTAssertTrue(zip(f.y, d.y).contains { Double($0) != $1 }, "\(label): Float forward equals Double everywhere")

        // Backward from the same cache (the Float forward's).
        func backward<T: GEMMScalar>(_: T.Type) -> (dx: [T], dGamma: [T], dBeta: [T]) {
            func t(_ v: [Float]) -> Buffer<T> { Buffer(v.map { T(Double($0)) }) }
            let xb = t(x), g = t(gamma), dyb = t(dy), mean = t(f.mean), inv = t(f.invStd), y = t(f.y)
            let dx = Buffer<T>(repeating: .nan, count: count)
            let dg = Buffer<T>(repeating: 0, count: channels), db = Buffer<T>(repeating: 0, count: channels)
            BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dg.pointer, dBeta: db.pointer, dOutput: dyb.const, input: xb.const,
                                         gamma: g.const, mean: mean.const, invStd: inv.const, batch: batch, channels: channels,
                                         height: height, width: width, reluOutput: y.const)
            defer { keepAlive(xb, g, dyb, mean, inv, y, dx, dg, db) }
            return (dx.array, dg.array, db.array)
        }
        let fb = backward(Float.self), db = backward(Double.self)
        var sumAbsG = [Double](repeating: 0, count: channels), sumAbsGX = sumAbsG
        for i in 0..<count where f.y[i] > 0 {
            let c = channelOf(i)
            sumAbsG[c] += abs(Double(dy[i])); sumAbsGX[c] += abs(Double(dy[i])) * abs(Double(x[i]) - Double(f.mean[c]))
        }
        for c in 0..<channels {
            let inv = Double(f.invStd[c])
            XCTAssertLessThanOrEqual(abs(Double(fb.dGamma[c]) - db.dGamma[c]), tolerance(plane + 4) * inv * sumAbsGX[c], "\(label) dGamma[\(c)]")
            XCTAssertLessThanOrEqual(abs(Double(fb.dBeta[c]) - db.dBeta[c]), tolerance(plane + 2) * sumAbsG[c], "\(label) dBeta[\(c)]")
        }
        for i in 0..<count {
            let c = channelOf(i), inv = Double(f.invStd[c]), k = abs(Double(gamma[c])) * inv
            let g = f.y[i] > 0 ? abs(Double(dy[i])) : 0, xc = abs(Double(x[i]) - Double(f.mean[c]))
            let e = k * g + k * sumAbsG[c] / Double(m) + xc * k * inv * inv * sumAbsGX[c] / Double(m)
            let error = abs(Double(fb.dx[i]) - db.dx[i])
            if !(error <= tolerance(plane + 8) * e) { XCTFail("\(label) dx[\(i)]: Float \(fb.dx[i]), Double \(db.dx[i]), bound \(tolerance(plane + 8) * e)"); break }
        }
        XCTAssertTrue(zip(fb.dx, db.dx).contains { Double($0) != $1 }, "\(label): Float dx equals Double everywhere")
        XCTAssertLessThan(worst, 1, label)
    }

    /// Planes through the 16-lane SIMD loops and their scalar tails (odd sizes), several channels.
    func testTrainingForwardAndBackwardInFloat() {
        check(batch: 3, channels: 4, height: 16, width: 16, seed: 800)
        check(batch: 2, channels: 5, height: 7, width: 9, seed: 801)
        check(batch: 4, channels: 2, height: 32, width: 32, seed: 802)
    }
}
