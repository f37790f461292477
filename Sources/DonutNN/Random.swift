import Foundation

/// SplitMix64 (Steele, Lea & Flood 2014): the one seeded generator of Donut — initial
/// weights, dropout masks, shuffles, Poisson noise of simulated frames. Deterministic: the same
/// seed gives the same sequence on every machine and rank; `seeded(_:stream:)` gives
/// independent streams (one per frame, one per step) so results never depend on how work is
/// split across ranks or where a run was resumed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    /// Independent stream `stream` of generator `seed`.
    public static func seeded(_ seed: UInt64, stream: UInt64) -> SplitMix64 {
        var g = SplitMix64(seed: seed ^ 0x6A09_E667_F3BC_C909)
        g.state ^= stream &* 0x9E37_79B9_7F4A_7C15
        _ = g.next()
        return g
    }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Uniform in [low, high).
    public mutating func uniform(_ low: Double, _ high: Double) -> Double { low + (high - low) * uniform() }
    /// Standard normal (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 0x1p-60), u2 = uniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// A Binomial(n, p) count: successes among `n` trials of probability `p`. Exact below a
    /// mean of 1000 successes or failures (the waiting-time method: geometric gaps
    /// G = ⌈log U / log(1 − p)⌉ between successes, n·p + 1 draws on average, for p ≤ ½;
    /// n − Binomial(n, 1 − p) above); above that, the normal approximation
    /// round(np + √(np(1−p))·Z) clamped to [0, n], whose error in distribution is O(1/√(np(1−p)))
    /// (< 3 % there). Used to thin and split simulated photon counts (`simulateRawScan`).
    public mutating func binomial(_ n: Double, _ p: Double) -> Double {
        guard n > 0, p > 0 else { return 0 }
        guard p < 1 else { return n }
        if p > 0.5 { return n - binomial(n, 1 - p) }
        let mean = n * p
        if mean >= 1000 {
            let k = (mean + (mean * (1 - p)).squareRoot() * normal()).rounded()
            return min(max(k, 0), n)
        }
        let logQ = log1p(-p)
        var successes = 0.0, trials = 0.0
        while true {
            trials += max(1, (log(1 - uniform()) / logQ).rounded(.up))
            if trials > n { return successes }
            successes += 1
        }
    }

    /// A Poisson(λ) count. Knuth's product of uniforms for λ < 30 (the photon-starved
    /// regime of nanobeam frames: peaks of a few photons), Hörmann's transformed rejection
    /// (PTRS, 1993) above, both exact samplers.
    public mutating func poisson(_ lambda: Double) -> Double {
        guard lambda > 0 else { return 0 }
        if lambda < 30 {
            let limit = exp(-lambda)
            var k = 0.0, p = uniform()
            while p > limit { k += 1; p *= uniform() }
            return k
        }
        let slam = lambda.squareRoot(), logLam = log(lambda)
        let b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b
        let invAlpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2)
        while true {
            let u = uniform() - 0.5, v = uniform()
            let us = 0.5 - abs(u)
            let k = floor((2 * a / us + b) * u + lambda + 0.43)
            if us >= 0.07 && v <= vr { return k }
            if k < 0 || (us < 0.013 && v > us) { continue }
            if log(v * invAlpha / (a / (us * us) + b)) <= -lambda + k * logLam - lgamma(k + 1) { return k }
        }
    }
}
