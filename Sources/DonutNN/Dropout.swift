import DonutBLAS

/// Inverted dropout, as PyTorch's `Dropout(p)`: in training each element is kept with probability
/// 1 − p and scaled by 1/(1 − p), so eval mode is the identity. The mask is drawn in fixed blocks of
/// `blockSize` elements: one draw s of the caller's `SplitMix64` seeds the call, and block b uses
/// the stream `SplitMix64.seeded(s, stream: b)`, element i of it kept ⇔ its draw u ≥ p (u uniform
/// in [0, 1) with 53 bits, compared as the integer u·2⁵³ ≥ ⌈p·2⁵³⌉, the same test exactly).
/// **The same seed gives the same mask**, whatever the number of threads drawing the blocks.
/// With `sampleIDs`, the `count` elements are `samples` equal rows (one per frame) and block b
/// of the row of sample id k uses stream k·2³² + b: a frame's mask depends on its id, not on
/// its row, so data-parallel ranks holding different rows of one global batch draw the masks
/// one rank would (ids = global sample positions). Without ids the whole buffer is one row.
/// p = 1 drops everything (output 0).
public enum Dropout {
    /// Elements per independently seeded block of the mask.
    public static let blockSize = 4096

    /// - output (count): written; may alias input.
    /// - mask (count): written, **cached for backward**: 1/(1 − p) where kept, 0 where dropped.
    /// - rng: advanced by one draw (the seed of the call's blocks).
    /// - sampleIDs (samples): the id of each row's sample; nil: one row, id 0.
    public static func forwardTraining<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, mask: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        probability p: Double, rng: inout SplitMix64, count: Int, sampleIDs: [Int]? = nil
    ) {
        precondition(p >= 0 && p <= 1, "dropout probability must be in [0, 1]")
        let keep = p < 1 ? T(1 / (1 - p)) : T(0)
        // u·2⁵³ ≥ p·2⁵³ ⇔ k ≥ ⌈p·2⁵³⌉ for the integer k = u·2⁵³ (p·2⁵³ is exact in Double).
        let threshold = UInt64((p * 0x1p53).rounded(.up))
        let seed = rng.next()
        let rows = sampleIDs?.count ?? 1
        precondition(count % rows == 0, "dropout: \(count) elements are not \(rows) equal rows")
        let row = count / rows, rowBlocks = (row + blockSize - 1) / blockSize
        Parallel.forRanges(rows * rowBlocks, work: 4 * count,
                           DropoutForward(output: output, mask: mask, input: input, sampleIDs: sampleIDs, seed: seed,
                                          threshold: threshold, keep: keep, row: row, rowBlocks: rowBlocks))
    }

    /// Eval mode: the identity (output written; a copy unless output and input are the same buffer).
    /// The network does not call it: it reads the previous activation instead.
    public static func forwardEval<T: GEMMScalar>(output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, count: Int) {
        if UnsafePointer(output) != input { output.update(from: input, count: count) }
    }

    /// dInput = dOutput ⊙ mask: **written** (=); may alias dOutput. mask from `forwardTraining`.
    public static func backward<T: GEMMScalar>(dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>,
                                               mask: UnsafePointer<T>, count: Int) {
        Parallel.forRanges(count, work: count, DropoutBackward(dInput: dInput, dOutput: dOutput, mask: mask))
    }
}

/// `Dropout.forwardTraining` on mask blocks `blocks` (block q: row q / rowBlocks, block q % rowBlocks of it).
struct DropoutForward<T: GEMMScalar>: ParallelLoop {
    let output: UnsafeMutablePointer<T>, mask: UnsafeMutablePointer<T>, input: UnsafePointer<T>
    let sampleIDs: [Int]?
    /// The call's seed, the integer keep threshold ⌈p·2⁵³⌉ and the kept elements' scale 1/(1 − p).
    let seed: UInt64, threshold: UInt64, keep: T
    /// Elements per row and mask blocks per row.
    let row: Int, rowBlocks: Int

    @_specialize(where T == Float)
    func run(_ blocks: Range<Int>, worker: Int) {
        for q in blocks {
            let k = q / rowBlocks, b = q % rowBlocks
            let id = sampleIDs.map { UInt64($0[k]) } ?? 0
            var g = SplitMix64.seeded(seed, stream: id << 32 | UInt64(b))
            let lo = k * row + b * Dropout.blockSize, hi = k * row + min(row, (b + 1) * Dropout.blockSize)
            for i in lo..<hi {
                let m = (g.next() >> 11) >= threshold ? keep : T(0)
                mask[i] = m
                output[i] = input[i] * m
            }
        }
    }
}

/// `Dropout.backward` on elements `items`.
struct DropoutBackward<T: GEMMScalar>: ParallelLoop {
    let dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, mask: UnsafePointer<T>
    @_specialize(where T == Float)
    func run(_ items: Range<Int>, worker: Int) {
        for i in items { dInput[i] = dOutput[i] * mask[i] }
    }
}
