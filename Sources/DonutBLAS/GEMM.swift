import CBLAS

/// Row-major GEMM for the two precisions Donut computes in: C = α·op(A)·op(B) + β·C with
/// op(A) m×k, op(B) k×n, C m×n, leading dimensions in elements (row strides).
/// Float is the production path (library, fit, training); Double is the reference path
/// checked against golden data and finite differences.
public protocol GEMMScalar: BinaryFloatingPoint, Sendable {
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

/// Runs `body` with OpenBLAS limited to `threads` threads, restoring the count after: for
/// loops that thread over independent items themselves, each item calling small GEMMs
/// (OpenBLAS then runs every call inline on the calling thread).
public func withBLASThreads<R>(_ threads: Int, _ body: () throws -> R) rethrows -> R {
    let before = blasThreadCount
    guard threads != before else { return try body() }
    openblas_set_num_threads(Int32(threads))
    defer { openblas_set_num_threads(Int32(before)) }
    return try body()
}
