import DonutBLAS

/// Fully connected layer, as PyTorch's `Linear`: y = x·Wᵀ + b.
/// input (batch, inFeatures), weight (outFeatures, inFeatures), bias (outFeatures), output (batch, outFeatures).
/// One GEMM each way, cut into `blocks` column blocks of the output (or of the input features
/// for the gradients) that the cores take; the naive loop it is checked against lives in the tests.
public enum Linear {
    /// Column blocks of a GEMM: two when the product has ≥ 2¹⁶ multiply–adds and each block
    /// ≥ 16 columns, else one. The DONUT head (1024 → 128 at batch 16) ran on one core while
    /// the other waited, ~1 % of a training step. Fixed by the shape, never by the thread count,
    /// so results do not depend on it.
    public static func blocks(batch: Int, inFeatures: Int, outFeatures: Int, columns: Int) -> Int {
        batch * inFeatures * outFeatures >= 1 << 16 && columns >= 32 ? 2 : 1
    }

    /// output (batch, outFeatures): written. bias nil for a bias-free layer.
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        weight: UnsafePointer<T>, bias: UnsafePointer<T>?,
        batch: Int, inFeatures: Int, outFeatures: Int
    ) {
        let parts = blocks(batch: batch, inFeatures: inFeatures, outFeatures: outFeatures, columns: outFeatures)
        Parallel.forRanges(parts, work: parts > 1 ? batch * inFeatures * outFeatures : 0,
                           ForwardBlocks(output: output, input: input, weight: weight, bias: bias, batch: batch,
                                         inFeatures: inFeatures, outFeatures: outFeatures, parts: parts))
    }

    /// Output columns [p·out/parts, (p + 1)·out/parts) of each block p: one GEMM and the bias.
    struct ForwardBlocks<T: GEMMScalar>: ParallelLoop {
        let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>, bias: UnsafePointer<T>?
        let batch: Int, inFeatures: Int, outFeatures: Int, parts: Int

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for p in range {
                let lo = p * outFeatures / parts, hi = (p + 1) * outFeatures / parts
                T.gemm(transA: false, transB: true, m: batch, n: hi - lo, k: inFeatures,
                       alpha: 1, a: input, lda: inFeatures, b: weight + lo * inFeatures, ldb: inFeatures, beta: 0,
                       c: output + lo, ldc: outFeatures)
                if let bias {
                    for n in 0..<batch {
                        let row = output + n * outFeatures
                        for o in lo..<hi { row[o] += bias[o] }
                    }
                }
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
        let parts = blocks(batch: batch, inFeatures: inFeatures, outFeatures: outFeatures, columns: inFeatures)
        Parallel.forRanges(parts, work: parts > 1 ? batch * inFeatures * outFeatures : 0,
                           BackwardBlocks(dInput: dInput, dWeight: dWeight, dOutput: dOutput, input: input, weight: weight,
                                          batch: batch, inFeatures: inFeatures, outFeatures: outFeatures, parts: parts))
        if let dBias {
            for n in 0..<batch {
                let row = dOutput + n * outFeatures
                for o in 0..<outFeatures { dBias[o] += row[o] }
            }
        }
    }

    /// Input-feature columns [p·in/parts, (p + 1)·in/parts) of dInput and dWeight for each block p.
    struct BackwardBlocks<T: GEMMScalar>: ParallelLoop {
        let dInput: UnsafeMutablePointer<T>?, dWeight: UnsafeMutablePointer<T>
        let dOutput: UnsafePointer<T>, input: UnsafePointer<T>, weight: UnsafePointer<T>
        let batch: Int, inFeatures: Int, outFeatures: Int, parts: Int

        @_specialize(where T == Float)
        func run(_ range: Range<Int>, worker: Int) {
            for p in range {
                let lo = p * inFeatures / parts, hi = (p + 1) * inFeatures / parts
                if let dInput {
                    T.gemm(transA: false, transB: false, m: batch, n: hi - lo, k: outFeatures,
                           alpha: 1, a: dOutput, lda: outFeatures, b: weight + lo, ldb: inFeatures, beta: 0,
                           c: dInput + lo, ldc: inFeatures)
                }
                T.gemm(transA: true, transB: false, m: outFeatures, n: hi - lo, k: batch,
                       alpha: 1, a: dOutput, lda: outFeatures, b: input + lo, ldb: inFeatures, beta: 1,
                       c: dWeight + lo, ldc: inFeatures)
            }
        }
    }
}
