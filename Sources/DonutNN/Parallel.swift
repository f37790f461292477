import DonutBLAS
import Synchronization

/// Element-wise loops on the cores BLAS may use. The work is a range of independent items
/// (planes, channels, images, chunks) that the threads claim in contiguous blocks (`perform`);
/// every item is computed whole by one thread in the same order whichever thread it is, so
/// results are bit-identical run to run and for any thread count (no reduction crosses items).
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

    /// Runs `loop` over 0..<items on `workers` threads concurrently: thread i calls
    /// `loop.run(range, worker: i)` on the blocks it claims (`perform`; the fixed range
    /// [i·items/workers, (i+1)·items/workers) for a `fixedPartition` loop) and owns scratch
    /// slot i. With one worker (or no items) it runs on the calling thread.
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

    /// What the workers read: the loop's address and type, how 0..<items is cut, and one cursor
    /// per range, front·2³² + back of what is left of it (none for a `fixedPartition` loop).
    private struct Job {
        let loop: UnsafeRawPointer, type: any ParallelLoop.Type, items: Int, ranges: Int, grain: Int
        let cursors: UnsafeMutablePointer<Atomic<Int>>?
    }

    /// `loop` over 0..<items on `ranges` threads of the `WorkerPool`, returning when all are done.
    /// Thread i owns range i = [i·items/ranges, (i+1)·items/ranges) and takes blocks of `grain`
    /// items from its front; a thread whose range is done takes blocks from the back of the
    /// others'. So each thread keeps the items it had in the previous job (their data in its own
    /// L2: handing out blocks round-robin instead measured 5 % slower) while a core slowed for a
    /// moment (the VM's other tenants) gives its last blocks to the other instead of every job
    /// waiting for it (~8 % of a training step with fixed halves). Every item is still computed
    /// whole by whichever thread takes it, so results do not change. A `fixedPartition` loop
    /// gets exactly range i on thread i.
    /// The loop value and the cursors stay on this stack and the type travels as a metatype:
    /// nothing is boxed (a closure handed to the pool needed one 32-byte heap box per call).
    @inline(__always)
    static func perform<Loop: ParallelLoop>(_ items: Int, ranges: Int, _ loop: Loop) {
        precondition(items < 1 << 32, "at most 2³² − 1 items per loop")
        withUnsafePointer(to: loop) { loop in
            withUnsafeTemporaryAllocation(of: Atomic<Int>.self, capacity: Loop.fixedPartition ? 0 : ranges) { cursors in
                for i in 0..<cursors.count {
                    (cursors.baseAddress! + i).initialize(to: Atomic((i * items / ranges) << 32 | (i + 1) * items / ranges))
                }
                // Blocks of about a quarter of a range, at least one item (chunks, images: one each).
                var job = Job(loop: UnsafeRawPointer(loop), type: Loop.self, items: items, ranges: ranges,
                              grain: max(1, items / (4 * ranges)), cursors: cursors.isEmpty ? nil : cursors.baseAddress)
                withUnsafeMutablePointer(to: &job) { job in
                    WorkerPool.shared.run(ranges, UnsafeMutableRawPointer(job)) { context, i in
                        let work = context!.assumingMemoryBound(to: Job.self).pointee
                        guard let owned = work.cursors else {
                            let n = work.items, t = work.ranges
                            work.type.run(work.loop, (i * n / t)..<((i + 1) * n / t), worker: i)
                            return
                        }
                        while let block = Parallel.claim(owned + i, work.grain, fromFront: true) { work.type.run(work.loop, block, worker: i) }
                        for k in 1..<work.ranges {
                            let other = owned + (i + k) % work.ranges
                            while let block = Parallel.claim(other, work.grain, fromFront: false) { work.type.run(work.loop, block, worker: i) }
                        }
                    }
                }
                for i in 0..<cursors.count { _ = (cursors.baseAddress! + i).move() }
            }
        }
    }

    /// Takes up to `grain` items from the front (the owner) or the back (a helper) of what is left
    /// in `cursor` (front·2³² + back); nil when nothing is left.
    @inline(__always)
    static func claim(_ cursor: UnsafeMutablePointer<Atomic<Int>>, _ grain: Int, fromFront: Bool) -> Range<Int>? {
        var current = cursor.pointee.load(ordering: .relaxed)
        while true {
            let front = current >> 32, back = current & 0xFFFF_FFFF
            guard front < back else { return nil }
            let block = fromFront ? front..<min(back, front + grain) : max(front, back - grain)..<back
            let next = fromFront ? block.upperBound << 32 | back : front << 32 | block.lowerBound
            let (exchanged, original) = cursor.pointee.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if exchanged { return block }
            current = original
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
    /// Computes `items`; `worker` is the index of the calling thread (0..<workers), for
    /// per-worker scratch. Called once or several times per thread and job, on disjoint ranges.
    func run(_ items: Range<Int>, worker: Int)
    /// Whether thread i must get exactly the fixed range i (state kept per worker between
    /// jobs, e.g. the physics shards' caches); false (the default): blocks claimed dynamically.
    static var fixedPartition: Bool { get }
}

extension ParallelLoop {
    public static var fixedPartition: Bool { false }

    /// `run` on the loop stored at `loop` (the workers know its type only as a metatype).
    static func run(_ loop: UnsafeRawPointer, _ items: Range<Int>, worker: Int) {
        loop.assumingMemoryBound(to: Self.self).pointee.run(items, worker: worker)
    }
}
