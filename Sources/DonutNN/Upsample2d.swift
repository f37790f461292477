import DonutBLAS

/// Nearest-neighbour upsampling by an integer factor (2 in the decoder: upsample then conv),
/// as PyTorch's `Upsample(scale_factor: s, mode: "nearest")`:
/// y[n, c, oy, ox] = x[n, c, oy / s, ox / s] (integer division).
/// input (batch, channels, height, width), output (batch, channels, height·s, width·s).
public enum Upsample2d {
    /// output (batch, channels, height·scale, width·scale): written. input (batch, channels, height, width).
    public static func forward<T: GEMMScalar>(
        output: UnsafeMutablePointer<T>, input: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, scale: Int = 2
    ) {
        precondition(scale >= 1)
        let ow = width * scale
        Parallel.forRanges(batch * channels, work: batch * channels * height * ow * scale,
                           UpsampleForward(output: output, input: input, height: height, width: width, scale: scale))
    }

    /// dInput[n, c, iy, ix] = Σ_{s×s block} dOutput[n, c, iy·s + a, ix·s + b]: **written** (=).
    /// dOutput (batch, channels, height·scale, width·scale). Nothing cached.
    public static func backward<T: GEMMScalar>(
        dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>,
        batch: Int, channels: Int, height: Int, width: Int, scale: Int = 2
    ) {
        precondition(scale >= 1)
        let ow = width * scale
        Parallel.forRanges(batch * channels, work: batch * channels * height * ow * scale,
                           UpsampleBackward(dInput: dInput, dOutput: dOutput, height: height, width: width, scale: scale))
    }
}

/// `Upsample2d.forward` on (image, channel) planes `planes`.
struct UpsampleForward<T: GEMMScalar>: ParallelLoop {
    let output: UnsafeMutablePointer<T>, input: UnsafePointer<T>
    let height: Int, width: Int, scale: Int

    @_specialize(where T == Float)
    func run(_ planes: Range<Int>, worker: Int) {
        let ow = width * scale
        for p in planes {
            let x = input + p * height * width, y = output + p * height * width * scale * scale
            for iy in 0..<height {
                let src = x + iy * width, row = y + iy * scale * ow
                if scale == 2 {
                    for ix in 0..<width { let v = src[ix]; row[2 * ix] = v; row[2 * ix + 1] = v }
                } else {
                    for ix in 0..<width {
                        let v = src[ix]
                        for j in 0..<scale { row[ix * scale + j] = v }
                    }
                }
                for r in 1..<scale { (row + r * ow).update(from: row, count: ow) }
            }
        }
    }
}

/// `Upsample2d.backward` on (image, channel) planes `planes`.
struct UpsampleBackward<T: GEMMScalar>: ParallelLoop {
    let dInput: UnsafeMutablePointer<T>, dOutput: UnsafePointer<T>
    let height: Int, width: Int, scale: Int

    @_specialize(where T == Float)
    func run(_ planes: Range<Int>, worker: Int) {
        let ow = width * scale
        for p in planes {
            let dx = dInput + p * height * width, dy = dOutput + p * height * width * scale * scale
            for iy in 0..<height {
                if scale == 2 {
                    let r0 = dy + 2 * iy * ow, r1 = r0 + ow, d = dx + iy * width
                    for ix in 0..<width { d[ix] = (r0[2 * ix] + r0[2 * ix + 1]) + (r1[2 * ix] + r1[2 * ix + 1]) }
                    continue
                }
                for ix in 0..<width {
                    var sum = T(0)
                    for a in 0..<scale {
                        let row = dy + (iy * scale + a) * ow + ix * scale
                        for b in 0..<scale { sum += row[b] }
                    }
                    dx[iy * width + ix] = sum
                }
            }
        }
    }
}
