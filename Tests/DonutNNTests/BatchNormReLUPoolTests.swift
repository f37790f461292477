import XCTest
import DonutBLAS
import DonutNN

/// `BatchNormReLUPool` against the layer sequence it replaces: `BatchNorm2d.forwardTraining(relu:)`
/// → `MaxPool2d.forward`, and `MaxPool2d.backward` → `BatchNorm2d.backwardTraining(reluOutput:)`
/// → Σ dx per channel (the conv bias gradient). The sequence's backward is the one checked
/// against central differences (BatchNormTests, LayerTests); here the fused layer must give the
/// same numbers: Double to 1e-12 (argmax identical), Float to 1e-5 on shapes wide enough for
/// the 16-lane kernels. Awkward shapes: odd sizes (the pool drops the last row/column), batch 1,
/// one channel, 2×2 planes; γ of both signs; inputs around 0 so that ReLU and ties matter.
final class BatchNormReLUPoolTests: XCTestCase {
    struct Result<T: GEMMScalar> {
        var pooled: [T], argmax: [Int32], mean: [T], invStd: [T], running: [T]
        var dx: [T], dGamma: [T], dBeta: [T], dBias: [T]
    }

    /// The fused layer (fused: true) or the sequence on x; dPooled the upstream gradient.
    func run<T: GEMMScalar>(_ x: [T], _ dPooled: [T], gamma: [T], beta: [T], shape: (Int, Int, Int, Int), fused: Bool,
                            reduce: BatchNorm2d.Reducer? = nil) -> Result<T> {
        let (b, c, h, w) = shape, plane = h * w, count = b * c * plane, pooledCount = b * c * (h / 2) * (w / 2)
        let input = Buffer(x), g = Buffer(gamma), be = Buffer(beta), dp = Buffer(dPooled)
        let pooled = Buffer<T>(repeating: .nan, count: pooledCount), argmax = UnsafeMutablePointer<Int32>.allocate(capacity: pooledCount)
        defer { argmax.deallocate() }
        let mean = Buffer<T>(repeating: .nan, count: c), invStd = Buffer<T>(repeating: .nan, count: c)
        let runMean = Buffer<T>(repeating: 0.2, count: c), runVar = Buffer<T>(repeating: 1.5, count: c)
        let dx = Buffer<T>(repeating: .nan, count: count)
        let dGamma = Buffer<T>(repeating: 0.5, count: c), dBeta = Buffer<T>(repeating: -0.5, count: c), dBias = Buffer<T>(repeating: 0.25, count: c)
        if fused {
            let stats = Buffer<Double>(repeating: .nan, count: 2 * b * c), pooledInput = Buffer<T>(repeating: .nan, count: pooledCount)
            for q in 0..<(b * c) { (stats[2 * q], stats[2 * q + 1]) = BatchNorm2d.planeStatistics(input.const + q * plane, plane) }
            BatchNormReLUPool.forwardTraining(pooled: pooled.pointer, argmax: argmax, pooledInput: pooledInput.pointer,
                                              mean: mean.pointer, invStd: invStd.pointer, runningMean: runMean.pointer,
                                              runningVar: runVar.pointer, input: input.const, planeStatistics: stats.const,
                                              gamma: g.const, beta: be.const, batch: b, channels: c, height: h, width: w,
                                              synchronise: reduce)
            for i in 0..<pooledCount { XCTAssertEqual(pooledInput[i], x[Int(argmax[i])], "pooledInput is x at the argmax") }
            BatchNormReLUPool.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dInputSums: dBias.pointer,
                                               dPooled: dp.const, pooled: pooled.const, argmax: argmax, pooledInput: pooledInput.const,
                                               input: input.const, gamma: g.const, mean: mean.const, invStd: invStd.const,
                                               batch: b, channels: c, height: h, width: w, synchronise: reduce)
        } else {
            let y = Buffer<T>(repeating: .nan, count: count), dy = Buffer<T>(repeating: .nan, count: count)
            BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: invStd.pointer, runningMean: runMean.pointer,
                                        runningVar: runVar.pointer, input: input.const, gamma: g.const, beta: be.const,
                                        batch: b, channels: c, height: h, width: w, relu: true, synchronise: reduce)
            MaxPool2d.forward(output: pooled.pointer, argmax: argmax, input: y.const, batch: b, channels: c, height: h, width: w)
            MaxPool2d.backward(dInput: dy.pointer, dOutput: dp.const, argmax: argmax, batch: b, channels: c, height: h, width: w)
            BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: dy.const,
                                         input: input.const, gamma: g.const, mean: mean.const, invStd: invStd.const,
                                         batch: b, channels: c, height: h, width: w, reluOutput: y.const, synchronise: reduce)
            for ch in 0..<c {
                var s = 0.0
                for n in 0..<b { for i in 0..<plane { s += Double(dx[(n * c + ch) * plane + i]) } }
                dBias[ch] += T(s)
            }
        }
        return Result(pooled: pooled.array, argmax: Array(UnsafeBufferPointer(start: argmax, count: pooledCount)),
                      mean: mean.array, invStd: invStd.array, running: runMean.array + runVar.array,
                      dx: dx.array, dGamma: dGamma.array, dBeta: dBeta.array, dBias: dBias.array)
    }

    func assertClose<T: GEMMScalar>(_ u: [T], _ v: [T], _ tolerance: Double, _ what: String) {
        XCTAssertEqual(u.count, v.count, what)
        var worst = 0.0
        for (p, q) in zip(u, v) {
            let a = Double(p), b = Double(q)
            worst = max(worst, abs(a - b) / max(1, abs(b)))
        }
        XCTAssertLessThanOrEqual(worst, tolerance, what)
    }

    func inputs(_ shape: (Int, Int, Int, Int), _ rng: inout SplitMix64) -> (x: [Double], dPooled: [Double], gamma: [Double], beta: [Double]) {
        let (b, c, h, w) = shape
        // γ alternating in sign, β around 0: a good share of the ReLU outputs are 0 (ties in the pool).
        let gamma = (0..<c).map { k in (k % 2 == 0 ? 1.0 : -1.0) * rng.uniform(0.5, 1.5) }
        return (randomValues(b * c * h * w, &rng, -1, 2), randomValues(b * c * (h / 2) * (w / 2), &rng),
                gamma, randomValues(c, &rng, -0.3, 0.3))
    }

    func testMatchesLayerSequenceInDouble() {
        var rng = SplitMix64(seed: 77)
        for shape in [(3, 2, 6, 4), (1, 3, 5, 7), (2, 1, 2, 2), (4, 5, 8, 8), (1, 1, 3, 3)] {
            let (x, dp, gamma, beta) = inputs(shape, &rng)
            let fused: Result<Double> = run(x, dp, gamma: gamma, beta: beta, shape: shape, fused: true)
            let plain: Result<Double> = run(x, dp, gamma: gamma, beta: beta, shape: shape, fused: false)
            let label = "shape \(shape)"
            XCTAssertEqual(fused.argmax, plain.argmax, "argmax, \(label)")
            assertClose(fused.pooled, plain.pooled, 1e-12, "pooled, \(label)")
            assertClose(fused.mean, plain.mean, 1e-12, "mean, \(label)")
            assertClose(fused.invStd, plain.invStd, 1e-12, "1/σ, \(label)")
            assertClose(fused.running, plain.running, 1e-12, "running statistics, \(label)")
            assertClose(fused.dx, plain.dx, 1e-12, "dx, \(label)")
            assertClose(fused.dGamma, plain.dGamma, 1e-12, "dγ, \(label)")
            assertClose(fused.dBeta, plain.dBeta, 1e-12, "dβ, \(label)")
            assertClose(fused.dBias, plain.dBias, 1e-12, "Σ dx, \(label)")
        }
    }

    /// Float: the 16-lane kernels (planes ≥ 16 wide) and their scalar tails (odd widths).
    func testMatchesLayerSequenceInFloat() {
        var rng = SplitMix64(seed: 78)
        for shape in [(4, 3, 16, 16), (2, 2, 20, 34), (3, 2, 9, 17)] {
            let (x, dp, gamma, beta) = inputs(shape, &rng)
            let f = { (v: [Double]) in v.map(Float.init) }
            let fused: Result<Float> = run(f(x), f(dp), gamma: f(gamma), beta: f(beta), shape: shape, fused: true)
            let plain: Result<Float> = run(f(x), f(dp), gamma: f(gamma), beta: f(beta), shape: shape, fused: false)
            let label = "shape \(shape)"
            assertClose(fused.pooled, plain.pooled, 1e-5, "pooled, \(label)")
            assertClose(fused.mean + fused.invStd + fused.running, plain.mean + plain.invStd + plain.running, 1e-5, "statistics, \(label)")
            assertClose(fused.dx, plain.dx, 1e-5, "dx, \(label)")
            assertClose(fused.dGamma + fused.dBeta, plain.dGamma + plain.dBeta, 1e-4, "dγ, dβ, \(label)")
            assertClose(fused.dBias, plain.dBias, 1e-4, "Σ dx, \(label)")
        }
    }

    /// Synchronised: two replicas (rows 0..<2 and 2..<4 of a batch of 4) with a summing reducer
    /// reproduce the fused layer on the whole batch.
    func testSynchronisedReplicasReproduceTheWholeBatch() {
        var rng = SplitMix64(seed: 79)
        let shape = (4, 3, 6, 5), (_, c, h, w) = shape, plane = h * w, pooledPlane = (h / 2) * (w / 2)
        let (x, dp, gamma, beta) = inputs(shape, &rng)
        let whole: Result<Double> = run(x, dp, gamma: gamma, beta: beta, shape: shape, fused: true)
        let (a, b) = TwoReplicas.run { rank, reducer -> Result<Double> in
            let rows = (2 * rank)..<(2 * rank + 2)
            let xs = Array(x[(rows.lowerBound * c * plane)..<(rows.upperBound * c * plane)])
            let ds = Array(dp[(rows.lowerBound * c * pooledPlane)..<(rows.upperBound * c * pooledPlane)])
            return self.run(xs, ds, gamma: gamma, beta: beta, shape: (2, c, h, w), fused: true, reduce: reducer)
        }
        assertClose(a.pooled + b.pooled, whole.pooled, 1e-12, "pooled")
        assertClose(a.mean + a.invStd + a.running, whole.mean + whole.invStd + whole.running, 1e-12, "statistics, replica 0")
        assertClose(b.mean + b.invStd + b.running, whole.mean + whole.invStd + whole.running, 1e-12, "statistics, replica 1")
        assertClose(a.dx + b.dx, whole.dx, 1e-12, "dx")
        // dγ, dβ and Σ dx: each replica adds its own share to the initial value.
        let sum = { (u: [Double], v: [Double], initial: Double) in zip(u, v).map { $0 + $1 - initial } }
        assertClose(sum(a.dGamma, b.dGamma, 0.5), whole.dGamma, 1e-12, "dγ")
        assertClose(sum(a.dBeta, b.dBeta, -0.5), whole.dBeta, 1e-12, "dβ")
        assertClose(sum(a.dBias, b.dBias, 0.25), whole.dBias, 1e-12, "Σ dx")
    }

    /// `Conv2d.forward(planeStatistics:)` on the GEMM path and the direct (one-channel) path: the
    /// statistics of every output plane, (Σ y, Σ (y − ȳ)²), against sums in Double over the output.
    func testConvWritesItsPlaneStatistics() {
        var rng = SplitMix64(seed: 80)
        for (b, inC, outC, size) in [(3, 4, 5, 10), (2, 1, 6, 12), (2, 3, 1, 9)] {
            let s = Conv2dShape(batch: b, inChannels: inC, height: size, width: size, outChannels: outC,
                                kernelH: 3, kernelW: 3, stride: 1, padding: 1)
            let x = Buffer(randomValues(s.inputCount, &rng).map(Float.init)), w = Buffer(randomValues(s.weightCount, &rng).map(Float.init))
            let bias = Buffer(randomValues(outC, &rng).map(Float.init)), y = Buffer<Float>(repeating: .nan, count: s.outputCount)
            let cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s)), stats = Buffer<Double>(repeating: .nan, count: 2 * b * outC)
            Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: bias.const, columns: cols.pointer, shape: s,
                           planeStatistics: stats.pointer)
            let plane = size * size
            for q in 0..<(b * outC) {
                let values = (0..<plane).map { Double(y[q * plane + $0]) }
                let sum = values.reduce(0, +), mean = sum / Double(plane)
                let squares = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
                XCTAssertEqual(stats[2 * q], sum, accuracy: 1e-5 * max(1, abs(sum)), "Σ y, plane \(q), \(s)")
                XCTAssertEqual(stats[2 * q + 1], squares, accuracy: 1e-5 * max(1, squares), "Σ (y − ȳ)², plane \(q), \(s)")
            }
        }
    }
}
