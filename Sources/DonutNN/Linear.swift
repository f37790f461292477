import DonutBLAS

/// Fully connected layer, as PyTorch's `Linear`: y = x·Wᵀ + b.
/// input (batch, inFeatures), weight (outFeatures, inFeatures), bias (outFeatures), output (batch, outFeatures).
/// One GEMM each way; the naive loop it is checked against lives in the tests.
public enum Linear {
    /// output (batch, outFeatures): written. bias nil for a bias-free layer.
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        batch: Int, inFeatures: Int, outFeatures: Int
    ) {
        T.gemm(transA: false, transB: true, m: batch, n: outFeatures, k: inFeatures,
               alpha: 1, a: input, lda: inFeatures, b: weight, ldb: inFeatures, beta: 0, c: output, ldc: outFeatures)
        if let bias {
            for n in 0..<batch {
                let row = output + n * outFeatures
                for o in 0..<outFeatures { row[o] += bias[o] }
            }
        }
    }

    /// - dInput (batch, inFeatures) = dOutput · W: **written** (=); nil to skip.
    /// - dWeight (outFeatures, inFeatures) += dOutputᵀ · x: **adds**.
    /// - dBias (outFeatures) += Σ_n dOutput[n]: **adds**; nil for a bias-free layer.
    /// - dOutput (batch, outFeatures); input (batch, inFeatures); weight (outFeatures, inFeatures).
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>, dBias: UnsafeMutablePointer<T>?,
        dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>,
        batch: Int, inFeatures: Int, outFeatures: Int
    ) {
        if let dInput {
            T.gemm(transA: false, transB: false, m: batch, n: inFeatures, k: outFeatures,
                   alpha: 1, a: dOutput, lda: outFeatures, b: weight, ldb: inFeatures, beta: 0, c: dInput, ldc: inFeatures)
        }
        T.gemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: batch,
               alpha: 1, a: dOutput, lda: outFeatures, b: input, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
        if let dBias {
            for n in 0..<batch {
                let row = dOutput + n * outFeatures
                for o in 0..<outFeatures { dBias[o] += row[o] }
            }
        }
    }
}
