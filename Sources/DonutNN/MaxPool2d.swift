import DonutBLAS

/// Max pooling without padding, as PyTorch's `MaxPool2d(kernel, stride)` (floor mode):
/// y[n, c, oy, ox] = max_{0 ≤ a, b < kernel} x[n, c, oy·stride + a, ox·stride + b],
/// outHeight = (height − kernel) / stride + 1. input (batch, channels, height, width).
public enum MaxPool2d {
    public static func outputSize(_ size: Int, kernel: Int, stride: Int) -> Int { (size - kernel) / stride + 1 }

    /// - output (batch, channels, outH, outW): written.
    /// - argmax (batch, channels, outH, outW): written; **cached for backward**: the flat index into
    ///   `input` of each maximum (the first one in row-major window order on ties; NaN wins, as PyTorch).
    /// - input (batch, channels, height, width).
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>, input: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, kernel: Int = 2, stride: Int = 2
    ) {
        precondition(kernel >= 1 && stride >= 1 && height >= kernel && width >= kernel)
        precondition(batch * channels * height * width <= Int(Int32.max), "argmax indices are Int32")
        let oh = outputSize(height, kernel: kernel, stride: stride), ow = outputSize(width, kernel: kernel, stride: stride)
        // Parallel over (image, channel) planes; 2×2 stride 2 (the network's) has its own loop.
        Parallel.forRanges(batch * channels, work: batch * channels * height * width,
                           MaxPoolForward(output: output, argmax: argmax, input: input, height: height, width: width,
                                          kernel: kernel, stride: stride, outHeight: oh, outWidth: ow))
    }

    /// dInput[argmax[o]] += dOutput[o] after zeroing: dInput (batch, channels, height, width) is
    /// **written** (=). dOutput and argmax (batch, channels, outH, outW); argmax from `forward`.
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, argmax: UnsafePointer<Int32>,
        batch: Int, channels: Int, height: Int, width: Int, kernel: Int = 2, stride: Int = 2
    ) {
        let oh = outputSize(height, kernel: kernel, stride: stride), ow = outputSize(width, kernel: kernel, stride: stride)
        // Each plane's maxima lie in that plane: zero and scatter plane by plane, in parallel.
        let inPlane = height * width, outPlane = oh * ow
        Parallel.forRanges(batch * channels, work: batch * channels * inPlane,
                           MaxPoolBackward(dInput: dInput, dOutput: dOutput, argmax: argmax, inPlane: inPlane, outPlane: outPlane))
    }
}

extension MaxPool2d {
    /// The 2×2 window p[i0], p[i0 + 1], p[i0 + rowStride], p[i0 + rowStride + 1]: its maximum and
    /// that element's index, taken in this order, a later element winning only if greater (or NaN
    /// over a number) — PyTorch's rule (first maximum on ties, NaN propagates).
    @inline(__always)
    static func windowMax2<T: GEMMScalar>(_ p: UnsafePointer<T>, _ i0: Int, rowStride: Int) -> (value: T, index: Int) {
        var best = i0, bestValue = p[i0]
        var i = i0 + 1, v = p[i]
        if v > bestValue || (v.isNaN && !bestValue.isNaN) { bestValue = v; best = i }
        i = i0 + rowStride; v = p[i]
        if v > bestValue || (v.isNaN && !bestValue.isNaN) { bestValue = v; best = i }
        i += 1; v = p[i]
        if v > bestValue || (v.isNaN && !bestValue.isNaN) { bestValue = v; best = i }
        return (bestValue, best)
    }
}

/// `MaxPool2d.forward` on (image, channel) planes `planes`.
struct MaxPoolForward<T: GEMMScalar>: ParallelLoop {
    let output: UnsafeMutablePointer<T>, argmax: UnsafeMutablePointer<Int32>, input: UnsafePointer<T>
    let height: Int, width: Int, kernel: Int, stride: Int, outHeight: Int, outWidth: Int

    @_specialize(where T == Float)
    func run(_ planes: Range<Int>, worker: Int) {
        let oh = outHeight, ow = outWidth
        for p in planes {
            let base = p * height * width
            if kernel == 2 && stride == 2 {
                for oy in 0..<oh {
                    let r0 = base + 2 * oy * width, r1 = r0 + width, o = (p * oh + oy) * ow
                    var start = 0
                    if T.self == Float.self {
                        start = FloatKernels.maxPool2ArgmaxRow(output.float + o, argmax + o, input.float, row0: r0, row1: r1, outputs: ow)
                    }
                    for ox in start..<ow {
                        let (value, index) = MaxPool2d.windowMax2(input, r0 + 2 * ox, rowStride: width)
                        output[o + ox] = value
                        argmax[o + ox] = Int32(truncatingIfNeeded: index)
                    }
                }
                continue
            }
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var best = base + oy * stride * width + ox * stride
                    var bestValue = input[best]
                    for a in 0..<kernel {
                        let row = base + (oy * stride + a) * width + ox * stride
                        for b in 0..<kernel {
                            let v = input[row + b]
                            if v > bestValue || (v.isNaN && !bestValue.isNaN) { bestValue = v; best = row + b }
                        }
                    }
                    let o = (p * oh + oy) * ow + ox
                    output[o] = bestValue
                    argmax[o] = Int32(best)
                }
            }
        }
    }
}

/// `MaxPool2d.backward` on (image, channel) planes `planes`.
struct MaxPoolBackward<T: GEMMScalar>: ParallelLoop {
    let dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>, argmax: UnsafePointer<Int32>
    let inPlane: Int, outPlane: Int

    @_specialize(where T == Float)
    func run(_ planes: Range<Int>, worker: Int) {
        for p in planes {
            (dInput + p * inPlane).update(repeating: 0, count: inPlane)
            for o in (p * outPlane)..<((p + 1) * outPlane) { dInput[Int(argmax[o])] += dOutput[o] }
        }
    }
}
