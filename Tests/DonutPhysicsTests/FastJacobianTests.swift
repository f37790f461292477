import XCTest
import DonutPhysics

/// The recurrence-based pattern and Jacobian (`smoothPatternAndJacobian`, used by physics
/// refinement) against the reference path `jacobian(_:pattern:jacobian:)`, itself checked
/// against finite differences in GradientTests.
final class FastJacobianTests: XCTestCase {
    let geometry = DiffractionGeometry(config: .srio3LSAT002)

    /// The fast path of `model` at `p`: pattern, pattern alone, Jacobian (4, n, n), as Double.
    func fast(_ model: ForwardModel<Float>, _ p: FrameParameters, thickness: Bool) -> [[Double]] {
        var pat = [Float](repeating: 0, count: model.pixelCount), jac = [Float](repeating: 0, count: 4 * model.pixelCount), alone = pat
        model.smoothPatternAndJacobian(p, pattern: &pat, jacobian: &jac, thickness: thickness)
        model.smoothPatternAndJacobian(p, pattern: &alone, jacobian: nil, thickness: thickness)
        return [pat, alone, jac].map { $0.map(Double.init) }
    }
    func fast(_ model: ForwardModel<Double>, _ p: FrameParameters, thickness: Bool) -> [[Double]] {
        var pat = [Double](repeating: 0, count: model.pixelCount), jac = [Double](repeating: 0, count: 4 * model.pixelCount), alone = pat
        model.smoothPatternAndJacobian(p, pattern: &pat, jacobian: &jac, thickness: thickness)
        model.smoothPatternAndJacobian(p, pattern: &alone, jacobian: nil, thickness: thickness)
        return [pat, alone, jac]
    }

    /// Largest |fast − reference| of each slice (pattern, pattern alone, ∂ε, ∂ω, ∂χ[, ∂t]),
    /// relative to that slice's largest |reference|.
    func worstRelative(_ fast: [[Double]], _ p: FrameParameters, thickness: Bool) -> [Double] {
        let reference = ForwardModel<Double>(geometry: geometry, profile: .smooth)
        let np = reference.pixelCount
        var pd = [Double](repeating: 0, count: np), jd = [Double](repeating: 0, count: 4 * np)
        reference.jacobian(p, pattern: &pd, jacobian: &jd)
        func worst(_ f: ArraySlice<Double>, _ ref: ArraySlice<Double>) -> Double {
            zip(f, ref).map { abs($0 - $1) }.max()! / ref.map(abs).max()!
        }
        var out = [worst(fast[0][...], pd[...]), worst(fast[1][...], pd[...])]
        for axis in 0..<(thickness ? 4 : 3) {
            out.append(worst(fast[2][(axis * np)..<((axis + 1) * np)], jd[(axis * np)..<((axis + 1) * np)]))
        }
        return out
    }

    /// In Double the recurrences reproduce the reference to ~1e-13 for the pattern and ≤ 1e-9
    /// for ∂ε (accumulated ulps amplified by the cancellation inside ∂ε, far below Float
    /// resolution — not a different formula); in Float to Float precision. At random points with and without
    /// the thickness derivative.
    func testMatchesTheReferenceJacobian() {
        let double = ForwardModel<Double>(geometry: geometry, profile: .smooth)
        let float = ForwardModel<Float>(geometry: geometry, profile: .smooth)
        for (i, p) in GradientTests.randomPoints(12, seed: 7).enumerated() {
            let thickness = i % 2 == 0
            for (k, e) in worstRelative(fast(double, p, thickness: thickness), p, thickness: thickness).enumerated() {
                XCTAssertLessThan(e, k == 2 ? 1e-8 : 1e-11, "Double, slice \(k) (pattern, pattern alone, ε, ω, χ, t) at \(p)")
            }
            for (k, e) in worstRelative(fast(float, p, thickness: thickness), p, thickness: thickness).enumerated() {
                XCTAssertLessThan(e, 2e-5, "Float, slice \(k) (pattern, pattern alone, ε, ω, χ, t) at \(p)")
            }
        }
    }
}
