import XCTest
#if canImport(Glibc)
import Glibc
#endif
import DonutNN

/// `Parallel`'s scheduling: every item runs exactly once whatever thread takes it; a thread whose
/// range is done takes the back of a slower thread's range; a `fixedPartition` loop gets exactly
/// the fixed ranges.
final class ParallelTests: XCTestCase {
    /// Records, per item, how often it ran and on which worker; worker `slowWorker` sleeps per item.
    struct Recorder: ParallelLoop {
        let runs: UnsafeMutablePointer<Int>, owner: UnsafeMutablePointer<Int>, slowWorker: Int
        func run(_ items: Range<Int>, worker: Int) {
            for i in items {
                if worker == slowWorker { usleep(300) }
                runs[i] += 1; owner[i] = worker
            }
        }
    }

    struct FixedRecorder: ParallelLoop {
        let recorder: Recorder
        static var fixedPartition: Bool { true }
        func run(_ items: Range<Int>, worker: Int) { recorder.run(items, worker: worker) }
    }

    /// (how often each item ran, the worker that ran it) after `loop` over `items` on `threads` threads.
    func record(_ items: Int, threads: Int, fixed: Bool) -> (runs: [Int], owner: [Int]) {
        var runs = [Int](repeating: 0, count: items), owner = [Int](repeating: -1, count: items)
        runs.withUnsafeMutableBufferPointer { r in
            owner.withUnsafeMutableBufferPointer { o in
                // The last thread is slow: with stealing, the others take items of its range.
                let loop = Recorder(runs: r.baseAddress!, owner: o.baseAddress!, slowWorker: threads - 1)
                if fixed { Parallel.forWorkers(items, workers: threads, FixedRecorder(recorder: loop)) }
                else { Parallel.forWorkers(items, workers: threads, loop) }
            }
        }
        return (runs, owner)
    }

    func testEveryItemRunsOnceAndAFastThreadTakesFromASlowOne() {
        for (items, threads) in [(64, 2), (7, 2), (1000, 3), (5, 4), (2, 2)] {
            let (runs, owner) = record(items, threads: threads, fixed: false)
            XCTAssertEqual(runs, [Int](repeating: 1, count: items), "\(items) items, \(threads) threads")
            let slowRange = ((threads - 1) * items / threads)..<items
            if slowRange.count >= 4 {
                XCTAssertTrue(slowRange.contains { owner[$0] != threads - 1 },
                              "\(items) items, \(threads) threads: nothing taken from the slow thread's range")
            }
        }
    }

    func testFixedPartitionLoopGetsTheFixedRanges() {
        for (items, threads) in [(64, 2), (10, 3), (16, 4)] {
            let (runs, owner) = record(items, threads: threads, fixed: true)
            XCTAssertEqual(runs, [Int](repeating: 1, count: items))
            XCTAssertEqual(owner, (0..<items).map { i in (0..<threads).first { t in i < (t + 1) * items / threads }! },
                           "\(items) items, \(threads) threads")
        }
    }
}
