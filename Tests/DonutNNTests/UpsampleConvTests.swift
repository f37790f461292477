import XCTest
import DonutNN
import DonutBLAS

/// `UpsampleConv2d` (sub-pixel up-sample → 3×3 conv) against the composition it replaces,
/// `Upsample2d` → `Conv2d`, whose parts are each checked against naive loops and finite
/// differences: forward (with and without the eval BatchNorm + ReLU epilogue), input, weight
/// and bias gradients, in Double on the decoder's shapes and awkward ones, and in Float (the
/// SIMD kernels: classes interleaved into output rows and split back, vector and scalar tails);
/// and bit-identical results for one and two threads.
final class UpsampleConvTests: XCTestCase {
    /// Low-res input (batch, inC, h, w); `shape` is the conv on the (2h, 2w) up-sampled image.
    /// Tolerances: Double 1e-12 (forward) and 1e-11 (gradients, sums of up to 4·inC·batch·plane
    /// terms); Float, where the two sides sum in different orders, 2e-5 and 1e-4 relative + absolute.
    func check<T: GEMMScalar>(_ type: T.Type, _ s: Conv2dShape, seed: UInt64, epilogue: Bool) {
        var rng = SplitMix64(seed: seed)
        let h = s.height / 2, w = s.width / 2, lowCount = s.batch * s.inChannels * h * w
        func random(_ n: Int, _ low: Double = -1, _ high: Double = 1) -> Buffer<T> { Buffer(randomValues(n, &rng, low, high).map { T($0) }) }
        let x = random(lowCount), weight = random(s.weightCount)
        let bias = random(s.outChannels), g = random(s.outputCount)
        let scale = random(s.outChannels, 0.5, 2), shift = random(s.outChannels)
        let double = T.self == Double.self, forwardTolerance = double ? 1e-12 : 2e-5, gradientTolerance = double ? 1e-11 : 1e-4
        XCTAssertTrue(UpsampleConv2d.fuses(s), "\(s)")
        // Reference: the composition.
        let up = Buffer<T>(repeating: .nan, count: s.inputCount)
        Upsample2d.forward(output: up.pointer, input: x.const, batch: s.batch, channels: s.inChannels, height: h, width: w)
        let refCols = Buffer<T>(repeating: .nan, count: Conv2d.scratchCount(s))
        let ref = Buffer<T>(repeating: .nan, count: s.outputCount)
        Conv2d.forward(output: ref.pointer, input: up.const, weight: weight.const, bias: bias.const, columns: refCols.pointer, shape: s,
                       scale: epilogue ? scale.const : nil, shift: epilogue ? shift.const : nil, relu: epilogue)
        let cols = Buffer<T>(repeating: .nan, count: UpsampleConv2d.scratchCount(s))
        let y = Buffer<T>(repeating: .nan, count: s.outputCount)
        UpsampleConv2d.forward(output: y.pointer, input: x.const, weight: weight.const, bias: bias.const, columns: cols.pointer, shape: s,
                               scale: epilogue ? scale.const : nil, shift: epilogue ? shift.const : nil, relu: epilogue)
        assertClose(y.array, ref.array.map { Double($0) }, atol: forwardTolerance, rtol: forwardTolerance, "forward \(s) epilogue \(epilogue)")
        if epilogue { keepAlive(x, weight, bias, g, scale, shift, up, refCols, ref, cols, y); return }

        let dUp = Buffer<T>(repeating: .nan, count: s.inputCount), refDx = Buffer<T>(repeating: .nan, count: lowCount)
        let refDw = Buffer<T>(repeating: 0.25, count: s.weightCount), refDb = Buffer<T>(repeating: 0.25, count: s.outChannels)
        Conv2d.backward(dInput: dUp.pointer, dWeight: refDw.pointer, dBias: refDb.pointer, dOutput: g.const, input: up.const,
                        weight: weight.const, columns: refCols.pointer, shape: s)
        Upsample2d.backward(dInput: refDx.pointer, dOutput: dUp.const, batch: s.batch, channels: s.inChannels, height: h, width: w)
        let dx = Buffer<T>(repeating: 7, count: lowCount)
        let dw = Buffer<T>(repeating: 0.25, count: s.weightCount), db = Buffer<T>(repeating: 0.25, count: s.outChannels)
        UpsampleConv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: g.const, input: x.const,
                                weight: weight.const, columns: cols.pointer, shape: s)
        assertClose(dx.array, refDx.array.map { Double($0) }, atol: gradientTolerance, rtol: gradientTolerance, "dInput \(s)")
        assertClose(dw.array, refDw.array.map { Double($0) }, atol: gradientTolerance, rtol: gradientTolerance, "dWeight \(s)")
        assertClose(db.array, refDb.array.map { Double($0) }, atol: gradientTolerance, rtol: gradientTolerance, "dBias \(s)")
        keepAlive(x, weight, bias, g, scale, shift, up, refCols, ref, cols, y, dUp, refDx, refDw, refDb, dx, dw, db)
    }

    func testMatchesUpsampleThenConv() {
        let shapes = [
            Conv2dShape(batch: 2, inChannels: 64, height: 8, width: 8, outChannels: 64, kernelH: 3, kernelW: 3, padding: 1),   // decoder 1
            Conv2dShape(batch: 3, inChannels: 64, height: 16, width: 16, outChannels: 32, kernelH: 3, kernelW: 3, padding: 1), // decoder 2
            Conv2dShape(batch: 17, inChannels: 32, height: 32, width: 32, outChannels: 16, kernelH: 3, kernelW: 3, padding: 1), // decoder 3, several chunks
            Conv2dShape(batch: 1, inChannels: 3, height: 2, width: 2, outChannels: 2, kernelH: 3, kernelW: 3, padding: 1),     // 1×1 low-res
            Conv2dShape(batch: 5, inChannels: 5, height: 6, width: 10, outChannels: 7, kernelH: 3, kernelW: 3, padding: 1),    // odd channels, not square
            // The direct path (one output channel): the decoder's last block, and awkward ones.
            Conv2dShape(batch: 3, inChannels: 16, height: 64, width: 64, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),  // decoder 4
            Conv2dShape(batch: 1, inChannels: 1, height: 2, width: 2, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),     // 1×1 low-res, one channel
            Conv2dShape(batch: 4, inChannels: 3, height: 6, width: 38, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),    // widths 19: vector and tail
        ]
        for (i, s) in shapes.enumerated() {
            check(Double.self, s, seed: 900 + UInt64(i), epilogue: false)
            check(Double.self, s, seed: 950 + UInt64(i), epilogue: true)
            check(Float.self, s, seed: 1000 + UInt64(i), epilogue: false)
            check(Float.self, s, seed: 1050 + UInt64(i), epilogue: true)
        }
    }

    func testShapesItDoesNotTake() {
        XCTAssertFalse(UpsampleConv2d.fuses(Conv2dShape(batch: 2, inChannels: 1, height: 64, width: 64, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1)))
        XCTAssertFalse(UpsampleConv2d.fuses(Conv2dShape(batch: 2, inChannels: 4, height: 7, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1)))
        XCTAssertFalse(UpsampleConv2d.fuses(Conv2dShape(batch: 2, inChannels: 4, height: 8, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 0)))
    }

    /// Float, one vs two threads: the same bits (chunks fixed by the shape, partials in chunk
    /// order; on the direct path, images whole and partials in image order).
    func testThreadCountDoesNotChangeResults() {
        for outChannels in [16, 1] { checkThreadCount(Conv2dShape(batch: 16, inChannels: 32, height: 32, width: 32, outChannels: outChannels,
                                                                  kernelH: 3, kernelW: 3, padding: 1)) }
    }

    func checkThreadCount(_ s: Conv2dShape) {
        var rng = SplitMix64(seed: 77)
        let lowCount = s.batch * s.inChannels * s.height * s.width / 4
        let x = Buffer<Float>(randomValues(lowCount, &rng).map { Float($0) })
        let weight = Buffer<Float>(randomValues(s.weightCount, &rng).map { Float($0) })
        let g = Buffer<Float>(randomValues(s.outputCount, &rng).map { Float($0) })
        func run(_ threads: Int) -> [[Float]] {
            Parallel.withThreads(threads) {
                let cols = Buffer<Float>(repeating: 0, count: UpsampleConv2d.scratchCount(s))
                let y = Buffer<Float>(repeating: 0, count: s.outputCount), dx = Buffer<Float>(repeating: 0, count: lowCount)
                let dw = Buffer<Float>(repeating: 0, count: s.weightCount)
                UpsampleConv2d.forward(output: y.pointer, input: x.const, weight: weight.const, bias: nil, columns: cols.pointer, shape: s)
                UpsampleConv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: nil, dOutput: g.const, input: x.const,
                                        weight: weight.const, columns: cols.pointer, shape: s)
                return [y.array, dx.array, dw.array]
            }
        }
        XCTAssertEqual(run(1), run(2))
        keepAlive(x, weight, g)
    }
}
