import XCTest
import DonutBLAS
import DonutNN

/// A heap buffer the layers can write through (the layers take raw pointers; arrays would need
/// nested `withUnsafe…` closures around every call).
final class Buffer<T: GEMMScalar> {
    let pointer: UnsafeMutablePointer<T>
    let count: Int

    init(repeating value: T, count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: value, count: max(count, 1))
    }

    convenience init(_ values: [T]) {
        self.init(repeating: 0, count: values.count)
        for i in 0..<values.count { pointer[i] = values[i] }
    }

    deinit { pointer.deallocate() }

    var array: [T] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    var const: UnsafePointer<T> { UnsafePointer(pointer) }
    subscript(i: Int) -> T {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}

/// Keeps buffers whose raw pointers were handed to a layer alive up to here (an optimised build
/// may otherwise release a local after its last *Swift* use, before the layer reads it).
func keepAlive(_ objects: AnyObject?...) { withExtendedLifetime(objects) {} }

/// Test inputs: uniform in [low, high), deterministic per seed.
func randomValues(_ count: Int, _ rng: inout SplitMix64, _ low: Double = -1, _ high: Double = 1) -> [Double] {
    (0..<count).map { _ in rng.uniform(low, high) }
}

/// Uniform values kept at least `gap` away from 0 (inputs of ReLU, arguments of |·|): a finite
/// difference straddling the kink would measure a chord, not the derivative.
func randomAwayFromZero(_ count: Int, _ rng: inout SplitMix64, gap: Double = 0.05) -> [Double] {
    (0..<count).map { _ in
        let v = rng.uniform(gap, 1)
        return rng.uniform() < 0.5 ? -v : v
    }
}

/// Distinct values spaced ≥ 0.009 apart in random order (MaxPool inputs): no ties, and no
/// finite-difference step can change which element is the maximum.
func randomDistinct(_ count: Int, _ rng: inout SplitMix64) -> [Double] {
    var v = (0..<count).map { Double($0) * 0.01 + rng.uniform(0, 0.001) - Double(count) * 0.005 }
    for i in stride(from: count - 1, to: 0, by: -1) { v.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
    return v
}

func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) -> Double {
    var s = 0.0
    for i in 0..<n { s += a[i] * b[i] }
    return s
}

// MARK: Central finite differences (the one checker for every backward)

/// One input or parameter of a finite-difference check: its values (perturbed in place, restored
/// after each probe) and the gradient the backward pass produced for it.
struct FDVariable {
    let name: String
    let values: UnsafeMutablePointer<Double>
    let count: Int
    let analytic: [Double]

    init(_ name: String, _ values: Buffer<Double>, _ analytic: [Double]) {
        self.name = name; self.values = values.pointer; self.count = values.count; self.analytic = analytic
    }
}

/// Tolerance of the comparison: |analytic − numeric| ≤ 1e-7 + 1e-6·|numeric|.
/// Central differences in Double with h = 1e-6·max(1, |x|) have truncation error
/// ~h²·|∂³L| ≈ 1e-12 and rounding error ~ε·|L|/h ≈ 2e-16·|L|/1e-6 ≈ 2e-10·|L|; the losses here are
/// sums of ≤ a few hundred O(1) terms (|L| ≲ 50), so the error is ≲ 1e-8, ten times below the
/// absolute part. The relative part covers large derivatives (BatchNorm's 1/σ). A wrong backward
/// (a missed term, a transposed index) is off by O(|∂L|) ≫ these.
let fdAbsoluteTolerance = 1e-7
let fdRelativeTolerance = 1e-6

/// Checks every element of every variable: the analytic ∂L/∂θᵢ against (L(θᵢ + h) − L(θᵢ − h)) / 2h
/// where `loss()` evaluates L = Σ g ⊙ forward(…) from the current values. Reports each failing
/// element (at most 5 per variable) with the combination `label`, the element index, both values
/// and the tolerance. Also fails if every numeric derivative of a variable is 0 (a check that
/// cannot fail). Returns the number of failures.
@discardableResult
func checkAgainstCentralDifferences(_ label: String, _ variables: [FDVariable], loss: () -> Double,
                                    file: StaticString = #filePath, line: UInt = #line) -> Int {
    var failures = 0
    for v in variables {
        XCTAssertEqual(v.analytic.count, v.count, "\(label): \(v.name) analytic gradient has the wrong length", file: file, line: line)
        guard v.analytic.count == v.count else { failures += 1; continue }
        var reported = 0, largest = 0.0
        for i in 0..<v.count {
            let x0 = v.values[i]
            let h = 1e-6 * max(1, abs(x0))
            let xp = x0 + h, xm = x0 - h
            v.values[i] = xp; let lp = loss()
            v.values[i] = xm; let lm = loss()
            v.values[i] = x0
            let numeric = (lp - lm) / (xp - xm)
            largest = max(largest, abs(numeric))
            let analytic = v.analytic[i]
            let tol = fdAbsoluteTolerance + fdRelativeTolerance * abs(numeric)
            if !(abs(analytic - numeric) <= tol) {
                failures += 1
                reported += 1
                if reported <= 5 {
                    XCTFail("\(label): ∂L/∂\(v.name)[\(i)] analytic \(analytic), central difference \(numeric), |diff| \(abs(analytic - numeric)) > tolerance \(tol)",
                            file: file, line: line)
                }
            }
        }
        if largest == 0 {
            failures += 1
            XCTFail("\(label): every central difference for \(v.name) is 0 — the check cannot fail", file: file, line: line)
        }
    }
    return failures
}

/// |a − b| ≤ atol + rtol·|b|, element-wise, reporting the first failures with `label`.
func assertClose<T: BinaryFloatingPoint>(_ observed: [T], _ expected: [Double], atol: Double, rtol: Double,
                                         _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(observed.count, expected.count, "\(label): length", file: file, line: line)
    var reported = 0
    for i in 0..<min(observed.count, expected.count) {
        let o = Double(observed[i]), e = expected[i], tol = atol + rtol * abs(e)
        if !(abs(o - e) <= tol) {
            reported += 1
            if reported <= 5 {
                XCTFail("\(label): element \(i) expected \(e), observed \(o), tolerance \(tol)", file: file, line: line)
            }
        }
    }
}

// MARK: Naive references (kept beside the fast kernels' tests)

/// Direct 7-loop convolution in Double, the definition: y[n, oc, oy, ox] = b[oc] +
/// Σ_{ic, ky, kx} w[oc, ic, ky, kx]·x[n, ic, oy·s − p + ky, ox·s − p + kx] (0 outside the image).
func naiveConv2d(_ x: [Double], _ w: [Double], _ b: [Double]?, _ s: Conv2dShape) -> [Double] {
    let oh = s.outHeight, ow = s.outWidth
    var y = [Double](repeating: 0, count: s.outputCount)
    for n in 0..<s.batch {
        for oc in 0..<s.outChannels {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var sum = b?[oc] ?? 0
                    for ic in 0..<s.inChannels {
                        for ky in 0..<s.kernelH {
                            for kx in 0..<s.kernelW {
                                let iy = oy * s.stride - s.padding + ky, ix = ox * s.stride - s.padding + kx
                                guard iy >= 0 && iy < s.height && ix >= 0 && ix < s.width else { continue }
                                sum += w[((oc * s.inChannels + ic) * s.kernelH + ky) * s.kernelW + kx]
                                    * x[((n * s.inChannels + ic) * s.height + iy) * s.width + ix]
                            }
                        }
                    }
                    y[((n * s.outChannels + oc) * oh + oy) * ow + ox] = sum
                }
            }
        }
    }
    return y
}

/// y[n, o] = b[o] + Σ_i x[n, i]·w[o, i].
func naiveLinear(_ x: [Double], _ w: [Double], _ b: [Double]?, batch: Int, inFeatures: Int, outFeatures: Int) -> [Double] {
    var y = [Double](repeating: 0, count: batch * outFeatures)
    for n in 0..<batch {
        for o in 0..<outFeatures {
            var sum = b?[o] ?? 0
            for i in 0..<inFeatures { sum += x[n * inFeatures + i] * w[o * inFeatures + i] }
            y[n * outFeatures + o] = sum
        }
    }
    return y
}

/// The convolution sweep of awkward shapes: odd and non-square images, batch 1 and 3, channels
/// 1 and 3, kernels 1×1, 3×3 and 1×3, stride 1 and 2, padding 0 and 1, with and without bias.
func convolutionSweep() -> [(shape: Conv2dShape, bias: Bool)] {
    var all: [(Conv2dShape, Bool)] = []
    for batch in [1, 3] {
        for (inC, outC) in [(1, 3), (3, 1), (3, 2)] {
            for (h, w) in [(5, 7), (4, 6)] {
                for (kh, kw) in [(1, 1), (3, 3), (1, 3)] {
                    for stride in [1, 2] {
                        for padding in [0, 1] {
                            let bias = (batch + inC + h + kh + stride + padding) % 2 == 0
                            all.append((Conv2dShape(batch: batch, inChannels: inC, height: h, width: w, outChannels: outC,
                                                    kernelH: kh, kernelW: kw, stride: stride, padding: padding), bias))
                        }
                    }
                }
            }
        }
    }
    return all
}
