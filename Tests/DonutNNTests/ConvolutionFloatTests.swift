import XCTest
import DonutBLAS
import DonutNN

/// Every Float kernel of the convolutions (`ConvolutionPath`, forward and backward, with the
/// epilogue and the fused pool) against a Double reference, the naive loops on the same inputs
/// (Float values, exact in Double), within a bound derived from Float rounding:
///
/// A value an expression tree of depth D computes in floating point (each add, multiply or fused
/// multiply–add rounding once, relative error ≤ u) is within γ_D·E of the exact value, with
/// γ_D = D·u/(1 − D·u) and E the same tree on the absolute values of its inputs and constants
/// (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1–3.4: a sum of K
/// products in any order or blocking has depth ≤ K + 1, its E = Σ|a||b|). The tolerance is
/// (γ_D(2⁻²⁴) + γ_D(2⁻⁵³))·E, Float's error plus the Double reference's. A pool or ReLU adds no
/// error of its own (max and max(·, 0) are 1-Lipschitz), so a pooled output takes the largest
/// tolerance of its window. A wrong kernel (a lost tap, a transposed index) is off by O(E).
final class ConvolutionFloatTests: XCTestCase {
    /// γ_D for unit roundoff u.
    static func gamma(_ depth: Int, _ u: Double) -> Double { Double(depth) * u / (1 - Double(depth) * u) }
    /// Float's and the Double reference's γ_D together.
    static func tolerance(depth: Int) -> Double { gamma(depth, 0x1p-24) + gamma(depth, 0x1p-53) }

    /// |observed − expected| ≤ tolerance(depth)·magnitude, element by element; reports up to 5.
    func assertWithin(_ observed: [Float], _ expected: [Double], magnitude: [Double], depth: Int, _ label: String,
                      mustDiffer: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(observed.count, expected.count, "\(label): length", file: file, line: line)
        XCTAssertEqual(magnitude.count, expected.count, "\(label): magnitude length", file: file, line: line)
        let g = Self.tolerance(depth: depth)
        var reported = 0
        for i in 0..<min(observed.count, expected.count) {
            let bound = g * magnitude[i], error = abs(Double(observed[i]) - expected[i])
            if !(error <= bound) {   // NaN fails
                reported += 1
                if reported <= 5 {
                    XCTFail("\(label)[\(i)]: Float \(observed[i]), Double \(expected[i]), |error| \(error) > γ_\(depth)·E = \(bound)",
                            file: file, line: line)
                }
            }
        }
        // With `mustDiffer`, Float must differ from the reference somewhere, or the comparison
        // ran Double against Double (a test that could not fail).
        if mustDiffer {
            XCTAssertTrue(zip(observed, expected).contains { Double($0) != $1 }, "\(label): Float equals Double everywhere", file: file, line: line)
        }
    }

    /// Inputs as Float and their exact Double values.
    struct Inputs {
        let x: [Float], w: [Float], b: [Float], g: [Float], scale: [Float], shift: [Float]
        var xd: [Double] { x.map(Double.init) }
        var wd: [Double] { w.map(Double.init) }
        var bd: [Double] { b.map(Double.init) }
        var gd: [Double] { g.map(Double.init) }
        init(inputCount: Int, _ s: Conv2dShape, seed: UInt64) {
            var rng = SplitMix64(seed: seed)
            func r(_ n: Int, _ lo: Double = -1, _ hi: Double = 1) -> [Float] { randomValues(n, &rng, lo, hi).map(Float.init) }
            x = r(inputCount); w = r(s.weightCount); b = r(s.outChannels); g = r(s.outputCount)
            scale = (0..<s.outChannels).map { k in Float(k % 2 == 0 ? 1.5 : -0.75) * r(1, 0.5, 1)[0] }   // both signs: the pool's min branch
            shift = r(s.outChannels)
        }
    }

    /// The epilogue on exact values and on magnitudes: y·a + (b·a + c) (then ReLU); E = |a|·E_y + |b·a| + |c|.
    func epilogue(_ y: [Double], _ e: [Double], _ s: Conv2dShape, bias: [Double], scale: [Double], shift: [Double], relu: Bool)
        -> (value: [Double], magnitude: [Double]) {
        let plane = s.outHeight * s.outWidth
        var v = y, m = e
        for i in 0..<y.count {
            let c = (i / plane) % s.outChannels, a = scale[c]
            let conv = y[i] - bias[c], econv = e[i] - abs(bias[c])
            v[i] = conv * a + (bias[c] * a + shift[c])
            if relu { v[i] = max(v[i], 0) }
            m[i] = abs(a) * econv + abs(bias[c] * a) + abs(shift[c])
        }
        return (v, m)
    }

    /// 2×2 stride-2 max pool of values, and the largest magnitude of each window.
    func pool(_ v: [Double], _ m: [Double], _ s: Conv2dShape) -> (value: [Double], magnitude: [Double]) {
        let oh = s.outHeight / 2, ow = s.outWidth / 2, planes = s.batch * s.outChannels
        var pv = [Double](repeating: 0, count: planes * oh * ow), pm = pv
        for q in 0..<planes {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let idx = [0, 1, s.outWidth, s.outWidth + 1].map { q * s.outHeight * s.outWidth + 2 * oy * s.outWidth + 2 * ox + $0 }
                    pv[(q * oh + oy) * ow + ox] = idx.map { v[$0] }.max()!
                    pm[(q * oh + oy) * ow + ox] = idx.map { m[$0] }.max()!
                }
            }
        }
        return (pv, pm)
    }

    /// E of the Winograd F(2×2, 3×3) forward without bias: per output tile and input channel
    /// |Aᵀ|(|G||g||Gᵀ| ⊙ |Bᵀ||d||B|)|A| (d the tile's 4×4 input patch, zero outside), summed over
    /// the input channels: the transforms evaluated on absolute values (`Winograd`'s matrices).
    func winogradMagnitude(_ x: [Double], _ w: [Double], _ s: Conv2dShape) -> [Double] {
        let bt: [[Double]] = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
        let gm: [[Double]] = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]
        let at: [[Double]] = [[1, 1, 1, 0], [0, 1, -1, -1]]
        func absMul(_ a: [[Double]], _ b: [[Double]]) -> [[Double]] {
            a.map { row in (0..<b[0].count).map { j in zip(row, b).reduce(0) { $0 + abs($1.0) * abs($1.1[j]) } } }
        }
        func t(_ a: [[Double]]) -> [[Double]] { (0..<a[0].count).map { j in a.map { $0[j] } } }
        var e = [Double](repeating: 0, count: s.outputCount)
        for n in 0..<s.batch {
            for oc in 0..<s.outChannels {
                for ty in 0..<(s.height / 2) {
                    for tx in 0..<(s.width / 2) {
                        var tile = [[Double]](repeating: [0, 0], count: 2)
                        for ic in 0..<s.inChannels {
                            let g = (0..<3).map { ky in (0..<3).map { kx in w[((oc * s.inChannels + ic) * 3 + ky) * 3 + kx] } }
                            let d = (0..<4).map { r in (0..<4).map { c -> Double in
                                let y = 2 * ty - 1 + r, xx = 2 * tx - 1 + c
                                guard y >= 0, y < s.height, xx >= 0, xx < s.width else { return 0 }
                                return x[((n * s.inChannels + ic) * s.height + y) * s.width + xx]
                            } }
                            let u = absMul(absMul(gm, g), t(gm)), v = absMul(absMul(bt, d), t(bt))
                            let m = (0..<4).map { r in (0..<4).map { c in u[r][c] * v[r][c] } }
                            let y = absMul(absMul(at, m), t(at))
                            for r in 0..<2 { for c in 0..<2 { tile[r][c] += y[r][c] } }
                        }
                        for r in 0..<2 {
                            for c in 0..<2 {
                                e[((n * s.outChannels + oc) * s.outHeight + 2 * ty + r) * s.outWidth + 2 * tx + c] = tile[r][c]
                            }
                        }
                    }
                }
            }
        }
        return e
    }

    /// Runs `Conv2d` in Float on `path` (asserted to be the planned one when `planned`) with the
    /// plain, epilogue and (even planes) pooled forwards and the backward, each against the naive
    /// loops in Double within the derived bound.
    func check(_ s: Conv2dShape, forward path: ConvolutionPath, backward backwardPath: ConvolutionPath, seed: UInt64,
               target: KernelTarget = .native(Float.self), file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Conv2d.forwardPath(s, target: target), path, "\(s): planned forward", file: file, line: line)
        XCTAssertEqual(Conv2d.backwardPath(s, target: target), backwardPath, "\(s): planned backward", file: file, line: line)
        let inputs = Inputs(inputCount: s.inputCount, s, seed: seed)
        let x = Buffer(inputs.x), w = Buffer(inputs.w), b = Buffer(inputs.b), g = Buffer(inputs.g)
        let scale = Buffer(inputs.scale), shift = Buffer(inputs.shift)
        let cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s)), y = Buffer<Float>(repeating: .nan, count: s.outputCount)
        let reference = naiveConv2d(inputs.xd, inputs.wd, inputs.bd, s)
        // E and the depth of one output: K = patch products, + 1 (bias); Winograd: its transforms
        // (depth 2 for Bᵀ d B, 6 for G g Gᵀ with its halvings, 1 product, inC for the channel sum,
        // 4 for Aᵀ M A, 1 bias) and E above.
        let magnitude: [Double], depth: Int
        if path == .winograd {
            let e = winogradMagnitude(inputs.xd.map(abs), inputs.wd.map(abs), s), plane = s.outHeight * s.outWidth
            magnitude = e.enumerated().map { $0.element + abs(inputs.bd[($0.offset / plane) % s.outChannels]) }
            depth = s.inChannels + 14
        } else {
            magnitude = naiveConv2d(inputs.xd.map(abs), inputs.wd.map(abs), inputs.bd.map(abs), s)
            depth = s.patchSize + 2
        }
        let label = "\(path) \(s)"
        Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s, path: path)
        assertWithin(y.array, reference, magnitude: magnitude, depth: depth, label + " forward", mustDiffer: true, file: file, line: line)
        // Epilogue: eval BatchNorm affine + ReLU (two more roundings).
        let (ev, em) = epilogue(reference, magnitude, s, bias: inputs.bd, scale: inputs.scale.map(Double.init),
                                shift: inputs.shift.map(Double.init), relu: true)
        Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                       scale: scale.const, shift: shift.const, relu: true, path: path)
        assertWithin(y.array, ev, magnitude: em, depth: depth + 2, label + " forward+epilogue", file: file, line: line)
        if s.outHeight % 2 == 0 && s.outWidth % 2 == 0 {
            let pooledPath = Conv2d.forwardPath(s, target: target, pooled: true)
            let (pv, pm) = pool(ev, em, s)
            let pooled = Buffer<Float>(repeating: .nan, count: pv.count)
            Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                           scale: scale.const, shift: shift.const, relu: true, pooled: pooled.pointer, path: pooledPath)
            assertWithin(pooled.array, pv, magnitude: pm, depth: depth + 2, "\(pooledPath) \(s) forward+epilogue+pool", file: file, line: line)
            keepAlive(pooled)
        }
        // Backward: dx sums outC·kH·kW products (GEMM, then col2im's adds); dW sums batch·plane
        // products (per-chunk partials added in order); dBias batch·plane values.
        let dx = Buffer<Float>(repeating: .nan, count: s.inputCount), dw = Buffer<Float>(repeating: 0, count: s.weightCount)
        let db = Buffer<Float>(repeating: 0, count: s.outChannels)
        Conv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: g.const, input: x.const, weight: w.const,
                        columns: cols.pointer, shape: s, path: backwardPath)
        let (rdx, rdw) = naiveConv2dBackward(inputs.xd, inputs.wd, inputs.gd, s)
        let (mdx, mdw) = naiveConv2dBackward(inputs.xd.map(abs), inputs.wd.map(abs), inputs.gd.map(abs), s)
        let plane = s.outHeight * s.outWidth
        var rdb = [Double](repeating: 0, count: s.outChannels), mdb = rdb
        for i in 0..<s.outputCount { rdb[(i / plane) % s.outChannels] += inputs.gd[i]; mdb[(i / plane) % s.outChannels] += abs(inputs.gd[i]) }
        let taps = s.kernelH * s.kernelW
        assertWithin(dx.array, rdx, magnitude: mdx, depth: s.outChannels * taps + taps + 1, "\(backwardPath) \(s) dInput", file: file, line: line)
        assertWithin(dw.array, rdw, magnitude: mdw, depth: s.batch * plane + s.batch + 1, "\(backwardPath) \(s) dWeight", file: file, line: line)
        assertWithin(db.array, rdb, magnitude: mdb, depth: s.batch * plane + 1, "\(backwardPath) \(s) dBias", file: file, line: line)
        keepAlive(x, w, b, g, scale, shift, cols, y, dx, dw, db)
    }

    func testGEMMPathInFloat() {
        for (i, s) in [
            Conv2dShape(batch: 11, inChannels: 2, height: 5, width: 7, outChannels: 3, kernelH: 3, kernelW: 3, stride: 2, padding: 1),
            Conv2dShape(batch: 9, inChannels: 5, height: 3, width: 3, outChannels: 2, kernelH: 1, kernelW: 1),
            Conv2dShape(batch: 3, inChannels: 3, height: 7, width: 9, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),   // odd: no Winograd
        ].enumerated() {
            check(s, forward: .gemm, backward: .gemm, seed: 700 + UInt64(i))
        }
    }

    /// The Winograd forward's Float loops, which Double never runs: `FloatKernels.winogradRows`
    /// (Bᵀ d), `winogradColumns` (· B) and `winogradOutputRows` (Aᵀ M A), each 4 tiles at a time
    /// and taken for T = Float wherever a tile row has ≥ 4 tiles (w/2 ≥ 4: asserted, or the
    /// shape would check only the scalar tails). 16×16: two 4-tile steps, the second reading
    /// e[3] across the step; 6×10: one step and a one-tile scalar tail; 8×8: one step, batch 6
    /// in multi-image chunks. The backward has no Winograd (nor other Float-only) code: GEMM.
    func testWinogradPathInFloat() {
        for (i, s) in [
            Conv2dShape(batch: 1, inChannels: 8, height: 16, width: 16, outChannels: 8, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 3, inChannels: 5, height: 6, width: 10, outChannels: 7, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 6, inChannels: 4, height: 8, width: 8, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),
        ].enumerated() {
            XCTAssertGreaterThanOrEqual(s.width / 2, 4, "\(s): a tile row of fewer than 4 tiles never runs the Float loops")
            check(s, forward: .winograd, backward: .gemm, seed: 710 + UInt64(i))
        }
    }

    /// The generic Swift SIMD stencils in Float (what a CPU without AVX2 runs).
    func testGenericStencilPathInFloat() {
        for (i, s) in Self.directShapes.enumerated() {
            check(s, forward: .stencil, backward: .stencil, seed: 720 + UInt64(i), target: .generic)
        }
    }

    /// `StencilAVX2` (3×3, 2×2) through the direct path, and the pooled stencil in the pooled forward.
    func testAVX2StencilPathInFloat() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        for (i, s) in Self.directShapes.enumerated() {
            let avx2 = s.kernelH == s.kernelW && (s.kernelH == 3 || s.kernelH == 2)
            check(s, forward: avx2 ? .stencilAVX2 : .stencil, backward: avx2 ? .stencilAVX2 : .stencil, seed: 730 + UInt64(i))
        }
        for s in Self.directShapes[0...1] {   // `check`'s pooled forward ran `padPlaneEvenOdd` + `stencil3x3Pool` on these
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Float.self), pooled: true), .pooledStencilAVX2, "\(s)")
        }
    }

    /// The pooled stencil's input, `Conv2d.padPlaneEvenOdd` (the zero-padded plane split into even
    /// and odd columns), is a copy, and `StencilAVX2.stencil3x3Pool` does `stencil3x3`'s vector
    /// arithmetic per conv value and reduces each window in `pool2Flat`'s order: so where
    /// `stencil3x3` takes only its vector loops (output width a multiple of 8) and the pool has no
    /// ties, `.pooledStencilAVX2` must give the same bits as `.stencilAVX2` with the pooled
    /// epilogue (`padPlane`, `stencil3x3`, `pool2Flat`, the affine), itself checked against
    /// Double above. Any lost, shifted or swapped element of the copy (or a scratch element it
    /// does not write: the scratch starts as NaN) changes a conv value by O(|w||x|), not by
    /// rounding. Pooled widths 16, 24 and 20 (the last 8-column block recomputed overlapping).
    func testPooledStencilAVX2EqualsStencilAVX2Bits() throws {
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        for (i, s) in [
            Conv2dShape(batch: 2, inChannels: 1, height: 32, width: 32, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 3, inChannels: 1, height: 12, width: 48, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 1, inChannels: 1, height: 18, width: 40, outChannels: 2, kernelH: 3, kernelW: 3, padding: 1),
        ].enumerated() {
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Float.self), pooled: true), .pooledStencilAVX2, "\(s)")
            XCTAssertEqual(Conv2d.forwardPath(s, target: .native(Float.self)), .stencilAVX2, "\(s)")
            XCTAssertEqual(s.outWidth % 8, 0, "\(s): stencil3x3's scalar tail rounds differently")
            let inputs = Inputs(inputCount: s.inputCount, s, seed: 770 + UInt64(i))
            let x = Buffer(inputs.x), w = Buffer(inputs.w), b = Buffer(inputs.b), scale = Buffer(inputs.scale), shift = Buffer(inputs.shift)
            let pooledCount = s.outputCount / 4, y = Buffer<Float>(repeating: .nan, count: s.outputCount)
            func pooled(_ path: ConvolutionPath, relu: Bool) -> [Float] {
                let cols = Buffer<Float>(repeating: .nan, count: Conv2d.scratchCount(s)), out = Buffer<Float>(repeating: .nan, count: pooledCount)
                Conv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                               scale: scale.const, shift: shift.const, relu: relu, pooled: out.pointer, path: path)
                defer { keepAlive(cols, out) }
                return out.array
            }
            for relu in [false, true] {
                let fused = pooled(.pooledStencilAVX2, relu: relu), reference = pooled(.stencilAVX2, relu: relu)
                let differing = (0..<pooledCount).filter { fused[$0].bitPattern != reference[$0].bitPattern }
                XCTAssertTrue(differing.isEmpty, "\(s) relu \(relu): \(differing.count) pooled values differ, first at "
                              + differing.prefix(3).map { "[\($0)] \(fused[$0]) vs \(reference[$0])" }.joined(separator: ", "))
                XCTAssertFalse(fused.contains { $0.isNaN }, "\(s) relu \(relu): NaN (an unwritten scratch element read)")
            }
            keepAlive(x, w, b, scale, shift, y)
        }
    }

    static let directShapes = [
        Conv2dShape(batch: 1, inChannels: 1, height: 32, width: 32, outChannels: 4, kernelH: 3, kernelW: 3, padding: 1),   // as the encoder's first
        Conv2dShape(batch: 2, inChannels: 1, height: 20, width: 36, outChannels: 3, kernelH: 3, kernelW: 3, padding: 1),   // pooled stencil, odd tile rows
        Conv2dShape(batch: 2, inChannels: 8, height: 16, width: 16, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),   // one output channel
        Conv2dShape(batch: 2, inChannels: 3, height: 9, width: 11, outChannels: 1, kernelH: 2, kernelW: 2, padding: 1),    // 2×2
        Conv2dShape(batch: 3, inChannels: 4, height: 5, width: 6, outChannels: 1, kernelH: 1, kernelW: 3, padding: 1),     // no AVX2 kernel
    ]

    // MARK: Sub-pixel up-sampling conv

    /// `UpsampleConv2d` in Float on `path` against Upsample2d → the naive conv in Double. Its
    /// forward is a 2×2 conv with folded weights (each a sum of ≤ 4 taps: depth 3) over inC
    /// channels, so D = 4·inC + 3 + 3 (bias, epilogue) and E = the up-sampled naive conv on
    /// absolute values (the folded |W'| sum the same |W| terms); the input gradient folds the
    /// adjoint into a 4×4 kernel (≤ 16·outC products + folding), the weight gradient sums
    /// batch·H·W products per tap.
    func checkUpsampling(_ s: Conv2dShape, path: ConvolutionPath, seed: UInt64, target: KernelTarget) {
        XCTAssertEqual(UpsampleConv2d.path(s, target: target), path, "\(s)")
        let h = s.height / 2, wl = s.width / 2, lowCount = s.batch * s.inChannels * h * wl
        let inputs = Inputs(inputCount: lowCount, s, seed: seed)
        func upsample(_ v: [Double]) -> [Double] {
            (0..<s.inputCount).map { i in
                let xx = i % s.width, y = (i / s.width) % s.height, q = i / (s.width * s.height)
                return v[(q * h + y / 2) * wl + xx / 2]
            }
        }
        let x = Buffer(inputs.x), w = Buffer(inputs.w), b = Buffer(inputs.b), g = Buffer(inputs.g)
        let scale = Buffer(inputs.scale), shift = Buffer(inputs.shift)
        let cols = Buffer<Float>(repeating: .nan, count: UpsampleConv2d.scratchCount(s)), y = Buffer<Float>(repeating: .nan, count: s.outputCount)
        let up = upsample(inputs.xd), upAbs = upsample(inputs.xd.map(abs))
        let reference = naiveConv2d(up, inputs.wd, inputs.bd, s), magnitude = naiveConv2d(upAbs, inputs.wd.map(abs), inputs.bd.map(abs), s)
        let depth = 4 * s.inChannels + 3 + 1
        UpsampleConv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s, path: path)
        assertWithin(y.array, reference, magnitude: magnitude, depth: depth, "\(path) \(s) forward", mustDiffer: true)
        let (ev, em) = epilogue(reference, magnitude, s, bias: inputs.bd, scale: inputs.scale.map(Double.init),
                                shift: inputs.shift.map(Double.init), relu: true)
        UpsampleConv2d.forward(output: y.pointer, input: x.const, weight: w.const, bias: b.const, columns: cols.pointer, shape: s,
                               scale: scale.const, shift: shift.const, relu: true, path: path)
        assertWithin(y.array, ev, magnitude: em, depth: depth + 2, "\(path) \(s) forward+epilogue")

        let dx = Buffer<Float>(repeating: .nan, count: lowCount), dw = Buffer<Float>(repeating: 0, count: s.weightCount)
        let db = Buffer<Float>(repeating: 0, count: s.outChannels)
        UpsampleConv2d.backward(dInput: dx.pointer, dWeight: dw.pointer, dBias: db.pointer, dOutput: g.const, input: x.const,
                                weight: w.const, columns: cols.pointer, shape: s, path: path)
        let (rdUp, rdw) = naiveConv2dBackward(up, inputs.wd, inputs.gd, s)
        let (mdUp, mdw) = naiveConv2dBackward(upAbs, inputs.wd.map(abs), inputs.gd.map(abs), s)
        func downsample(_ v: [Double]) -> [Double] {   // Upsample2d's adjoint: the sum over each 2×2 block
            var out = [Double](repeating: 0, count: lowCount)
            for i in 0..<s.inputCount {
                let xx = i % s.width, yy = (i / s.width) % s.height, q = i / (s.width * s.height)
                out[(q * h + yy / 2) * wl + xx / 2] += v[i]
            }
            return out
        }
        let plane = s.height * s.width
        var rdb = [Double](repeating: 0, count: s.outChannels), mdb = rdb
        for i in 0..<s.outputCount { rdb[(i / plane) % s.outChannels] += inputs.gd[i]; mdb[(i / plane) % s.outChannels] += abs(inputs.gd[i]) }
        assertWithin(dx.array, downsample(rdUp), magnitude: downsample(mdUp), depth: 16 * s.outChannels + 8, "\(path) \(s) dInput")
        assertWithin(dw.array, rdw, magnitude: mdw, depth: s.batch * plane + s.batch + 8, "\(path) \(s) dWeight")
        assertWithin(db.array, rdb, magnitude: mdb, depth: s.batch * plane + 1, "\(path) \(s) dBias")
        keepAlive(x, w, b, g, scale, shift, cols, y, dx, dw, db)
    }

    func testSubPixelGEMMPathInFloat() {
        for (i, s) in [
            Conv2dShape(batch: 1, inChannels: 16, height: 8, width: 8, outChannels: 8, kernelH: 3, kernelW: 3, padding: 1),
            Conv2dShape(batch: 2, inChannels: 5, height: 6, width: 10, outChannels: 7, kernelH: 3, kernelW: 3, padding: 1),
        ].enumerated() {
            checkUpsampling(s, path: .subPixelGEMM, seed: 740 + UInt64(i), target: .native(Float.self))
        }
    }

    func testSubPixelStencilPathsInFloat() throws {
        let shapes = [
            Conv2dShape(batch: 2, inChannels: 4, height: 32, width: 32, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),  // as the decoder's last
            Conv2dShape(batch: 2, inChannels: 3, height: 10, width: 14, outChannels: 1, kernelH: 3, kernelW: 3, padding: 1),
        ]
        for (i, s) in shapes.enumerated() {
            checkUpsampling(s, path: .subPixelStencil, seed: 750 + UInt64(i), target: .generic)
        }
        try XCTSkipUnless(CPUFeatures.avx2FMA, "no AVX2 + FMA on this CPU")
        for (i, s) in shapes.enumerated() {
            checkUpsampling(s, path: .subPixelStencilAVX2, seed: 760 + UInt64(i), target: .native(Float.self))
        }
    }
}
