#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The threads behind `Parallel`: started once, then sleeping on a condition variable between
/// jobs. A job is a C function and a context pointer, iteration 0 runs on the caller and
/// iteration i on worker i. Unlike `DispatchQueue.concurrentPerform` (a closure box per call)
/// or libdispatch's `dispatch_apply_f` (two allocations per call on Linux), a job allocates
/// nothing: the network's steps stay free of heap allocation. Workers are started when a job
/// first needs them (at plan time or the first step).
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    typealias Work = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    // Guarded by `mutex`.
    private var workers = 0, generation = 0, iterations = 0, remaining = 0, busy = false
    private var work: Work?, context: UnsafeMutableRawPointer?

    private init() {
        pthread_mutex_init(mutex, nil); pthread_cond_init(wake, nil); pthread_cond_init(done, nil)
    }

    /// work(context, i) for i in 0..<n concurrently; returns when all are done. A call made while
    /// a job runs (nested, or from another thread) runs its iterations on the calling thread.
    func run(_ n: Int, _ context: UnsafeMutableRawPointer, _ work: Work) {
        pthread_mutex_lock(mutex)
        if busy || n <= 1 {
            pthread_mutex_unlock(mutex)
            for i in 0..<n { work(context, i) }
            return
        }
        busy = true
        while workers < n - 1 { workers += 1; start(index: workers) }
        self.work = work; self.context = context
        iterations = n; remaining = n - 1; generation &+= 1
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        work(context, 0)
        pthread_mutex_lock(mutex)
        while remaining > 0 { pthread_cond_wait(done, mutex) }
        busy = false; self.work = nil; self.context = nil
        pthread_mutex_unlock(mutex)
    }

    private final class Start { let pool: WorkerPool, index: Int; init(_ p: WorkerPool, _ i: Int) { pool = p; index = i } }

    private func start(index: Int) {
        var thread = pthread_t()
        let argument = Unmanaged.passRetained(Start(self, index)).toOpaque()
        let status = pthread_create(&thread, nil, { argument in
            let start = Unmanaged<Start>.fromOpaque(argument!).takeRetainedValue()
            start.pool.loop(index: start.index)
            return nil
        }, argument)
        precondition(status == 0, "pthread_create failed (\(status))")
        pthread_detach(thread)
    }

    /// Worker `index`: wait for a new job, run its iteration `index` if it has one, report.
    private func loop(index: Int) -> Never {
        var seen = 0
        pthread_mutex_lock(mutex)
        while true {
            while generation == seen { pthread_cond_wait(wake, mutex) }
            seen = generation
            guard index < iterations, let work else { continue }
            let context = self.context
            pthread_mutex_unlock(mutex)
            work(context, index)
            pthread_mutex_lock(mutex)
            remaining -= 1
            if remaining == 0 { pthread_cond_signal(done) }
        }
    }
}
