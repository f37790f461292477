import ArgumentParser
import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate a diffraction library or a scan of a phantom.",
        subcommands: [SimulateLibrary.self, SimulateScan.self])
}

struct SimulateLibrary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "library",
        abstract: "Simulate the library of patterns over the config's parameter grid (ranks split the entries).",
        discussion: """
        Writes /entry/library/patterns (nε, nω, nχ[, nt], H, W) float32, the axes and the config.
        Each rank computes a contiguous slab of entries and writes it collectively; the file is
        the same for any number of ranks. Memory per rank stays bounded: slabs are written in
        chunks of --chunk entries.
        """)

    @OptionGroup(title: "Input") var config: ConfigOptions
    @OptionGroup(title: "Output") var output: OutputOptions
    @Option(help: "Thickness steps: > 1 adds a thickness axis over ranges.thickness_A (overrides library.thickness).")
    var thicknessSteps: Int?
    @Flag(exclusivity: .exclusive, help: "Forward model.") var model: ProfileChoice = .box
    @Option(help: "Entries per collective write (bounds memory: chunk × H × W × 4 bytes per rank).")
    var chunk = 4096

    func validate() throws {
        if let t = thicknessSteps, t < 1 { throw ValidationError("--thickness-steps must be ≥ 1 (got \(t))") }
        guard chunk > 0 else { throw ValidationError("--chunk must be positive (got \(chunk))") }
    }

    func run() throws {
        try RunContext.run { ctx in
            var cfg = try config.load()
            if let t = thicknessSteps { cfg.library.thickness = t; try cfg.validate() }
            ctx.log("config: \(config.sourceDescription)")
            try writeLibrary(ctx, config: cfg, path: output.path, force: output.force, profile: model.profile, chunk: chunk)
        }
    }
}

/// Simulates the library of `config` into `path`, ranks splitting the entries. Collective.
func writeLibrary(_ ctx: RunContext, config cfg: DonutConfig, path: String, force: Bool, profile: Profile, chunk: Int = 4096) throws {
    let grid = LibraryGrid(config: cfg)
    let n = cfg.model.frameSize
    ctx.log("simulate library: \(profile.rawValue) model, grid \(grid.shape.map(String.init).joined(separator: "×")) = \(grid.count) entries of \(n)×\(n), \(ctx.comm.size) rank(s) → \(path)")
    let provenance = ctx.provenance(method: "library-\(profile.rawValue)", config: ConfigFile.json(cfg), inputs: [], modelID: "")
    let writer = try LibraryWriter(path: path, grid: grid, frameSize: n, provenance: provenance, force: force, comm: ctx.comm)
    let mine = shardRange(count: grid.count, parts: ctx.comm.size, index: ctx.comm.rank)
    let largest = shardRange(count: grid.count, parts: ctx.comm.size, index: 0).count
    let rounds = (largest + chunk - 1) / chunk   // the same on every rank: writes are collective
    let forward = ForwardModel<Float>(geometry: DiffractionGeometry(config: cfg), profile: profile)
    var buffer = [Float](repeating: 0, count: min(chunk, max(mine.count, 1)) * n * n)
    let report = ctx.progress("library entries (rank 0)")
    do {
        for r in 0..<rounds {
            let lo = min(mine.lowerBound + r * chunk, mine.upperBound)
            let part = lo..<min(lo + chunk, mine.upperBound)
            try buffer.withUnsafeMutableBufferPointer { buf in
                forward.library(grid, entries: part, into: buf)
                try writer.writeSlab(entries: part, patterns: UnsafeBufferPointer(rebasing: buf[0..<(part.count * n * n)]))
            }
            report(part.upperBound - mine.lowerBound, mine.count)
        }
        try writer.finish()
    } catch {
        writer.abandon()
        throw error
    }
    ctx.log("wrote \(path)")
}

struct SimulateScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Simulate a scan of a phantom: frames, ground-truth maps and the config.",
        discussion: """
        Frames are the forward model at each pixel's parameters, scaled to a peak of
        noise.peak_photons (or --peak) and Poisson-sampled with a per-frame random stream, so
        the same seed gives the same scan. Written by rank 0.
        """)

    @OptionGroup(title: "Input") var config: ConfigOptions
    @OptionGroup(title: "Output") var output: OutputOptions
    @Option(help: "Phantom: \(Phantom.allCases.map(\.rawValue).joined(separator: ", ")).")
    var phantom: String = Phantom.paper.rawValue
    @Option(help: "Random seed (noise and random phantoms).") var seed: UInt64 = 0
    @Option(help: "Scan rows.") var rows = 64
    @Option(help: "Scan columns.") var cols = 64
    @Option(help: "Peak photons per frame (overrides noise.peak_photons).") var peak: Double?
    @Flag(inversion: .prefixedNo, help: "Poisson noise.") var noise = true
    @Flag(exclusivity: .exclusive, help: "Forward model.") var model: ProfileChoice = .box

    func validate() throws {
        guard Phantom(rawValue: phantom) != nil else {
            throw ValidationError("--phantom must be one of \(Phantom.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(phantom)')")
        }
        guard rows > 0, cols > 0 else { throw ValidationError("--rows and --cols must be positive (got \(rows)×\(cols))") }
        if let p = peak, !(p > 0 && p.isFinite) { throw ValidationError("--peak must be a positive number of photons (got \(p))") }
    }

    func run() throws {
        try RunContext.run { ctx in
            var cfg = try config.load()
            if let p = peak { cfg.noise.peakPhotons = p }
            ctx.log("config: \(config.sourceDescription)")
            try writeScan(ctx, config: cfg, phantom: Phantom(rawValue: phantom)!, rows: rows, cols: cols, seed: seed,
                          noise: noise, profile: model.profile, path: output.path, force: output.force)
        }
    }
}

/// Simulates a phantom scan into `path` (rank 0 writes; other ranks wait at the end).
func writeScan(_ ctx: RunContext, config cfg: DonutConfig, phantom kind: Phantom, rows: Int, cols: Int, seed: UInt64,
               noise: Bool, profile: Profile, path: String, force: Bool) throws {
    ctx.log("simulate scan: phantom \(kind.rawValue) \(rows)×\(cols), seed \(seed), peak \(cfg.noise.peakPhotons) photons, noise \(noise ? "Poisson" : "off"), \(profile.rawValue) model → \(path)")
    var failure = ""
    if ctx.comm.isRoot {
        do {
            let maps = kind.maps(rows: rows, cols: cols, config: cfg, seed: seed)
            let forward = ForwardModel<Float>(geometry: DiffractionGeometry(config: cfg), profile: profile)
            let n = cfg.model.frameSize
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
                                 provenance: provenance, force: force)
        } catch {
            failure = "\(error)"
        }
    }
    // Every rank learns the outcome, so all fail together (no rank runs ahead on a missing file).
    failure = ctx.comm.broadcast(failure)
    guard failure.isEmpty else { throw SimulationFailure(message: failure) }
    ctx.log("wrote \(path)")
}

struct SimulationFailure: Error, CustomStringConvertible { let message: String; var description: String { message } }
