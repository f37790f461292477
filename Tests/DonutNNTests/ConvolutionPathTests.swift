import XCTest
import DonutNN

/// `Conv2d`'s paths in Double (`ConvolutionPath`: direct stencil for one input or one output
/// channel at stride 1, Winograd for 3×3 pad-1 convs on even planes, im2col + GEMM otherwise;
/// each test asserts the path its shapes take) against the naive loops, on the network's shapes
/// and awkward ones, and the threading rule: results bit-identical for any thread count. The
/// Float kernels of every path (AVX2 included) are checked in `ConvolutionFloatTests`.
final class ConvolutionPathTests: XCTestCase {
    /// Forward (Double, 1e-12: same products, different order) and both backward products
    /// against `naiveConv2d` / `naiveConv2dBackward` (1e-12 of the largest term sum); dInput is
    /// checked as written (starts at 7) and dWeight as added (starts at 0.5).
    func checkAgainstNaive(_ s: Conv2dShape, seed: UInt64, _ label: String) {
        var rng = SplitMix64(seed: seed)
        let x = randomValues(s.inputCount, &rng), w = randomValues(s.weightCount, &rng), b = randomValues(s.outChannels, &rng)
        let g = randomValues(s.outputCount, &rng)
        let xd = Buffer(x), wd = Buffer(w), bd = Buffer(b), gd = Buffer(g)
        let y = Buffer<Double>(repeating: .nan, count: s.outputCount), cols = Buffer<Double>(repeating: .nan, count: Conv2d.scratchCount(s))
        Conv2d.forward(output: y.pointer, input: xd.const, weight: wd.const, bias: bd.const, columns: cols.pointer, shape: s)
        assertClose(y.array, naiveConv2d(x, w, b, s), atol: 1e-12, rtol: 1e-12, label + " forward")
        let dx = Buffer<Double>(repeating: 7, count: s.inputCount), dw = Buffer<Double>(repeating: 0.5, count: s.weightCount)
        let db = Buffer<Double>(repeating: 0.5, count: s.outChannels)
        Conv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: gd.const, input: xd.const,
                        weight: wd.const, columns: cols.pointer, shape: s)
        let (ndx, ndw) = naiveConv2dBackward(x, w, g, s)
        assertClose(dx.array, ndx, atol: 1e-12, rtol: 1e-12, label + " dInput")
        assertClose(dw.array.map { $0 - 0.5 }, ndw, atol: 1e-11, rtol: 1e-12, label + " dWeight")
        var ndb = [Double](repeating: 0, count: s.outChannels)
        let plane = s.outHeight * s.outWidth
        for i in 0..<s.outputCount { ndb[(i / plane) % s.outChannels] += g[i] }
        assertClose(db.array.map { $0 - 0.5 }, ndb, atol: 1e-11, rtol: 1e-12, label + " dBias")
        keepAlive(xd, wd, bd, gd, y, cols, dx, dw, db)
    }

    func testDirectPathMatchesNaiveLoops() {
        let shapes = [
            Conv2dShape(batch: 2, inChannels: 1, height: 64, width: 64, outChannels: 16, kernelH: 3, kernelW: 3, padding: 1),  // encoder's first
            Conv2dShape(batch: 3, inChannels: 16, height: 64, width: 64, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),  // decoder's last
            Conv2dShape(batch: 1, inChannels: 1, height: 7, width: 9, outChannels: 5, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 3, inChannels: 4, height: 5, width: 6, outChannels: 1, kernelH: 1, kernelW: 1),
            Conv2dShape(batch: 2, inChannels: 2, height: 6, width: 5, outChannels: 1, kernelH: 1, kernelW: 3, padding: 1),
            Conv2dShape(batch: 2, inChannels: 1, height: 4, width: 3, outChannels: 2, kernelH: 3, kernelW: 3, padding: 0),
        ]
        for (i, s) in shapes.enumerated() {
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Double.self)), .stencil, "\(s) should take the direct path")
            XCTAssertEqual(Conv2d.backwardPath(s, target: .native(Double.self)), .stencil, "\(s) should take the direct path")
            checkAgainstNaive(s, seed: 100 + UInt64(i), "direct \(s)")
        }
    }

    /// Batches large enough for chunks of several images (the GEMM's N spans images); odd
    /// planes, stride 2 and 1×1 kernels, which Winograd does not take.
    func testGEMMPathWithMultiImageChunksMatchesNaiveLoops() {
        let shapes = [
            Conv2dShape(batch: 16, inChannels: 3, height: 7, width: 7, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 11, inChannels: 2, height: 5, width: 7, outChannels: 3, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
            Conv2dShape(batch: 9, inChannels: 5, height: 3, width: 3, outChannels: 2, kernelH: 1, kernelW: 1),
        ]
        for (i, s) in shapes.enumerated() {
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Double.self)), .gemm, "\(s) should take the GEMM path")
            XCTAssertEqual(Conv2d.backwardPath(s, target: .native(Double.self)), .gemm, "\(s) should take the GEMM path")
            XCTAssertGreaterThan(Conv2d.chunkSize(s), 1, "\(s) should put several images in a chunk")
            checkAgainstNaive(s, seed: 200 + UInt64(i), "GEMM \(s)")
        }
    }

    /// The Winograd F(2×2, 3×3) forward (3×3, stride 1, padding 1, even sizes): in Double
    /// through `checkAgainstNaive` (with the backward beside it), and in Float, where the
    /// transforms run as SIMD kernels 4 tiles at a time with a scalar tail (1, 5, 8 and 9 tiles
    /// wide), forward and both gradients against the naive loops within Float rounding of their
    /// sums. Shapes: the smallest plane, odd tile counts, an encoder block's channels, multi-image chunks.
    func testWinogradPathMatchesNaiveLoops() {
        let shapes = [
            Conv2dShape(batch: 1, inChannels: 2, height: 2, width: 2, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 3, inChannels: 5, height: 6, width: 10, outChannels: 7, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 2, inChannels: 3, height: 4, width: 18, outChannels: 2, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 2, inChannels: 16, height: 16, width: 16, outChannels: 32, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 16, inChannels: 4, height: 8, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),
        ]
        for (i, s) in shapes.enumerated() {
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Double.self)), .winograd, "\(s) should take the Winograd path")
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Float.self)), .winograd, "\(s) should take the Winograd path")
            XCTAssertEqual(Conv2d.backwardPath(s, target: .native(Float.self)), .gemm, "\(s): backward by GEMM")
            checkAgainstNaive(s, seed: 500 + UInt64(i), "Winograd \(s)")
            var rng = SplitMix64(seed: 600 + UInt64(i))
            let x = randomValues(s.inputCount, &rng), w = randomValues(s.weightCount, &rng), b = randomValues(s.outChannels, &rng)
            let g = randomValues(s.outputCount, &rng)
            let xf = Buffer(x.map(Float.init)), wf = Buffer(w.map(Float.init)), bf = Buffer(b.map(Float.init)), gf = Buffer(g.map(Float.init))
            let y = Buffer<Float>(repeating: .nan, count: s.outputCount), cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s))
            Conv2d.forward(output: y.pointer, input: xf.const, weight: wf.const, bias: bf.const, columns: cols.pointer, shape: s)
            // The Float inputs exactly in Double: the reference sees what the Float path saw.
            let (xr, wr, gr) = (xf.array.map(Double.init), wf.array.map(Double.init), gf.array.map(Double.init))
            let terms = Double(9 * max(s.inChannels, s.outChannels))
            assertClose(y.array, naiveConv2d(xr, wr, bf.array.map(Double.init), s), atol: 4e-7 * terms, rtol: 1e-6, "Float forward \(s)")
            let dx = Buffer<Float>(repeating: .nan, count: s.inputCount), dw = Buffer<Float>(repeating: 0, count: s.weightCount)
            Conv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: nil, dOutput: gf.const, input: xf.const,
                            weight: wf.const, columns: cols.pointer, shape: s)
            let (ndx, ndw) = naiveConv2dBackward(xr, wr, gr, s)
            assertClose(dx.array, ndx, atol: 4e-7 * terms, rtol: 1e-6, "Float dInput \(s)")
            // dW sums batch·plane products per entry.
            assertClose(dw.array, ndw, atol: 4e-7 * Double(s.batch * s.height * s.width), rtol: 1e-6, "Float dWeight \(s)")
            keepAlive(xf, wf, bf, gf, y, cols, dx, dw)
        }
    }

    /// NaN through the fused epilogue (Float SIMD affine, ReLU and pool): a NaN input pixel makes
    /// the conv outputs around it NaN (its 3×3 neighbourhood; on the Winograd path, the 2×2 tiles
    /// whose 4×4 patches hold it); the fused pool must report NaN exactly where
    /// ReLU → `MaxPool2d` on the plain conv output does, and equal values elsewhere.
    func testFusedPoolPropagatesNaNLikeMaxPool() {
        var rng = SplitMix64(seed: 400)
        for s in [Conv2dShape(batch: 2, inChannels: 3, height: 32, width: 32, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),
                  Conv2dShape(batch: 2, inChannels: 1, height: 20, width: 36, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1)] {
            let x = Buffer(randomValues(s.inputCount, &rng).map(Float.init)), w = Buffer(randomValues(s.weightCount, &rng).map(Float.init))
            let b = Buffer(randomValues(s.outChannels, &rng).map(Float.init))
            for i in [5, s.width + 17, s.inputCount - 3] { x[i] = .nan }
            let cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s))
            let y = Buffer<Float>(repeating: 0, count: s.outputCount)
            Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s)
            ReLU.forward(output: y.pointer, input: y.const, count: s.outputCount)
            let pooledCount = s.outputCount / 4
            let expected = Buffer<Float>(repeating: 0, count: pooledCount), fused = Buffer<Float>(repeating: 0, count: pooledCount)
            let arg = UnsafeMutablePointer<Int32>.allocate(capacity: pooledCount)
            defer { arg.deallocate() }
            MaxPool2d.forward(output: expected.pointer, argmax: arg, input: y.const, batch: s.batch, channels: s.outChannels,
                              height: s.outHeight, width: s.outWidth)
            let ones = Buffer<Float>(repeating: 1, count: s.outChannels), zeros = Buffer<Float>(repeating: 0, count: s.outChannels)
            Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                           scale: ones.const, shift: zeros.const, relu: true, pooled: fused.pointer)
            XCTAssertTrue(expected.array.contains { $0.isNaN }, "no NaN reached the pool: the check would be vacuous")
            for i in 0..<pooledCount {
                XCTAssertEqual(fused[i].isNaN, expected[i].isNaN, "\(s): pooled element \(i) NaN mismatch")
                if !expected[i].isNaN { XCTAssertEqual(fused[i], expected[i], accuracy: 1e-5 * max(1, abs(expected[i])), "\(s): element \(i)") }
            }
            keepAlive(x, w, b, cols, y, expected, fused, ones, zeros)
        }
    }

    /// Float forward (plain and fused BatchNorm+ReLU+pool), dInput, dWeight and dBias with 1, 2
    /// and 3 threads: bit-identical.
    func testResultsDoNotDependOnThreadCount() {
        let shapes = [
            Conv2dShape(batch: 16, inChannels: 1, height: 32, width: 32, outChannels: 16, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 16, inChannels: 16, height: 16, width: 16, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 16, inChannels: 8, height: 16, width: 16, outChannels: 8, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 7, inChannels: 3, height: 9, width: 10, outChannels: 5, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
            Conv2dShape(batch: 1, inChannels: 4, height: 12, width: 12, outChannels: 6, kernelH: 3, kernelW: 3, padding: 1),
        ]
        var rng = SplitMix64(seed: 300)
        for s in shapes {
            let x = Buffer(randomValues(s.inputCount, &rng).map(Float.init)), w = Buffer(randomValues(s.weightCount, &rng).map(Float.init))
            let b = Buffer(randomValues(s.outChannels, &rng).map(Float.init)), g = Buffer(randomValues(s.outputCount, &rng).map(Float.init))
            let scale = Buffer(randomValues(s.outChannels, &rng, 0.5, 1.5).map(Float.init))
            let shift = Buffer(randomValues(s.outChannels, &rng).map(Float.init))
            let pooledCount = s.batch * s.outChannels * (s.outHeight / 2) * (s.outWidth / 2)
            func run(threads: Int) -> [[Float]] {
                Parallel.withThreads(threads) {
                    let cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s))
                    let y = Buffer<Float>(repeating: .nan, count: s.outputCount), pooled = Buffer<Float>(repeating: .nan, count: pooledCount)
                    let dx = Buffer<Float>(repeating: 7, count: s.inputCount), dw = Buffer<Float>(repeating: 0.5, count: s.weightCount)
                    let db = Buffer<Float>(repeating: 0.5, count: s.outChannels)
                    Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                                   scale: scale.const, shift: shift.const, relu: true, pooled: pooled.pointer)
                    Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s)
                    Conv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: g.const, input: x.const,
                                    weight: w.const, columns: cols.pointer, shape: s)
                    return [y.array, pooled.array, dx.array, dw.array, db.array]
                }
            }
            let reference = run(threads: 1)
            for threads in [2, 3] {
                let r = run(threads: threads)
                for (k, name) in ["output", "pooled output", "dInput", "dWeight", "dBias"].enumerated() {
                    let same = zip(r[k], reference[k]).allSatisfy { $0.bitPattern == $1.bitPattern }
                    XCTAssertTrue(same, "\(s): \(name) with \(threads) threads differs from 1 thread")
                }
            }
            keepAlive(x, w, b, g, scale, shift)
        }
    }
}

/// The adjoint loops of `naiveConv2d`, in Double: dx[n, ic, iy, ix] = Σ w[oc, ic, ky, kx]·g[n, oc, oy, ox]
/// and dw[oc, ic, ky, kx] = Σ g[n, oc, oy, ox]·x[n, ic, iy, ix] over iy = oy·s − p + ky, ix = ox·s − p + kx in the image.
func naiveConv2dBackward(_ x: [Double], _ w: [Double], _ g: [Double], _ s: Conv2dShape) -> (dx: [Double], dw: [Double]) {
    var dx = [Double](repeating: 0, count: s.inputCount), dw = [Double](repeating: 0, count: s.weightCount)
    for n in 0..<s.batch {
        for oc in 0..<s.outChannels {
            for oy in 0..<s.outHeight {
                for ox in 0..<s.outWidth {
                    let go = g[((n * s.outChannels + oc) * s.outHeight + oy) * s.outWidth + ox]
                    for ic in 0..<s.inChannels {
                        for ky in 0..<s.kernelH {
                            for kx in 0..<s.kernelW {
                                let iy = oy * s.stride - s.padding + ky, ix = ox * s.stride - s.padding + kx
                                guard iy >= 0 && iy < s.height && ix >= 0 && ix < s.width else { continue }
                                let wi = ((oc * s.inChannels + ic) * s.kernelH + ky) * s.kernelW + kx
                                let xi = ((n * s.inChannels + ic) * s.height + iy) * s.width + ix
                                dx[xi] += w[wi] * go
                                dw[wi] += go * x[xi]
                            }
                        }
                    }
                }
            }
        }
    }
    return (dx, dw)
}
