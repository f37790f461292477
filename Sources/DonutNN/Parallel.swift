import DonutBLAS

/// Element-wise loops on the cores BLAS may use. The work is cut into `threads` fixed,
/// contiguous ranges of independent items (planes, channels, images, blocks); every item is
/// computed whole by one thread in the same order whatever the partition, so results are
/// bit-identical run to run and for any thread count (no reduction crosses items).
/// `threads` follows OpenBLAS's configured count (`OPENBLAS_NUM_THREADS=1` for MPI ranks ⇒
/// serial loops too); inside `serialBLAS` sections these loops are what uses the cores.
public enum Parallel {
    /// Below this many elements of work a loop runs on the calling thread (dispatch costs ~µs).
    public static let minimumWork = 1 << 14

    /// Threads the loops use: OpenBLAS's configured thread count, at least 1 (or the count set
    /// by `withThreads`).
    public static var threads: Int { threadOverride ?? max(1, configuredBLASThreads) }

    nonisolated(unsafe) private static var threadOverride: Int?

    /// Runs `body` with `threads` = n: tests check results do not depend on the thread count.
    /// Not reentrant and not for concurrent use; scratch sized by `threads` (`Conv2d.scratchCount`)
    /// must be sized inside `body`.
    public static func withThreads<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        precondition(n >= 1)
        let previous = threadOverride
        threadOverride = n
        defer { threadOverride = previous }
        return try body()
    }

    /// Runs `loop` on `workers` fixed contiguous ranges covering 0..<items
    /// (range i = [i·items/workers, (i+1)·items/workers)), concurrently; range i is `loop.run(range, worker: i)`
    /// and worker i owns scratch slot i. With one worker (or no items) it runs on the calling thread.
    @inline(__always)
    public static func forWorkers<Loop: ParallelLoop>(_ items: Int, workers: Int, _ loop: Loop) {
        let t = min(items, workers)
        if t <= 1 {
            if items > 0 { loop.run(0..<items, worker: 0) }
            return
        }
        perform(items, ranges: t, loop)
    }

    /// Runs `loop` on contiguous sub-ranges covering 0..<items, concurrently when `work`
    /// (elements touched in total) justifies it. `loop` must only write what its items own.
    @inline(__always)
    public static func forRanges<Loop: ParallelLoop>(_ items: Int, work: Int, _ loop: Loop) {
        let t = min(items, threads)
        if t <= 1 || work < minimumWork {
            if items > 0 { loop.run(0..<items, worker: 0) }
            return
        }
        perform(items, ranges: t, loop)
    }

    /// What the workers read: the loop's address and type, and how 0..<items is cut.
    private struct Job {
        let loop: UnsafeRawPointer, type: any ParallelLoop.Type, items: Int, ranges: Int
    }

    /// `loop` over `ranges` ranges of 0..<items on the `WorkerPool`, returning when all are done.
    /// The loop value stays on this stack and its type travels as a metatype: nothing is boxed
    /// (a closure handed to the pool needed one 32-byte heap box per call, the last allocation
    /// of a training step).
    @inline(__always)
    static func perform<Loop: ParallelLoop>(_ items: Int, ranges: Int, _ loop: Loop) {
        withUnsafePointer(to: loop) { loop in
            var job = Job(loop: UnsafeRawPointer(loop), type: Loop.self, items: items, ranges: ranges)
            withUnsafeMutablePointer(to: &job) { job in
                WorkerPool.shared.run(ranges, UnsafeMutableRawPointer(job)) { context, i in
                    let job = context!.assumingMemoryBound(to: Job.self)
                    let n = job.pointee.items, t = job.pointee.ranges
                    job.pointee.type.run(job.pointee.loop, (i * n / t)..<((i + 1) * n / t), worker: i)
                }
            }
        }
    }

    /// Σ p[0..<n] with eight partial sums (vectorisable; at most ~√(n/8)·ulp relative error,
    /// callers total the per-row results in Double).
    @inline(__always)
    static func sum<T: GEMMScalar>(_ p: UnsafePointer<T>, _ n: Int) -> T {
        var s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0), s4 = T(0), s5 = T(0), s6 = T(0), s7 = T(0)
        var i = 0
        while i + 8 <= n {
            s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]
            s4 += p[i + 4]; s5 += p[i + 5]; s6 += p[i + 6]; s7 += p[i + 7]
            i += 8
        }
        while i < n { s0 += p[i]; i += 1 }
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    }

    /// Σ (p[i] − c)² over 0..<n, eight partial sums.
    @inline(__always)
    static func sumSquares<T: GEMMScalar>(_ p: UnsafePointer<T>, _ n: Int, minus c: T) -> T {
        var s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0), s4 = T(0), s5 = T(0), s6 = T(0), s7 = T(0)
        var i = 0
        while i + 8 <= n {
            let d0 = p[i] - c, d1 = p[i + 1] - c, d2 = p[i + 2] - c, d3 = p[i + 3] - c
            let d4 = p[i + 4] - c, d5 = p[i + 5] - c, d6 = p[i + 6] - c, d7 = p[i + 7] - c
            s0 += d0 * d0; s1 += d1 * d1; s2 += d2 * d2; s3 += d3 * d3
            s4 += d4 * d4; s5 += d5 * d5; s6 += d6 * d6; s7 += d7 * d7
            i += 8
        }
        while i < n { let d = p[i] - c; s0 += d * d; i += 1 }
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    }
}

/// The body of a parallel loop as a value: the pointers and sizes it reads, and `run`, which
/// computes a contiguous range of the loop's items (images, channels, planes, chunks). A value
/// rather than a closure so that handing it to the worker threads allocates nothing (see
/// `Parallel.perform`); `Parallel.forRanges` and `Parallel.forWorkers` take one.
///
/// A conformer generic over the scalar marks `run` with `@_specialize(where T == Float)`: the
/// workers reach `run` through the conformance's witness table, which for a generic struct holds
/// the unspecialised body (SIMD and arithmetic through witness calls, measured ~10× slower);
/// the attribute makes that body branch to its Float specialisation. (The calling thread's
/// share and one-thread runs call the caller's own specialisation directly.)
public protocol ParallelLoop {
    /// Computes `items`; `worker` is the index of the range (0..<workers), for per-worker scratch.
    func run(_ items: Range<Int>, worker: Int)
}

extension ParallelLoop {
    /// `run` on the loop stored at `loop` (the workers know its type only as a metatype).
    static func run(_ loop: UnsafeRawPointer, _ items: Range<Int>, worker: Int) {
        loop.assumingMemoryBound(to: Self.self).pointee.run(items, worker: worker)
    }
}
