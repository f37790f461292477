import DonutBLAS
import Foundation

/// y = max(x, 0), element-wise over `count` elements (any shape); NaN propagates (as PyTorch).
/// Backward reads the forward *output* (y > 0 ⇔ x > 0), so forward may run in place.
public enum ReLU {
    /// output (count): written; may alias input.
    public static func forward<T: GEMMScalar>(output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, count: Int) {
        Parallel.forRanges(count, work: count, ReLUForward(output: output, input: input))
    }

    /// dInput = dOutput · [y > 0] (subgradient 0 at x = 0): **written** (=); may alias dOutput.
    /// output: the forward output y (cached by being the activation itself).
    public static func backward<T: GEMMScalar>(dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>,
                                               output: UnsafePointer<T>, count: Int) {
        Parallel.forRanges(count, work: count, ReLUBackward(dInput: dInput, dOutput: dOutput, output: output))
    }
}

/// `ReLU.forward` on elements `items`.
struct ReLUForward<T: GEMMScalar>: ParallelLoop {
    let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>
    @_specialize(where T == Float)
    func run(_ items: Range<Int>, worker: Int) {
        for i in items { let v = input[i]; output[i] = v < 0 ? 0 : v }
    }
}

/// `ReLU.backward` on elements `items`.
struct ReLUBackward<T: GEMMScalar>: ParallelLoop {
    let dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, output: UnsafePointer<T>
    @_specialize(where T == Float)
    func run(_ items: Range<Int>, worker: Int) {
        for i in items { dInput[i] = output[i] > 0 ? dOutput[i] : 0 }
    }
}

/// LeCun's scaled tanh, y = A·tanh(B·x) with A = 1.7159, B = 2/3 (LeCun et al., "Efficient
/// BackProp", 1998), so f(±1) ≈ ±1. Backward reads the forward output:
/// dy/dx = A·B·(1 − tanh²) = B·(A − y²/A), so forward may run in place.
public enum ScaledTanh {
    public static let amplitude = 1.7159
    public static let slope = 2.0 / 3.0

    /// output (count): written; may alias input. tanh evaluated in Double (exact enough for Float too).
    public static func forward<T: GEMMScalar>(output: UnsafeMutablePointer<T>, input: UnsafePointer<T>, count: Int) {
        for i in 0..<count { output[i] = T(amplitude * tanh(slope * Double(input[i]))) }
    }

    /// dInput = dOutput · B·(A − y²/A): **written** (=); may alias dOutput. output: the forward output y.
    public static func backward<T: GEMMScalar>(dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>,
                                               output: UnsafePointer<T>, count: Int) {
        let a = T(amplitude), invA = T(1 / amplitude), b = T(slope)
        for i in 0..<count {
            let y = output[i]
            dInput[i] = dOutput[i] * b * (a - y * y * invA)
        }
    }
}
