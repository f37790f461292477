import DonutBLAS

/// Inverted dropout, as PyTorch's `Dropout(p)`: in training each element is kept with probability
/// 1 − p and scaled by 1/(1 − p), so eval mode is the identity. The keep/drop decision for element i
/// is the i-th draw of the caller's `SplitMix64` (kept ⇔ uniform() ≥ p): **the same seed gives the
/// same mask**. p = 1 drops everything (output 0).
public enum Dropout {
    /// - output (count): written; may alias input.
    /// - mask (count): written, **cached for backward**: 1/(1 − p) where kept, 0 where dropped.
    /// - rng: advanced by `count` draws.
    public static func forwardTraining<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, mask: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        probability p: Double, rng: inout SplitMix64, count: Int
    ) {
        precondition(p >= 0 && p <= 1, "dropout probability must be in [0, 1]")
        let keep = p < 1 ? T(1 / (1 - p)) : T(0)
        for i in 0..<count {
            let m = rng.uniform() >= p ? keep : T(0)
            mask[i] = m
            output[i] = input[i] * m
        }
    }

    /// Eval mode: the identity (output written; a copy unless output and input are the same buffer).
    public static func forwardEval<T: GEMMScalar>(output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, count: Int) {
        if UnsafePointer(output) != input { output.update(from: input, count: count) }
    }

    /// dInput = dOutput ⊙ mask: **written** (=); may alias dOutput. mask from `forwardTraining`.
    public static func backward<T: GEMMScalar>(dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>,
                                               mask: UnsafePointer<T>, count: Int) {
        for i in 0..<count { dInput[i] = dOutput[i] * mask[i] }
    }
}
