import XCTest
import DonutNN

final class ConvolutionTests: XCTestCase {
    /// im2col + GEMM equals the direct 7-loop convolution over the sweep, in Double
    /// (tolerance 1e-12 + 1e-12·|y|: same sums, different order, ≤ 27 terms of O(1)) and in Float
    /// (1e-5 + 1e-5·|y|: Float rounding of ≤ 27 products, ~27·6e-8 ≈ 2e-6 worst case).
    func testForwardMatchesNaiveConvolution() {
        var rng = SplitMix64(seed: 1)
        for (s, hasBias) in convolutionSweep() {
            let x = randomValues(s.inputCount, &rng), w = randomValues(s.weightCount, &rng)
            let b = hasBias ? randomValues(s.outChannels, &rng) : nil
            let expected = naiveConv2d(x, w, b, s)
            let label = "conv \(s) bias \(hasBias)"

            let xd = Buffer(x), wd = Buffer(w), bd = b.map { Buffer($0) }
            let yd = Buffer<Double>(repeating: .nan, count: s.outputCount)
            let cd = Buffer<Double>(repeating: .nan, count: Conv2d.scratchCount(s))
            Conv2d.forward(output: yd.pointer, input: xd.const, weight: wd.const, bias: bd?.const, columns: cd.pointer, shape: s)
            assertClose(yd.array, expected, atol: 1e-12, rtol: 1e-12, label + " (Double)")
            keepAlive(xd, wd, bd, cd)

            let xf = Buffer(x.map(Float.init)), wf = Buffer(w.map(Float.init)), bf = b.map { Buffer($0.map(Float.init)) }
            let yf = Buffer<Float>(repeating: .nan, count: s.outputCount)
            let cf = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s))
            Conv2d.forward(output: yf.pointer, input: xf.const, weight: wf.const, bias: bf?.const, columns: cf.pointer, shape: s)
            // Reference from the Float-rounded inputs, so only the arithmetic differs.
            let expectedF = naiveConv2d(x.map { Double(Float($0)) }, w.map { Double(Float($0)) }, b?.map { Double(Float($0)) }, s)
            assertClose(yf.array, expectedF, atol: 1e-5, rtol: 1e-5, label + " (Float)")
            keepAlive(xf, wf, bf, cf)
        }
    }

    /// The 64×64 production shape (stride 2, 3×3, padding 1) against the naive loop, once.
    func testProductionShapeMatchesNaive() {
        var rng = SplitMix64(seed: 2)
        let s = Conv2dShape(batch: 2, inChannels: 4, height: 64, width: 64, outChannels: 8, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        let x = randomValues(s.inputCount, &rng), w = randomValues(s.weightCount, &rng), b = randomValues(8, &rng)
        let xd = Buffer(x), wd = Buffer(w), bd = Buffer(b)
        let y = Buffer<Double>(repeating: .nan, count: s.outputCount), cols = Buffer<Double>(repeating: 0, count: Conv2d.scratchCount(s))
        Conv2d.forward(output: y.pointer, input: xd.const, weight: wd.const, bias: bd.const, columns: cols.pointer, shape: s)
        assertClose(y.array, naiveConv2d(x, w, b, s), atol: 1e-12, rtol: 1e-12, "conv \(s)")
        keepAlive(xd, wd, bd, cols)
    }

    /// Adjoint identity ⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ for a bias-free conv, with convᵀ the input
    /// gradient of `backward` (dInput for dOutput = y). Both sides are sums of the same products
    /// in different order: tolerance 1e-12 of Σ|terms|.
    func testBackwardInputIsAdjointOfForward() {
        var rng = SplitMix64(seed: 3)
        for (s, _) in convolutionSweep() {
            let x = Buffer(randomValues(s.inputCount, &rng)), w = Buffer(randomValues(s.weightCount, &rng))
            let y = Buffer(randomValues(s.outputCount, &rng))
            let ax = Buffer<Double>(repeating: 0, count: s.outputCount), aty = Buffer<Double>(repeating: 7, count: s.inputCount)
            let dw = Buffer<Double>(repeating: 0, count: s.weightCount)
            let cols = Buffer<Double>(repeating: 0, count: Conv2d.scratchCount(s))
            Conv2d.forward(output: ax.pointer, input: x.const, weight: w.const, bias: nil, columns: cols.pointer, shape: s)
            Conv2d.backward(dInput: aty.pointer, dWeight: dw.pointer, dBias: nil, dOutput: y.const, input: x.const,
                            weight: w.const, columns: cols.pointer, shape: s)
            let lhs = dot(ax.const, y.const, s.outputCount), rhs = dot(x.const, aty.const, s.inputCount)
            var magnitude = 0.0
            for i in 0..<s.outputCount { magnitude += abs(ax[i] * y[i]) }
            XCTAssertLessThanOrEqual(abs(lhs - rhs), 1e-12 * magnitude + 1e-300,
                                     "conv \(s): ⟨Ax, y⟩ \(lhs) vs ⟨x, Aᵀy⟩ \(rhs), tolerance \(1e-12 * magnitude)")
        }
    }

    /// dInput, dWeight and dBias against central differences over the whole sweep. The parameter
    /// gradients start at 0.5 and the input gradient at 7 to check "adds" and "writes".
    func testBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 4)
        for (s, hasBias) in convolutionSweep() {
            let x = Buffer(randomValues(s.inputCount, &rng)), w = Buffer(randomValues(s.weightCount, &rng))
            let b = hasBias ? Buffer(randomValues(s.outChannels, &rng)) : nil
            let g = Buffer(randomValues(s.outputCount, &rng))
            let y = Buffer<Double>(repeating: 0, count: s.outputCount)
            let cols = Buffer<Double>(repeating: 0, count: Conv2d.scratchCount(s))
            let loss = {
                Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b?.const, columns: cols.pointer, shape: s)
                return dot(g.const, y.const, s.outputCount)
            }
            let dx = Buffer<Double>(repeating: 7, count: s.inputCount)
            let dw = Buffer<Double>(repeating: 0.5, count: s.weightCount)
            let db = hasBias ? Buffer<Double>(repeating: 0.5, count: s.outChannels) : nil
            Conv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db?.pointer, dOutput: g.const, input: x.const,
                            weight: w.const, columns: cols.pointer, shape: s)
            var vars = [FDVariable("input", x, dx.array), FDVariable("weight", w, dw.array.map { $0 - 0.5 })]
            if let b, let db { vars.append(FDVariable("bias", b, db.array.map { $0 - 0.5 })) }
            checkAgainstCentralDifferences("conv \(s) bias \(hasBias)", vars, loss: loss)
        }
    }

    /// dInput = nil skips the input gradient and still gives the same dWeight.
    func testBackwardWithoutInputGradient() {
        var rng = SplitMix64(seed: 5)
        let s = Conv2dShape(batch: 2, inChannels: 3, height: 5, width: 7, outChannels: 2, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        let x = Buffer(randomValues(s.inputCount, &rng)), w = Buffer(randomValues(s.weightCount, &rng))
        let g = Buffer(randomValues(s.outputCount, &rng)), cols = Buffer<Double>(repeating: 0, count: Conv2d.scratchCount(s))
        let dx = Buffer<Double>(repeating: 0, count: s.inputCount)
        let dw1 = Buffer<Double>(repeating: 0, count: s.weightCount), dw2 = Buffer<Double>(repeating: 0, count: s.weightCount)
        Conv2d.backward(dInput: dx.pointer, dWeight: dw1.pointer, dBias: nil, dOutput: g.const, input: x.const, weight: w.const, columns: cols.pointer, shape: s)
        Conv2d.backward(dInput: nil, dWeight: dw2.pointer, dBias: nil, dOutput: g.const, input: x.const, weight: w.const, columns: cols.pointer, shape: s)
        assertClose(dw2.array, dw1.array, atol: 1e-14, rtol: 1e-14, "dWeight without dInput")
    }
}

final class LinearTests: XCTestCase {
    /// GEMM forward equals the naive double loop (Double 1e-12, Float 1e-5: ≤ 13-term sums).
    func testForwardMatchesNaiveLoop() {
        var rng = SplitMix64(seed: 6)
        for (batch, inF, outF) in [(1, 1, 1), (1, 5, 3), (3, 7, 2), (4, 13, 9)] {
            for hasBias in [false, true] {
                let x = randomValues(batch * inF, &rng), w = randomValues(outF * inF, &rng)
                let b = hasBias ? randomValues(outF, &rng) : nil
                let expected = naiveLinear(x, w, b, batch: batch, inFeatures: inF, outFeatures: outF)
                let y = Buffer<Double>(repeating: .nan, count: batch * outF)
                let xd = Buffer(x), wd = Buffer(w), bd = b.map { Buffer($0) }
                Linear.forward(output: y.pointer, input: xd.const, weight: wd.const, bias: bd?.const,
                               batch: batch, inFeatures: inF, outFeatures: outF)
                keepAlive(xd, wd, bd)
                assertClose(y.array, expected, atol: 1e-12, rtol: 1e-12, "linear (\(batch), \(inF)) → \(outF) bias \(hasBias) Double")
                let yf = Buffer<Float>(repeating: .nan, count: batch * outF)
                let xf = Buffer(x.map(Float.init)), wf = Buffer(w.map(Float.init)), bf = b.map { Buffer($0.map(Float.init)) }
                Linear.forward(output: yf.pointer, input: xf.const, weight: wf.const, bias: bf?.const,
                               batch: batch, inFeatures: inF, outFeatures: outF)
                let expectedF = naiveLinear(xf.array.map(Double.init), wf.array.map(Double.init), bf?.array.map(Double.init),
                                            batch: batch, inFeatures: inF, outFeatures: outF)
                assertClose(yf.array, expectedF, atol: 1e-5, rtol: 1e-5, "linear (\(batch), \(inF)) → \(outF) bias \(hasBias) Float")
            }
        }
    }

    /// Shapes large enough to be cut into two column blocks (`Linear.blocks`), the DONUT head's
    /// among them: forward and both gradients against the naive loops (Double 1e-12), and the
    /// same bits on one thread as on two.
    func testColumnBlocksMatchNaiveLoopsOnAnyThreadCount() {
        var rng = SplitMix64(seed: 8)
        for (batch, inF, outF) in [(5, 131, 101), (16, 1024, 128), (16, 4, 1024)] {
            XCTAssertEqual(Linear.blocks(batch: batch, inFeatures: inF, outFeatures: outF, columns: outF), 2, "forward (\(batch), \(inF)) → \(outF) is split")
            let x = Buffer(randomValues(batch * inF, &rng)), w = Buffer(randomValues(outF * inF, &rng))
            let b = Buffer(randomValues(outF, &rng)), g = Buffer(randomValues(batch * outF, &rng))
            var runs: [[Double]] = []
            for threads in [1, 2] {
                let y = Buffer<Double>(repeating: .nan, count: batch * outF), dx = Buffer<Double>(repeating: .nan, count: batch * inF)
                let dw = Buffer<Double>(repeating: 0.5, count: outF * inF), db = Buffer<Double>(repeating: 0.5, count: outF)
                Parallel.withThreads(threads) {
                    Linear.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, batch: batch, inFeatures: inF, outFeatures: outF)
                    Linear.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: g.const, input: x.const,
                                    weight: w.const, batch: batch, inFeatures: inF, outFeatures: outF)
                }
                let label = "linear (\(batch), \(inF)) → \(outF), \(threads) thread(s)"
                assertClose(y.array, naiveLinear(x.array, w.array, b.array, batch: batch, inFeatures: inF, outFeatures: outF),
                            atol: 1e-12, rtol: 1e-12, "\(label): output")
                var expectedDx = [Double](repeating: 0, count: batch * inF), expectedDw = [Double](repeating: 0.5, count: outF * inF)
                for n in 0..<batch {
                    for o in 0..<outF {
                        for i in 0..<inF {
                            expectedDx[n * inF + i] += g[n * outF + o] * w[o * inF + i]
                            expectedDw[o * inF + i] += g[n * outF + o] * x[n * inF + i]
                        }
                    }
                }
                assertClose(dx.array, expectedDx, atol: 1e-12, rtol: 1e-12, "\(label): input gradient")
                assertClose(dw.array, expectedDw, atol: 1e-12, rtol: 1e-12, "\(label): weight gradient")
                runs.append(y.array + dx.array + dw.array + db.array)
            }
            XCTAssertEqual(runs[0], runs[1], "linear (\(batch), \(inF)) → \(outF): one thread and two give the same bits")
        }
    }

    func testBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 7)
        for (batch, inF, outF) in [(1, 1, 1), (1, 5, 3), (3, 7, 2)] {
            for hasBias in [false, true] {
                let x = Buffer(randomValues(batch * inF, &rng)), w = Buffer(randomValues(outF * inF, &rng))
                let b = hasBias ? Buffer(randomValues(outF, &rng)) : nil
                let g = Buffer(randomValues(batch * outF, &rng)), y = Buffer<Double>(repeating: 0, count: batch * outF)
                let loss = {
                    Linear.forward(output: y.pointer, input: x.const, weight: w.const, bias: b?.const, batch: batch, inFeatures: inF, outFeatures: outF)
                    return dot(g.const, y.const, batch * outF)
                }
                let dx = Buffer<Double>(repeating: 7, count: batch * inF)
                let dw = Buffer<Double>(repeating: 0.5, count: outF * inF)
                let db = hasBias ? Buffer<Double>(repeating: 0.5, count: outF) : nil
                Linear.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db?.pointer, dOutput: g.const, input: x.const,
                                weight: w.const, batch: batch, inFeatures: inF, outFeatures: outF)
                var vars = [FDVariable("input", x, dx.array), FDVariable("weight", w, dw.array.map { $0 - 0.5 })]
                if let b, let db { vars.append(FDVariable("bias", b, db.array.map { $0 - 0.5 })) }
                checkAgainstCentralDifferences("linear (\(batch), \(inF)) → \(outF) bias \(hasBias)", vars, loss: loss)
            }
        }
    }
}
