import CDonutBridge
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An MPI communicator: the only place Donut calls MPI (DonutIO receives the raw handle
/// through `withMPIComm` to hand it to HDF5's MPI-IO driver).
///
/// Every method below except `rank`, `size`, `isRoot` and `abort` is **collective**: all
/// ranks of the communicator must call it, in the same order, with matching lengths (the
/// broadcasts take their length from the root). On one rank (a plain `donut …` run, an
/// MPI singleton) they are cheap no-ops or copies.
public final class Communicator: @unchecked Sendable {
    private let comm: MPI_Comm
    /// This process's rank, 0 ..< size.
    public let rank: Int
    /// Number of ranks.
    public let size: Int
    /// True on rank 0, the rank that prints, checks files and renames outputs.
    public var isRoot: Bool { rank == 0 }

    private init(comm: MPI_Comm) {
        self.comm = comm
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
    }

    /// MPI_COMM_WORLD. The first use initialises MPI with MPI_THREAD_FUNNELED (only the main
    /// thread calls MPI); if MPI was already initialised (by a host program) it is reused.
    /// Without `mpirun` this starts an MPI singleton of size 1.
    public static var world: Communicator { _world }
    private static let _world: Communicator = {
        var initialised: Int32 = 0
        MPI_Initialized(&initialised)
        if initialised == 0 {
            var provided: Int32 = 0
            let rc = MPI_Init_thread(nil, nil, donut_mpi_thread_funneled(), &provided)
            if rc != donut_mpi_success() {
                fputs("donut: MPI_Init_thread failed (error \(rc))\n", stderr)
                exit(1)
            }
        }
        return Communicator(comm: donut_mpi_comm_world())
    }()

    /// The raw handle, for DonutIO's MPI-IO file driver only. Do not keep it past `body`.
    package func withMPIComm<R>(_ body: (MPI_Comm) throws -> R) rethrows -> R { try body(comm) }

    public func barrier() { check(MPI_Barrier(comm), "MPI_Barrier") }

    /// A communicator over the same ranks whose messages never match this one's
    /// (collective): for a handshake that must not meet a collective another rank is
    /// blocked in (`barrier(within:)`).
    public func duplicate() -> Communicator {
        var copy: MPI_Comm? = donut_mpi_comm_null()
        check(MPI_Comm_dup(comm, &copy), "MPI_Comm_dup")
        return Communicator(comm: copy!)
    }

    /// True when every rank entered this barrier within `seconds`; false when one did not
    /// (it is computing, or blocked in another collective). On false the barrier stays
    /// pending: the caller must end the job (`abort`). Polls a non-blocking barrier.
    public func barrier(within seconds: Double) -> Bool {
        guard size > 1 else { return true }
        var request: MPI_Request?
        check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier")
        let deadline = Date().addingTimeInterval(seconds)
        var done: Int32 = 0
        while true {
            check(MPI_Test(&request, &done, nil), "MPI_Test")
            if done != 0 { return true }
            if Date() > deadline { return false }
            usleep(1000)
        }
    }

    // MARK: Reductions

    /// Element-wise sum over ranks, in place; every rank gets the result. Lengths must match.
    public func allreduceSum(_ values: inout [Double]) {
        values.withUnsafeMutableBufferPointer { allreduceSum($0) }
    }
    public func allreduceSum(_ values: inout [Float]) {
        values.withUnsafeMutableBufferPointer { allreduceSum($0) }
    }
    /// Wrapping (mod 2⁶⁴) element-wise sum.
    public func allreduceSum(_ values: inout [UInt64]) {
        values.withUnsafeMutableBufferPointer { b in
            allreduceInPlace(b.baseAddress, b.count, donut_mpi_uint64(), donut_mpi_sum(), "MPI_Allreduce(sum, uint64)")
        }
    }
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
        allreduceInPlace(values.baseAddress, values.count, donut_mpi_double(), donut_mpi_sum(), "MPI_Allreduce(sum, double)")
    }
    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        allreduceInPlace(values.baseAddress, values.count, donut_mpi_float(), donut_mpi_sum(), "MPI_Allreduce(sum, float)")
    }
    /// The bucket of `allreduceSum(_:count:bucketBytes:)` when none is given: 4 MiB, so the
    /// default network's whole gradient (≈ 1 MB) goes in one call.
    public static let defaultBucketBytes = 4 << 20
    /// Element-wise sum over ranks of a large buffer, in place, as consecutive allreduces of at
    /// most `bucketBytes` each (bounded temporary memory inside MPI and a 32-bit count per call).
    /// The same sums as one allreduce; used for the flat gradient buffer of data-parallel training.
    public func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, bucketBytes: Int = Communicator.defaultBucketBytes) {
        let perBucket = max(1, bucketBytes / MemoryLayout<Float>.stride)
        var start = 0
        while start < count {
            let n = min(perBucket, count - start)
            allreduceInPlace(values + start, n, donut_mpi_float(), donut_mpi_sum(), "MPI_Allreduce(sum, float, bucket)")
            start += n
        }
    }
    /// Element-wise maximum over ranks, in place.
    public func allreduceMax(_ values: inout [UInt64]) {
        values.withUnsafeMutableBufferPointer { b in
            allreduceInPlace(b.baseAddress, b.count, donut_mpi_uint64(), donut_mpi_max(), "MPI_Allreduce(max, uint64)")
        }
    }
    /// True on every rank when every rank passed the same `value` (one allreduce of
    /// [v, ¬v] with MAX: max v = ¬max ¬v = min v exactly when all are equal).
    public func allEqual(_ value: UInt64) -> Bool {
        var v = [value, ~value]
        allreduceMax(&v)
        return v[0] == ~v[1]
    }
    /// Maximum of one value over ranks.
    public func allreduceMax(_ value: Double) -> Double {
        var v = value
        allreduceInPlace(&v, 1, donut_mpi_double(), donut_mpi_max(), "MPI_Allreduce(max)")
        return v
    }
    /// Minimum of one value over ranks.
    public func allreduceMin(_ value: Double) -> Double {
        var v = value
        allreduceInPlace(&v, 1, donut_mpi_double(), donut_mpi_min(), "MPI_Allreduce(min)")
        return v
    }
    /// True on every rank when `ok` is true on every rank (logical AND). Use it before a
    /// collective step that one rank may not be able to take, so that all ranks throw together.
    public func allAgree(_ ok: Bool) -> Bool {
        var v: Int32 = ok ? 1 : 0
        allreduceInPlace(&v, 1, donut_mpi_int(), donut_mpi_land(), "MPI_Allreduce(land)")
        return v != 0
    }

    private func allreduceInPlace(_ p: UnsafeMutableRawPointer?, _ count: Int, _ type: MPI_Datatype,
                                  _ op: MPI_Op, _ what: String) {
        guard size > 1, count > 0 else { return }
        check(MPI_Allreduce(donut_mpi_in_place(), p, Int32(count), type, op, comm), what)
    }

    // MARK: Broadcast and gather

    /// Root's array on every rank (other ranks' input is ignored; lengths come from root).
    public func broadcast(_ values: [UInt8], root: Int = 0) -> [UInt8] {
        broadcastArray(values, root: root, type: donut_mpi_byte())
    }
    public func broadcast(_ values: [Double], root: Int = 0) -> [Double] {
        broadcastArray(values, root: root, type: donut_mpi_double())
    }
    public func broadcast(_ values: [Float], root: Int = 0) -> [Float] {
        broadcastArray(values, root: root, type: donut_mpi_float())
    }
    /// Root's string (UTF-8) on every rank.
    public func broadcast(_ string: String, root: Int = 0) -> String {
        String(decoding: broadcast(Array(string.utf8), root: root), as: UTF8.self)
    }

    private func broadcastArray<T>(_ values: [T], root: Int, type: MPI_Datatype) -> [T] {
        guard size > 1 else { return values }
        var count = Int64(rank == root ? values.count : 0)
        check(MPI_Bcast(&count, 1, donut_mpi_int64(), Int32(root), comm), "MPI_Bcast(count)")
        var out = rank == root ? values : [T](unsafeUninitializedCapacity: Int(count)) { _, n in n = Int(count) }
        if count > 0 {
            out.withUnsafeMutableBytes { b in
                check(MPI_Bcast(b.baseAddress, Int32(count), type, Int32(root), comm), "MPI_Bcast")
            }
        }
        return out
    }

    /// Each rank's array (any length) collected on root, in rank order; nil on other ranks.
    public func gather(_ values: [Double], root: Int = 0) -> [[Double]]? {
        guard size > 1 else { return [values] }
        var myCount = Int32(values.count)
        var counts = [Int32](repeating: 0, count: rank == root ? size : 1)
        check(MPI_Gather(&myCount, 1, donut_mpi_int(), &counts, 1, donut_mpi_int(), Int32(root), comm), "MPI_Gather(counts)")
        var displs = [Int32](repeating: 0, count: counts.count)
        var total = 0
        if rank == root {
            for i in 0..<size { displs[i] = Int32(total); total += Int(counts[i]) }
        }
        var all = [Double](repeating: 0, count: max(total, 1))
        var mine = values
        if mine.isEmpty { mine = [0] }  // a valid pointer; the count sent is still 0
        mine.withUnsafeMutableBufferPointer { s in
            check(MPI_Gatherv(s.baseAddress, myCount, donut_mpi_double(), &all, &counts, &displs,
                              donut_mpi_double(), Int32(root), comm), "MPI_Gatherv")
        }
        guard rank == root else { return nil }
        return (0..<size).map { Array(all[Int(displs[$0]) ..< Int(displs[$0]) + Int(counts[$0])]) }
    }

    // MARK: Ending

    /// Prints "donut: rank R: message" to stderr and aborts every rank (never a hang when one
    /// rank fails). Not collective: any one rank may call it.
    public func abort(_ message: String, code: Int32 = 1) -> Never {
        fputs("donut: rank \(rank): \(message)\n", stderr)
        fflush(stderr); fflush(stdout)
        MPI_Abort(comm, code)
        exit(code)
    }

    /// Ends MPI (collective). Call once, at the end of the program; nothing MPI after it.
    public func finalize() {
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    private func check(_ rc: Int32, _ what: String) {
        // MPI's default error handler aborts on failure; this catches a changed handler.
        if rc != donut_mpi_success() { abort("\(what) failed (MPI error \(rc))") }
    }
}

/// The block of `count` items that part `index` of `parts` owns: contiguous blocks in
/// order, the first `count % parts` parts one item longer than the rest. Blocks tile
/// 0 ..< count exactly; with more parts than items the last parts are empty.
/// E.g. count 10, parts 3 → 0..<4, 4..<7, 7..<10.
public func shardRange(count: Int, parts: Int, index: Int) -> Range<Int> {
    precondition(count >= 0 && parts > 0 && (0..<parts).contains(index),
                 "shardRange(count: \(count), parts: \(parts), index: \(index))")
    let base = count / parts, extra = count % parts
    let start = index * base + min(index, extra)
    return start ..< start + base + (index < extra ? 1 : 0)
}

/// Under Slurm, the MPI world must match the allocation: Open MPI started by a plain
/// `srun` without PMI support gives N singletons of size 1, each of which would redo the
/// whole job. Returns a message to print (and abort with) when `SLURM_NTASKS` is set and
/// differs from `worldSize`; nil when it matches or when not under Slurm.
public func slurmWorldSizeMismatch(worldSize: Int,
                                   environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
    guard let text = environment["SLURM_NTASKS"] else { return nil }
    guard let tasks = Int(text.trimmingCharacters(in: .whitespaces)) else {
        return "SLURM_NTASKS is '\(text)', not a number"
    }
    guard tasks != worldSize else { return nil }
    return "MPI world size is \(worldSize) but SLURM_NTASKS is \(tasks): the ranks did not join one MPI job "
        + "(launch with `srun --mpi=pmix` or `mpirun` inside the allocation)"
}
