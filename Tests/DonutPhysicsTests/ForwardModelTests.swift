import XCTest
import DonutPhysics

final class ForwardModelTests: XCTestCase {
    let geometry = DiffractionGeometry(config: .srio3LSAT002)

    /// Box model in Double reproduces the 24 published patterns. Tolerance 1e-9 of each
    /// pattern's maximum per element: the reference and we evaluate the same sums in a
    /// different order (GEMM vs broadcast), so agreement is at rounding level (~1e-14).
    func testBoxModelDoubleMatchesGoldenPatterns() throws {
        let gold = try readFloat64NPY(referenceFolder.appendingPathComponent("box_patterns.npy"))
        let params = try goldenParameters()
        XCTAssertEqual(gold.shape, [24, 64, 64])
        XCTAssertEqual(params.count, 24)
        let model = ForwardModel<Double>(geometry: geometry, profile: .box)
        let ours = model.patterns(params)
        for n in 0..<24 {
            let g = gold.values[(n * 4096)..<((n + 1) * 4096)]
            let peak = g.max()!
            XCTAssertGreaterThan(peak, 0)
            var worst = 0.0, worstAt = 0
            for i in 0..<4096 {
                let e = abs(ours[n * 4096 + i] - g[g.startIndex + i])
                if e > worst { worst = e; worstAt = i }
            }
            XCTAssertLessThanOrEqual(worst, 1e-9 * peak,
                "pattern \(n) \(params[n]): pixel (y \(worstAt / 64), x \(worstAt % 64)) expected \(g[g.startIndex + worstAt]) got \(ours[n * 4096 + worstAt]), tolerance 1e-9 × peak \(peak)")
        }
    }

    /// The Float path (library, fit) stays within 1e-5 of each pattern's maximum.
    func testBoxModelFloatMatchesGoldenPatterns() throws {
        let gold = try readFloat64NPY(referenceFolder.appendingPathComponent("box_patterns.npy"))
        let params = try goldenParameters()
        let ours = ForwardModel<Float>(geometry: geometry, profile: .box).patterns(params)
        for n in 0..<24 {
            let g = gold.values[(n * 4096)..<((n + 1) * 4096)]
            let peak = g.max()!
            let worst = (0..<4096).map { abs(Double(ours[n * 4096 + $0]) - g[g.startIndex + $0]) }.max()!
            XCTAssertLessThanOrEqual(worst, 1e-5 * peak, "pattern \(n) \(params[n]): max error \(worst), tolerance 1e-5 × peak \(peak)")
        }
    }

    /// The separable GEMM form equals the direct quadruple sum of the model's definition.
    func testSeparableFormEqualsBruteForceSum() {
        var config = DonutConfig.srio3LSAT002
        config.model.frameSize = 9            // odd, small: the brute force is n²m² terms
        config.instrument.roi = DetectorROI(x: 0, y: 0, width: 18, height: 18)
        config.zonePlate.upsampling = 3
        let g = DiffractionGeometry(config: config)
        let p = FrameParameters(strain: 0.0012, tiltLRDeg: 0.013, tiltUDDeg: -0.021, thicknessA: 101)
        for profile in Profile.allCases {
            let fast = ForwardModel<Double>(geometry: g, profile: profile).patterns([p])
            let n = g.frameSize, m = g.gridSize
            let gs = g.g(strain: p.strain)
            for y in 0..<n {
                for x in 0..<n {
                    var sum = 0.0
                    for v in 0..<m {
                        for u in 0..<m where g.zonePlateMask[v * m + u] != 0 {
                            let qx = g.detectorQx[x] + gs * p.tiltLRDeg * .pi / 180 - g.opticsQx[u]
                            let qy = g.detectorQy[y] + gs * p.tiltUDDeg * .pi / 180 - g.opticsQy[v]
                            let qz = g.detectorQz[x] - gs - g.opticsQz[u]
                            let z = p.thicknessA * qz / (2 * .pi)
                            let sinc = z == 0 ? 1 : sin(.pi * z) / (.pi * z)
                            let (px, py): (Double, Double) = profile == .box
                                ? (abs(qx) < g.boxHalfWidth ? 1 : 0, abs(qy) < g.boxHalfWidth ? 1 : 0)
                                : (exp(-qx * qx / (g.smoothSigma * g.smoothSigma)), exp(-qy * qy / (g.smoothSigma * g.smoothSigma)))
                            sum += p.thicknessA * sinc * sinc * px * py
                        }
                    }
                    let got = fast[y * n + x]
                    XCTAssertEqual(got, sum, accuracy: 1e-12 * max(abs(sum), 1), "\(profile) pixel (\(y), \(x))")
                }
            }
        }
    }

    /// A batch gives the same patterns as one call per parameter set, and the library
    /// path (grouped GEMMs, partial ranges, thickness axis) the same as the batch path.
    func testLibraryPathEqualsBatchPathForAnyEntryRange() {
        var config = DonutConfig.srio3LSAT002
        config.library = LibrarySteps(strain: 3, tiltLR: 4, tiltUD: 5, thickness: 2)
        let grid = LibraryGrid(config: config)
        XCTAssertEqual(grid.shape, [3, 4, 5, 2])
        for profile in Profile.allCases {
            let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: profile)
            let all = (0..<grid.count).map { grid.parameters(at: $0) }
            let batch = model.patterns(all)
            let single = model.patterns([all[17]])
            // Not bit-equal in general: the batch and the single pattern are GEMMs of different
            // widths, and OpenBLAS picks kernels (and their summation order) by shape and CPU
            // (bit-equal on Intel Sapphire Rapids, not on AMD EPYC). Both are Float sums of the
            // same products, so they agree to Float rounding of the sum (see the library bound below).
            for i in 0..<4096 {
                let want = batch[17 * 4096 + i]
                XCTAssertEqual(single[i], want, accuracy: 1e-5 * max(abs(want), 1) + 1e-4, "\(profile): batch vs single, pixel \(i)")
            }
            for range in [0..<grid.count, 7..<53, 40..<41, 0..<1, 119..<120] {
                var lib = [Float](repeating: .nan, count: range.count * 4096)
                lib.withUnsafeMutableBufferPointer { model.library(grid, entries: range, into: $0) }
                for (j, e) in range.enumerated() {
                    for i in stride(from: 0, to: 4096, by: 7) {
                        let want = batch[e * 4096 + i], got = lib[j * 4096 + i]
                        XCTAssertEqual(got, want, accuracy: 1e-5 * max(abs(want), 1) + 1e-4,
                                       "\(profile) range \(range) entry \(e) pixel \(i)")
                    }
                }
            }
        }
        // No thickness axis: the direct-write path.
        config.library = LibrarySteps(strain: 2, tiltLR: 3, tiltUD: 4, thickness: 1)
        let grid3 = LibraryGrid(config: config)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let batch = model.patterns((0..<grid3.count).map { grid3.parameters(at: $0) })
        for range in [0..<grid3.count, 5..<19] {
            var lib = [Float](repeating: .nan, count: range.count * 4096)
            lib.withUnsafeMutableBufferPointer { model.library(grid3, entries: range, into: $0) }
            // Same products in another GEMM shape: Float rounding, 1e-5 of the peak.
            let want = Array(batch[(range.lowerBound * 4096)..<(range.upperBound * 4096)])
            assertClose(lib, want, rel: 1e-5, abs: 1e-5 * Double(want.max()!), "direct-write library, range \(range)")
        }
    }

    /// Physical bounds: intensity is non-negative; zero outside the zone-plate pupil's
    /// reach; the smooth model tracks the box model it approximates.
    func testPhysicalBoundsAndSmoothApproximatesBox() {
        var rng = TestRNG(state: 7)
        let box = ForwardModel<Double>(geometry: geometry, profile: .box)
        let smooth = ForwardModel<Double>(geometry: geometry, profile: .smooth)
        for _ in 0..<10 {
            let p = FrameParameters(strain: rng.uniform(-0.005, 0.005), tiltLRDeg: rng.uniform(-0.05, 0.05),
                                    tiltUDDeg: rng.uniform(-0.1, 0.1), thicknessA: rng.uniform(90, 150))
            let a = box.patterns([p]), b = smooth.patterns([p])
            XCTAssertGreaterThanOrEqual(a.min()!, 0, "\(p)")
            XCTAssertGreaterThanOrEqual(b.min()!, 0, "\(p)")
            let dot = zip(a, b).map { $0 * $1 }.reduce(0, +)
            let corr = dot / (a.map { $0 * $0 }.reduce(0, +) * b.map { $0 * $0 }.reduce(0, +)).squareRoot()
            XCTAssertGreaterThan(corr, 0.99, "normalised correlation smooth vs box at \(p)")
        }
        // Mask: the annulus holds π(r_o² − r_i²)/s² grid points to within the perimeter.
        let m = geometry.gridSize
        let count = geometry.zonePlateMask.reduce(0, +)
        let s = 110e-6 / (0.85 * 2)
        let expected = Double.pi * (pow(149e-6 / (2 * 0.021874), 2) - pow(77e-6 / (2 * 0.021874), 2)) / (s * s)
        XCTAssertEqual(count, expected, accuracy: 0.02 * expected)
        XCTAssertEqual(geometry.zonePlateMask[(m / 2) * m + m / 2], 0, "central stop blocks the centre")
    }
}

final class ConfigValidationTests: XCTestCase {
    /// A frame too small for the zone plate's annulus would make every pattern zero.
    func testAnnulusOutsideTheFrameIsRejected() {
        var c = DonutConfig.srio3LSAT002
        c.model.frameSize = 16
        c.instrument.roi = DetectorROI(x: 0, y: 0, width: 32, height: 32)
        XCTAssertThrowsError(try c.validate()) { XCTAssertEqual(($0 as? ConfigError)?.key, "zone_plate.central_stop_diameter_m") }
        c.zonePlate.focalLengthM = 0.1
        XCTAssertNoThrow(try c.validate())
        let pattern = ForwardModel<Double>(geometry: DiffractionGeometry(config: c), profile: .box)
            .patterns([FrameParameters(strain: 0, tiltLRDeg: 0, tiltUDDeg: 0, thicknessA: 117)])
        XCTAssertGreaterThan(pattern.max()!, 0, "a valid config gives light on the detector")
    }
}
