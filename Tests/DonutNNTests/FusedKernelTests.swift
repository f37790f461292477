import XCTest
import DonutNN

/// The network's fused and parallel kernels against the plain layer sequence they replace, in
/// Float, on shapes large enough to take the parallel path (`Parallel.minimumWork`). Tolerances:
/// the fused conv epilogue computes conv·scale + (bias·scale + shift) instead of
/// (conv + bias)·scale + shift, one or two Float roundings of O(10) values apart, so
/// 1e-5 + 1e-5·|y|; the fused BatchNorm+ReLU forward and gated backward do the same arithmetic,
/// so 1e-6 absolute + 1e-6 relative covers the different summation order only.
final class FusedKernelTests: XCTestCase {
    func testConvBatchNormReLUPoolMatchesLayerSequence() {
        var rng = SplitMix64(seed: 41)
        for (batch, inC, outC, size) in [(5, 3, 8, 32), (2, 1, 16, 64), (3, 4, 6, 10), (3, 1, 7, 24), (1, 1, 6, 40)] {
            let s = Conv2dShape(batch: batch, inChannels: inC, height: size, width: size, outChannels: outC,
                                kernelH: 3, kernelW: 3, stride: 1, padding: 1)
            let label = "batch \(batch) in \(inC) out \(outC) size \(size)"
            let x = Buffer(randomValues(s.inputCount, &rng).map(Float.init)), w = Buffer(randomValues(s.weightCount, &rng).map(Float.init))
            let b = Buffer(randomValues(outC, &rng).map(Float.init)), gamma = Buffer(randomValues(outC, &rng, -1.5, 1.5).map(Float.init))
            let beta = Buffer(randomValues(outC, &rng).map(Float.init)), rm = Buffer(randomValues(outC, &rng).map(Float.init))
            let rv = Buffer(randomValues(outC, &rng, 0.5, 2).map(Float.init))
            let cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s))
            // Reference: conv, BatchNorm (eval), ReLU, max pool, each on its own.
            let y = Buffer<Float>(repeating: .nan, count: s.outputCount), bn = Buffer<Float>(repeating: .nan, count: s.outputCount)
            Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s)
            BatchNorm2d.forwardEval(output: bn.pointer, input: y.const, gamma: gamma.const, beta: beta.const, runningMean: rm.const,
                                    runningVar: rv.const, batch: batch, channels: outC, height: size, width: size)
            ReLU.forward(output: bn.pointer, input: bn.const, count: s.outputCount)
            let pooledCount = s.outputCount / 4
            let pool = Buffer<Float>(repeating: .nan, count: pooledCount), arg = UnsafeMutablePointer<Int32>.allocate(capacity: pooledCount)
            defer { arg.deallocate() }
            MaxPool2d.forward(output: pool.pointer, argmax: arg, input: bn.const, batch: batch, channels: outC, height: size, width: size)
            // Fused.
            let scale = Buffer<Float>(repeating: .nan, count: outC), shift = Buffer<Float>(repeating: .nan, count: outC)
            BatchNorm2d.evalAffine(scale: scale.pointer, shift: shift.pointer, gamma: gamma.const, beta: beta.const,
                                   runningMean: rm.const, runningVar: rv.const, channels: outC)
            let fused = Buffer<Float>(repeating: .nan, count: s.outputCount)
            Conv2d.forward(output: fused.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                           scale: scale.const, shift: shift.const, relu: true)
            assertClose(fused.array, bn.array.map(Double.init), atol: 1e-5, rtol: 1e-5, label + " conv+BN+ReLU")
            let fusedPool = Buffer<Float>(repeating: .nan, count: pooledCount)
            Conv2d.forward(output: fused.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                           scale: scale.const, shift: shift.const, relu: true, pooled: fusedPool.pointer)
            assertClose(fusedPool.array, pool.array.map(Double.init), atol: 1e-5, rtol: 1e-5, label + " conv+BN+ReLU+pool")
            // The pooled epilogue pools first and finishes the quarter plane (a minimum where the
            // scale is negative): the same bits as pooling the finished plane. γ of both signs here.
            XCTAssertTrue((0..<outC).contains { scale[$0] < 0 } && (0..<outC).contains { scale[$0] > 0 }, label)
            let finishedPool = Buffer<Float>(repeating: .nan, count: pooledCount)
            MaxPool2d.forward(output: finishedPool.pointer, argmax: arg, input: fused.const, batch: batch, channels: outC, height: size, width: size)
            XCTAssertEqual(fusedPool.array, finishedPool.array, label + " pool-first epilogue vs pooling the finished plane")
            keepAlive(x, w, b, gamma, beta, rm, rv, cols, y, bn, pool, scale, shift, fused, fusedPool, finishedPool)
        }
    }

    func testBatchNormReLUForwardAndBackwardMatchLayerSequence() {
        var rng = SplitMix64(seed: 42)
        for (batch, channels, size) in [(16, 16, 32), (3, 5, 7), (4, 64, 8)] {
            let count = batch * channels * size * size, label = "batch \(batch) channels \(channels) size \(size)"
            let x = Buffer(randomValues(count, &rng, -2, 3).map(Float.init)), g = Buffer(randomValues(count, &rng).map(Float.init))
            let gamma = Buffer(randomValues(channels, &rng, 0.5, 1.5).map(Float.init)), beta = Buffer(randomValues(channels, &rng).map(Float.init))
            func run(fused: Bool) -> (y: [Float], dx: [Float], dGamma: [Float], dBeta: [Float]) {
                let y = Buffer<Float>(repeating: .nan, count: count), dx = Buffer<Float>(repeating: .nan, count: count)
                let mean = Buffer<Float>(repeating: .nan, count: channels), invStd = Buffer<Float>(repeating: .nan, count: channels)
                let rm = Buffer<Float>(repeating: 0, count: channels), rv = Buffer<Float>(repeating: 1, count: channels)
                let dGamma = Buffer<Float>(repeating: 0, count: channels), dBeta = Buffer<Float>(repeating: 0, count: channels)
                BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: invStd.pointer, runningMean: rm.pointer,
                                            runningVar: rv.pointer, input: x.const, gamma: gamma.const, beta: beta.const,
                                            batch: batch, channels: channels, height: size, width: size, relu: fused)
                if fused {
                    BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: g.const,
                                                 input: x.const, gamma: gamma.const, mean: mean.const, invStd: invStd.const,
                                                 batch: batch, channels: channels, height: size, width: size, reluOutput: y.const)
                } else {
                    ReLU.forward(output: y.pointer, input: y.const, count: count)
                    let gated = Buffer<Float>(repeating: .nan, count: count)
                    ReLU.backward(dInput: gated.pointer, dOutput: g.const, output: y.const, count: count)
                    BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: gated.const,
                                                 input: x.const, gamma: gamma.const, mean: mean.const, invStd: invStd.const,
                                                 batch: batch, channels: channels, height: size, width: size)
                    keepAlive(gated)
                }
                defer { keepAlive(y, dx, mean, invStd, rm, rv, dGamma, dBeta) }
                return (y.array, dx.array, dGamma.array, dBeta.array)
            }
            let a = run(fused: false), f = run(fused: true)
            assertClose(f.y, a.y.map(Double.init), atol: 1e-6, rtol: 1e-6, label + " y")
            assertClose(f.dx, a.dx.map(Double.init), atol: 1e-6, rtol: 1e-6, label + " dx")
            assertClose(f.dGamma, a.dGamma.map(Double.init), atol: 1e-6, rtol: 1e-6, label + " dGamma")
            assertClose(f.dBeta, a.dBeta.map(Double.init), atol: 1e-6, rtol: 1e-6, label + " dBeta")
            keepAlive(x, g, gamma, beta)
        }
    }

    /// The Float training backward (16-lane input-gradient pass, in place on the gated gradient)
    /// against its equation evaluated in Double from the same cache: with g = dOutput·[y > 0] and
    /// x̂ = (x − μ)·invStd, dx = γ·invStd·(g − mean(g) − x̂·mean(g·x̂)) (means over batch·plane).
    /// Planes of 49 (three blocks and a tail of one), 1024 and 9 (tail only) values.
    func testBatchNormReLUBackwardMatchesEquationInDouble() {
        var rng = SplitMix64(seed: 43)
        for (batch, channels, size) in [(16, 16, 7), (16, 16, 32), (5, 3, 3)] {
            let plane = size * size, count = batch * channels * plane, label = "batch \(batch) channels \(channels) size \(size)"
            let x = Buffer(randomValues(count, &rng, -2, 3).map(Float.init)), dOut = Buffer(randomValues(count, &rng).map(Float.init))
            let gamma = Buffer(randomValues(channels, &rng, 0.5, 1.5).map(Float.init)), beta = Buffer(randomValues(channels, &rng).map(Float.init))
            let y = Buffer<Float>(repeating: .nan, count: count), dx = Buffer<Float>(repeating: .nan, count: count)
            let mean = Buffer<Float>(repeating: .nan, count: channels), invStd = Buffer<Float>(repeating: .nan, count: channels)
            let rm = Buffer<Float>(repeating: 0, count: channels), rv = Buffer<Float>(repeating: 1, count: channels)
            let dGamma = Buffer<Float>(repeating: 0, count: channels), dBeta = Buffer<Float>(repeating: 0, count: channels)
            BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: invStd.pointer, runningMean: rm.pointer,
                                        runningVar: rv.pointer, input: x.const, gamma: gamma.const, beta: beta.const,
                                        batch: batch, channels: channels, height: size, width: size, relu: true)
            BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: dOut.const,
                                         input: x.const, gamma: gamma.const, mean: mean.const, invStd: invStd.const,
                                         batch: batch, channels: channels, height: size, width: size, reluOutput: y.const)
            var expected = [Double](repeating: 0, count: count)
            let m = Double(batch * plane)
            for c in 0..<channels {
                let mu = Double(mean[c]), inv = Double(invStd[c])
                func index(_ n: Int, _ i: Int) -> Int { (n * channels + c) * plane + i }
                func g(_ j: Int) -> Double { y[j] > 0 ? Double(dOut[j]) : 0 }
                var meanG = 0.0, meanGXhat = 0.0
                for n in 0..<batch { for i in 0..<plane { let j = index(n, i); meanG += g(j); meanGXhat += g(j) * (Double(x[j]) - mu) * inv } }
                meanG /= m; meanGXhat /= m
                for n in 0..<batch {
                    for i in 0..<plane {
                        let j = index(n, i)
                        expected[j] = Double(gamma[c]) * inv * (g(j) - meanG - (Double(x[j]) - mu) * inv * meanGXhat)
                    }
                }
            }
            assertClose(dx.array, expected, atol: 2e-5, rtol: 1e-4, label + " dx")
            keepAlive(x, dOut, gamma, beta, y, dx, mean, invStd, rm, rv, dGamma, dBeta)
        }
    }
}
