import XCTest
import DonutNN

/// The seeded samplers against their exact moments.
final class RandomTests: XCTestCase {
    /// Binomial(n, p): sample mean and variance of 20 000 draws against np and np(1 − p), on
    /// both sides of p = ½, in the exact (waiting-time) and the normal regime; edge cases exact.
    func testBinomialMoments() {
        var rng = SplitMix64(seed: 42)
        for (n, p) in [(1.0, 0.5), (7.0, 0.8), (20.0, 0.3), (3.0, 0.05), (200.0, 0.97), (1e5, 0.4)] {
            let draws = 20_000
            var sum = 0.0, sumSq = 0.0
            for _ in 0..<draws {
                let k = rng.binomial(n, p)
                XCTAssert(k >= 0 && k <= n && k == k.rounded(), "Binomial(\(n), \(p)) gave \(k)")
                sum += k; sumSq += k * k
            }
            let mean = sum / Double(draws), variance = sumSq / Double(draws) - mean * mean
            let expectedVariance = n * p * (1 - p)
            // Standard error of the mean √(var/draws); of the variance ≈ var·√(2/draws) (+ kurtosis, small here).
            XCTAssertEqual(mean, n * p, accuracy: 5 * (expectedVariance / Double(draws)).squareRoot(), "mean of Binomial(\(n), \(p))")
            XCTAssertEqual(variance, expectedVariance, accuracy: 6 * expectedVariance * (2 / Double(draws)).squareRoot() + 1e-12,
                           "variance of Binomial(\(n), \(p))")
        }
        XCTAssertEqual(rng.binomial(0, 0.5), 0)
        XCTAssertEqual(rng.binomial(9, 0), 0)
        XCTAssertEqual(rng.binomial(9, 1), 9)
    }
}
