import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI

/// Wall and CPU time per stage of one scan (s): what `reprocess` reports per scan and in
/// total. Every rank keeps its own; rank 0's is logged. CPU time is the process's (all
/// threads), so shares stay meaningful on a machine shared with other jobs.
public final class StageTimes {
    public var read = 0.0, estimate = 0.0, refine = 0.0, write = 0.0
    public var cpu: [String: Double] = [:]

    public init() {}

    /// Runs `body`, adding its wall time to `stage` and its CPU time to `cpu[stage]`.
    public func time<T>(_ stage: ReferenceWritableKeyPath<StageTimes, Double>, _ body: () throws -> T) rethrows -> T {
        let t0 = DispatchTime.now().uptimeNanoseconds, c0 = CommunicationClock.processCPUSeconds()
        defer {
            self[keyPath: stage] += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
            cpu["\(stage)", default: 0] += CommunicationClock.processCPUSeconds() - c0
        }
        return try body()
    }

    /// `time`, minus the reads (`read`, timed inside `body`) made meanwhile: for loops that
    /// read as they go.
    public func timeExcludingReads<T>(_ stage: ReferenceWritableKeyPath<StageTimes, Double>, _ body: () throws -> T) rethrows -> T {
        let read0 = read, readCPU0 = cpu["\(\StageTimes.read)", default: 0]
        defer {
            self[keyPath: stage] -= read - read0
            cpu["\(stage)", default: 0] -= cpu["\(\StageTimes.read)", default: 0] - readCPU0
        }
        return try time(stage, body)
    }

    public var total: Double { read + estimate + refine + write }

    public func add(_ other: StageTimes) {
        read += other.read; estimate += other.estimate; refine += other.refine; write += other.write
        for (k, v) in other.cpu { cpu[k, default: 0] += v }
    }

    /// "read 1.2 s (10 %), infer 3.4 s (28 %, CPU 3.1 s), …" (CPU where the stage was timed as a whole).
    public func summary(estimateName: String) -> String {
        let t = max(total, 1e-12)
        let stages: [(String, ReferenceWritableKeyPath<StageTimes, Double>)] = [("read", \.read), (estimateName, \.estimate), ("refine", \.refine), ("write", \.write)]
        return stages.map { name, key in
            let wall = self[keyPath: key]
            let cpuText = cpu["\(key)"].map { String(format: ", CPU %.2f s", $0) } ?? ""
            return String(format: "%@ %.3f s (%.0f %%%@)", name, wall, 100 * wall / t, cpuText)
        }.joined(separator: ", ")
    }
}

/// Where one scan's frames are: file, dataset, layout, the detector ROI when it differs
/// from the model's `instrument.roi`, and how to read a raw detector file (mask, monitor,
/// hot pixels, scan order: `ScanReadOptions`). Every pipeline that reads a scan takes one.
public struct ScanInput {
    public var path: String
    public var dataset: String
    public var scanShape: (rows: Int, cols: Int)?
    public var roi: DetectorROI?
    /// Mask, monitor, hot-pixel threshold, scan order, positioners (`--mask`, `--monitor`, …).
    public var options: ScanReadOptions

    /// The frames' dataset when none is named.
    public static let defaultDataset = defaultFramesDataset

    public init(path: String, dataset: String = ScanInput.defaultDataset, scanShape: (rows: Int, cols: Int)? = nil, roi: DetectorROI? = nil,
                options: ScanReadOptions = ScanReadOptions()) {
        self.path = path; self.dataset = dataset; self.scanShape = scanShape; self.roi = roi; self.options = options
    }

    /// The reader for `config`, with this scan's ROI in place of the config's. Collective.
    public func open(config: DonutConfig, comm: Communicator) throws -> ScanReader {
        var o = options
        o.roi = o.roi ?? roi
        return try ScanReader(path: path, dataset: dataset, config: config, comm: comm, scanShape: scanShape, options: o)
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

    /// Frames `range` as methods consume them (masked pixels at weight 0, monitor), adding
    /// the counts of those inside `checksummed` to the checksum.
    func readBlock(_ range: Range<Int>) throws -> FrameBlock {
        let block = try times.time(\.read) { try reader.readBlock(range) }
        let mine = range.clamped(to: checksummed)
        if !mine.isEmpty {
            let np = block.pixelCount, o = mine.lowerBound - range.lowerBound
            let part = o == 0 && mine.count == range.count ? block.counts : Array(block.counts[(o * np)..<((o + mine.count) * np)])
            checksum &+= ScanReader.frameChecksum(frames: part, firstIndex: mine.lowerBound, frameSize: reader.frameSize)
        }
        return block
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

    /// `readBlock` for loops with a collective per batch (see `readOrZeros`).
    func readBlockOrZeros(_ range: Range<Int>) -> FrameBlock {
        do { return try readBlock(range) } catch {
            if failure == nil { failure = error }
            let np = reader.frameSize * reader.frameSize
            return FrameBlock(first: range.lowerBound, count: range.count, pixelCount: np, counts: .init(repeating: 0, count: range.count * np))
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

/// The output files of a map-producing pipeline: the NeXus file and its PNG quick-looks.
public struct MapOutputs {
    public let path: String
    public let force: Bool
    public let quickLooks: Bool

    public init(path: String, force: Bool, quickLooks: Bool) {
        self.path = path; self.force = force; self.quickLooks = quickLooks
    }

    /// The maps a fit or an inference writes (one quick-look each).
    static let mapNames = ["strain", "tilt_lr", "tilt_ud", "thickness", "residual", "valid"]

    /// `maps.h5` → `maps_strain.png`, … beside it.
    public func quickLookPath(_ map: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingPathExtension().path + "_\(map).png"
    }

    /// Fails before any work when an output is the same file as one of `inputs` (role,
    /// path) — with or without --force —, is a folder or special file, or exists and
    /// --force was not given. Rank 0 decides; every rank throws the same error.
    func checkNothingIsOverwritten(maps: [String] = MapOutputs.mapNames, inputs: [(role: String, path: String)] = [],
                                   comm: Communicator) throws {
        var clash = ""
        if comm.isRoot {
            let files = [("--out", path)] + (quickLooks ? maps.map { ("quick-look", quickLookPath($0)) } : [])
            do {
                try FileIdentity.checkDistinct(outputs: files, inputs: inputs)
                for (_, file) in files {
                    if let kind = FileKind.nonRegular(file) { throw DonutIOError(file: file, "exists and is \(kind), not a regular file: refusing to replace it") }
                    if !force && FileManager.default.fileExists(atPath: file) { throw DonutIOError(file: file, "exists; pass --force to overwrite") }
                }
            } catch { clash = "\(error)" }
        }
        clash = comm.broadcast(clash)
        if !clash.isEmpty { throw PipelineError(clash) }
    }

    /// One PNG per map of the written result file (rank 0).
    func writeQuickLooks() throws {
        let maps = try ResultMapsReader.read(path: path)
        let r = maps.results, rows = maps.layout.rows, cols = maps.layout.cols
        var list: [(String, [Double], String, String)] = [
            ("strain", r.strain, "strain", ""), ("tilt_lr", r.tiltLRDeg, "tilt_lr (in-plane tilt)", "deg"),
            ("tilt_ud", r.tiltUDDeg, "tilt_ud (out-of-plane tilt)", "deg"),
        ]
        if let t = r.thicknessA { list.append(("thickness", t, "thickness", "angstrom")) }
        if let e = r.residual { list.append(("residual", e, "residual (MAE)", "counts")) }
        if let g = r.goodnessOfFit { list.append(("goodness_of_fit", g, "goodness of fit D/E[D]", "")) }
        list.append(("valid", r.valid.map(Double.init), "valid", ""))
        for (name, values, title, units) in list {
            try QuickLook.write(path: quickLookPath(name), map: values, rows: rows, cols: cols,
                                title: "\(URL(fileURLWithPath: path).lastPathComponent): \(title)", units: units,
                                valid: name == "valid" ? nil : r.valid, style: ResultPlots.style(map: name, layout: maps.layout))
        }
    }
}

/// What a map-producing pipeline (fit, infer) made.
public struct MapsOutcome {
    /// Frames in the scan (= map pixels).
    public var frames: Int
    /// Frames marked valid = 0 (bad frames, failed estimates, goodness of fit above the
    /// threshold), over all ranks.
    public var invalidFrames: Int
    /// The scan's verdict warning (`ScanVerdict`): frames the model does not explain, constant
    /// maps; nil when the maps can be trusted. Logged at the end of the command.
    public var warning: String? = nil
}

extension FrameJudge {
    /// The scan's verdict over every rank's frames (one allreduce of its sums) and its warning
    /// naming `scan`, on every rank. Collective.
    func scanWarning(scan: String, config: DonutConfig, comm: Communicator) -> String? {
        var sums = verdict.sums
        comm.allreduceSum(&sums)
        return ScanVerdict(sums: sums, pixelCount: verdict.pixelCount)
            .warning(scan: scan, ranges: config.ranges, threshold: goodness.threshold)
    }
}
