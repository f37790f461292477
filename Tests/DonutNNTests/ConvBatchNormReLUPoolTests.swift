import XCTest
import DonutBLAS
import DonutNN

/// `ConvBatchNormReLUPool` against the layers it replaces for the network's first block:
/// `Conv2d.forward(planeStatistics:)` → `BatchNormReLUPool.forwardTraining`, and back
/// `BatchNormReLUPool.backwardTraining` (dx and Σ dx) → `Conv2d.backward` (dW). That sequence is
/// checked against central differences elsewhere (BatchNormReLUPoolTests, LayerTests). Double to
/// 1e-10 (argmax identical), Float to 1e-4 of the largest value; shapes with one and several input
/// channels, a 1×1 kernel, batch 1, 2×2 planes, rows wider than the 16-lane kernels and with
/// tails; γ of both signs; synchronised replicas.
final class ConvBatchNormReLUPoolTests: XCTestCase {
    struct Result<T: GEMMScalar> {
        var pooled: [T], argmax: [Int32], pooledInput: [T], statistics: [T]
        var dWeight: [T], dBias: [T], dGamma: [T], dBeta: [T]
    }

    /// The fused block (`fused`) or the layer sequence, forward then backward; gradients start at
    /// non-zero values (both add).
    func run<T: GEMMScalar>(_ s: Conv2dShape, x: [T], weight: [T], bias: [T], gamma: [T], beta: [T], dPooled: [T],
                            fused: Bool, reduce: BatchNorm2d.Reducer? = nil) -> Result<T> {
        let c = s.outChannels, pooledCount = s.outputCount / 4
        let input = Buffer(x), w = Buffer(weight), b = Buffer(bias), g = Buffer(gamma), be = Buffer(beta), dp = Buffer(dPooled)
        let pooled = Buffer<T>(repeating: .nan, count: pooledCount), pooledInput = Buffer<T>(repeating: .nan, count: pooledCount)
        let argmax = UnsafeMutablePointer<Int32>.allocate(capacity: pooledCount)
        defer { argmax.deallocate() }
        let mean = Buffer<T>(repeating: .nan, count: c), invStd = Buffer<T>(repeating: .nan, count: c)
        let runMean = Buffer<T>(repeating: 0.2, count: c), runVar = Buffer<T>(repeating: 1.5, count: c)
        let dWeight = Buffer<T>(repeating: 0.125, count: s.weightCount), dBias = Buffer<T>(repeating: 0.25, count: c)
        let dGamma = Buffer<T>(repeating: 0.5, count: c), dBeta = Buffer<T>(repeating: -0.5, count: c)
        if fused {
            let padded = Buffer<T>(repeating: .nan, count: ConvBatchNormReLUPool.paddedCount(s))
            let moments = Buffer<Double>(repeating: .nan, count: ConvBatchNormReLUPool.momentsCount(s))
            let scratch = Buffer<T>(repeating: .nan, count: ConvBatchNormReLUPool.scratchCount(s))
            ConvBatchNormReLUPool.forwardTraining(pooled: pooled.pointer, argmax: argmax, pooledInput: pooledInput.pointer,
                                                  mean: mean.pointer, invStd: invStd.pointer, runningMean: runMean.pointer,
                                                  runningVar: runVar.pointer, input: input.const, weight: w.const, bias: b.const,
                                                  gamma: g.const, beta: be.const, shape: s, padded: padded.pointer,
                                                  moments: moments.pointer, scratch: scratch.pointer, synchronise: reduce)
            ConvBatchNormReLUPool.backwardTraining(dWeight: dWeight.pointer, dBias: dBias.pointer, dGamma: dGamma.pointer,
                                                   dBeta: dBeta.pointer, dPooled: dp.const, pooled: pooled.const, argmax: argmax,
                                                   pooledInput: pooledInput.const, weight: w.const, bias: b.const, gamma: g.const,
                                                   mean: mean.const, invStd: invStd.const, shape: s, padded: padded.const,
                                                   moments: moments.pointer, synchronise: reduce)
        } else {
            let y = Buffer<T>(repeating: .nan, count: s.outputCount), stats = Buffer<Double>(repeating: .nan, count: 2 * s.batch * c)
            let columns = Buffer<T>(repeating: .nan, count: Conv2d.scratchCount(s))
            Conv2d.forward(output: y.pointer, input: input.const, weight: w.const, bias: b.const, columns: columns.pointer, shape: s,
                           planeStatistics: stats.pointer)
            BatchNormReLUPool.forwardTraining(pooled: pooled.pointer, argmax: argmax, pooledInput: pooledInput.pointer,
                                              mean: mean.pointer, invStd: invStd.pointer, runningMean: runMean.pointer,
                                              runningVar: runVar.pointer, input: y.const, planeStatistics: stats.const,
                                              gamma: g.const, beta: be.const, batch: s.batch, channels: c, height: s.height,
                                              width: s.width, synchronise: reduce)
            let dx = Buffer<T>(repeating: .nan, count: s.outputCount)
            BatchNormReLUPool.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dInputSums: dBias.pointer,
                                               dPooled: dp.const, pooled: pooled.const, argmax: argmax, pooledInput: pooledInput.const,
                                               input: y.const, gamma: g.const, mean: mean.const, invStd: invStd.const,
                                               batch: s.batch, channels: c, height: s.height, width: s.width, synchronise: reduce)
            Conv2d.backward(dInput: nil, dWeight: dWeight.pointer, dBias: nil, dOutput: dx.const, input: input.const,
                            weight: w.const, columns: columns.pointer, shape: s)
        }
        return Result(pooled: pooled.array, argmax: Array(UnsafeBufferPointer(start: argmax, count: pooledCount)),
                      pooledInput: pooledInput.array, statistics: mean.array + invStd.array + runMean.array + runVar.array,
                      dWeight: dWeight.array, dBias: dBias.array, dGamma: dGamma.array, dBeta: dBeta.array)
    }

    /// max |u − v| / max(1, max |v|) ≤ tolerance.
    func assertClose<T: GEMMScalar>(_ u: [T], _ v: [T], _ tolerance: Double, _ what: String) {
        XCTAssertEqual(u.count, v.count, what)
        let scale = max(1, v.map { abs(Double($0)) }.max() ?? 0)
        let worst = zip(u, v).map { abs(Double($0) - Double($1)) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst / scale, tolerance, what)
    }

    typealias Inputs = (x: [Double], weight: [Double], bias: [Double], gamma: [Double], beta: [Double], dPooled: [Double])

    func inputs(_ s: Conv2dShape, _ rng: inout SplitMix64) -> Inputs {
        let gamma = (0..<s.outChannels).map { k in (k % 2 == 0 ? 1.0 : -1.0) * rng.uniform(0.5, 1.5) }
        // A positive input (frames are photon counts): x's mean is far from 0, the case the centred Gram is for.
        return (randomValues(s.inputCount, &rng, 0, 3), randomValues(s.weightCount, &rng), randomValues(s.outChannels, &rng),
                gamma, randomValues(s.outChannels, &rng, -0.3, 0.3), randomValues(s.outputCount / 4, &rng))
    }

    func compare<T: GEMMScalar>(_ s: Conv2dShape, _ v: Inputs, as: T.Type, tolerance: Double) {
        let f = { (u: [Double]) in u.map { T($0) } }
        let fused: Result<T> = run(s, x: f(v.x), weight: f(v.weight), bias: f(v.bias), gamma: f(v.gamma), beta: f(v.beta),
                                   dPooled: f(v.dPooled), fused: true)
        let pair: Result<T> = run(s, x: f(v.x), weight: f(v.weight), bias: f(v.bias), gamma: f(v.gamma), beta: f(v.beta),
                                  dPooled: f(v.dPooled), fused: false)
        let label = "\(T.self) \(s)"
        if T.self == Double.self { XCTAssertEqual(fused.argmax, pair.argmax, "argmax, \(label)") }
        assertClose(fused.pooled, pair.pooled, tolerance, "pooled, \(label)")
        assertClose(fused.pooledInput, pair.pooledInput, tolerance, "x at the maxima, \(label)")
        assertClose(fused.statistics, pair.statistics, tolerance, "mean, 1/σ, running statistics, \(label)")
        assertClose(fused.dWeight, pair.dWeight, tolerance, "dW, \(label)")
        assertClose(fused.dBias, pair.dBias, tolerance, "dbias, \(label)")
        assertClose(fused.dGamma, pair.dGamma, tolerance, "dγ, \(label)")
        assertClose(fused.dBeta, pair.dBeta, tolerance, "dβ, \(label)")
    }

    func testMatchesConvThenBatchNormReLUPool() {
        var rng = SplitMix64(seed: 91)
        let shapes = [
            Conv2dShape(batch: 3, inChannels: 1, height: 8, width: 8, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 1, inChannels: 1, height: 6, width: 10, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 2, inChannels: 5, height: 4, width: 6, outChannels: 3, kernelH: 1, kernelW: 1, padding: 0),
            Conv2dShape(batch: 4, inChannels: 1, height: 2, width: 2, outChannels: 2, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 2, inChannels: 1, height: 32, width: 34, outChannels: 16, kernelH: 3, kernelW: 3, padding: 1),
        ]
        for s in shapes {
            XCTAssertTrue(ConvBatchNormReLUPool.applies(s), "\(s)")
            let v = inputs(s, &rng)
            compare(s, v, as: Double.self, tolerance: 1e-10)
            compare(s, v, as: Float.self, tolerance: 1e-4)
        }
    }

    func testShapesItDoesNotTake() {
        XCTAssertFalse(ConvBatchNormReLUPool.applies(Conv2dShape(batch: 2, inChannels: 2, height: 8, width: 8, outChannels: 4,
                                                             kernelH: 3, kernelW: 3, padding: 1)))   // patch 18
        XCTAssertFalse(ConvBatchNormReLUPool.applies(Conv2dShape(batch: 2, inChannels: 1, height: 8, width: 8, outChannels: 4,
                                                             kernelH: 3, kernelW: 3, stride: 2, padding: 1)))
        XCTAssertFalse(ConvBatchNormReLUPool.applies(Conv2dShape(batch: 2, inChannels: 1, height: 7, width: 8, outChannels: 4,
                                                             kernelH: 3, kernelW: 3, padding: 1)))
    }

    /// Two replicas (images 0..<2 and 2..<4) with a summing reducer: their added gradients are
    /// the whole batch's.
    func testSynchronisedReplicasReproduceTheWholeBatch() {
        var rng = SplitMix64(seed: 92)
        let s = Conv2dShape(batch: 4, inChannels: 1, height: 6, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1)
        let v = inputs(s, &rng)
        let whole: Result<Double> = run(s, x: v.x, weight: v.weight, bias: v.bias, gamma: v.gamma, beta: v.beta,
                                        dPooled: v.dPooled, fused: true)
        let half = Conv2dShape(batch: 2, inChannels: 1, height: 6, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1)
        let inImage = s.inputCount / s.batch, pooledImage = s.outputCount / 4 / s.batch
        let (a, b) = TwoReplicas.run { rank, reducer -> Result<Double> in
            let xs = Array(v.x[(2 * rank * inImage)..<((2 * rank + 2) * inImage)])
            let ds = Array(v.dPooled[(2 * rank * pooledImage)..<((2 * rank + 2) * pooledImage)])
            return self.run(half, x: xs, weight: v.weight, bias: v.bias, gamma: v.gamma, beta: v.beta, dPooled: ds, fused: true,
                            reduce: reducer)
        }
        assertClose(a.pooled + b.pooled, whole.pooled, 1e-10, "pooled")
        assertClose(a.statistics, whole.statistics, 1e-10, "statistics, replica 0")
        assertClose(b.statistics, whole.statistics, 1e-10, "statistics, replica 1")
        let sum = { (u: [Double], w: [Double], initial: Double) in zip(u, w).map { $0 + $1 - initial } }
        assertClose(sum(a.dWeight, b.dWeight, 0.125), whole.dWeight, 1e-10, "dW")
        assertClose(sum(a.dBias, b.dBias, 0.25), whole.dBias, 1e-10, "dbias")
        assertClose(sum(a.dGamma, b.dGamma, 0.5), whole.dGamma, 1e-10, "dγ")
        assertClose(sum(a.dBeta, b.dBeta, -0.5), whole.dBeta, 1e-10, "dβ")
    }
}
