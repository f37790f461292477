#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The threads behind `Parallel`: started once, then waiting between jobs. A job is a C
/// function and a context pointer, iteration 0 runs on the caller and iteration i on worker i.
/// Unlike `DispatchQueue.concurrentPerform` (a closure box per call) or libdispatch's
/// `dispatch_apply_f` (two allocations per call on Linux), a job allocates nothing: the
/// network's steps stay free of heap allocation. Workers are started when a job first needs
/// them (at plan time or the first step).
///
/// Waiting spins first: a training step hands the pool ~100 jobs a few µs to a few hundred µs
/// apart, and a futex sleep and wake-up costs tens of µs of latency each way on a VM. Workers
/// (and the caller waiting for them) poll for `spinNanoseconds`, then sleep on a condition
/// variable; the `sleepingWorkers` / `callerSleeping` counts tell the other side whether a
/// wake-up call is needed (sequentially consistent, so a sleeper and a publisher cannot both
/// miss each other).
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    typealias Work = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

    /// How long a thread polls before it sleeps: longer than the serial stretches inside a step
    /// (the optimiser, the linear head), short enough not to hold a core between steps.
    static let spinNanoseconds: UInt64 = 300_000

    /// Polls `condition` until it is false or `spinNanoseconds` have passed (the clock read every
    /// 256 polls); returns whether it is still true.
    @inline(__always)
    static func spin(while condition: () -> Bool) -> Bool {
        let start = monotonicNanoseconds()
        while condition() {
            for _ in 0..<256 where !condition() { return false }
            if monotonicNanoseconds() &- start > spinNanoseconds { return condition() }
        }
        return false
    }

    static func monotonicNanoseconds() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    /// The current job as generation·2¹⁶ + iterations, published after `work` and `context`:
    /// one load tells a worker both whether there is a new job and whether it has an iteration
    /// in it (a worker without one never reads the other fields, which the next job may be
    /// rewriting; a worker with one is waited for, so they stay put until it is done).
    private let job = Atomic<Int>(0)
    /// Worker iterations of the current job not yet finished.
    private let remaining = Atomic<Int>(0)
    private let sleepingWorkers = Atomic<Int>(0)
    private let callerSleeping = Atomic<Bool>(false)
    /// Held by the thread running a job (nested or concurrent jobs run inline).
    private let busy = Atomic<Bool>(false)
    // Written by the caller before `job` is published, read by the workers it has an iteration for.
    private var workers = 0
    private var work: Work?, context: UnsafeMutableRawPointer?

    private init() {
        pthread_mutex_init(mutex, nil); pthread_cond_init(wake, nil); pthread_cond_init(done, nil)
    }

    /// work(context, i) for i in 0..<n concurrently; returns when all are done. A call made while
    /// a job runs (nested, or from another thread) runs its iterations on the calling thread.
    func run(_ n: Int, _ context: UnsafeMutableRawPointer, _ work: Work) {
        if n <= 1 || !busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged {
            for i in 0..<n { work(context, i) }
            return
        }
        precondition(n < 1 << 16, "at most 65,535 iterations per job")
        while workers < n - 1 { workers += 1; start(index: workers, seen: job.load(ordering: .relaxed)) }
        self.work = work; self.context = context
        remaining.store(n - 1, ordering: .sequentiallyConsistent)
        let generation = job.load(ordering: .relaxed) >> 16
        job.store((generation &+ 1) << 16 | n, ordering: .sequentiallyConsistent)
        if sleepingWorkers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex); pthread_cond_broadcast(wake); pthread_mutex_unlock(mutex)
        }
        work(context, 0)
        if Self.spin(while: { remaining.load(ordering: .acquiring) > 0 }) {
            pthread_mutex_lock(mutex)
            callerSleeping.store(true, ordering: .sequentiallyConsistent)
            while remaining.load(ordering: .sequentiallyConsistent) > 0 { pthread_cond_wait(done, mutex) }
            callerSleeping.store(false, ordering: .sequentiallyConsistent)
            pthread_mutex_unlock(mutex)
        }
        self.work = nil; self.context = nil
        busy.store(false, ordering: .releasing)
    }

    private final class Start {
        let pool: WorkerPool, index: Int, seen: Int
        init(_ p: WorkerPool, _ i: Int, _ s: Int) { pool = p; index = i; seen = s }
    }

    /// Starts worker `index`; `seen` is the job before the one being published (the worker's
    /// first job is the next one, whenever the thread gets to run).
    private func start(index: Int, seen: Int) {
        var thread = pthread_t()
        let argument = Unmanaged.passRetained(Start(self, index, seen)).toOpaque()
        let status = pthread_create(&thread, nil, { argument -> UnsafeMutableRawPointer? in
            let start = Unmanaged<Start>.fromOpaque(argument!).takeRetainedValue()
            start.pool.loop(index: start.index, seen: start.seen)   // never returns
        }, argument)
        precondition(status == 0, "pthread_create failed (\(status))")
        pthread_detach(thread)
    }

    /// Worker `index`: wait for a new job (spinning, then sleeping), run its iteration `index`
    /// if it has one, report.
    private func loop(index: Int, seen first: Int) -> Never {
        var seen = first
        while true {
            var current = seen
            let waiting = Self.spin(while: { current = job.load(ordering: .acquiring); return current == seen })
            if waiting {
                pthread_mutex_lock(mutex)
                sleepingWorkers.add(1, ordering: .sequentiallyConsistent)
                while current == seen {
                    current = job.load(ordering: .sequentiallyConsistent)
                    if current == seen { pthread_cond_wait(wake, mutex) }
                }
                sleepingWorkers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
            }
            seen = current
            guard index < current & 0xFFFF, let work else { continue }
            work(context, index)
            if remaining.subtract(1, ordering: .sequentiallyConsistent).newValue == 0,
               callerSleeping.load(ordering: .sequentiallyConsistent) {
                pthread_mutex_lock(mutex); pthread_cond_signal(done); pthread_mutex_unlock(mutex)
            }
        }
    }
}
