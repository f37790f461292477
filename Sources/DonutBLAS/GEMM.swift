import CBLAS

/// Row-major GEMM for the two precisions Donut computes in: C = α·op(A)·op(B) + β·C with
/// op(A) m×k, op(B) k×n, C m×n, leading dimensions in elements (row strides).
/// Float is the production path (library, fit, training); Double is the reference path
/// checked against golden data and finite differences.
public protocol GEMMScalar: BinaryFloatingPoint, SIMDScalar, Sendable {
    init(_ value: Double)
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     alpha: Self, a: UnsafePointer<Self>, lda: Int,
                     b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
}

@inline(__always)
private func cblasTranspose(_ t: Bool) -> CBLAS_TRANSPOSE { t ? CblasTrans : CblasNoTrans }

extension Float: GEMMScalar {
    @inline(__always)
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Float, a: UnsafePointer<Float>, lda: Int,
                            b: UnsafePointer<Float>, ldb: Int,
                            beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, cblasTranspose(transA), cblasTranspose(transB),
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }
}

extension Double: GEMMScalar {
    @inline(__always)
    public static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                            alpha: Double, a: UnsafePointer<Double>, lda: Int,
                            b: UnsafePointer<Double>, ldb: Int,
                            beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        cblas_dgemm(CblasRowMajor, cblasTranspose(transA), cblasTranspose(transB),
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }
}

/// Number of threads OpenBLAS uses (set `OPENBLAS_NUM_THREADS=1` per rank when MPI ranks fill the cores).
public var blasThreadCount: Int { Int(openblas_get_num_threads()) }

/// OpenBLAS's thread count for the process as configured at start-up (`OPENBLAS_NUM_THREADS`,
/// else the cores), read once, before any `serialBLAS` section lowers it.
public let configuredBLASThreads = Int(openblas_get_num_threads())

/// Runs `body` with OpenBLAS single-threaded and restores the previous count after.
///
/// For code that splits its work over the cores itself (the network: many small GEMMs, one
/// per chunk of images, on every core at once). Threaded OpenBLAS on those shapes costs more
/// than it gains: its idle worker spins (sched_yield) through the element-wise loops between
/// GEMMs and takes the core they would use (≈ 30 % of a training step, perf), and each threaded
/// call allocates a work buffer. With one thread, sgemm runs on the calling thread, and calls
/// from several threads at once are safe. Nested sections are no-ops; the correlation fit and
/// library keep threaded BLAS for their large GEMMs. Physics refinement threads over frames
/// the same way.
@inline(__always)
public func serialBLAS<R>(_ body: () throws -> R) rethrows -> R {
    _ = configuredBLASThreads
    let previous = openblas_get_num_threads()
    if previous <= 1 { return try body() }
    openblas_set_num_threads(1)
    defer { openblas_set_num_threads(previous) }
    return try body()
}
