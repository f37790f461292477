import ArgumentParser
import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI

/// Wall and CPU time per stage of one scan (s): what `reprocess` reports per scan and in
/// total. Every rank keeps its own; rank 0's is logged. CPU time is the process's (all
/// threads), so shares stay meaningful on a machine shared with other jobs.
final class StageTimes {
    var read = 0.0, estimate = 0.0, refine = 0.0, write = 0.0
    var cpu: [String: Double] = [:]

    /// Runs `body`, adding its wall time to `stage` and its CPU time to `cpu[stage]`.
    func time<T>(_ stage: ReferenceWritableKeyPath<StageTimes, Double>, _ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds, c0 = processCPUSeconds()
        defer {
            self[keyPath: stage] += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            cpu["\(stage)", default: 0] += processCPUSeconds() - c0
        }
        return try body()
    }

    /// `time`, minus the reads (`read`, timed inside `body`) made meanwhile: for loops that
    /// read as they go.
    func timeExcludingReads<T>(_ stage: ReferenceWritableKeyPath<StageTimes, Double>, _ body: () throws -> T) rethrows -> T {
        let read0 = read, readCPU0 = cpu["\(\StageTimes.read)", default: 0]
        defer {
            self[keyPath: stage] -= read - read0
            cpu["\(stage)", default: 0] -= cpu["\(\StageTimes.read)", default: 0] - readCPU0
        }
        return try time(stage, body)
    }

    var total: Double { read + estimate + refine + write }

    func add(_ other: StageTimes) {
        read += other.read; estimate += other.estimate; refine += other.refine; write += other.write
        for (k, v) in other.cpu { cpu[k, default: 0] += v }
    }

    /// "read 1.2 s (10 %), infer 3.4 s (28 %, CPU 3.1 s), …" (CPU where the stage was timed as a whole).
    func summary(estimateName: String) -> String {
        let t = max(total, 1e-12)
        let stages: [(String, ReferenceWritableKeyPath<StageTimes, Double>)] = [("read", \.read), (estimateName, \.estimate), ("refine", \.refine), ("write", \.write)]
        return stages.map { name, key in
            let wall = self[keyPath: key]
            let cpuText = cpu["\(key)"].map { String(format: ", CPU %.2f s", $0) } ?? ""
            return String(format: "%@ %.3f s (%.0f %%%@)", name, wall, 100 * wall / t, cpuText)
        }.joined(separator: ", ")
    }
}

/// An error every rank throws together after a rank-local phase failed somewhere: the
/// message is the first failing rank's.
struct RankFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension RunContext {
    /// Runs a phase that may fail on some ranks only (reads, local compute), then agrees:
    /// if any rank failed, every rank throws the lowest failing rank's message, so no rank
    /// is left waiting in the next collective. One allreduce (+ one broadcast on failure).
    func agreeing<T>(_ body: () throws -> T) throws -> T {
        var result: T?, failure: Error?
        do { result = try body() } catch { failure = error }
        guard comm.size > 1 else {
            if let failure { throw failure }
            return result!
        }
        let first = comm.allreduceMin(failure == nil ? Double(comm.size) : Double(comm.rank))
        guard first < Double(comm.size) else { return result! }
        let message = comm.broadcast(failure.map { "\($0)" } ?? "", root: Int(first))
        if let failure, Int(first) == comm.rank { throw failure }
        throw RankFailure(message: message)
    }
}

/// Where one scan's frames are: file, dataset, layout, and the detector ROI when it
/// differs from the model's `instrument.roi`.
struct ScanInput {
    var path: String
    var dataset: String = "/entry/data/data"
    var scanShape: (rows: Int, cols: Int)?
    var roi: DetectorROI?

    /// The reader for `config`, with this scan's ROI in place of the config's. Collective.
    func open(config: DonutConfig, comm: Communicator) throws -> ScanReader {
        var c = config
        if let roi { c.instrument.roi = roi }
        return try ScanReader(path: path, dataset: dataset, config: c, comm: comm, scanShape: scanShape)
    }
}

/// Reads of one scan, timed into `times.read`, summing the frame checksum of the frames in
/// `checksummed` the first time each is read (chunks passed to `read` must not overlap
/// within that range), so provenance costs no second pass over the file.
final class TimedFrameSource {
    let reader: ScanReader
    let times: StageTimes
    let checksummed: Range<Int>
    private(set) var checksum: UInt64 = 0
    /// The first read error, when reads are made to never throw (see `readOrZeros`).
    private(set) var failure: Error?

    init(reader: ScanReader, times: StageTimes, checksummed: Range<Int>) {
        self.reader = reader; self.times = times; self.checksummed = checksummed
    }

    /// Frames `range`, adding those inside `checksummed` to the checksum.
    func read(_ range: Range<Int>) throws -> [Float] {
        let frames = try times.time(\.read) { try reader.readFrames(range) }
        let mine = range.clamped(to: checksummed)
        if !mine.isEmpty {
            let np = reader.frameSize * reader.frameSize, o = mine.lowerBound - range.lowerBound
            let part = o == 0 && mine.count == range.count ? frames : Array(frames[(o * np)..<((o + mine.count) * np)])
            checksum &+= ScanReader.frameChecksum(frames: part, firstIndex: mine.lowerBound, frameSize: reader.frameSize)
        }
        return frames
    }

    /// `read` for loops with a collective per batch: a failed read records the error and
    /// returns zero frames (rejected as empty), so this rank still joins every collective;
    /// the caller checks `failure` (through `RunContext.agreeing`) afterwards.
    func readOrZeros(_ range: Range<Int>) -> [Float] {
        do { return try read(range) } catch {
            if failure == nil { failure = error }
            return .init(repeating: 0, count: range.count * reader.frameSize * reader.frameSize)
        }
    }

    /// Throws the recorded read error, if any.
    func throwIfFailed() throws { if let failure { throw failure } }

    /// Rank-independent checksum of every rank's `checksummed` frames. Collective.
    func globalChecksum(_ comm: Communicator) -> String {
        var v = [checksum]
        comm.allreduceSum(&v)
        return ScanReader.checksumString(v[0])
    }
}
