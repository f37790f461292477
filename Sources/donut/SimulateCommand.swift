import ArgumentParser
import DonutPhysics
import DonutCore
import DonutPipeline

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
    var chunk = LibraryRequest.defaultChunkEntries

    func validate() throws {
        if let t = thicknessSteps, t < 1 { throw ValidationError("--thickness-steps must be ≥ 1 (got \(t))") }
        guard chunk > 0 else { throw ValidationError("--chunk must be positive (got \(chunk))") }
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions

    func run() throws {
        try RunContext.run(quiet: progressOptions.quiet) { ctx in
            var cfg = try config.load()
            if let t = thicknessSteps { cfg.library.thickness = t; try cfg.validate() }
            ctx.log("config: \(config.sourceDescription)")
            var request = LibraryRequest(config: cfg, outPath: output.path)
            request.force = output.force; request.profile = model.profile; request.chunkEntries = chunk
            try simulateLibrary(ctx, request)
        }
    }
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

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions

    func run() throws {
        try RunContext.run(quiet: progressOptions.quiet) { ctx in
            var cfg = try config.load()
            if let p = peak { cfg.noise.peakPhotons = p }
            ctx.log("config: \(config.sourceDescription)")
            var request = ScanSimulationRequest(config: cfg, outPath: output.path)
            request.phantom = Phantom(rawValue: phantom)!; request.rows = rows; request.cols = cols; request.seed = seed
            request.noise = noise; request.profile = model.profile; request.force = output.force
            try simulateScan(ctx, request)
        }
    }
}
