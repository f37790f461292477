/// SplitMix64 (Steele, Lea & Flood 2014): the tiny seeded generator behind DonutNN's
/// initialisation and dropout masks. Deterministic: the same seed gives the same sequence, so
/// the same initial parameters and the same dropout masks on every machine and rank.
/// (Named apart from DonutCore's simulation generator so modules importing both stay unambiguous.)
public struct SplitMixRNG: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }

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
}
