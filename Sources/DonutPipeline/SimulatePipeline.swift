import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI

/// A simulated library over a config's parameter grid (`donut simulate library`).
public struct LibraryRequest {
    public var config: DonutConfig
    public var outPath: String
    public var force = false
    public var profile: Profile = .box
    /// Entries per collective write (bounds memory: chunk × H × W × 4 bytes per rank).
    public var chunkEntries = LibraryRequest.defaultChunkEntries
    /// Files the library must not replace (role, path), e.g. the config file it was made from.
    public var otherInputs: [(role: String, path: String)] = []

    public static let defaultChunkEntries = 4096

    public init(config: DonutConfig, outPath: String) { self.config = config; self.outPath = outPath }
}

/// Simulates the library of `request.config` into `request.outPath`, ranks splitting the
/// entries (each writes its slab collectively, chunk by chunk). Collective.
public func simulateLibrary(_ ctx: RunContext, _ request: LibraryRequest) throws {
    let cfg = request.config, path = request.outPath, profile = request.profile, chunk = request.chunkEntries
    let grid = LibraryGrid(config: cfg)
    let n = cfg.model.frameSize
    ctx.log("simulate library: \(profile.rawValue) model, grid \(grid.shape.map(String.init).joined(separator: "×")) = \(grid.count) entries of \(n)×\(n), \(ctx.comm.size) rank(s) → \(path)")
    let provenance = ctx.provenance(method: "library-\(profile.rawValue)", config: ConfigFile.json(cfg), inputs: [], modelID: "")
    let writer = try LibraryWriter(path: path, grid: grid, frameSize: n, provenance: provenance, force: request.force, comm: ctx.comm,
                                   inputs: request.otherInputs)
    // Ranks take whole chunks of one global grid of `chunk` entries, so every entry is made by
    // the same `library` call (same entry range, same GEMM shapes) on any number of ranks: the
    // library is bit-identical for 1 and N ranks on every CPU (OpenBLAS may sum in another order
    // for another GEMM width, e.g. on AMD EPYC).
    let chunks = (grid.count + chunk - 1) / chunk
    let myChunks = shardRange(count: chunks, parts: ctx.comm.size, index: ctx.comm.rank)
    let mine = min(myChunks.lowerBound * chunk, grid.count)..<min(myChunks.upperBound * chunk, grid.count)
    let rounds = shardRange(count: chunks, parts: ctx.comm.size, index: 0).count   // the same on every rank: writes are collective
    let forward = ForwardModel<Float>(geometry: DiffractionGeometry(config: cfg), profile: profile)
    var buffer = [Float](repeating: 0, count: min(chunk, max(mine.count, 1)) * n * n)
    let report = ctx.progress("library entries", total: grid.count, share: mine.count, unit: "entries")
    do {
        for r in 0..<rounds {
            let lo = min(mine.lowerBound + r * chunk, mine.upperBound)
            let part = lo..<min(lo + chunk, mine.upperBound)
            try buffer.withUnsafeMutableBufferPointer { buf in
                forward.library(grid, entries: part, into: buf)
                try writer.writeSlab(entries: part, patterns: UnsafeBufferPointer(rebasing: buf[0..<(part.count * n * n)]))
            }
            report.update(part.upperBound - mine.lowerBound)
        }
        try writer.finish()
    } catch {
        writer.abandon()
        throw error
    }
    ctx.log("wrote \(path)")
}

/// A simulated scan of a phantom: frames, ground-truth maps and the config (`donut simulate scan`).
public struct ScanSimulationRequest {
    public var config: DonutConfig
    public var phantom: Phantom = .paper
    public var rows = 64, cols = 64
    /// Seed of the noise (and of random phantoms): the same seed gives the same scan.
    public var seed: UInt64 = 0
    /// Poisson noise at the config's noise.peak_photons.
    public var noise = true
    public var profile: Profile = .box
    public var outPath: String
    public var force = false
    /// Files the scan must not replace (role, path), e.g. the config file it was made from.
    public var otherInputs: [(role: String, path: String)] = []

    public init(config: DonutConfig, outPath: String) { self.config = config; self.outPath = outPath }
}

/// Simulates a phantom scan into `request.outPath` (rank 0 writes; the other ranks learn
/// the outcome, so all fail together). Collective.
public func simulateScan(_ ctx: RunContext, _ request: ScanSimulationRequest) throws {
    let cfg = request.config, kind = request.phantom, rows = request.rows, cols = request.cols, seed = request.seed
    let noise = request.noise, profile = request.profile, path = request.outPath
    // The frames are held in memory before the write: their size is checked first.
    let n = cfg.model.frameSize
    if let why = Sizes.memoryProblem("the simulated frames", factors: [("--rows", rows), ("--cols", cols), ("model.frame_size", n), ("model.frame_size", n)],
                                     bytesPerElement: 4 * 2) {
        throw PipelineError(why)
    }
    ctx.log("simulate scan: phantom \(kind.rawValue) \(rows)×\(cols), seed \(seed), peak \(cfg.noise.peakPhotons) photons, noise \(noise ? "Poisson" : "off"), \(profile.rawValue) model → \(path)")
    // Rank 0 writes; every rank learns the outcome, so all fail together (no rank runs
    // ahead on a missing file).
    try ctx.agreeing {
        guard ctx.comm.isRoot else { return }
        let maps = kind.maps(rows: rows, cols: cols, config: cfg, seed: seed)
        let forward = ForwardModel<Float>(geometry: DiffractionGeometry(config: cfg), profile: profile)
        var frames = [Float](repeating: 0, count: maps.count * n * n)
        frames.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<maps.count, model: forward, peakPhotons: cfg.noise.peakPhotons,
                                  seed: seed, noise: noise, into: $0)
        }
        let checksum = ScanReader.checksumString(ScanReader.frameChecksum(frames: frames, firstIndex: 0, frameSize: n))
        let provenance = ctx.provenance(method: "simulate-scan-\(kind.rawValue)", config: ConfigFile.json(cfg), inputs: [],
                                        modelID: "phantom:\(kind.rawValue) seed:\(seed) model:\(profile.rawValue) frames:\(checksum)")
        try ScanWriter.write(path: path, frames: frames, layout: ScanLayout(rows: rows, cols: cols), frameSize: n,
                             groundTruth: ["strain": maps.strain, "tilt_lr": maps.tiltLRDeg, "tilt_ud": maps.tiltUDDeg,
                                           "thickness": maps.thicknessA],
                             provenance: provenance, force: request.force, inputs: request.otherInputs)
    }
    ctx.log("wrote \(path)")
}

/// `simulateRawScan` in the Dectris file-writer layout (`--detector eiger --frames-per-file N`):
/// the same scan (same photon draws) as a master `request.outPath` with external links to
/// `<prefix>_data_000001.h5`, … of `framesPerFile` frames each, as Eiger file writers leave
/// them. The single file is written first beside the output (hidden, removed afterwards)
/// and split by `RawDetectorFileWriter.splitIntoDataFiles` (rank 0; all ranks learn the
/// outcome). Collective.
public func simulateRawScan(_ ctx: RunContext, _ request: ScanSimulationRequest, detector: RawDetectorRequest, framesPerFile: Int) throws {
    let url = URL(fileURLWithPath: request.outPath)
    let single = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).single-file.h5").path
    let dataFiles = RawDetectorFileWriter.dataFiles(master: request.outPath, frameCount: request.rows * request.cols, framesPerFile: framesPerFile)
    let dataNames = dataFiles.count == 1 ? dataFiles[0].name : "\(dataFiles[0].name) … \(dataFiles.last!.name)"
    let sizes = dataFiles.count == 1 ? "1 data file of \(dataFiles[0].range.count) frames" : "\(dataFiles.count) data files of \(framesPerFile) frames"
    ctx.log(rawScanAnnouncement(request, detector: detector) + " → \(request.outPath) and \(sizes) beside it (\(dataNames))")
    var first = request
    first.outPath = single
    first.force = true  // a leftover of an interrupted run is ours to replace
    try writeRawScan(ctx, first, detector: detector)
    var failure = ""
    if ctx.comm.isRoot {
        do {
            try RawDetectorFileWriter.splitIntoDataFiles(source: single, master: request.outPath, framesPerFile: framesPerFile, force: request.force)
        } catch {
            failure = "\(error)"
        }
        try? FileManager.default.removeItem(atPath: single)
    }
    failure = ctx.comm.broadcast(failure)
    guard failure.isEmpty else { throw RankFailure(message: failure) }
    ctx.log("wrote \(request.outPath) and \(dataNames)")
}
