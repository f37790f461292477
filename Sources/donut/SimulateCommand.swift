import ArgumentParser
import DonutPhysics
import DonutCore
import DonutPipeline
import DonutIO

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Simulate a diffraction library or a scan of a phantom.",
        subcommands: [SimulateLibrary.self, SimulateScan.self])
}

struct SimulateLibrary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "library",
        abstract: "Simulate the library of patterns over the config's parameter grid (ranks split the entries).",
        usage: "donut simulate library --out <lib.h5> [--config <file.yaml>] [<options>]",
        discussion: """
        Writes /entry/library/patterns (nε, nω, nχ[, nt], H, W) float32, the axes and the config. \
        Each rank computes a contiguous slab of entries and writes it collectively; the file is \
        the same for any number of ranks. Memory per rank stays bounded: slabs are written in \
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
            request.otherInputs = config.path.map { [("--config", $0)] } ?? []
            request.force = output.force; request.profile = model.profile; request.chunkEntries = chunk
            try simulateLibrary(ctx, request)
        }
    }
}

struct SimulateScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Simulate a scan of a phantom: frames, ground-truth maps and the config.",
        usage: "donut simulate scan --out <scan.h5> [--config <file.yaml>] [<options>]",
        discussion: """
        Frames are the forward model at each pixel's parameters, scaled to a peak of \
        noise.peak_photons (or --peak) and Poisson-sampled with a per-frame random stream, so \
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
    @Option(help: ArgumentHelp("Write raw detector frames as a beamline does (uint32, bitshuffle-LZ4, gaps, hot pixels, pixel_mask, "
                               + "±20 % monitor, serpentine samx/samy): the model frames spread over the config's instrument.roi.",
                               valueName: "eiger")) var detector: String?
    @Option(help: ArgumentHelp("Detector size (raw pixels) with --detector.", valueName: "HxW")) var detectorSize = "514x1030"
    @Option(help: "Monitor spread with --detector: each frame's intensity is 1 ± this (uniform).") var monitorSpread = 0.2
    @Option(help: "Hot pixels with --detector (the first three inside the ROI).") var hotPixels = 5
    @Flag(help: "With --detector: raster order instead of serpentine.") var raster = false
    @Flag(help: "With --detector: leave out the NeXus pixel_mask.") var noMask = false
    @Option(help: ArgumentHelp("Chunk compression with --detector.", valueName: "bitshuffle-lz4|gzip|none")) var compression = "bitshuffle-lz4"
    @Option(help: ArgumentHelp("With --detector: write the Dectris file-writer layout, a master (--out) whose /entry/data/data_000001, … "
                               + "link to data files <prefix>_data_000001.h5, … of N frames each beside it.", valueName: "N")) var framesPerFile: Int?

    var detectorRequest: RawDetectorRequest? {
        get throws {
            guard let detector else { return nil }
            guard detector == "eiger" else { throw ValidationError("--detector must be eiger (got '\(detector)')") }
            var r = RawDetectorRequest()
            guard let size = parseScanShape(detectorSize), size.rows >= 8, size.cols >= 8 else {
                throw ValidationError("--detector-size must look like 514x1030 (got '\(detectorSize)')")
            }
            r.height = size.rows; r.width = size.cols
            guard monitorSpread >= 0, monitorSpread < 1 else { throw ValidationError("--monitor-spread must be in [0, 1) (got \(monitorSpread))") }
            r.monitorAmplitude = monitorSpread
            guard hotPixels >= 0, hotPixels <= 7 else { throw ValidationError("--hot-pixels must be 0…7 (got \(hotPixels))") }
            r.hotPixels = hotPixels; r.serpentine = !raster; r.writeMask = !noMask
            switch compression {
            case "bitshuffle-lz4": r.compression = [.bitshuffleLZ4]
            case "gzip": r.compression = [.gzip()]
            case "none": r.compression = []
            default: throw ValidationError("--compression must be bitshuffle-lz4, gzip or none (got '\(compression)')")
            }
            return r
        }
    }

    func validate() throws {
        _ = try detectorRequest
        if let n = framesPerFile {
            guard detector != nil else { throw ValidationError("--frames-per-file needs --detector eiger") }
            guard n >= 1 else { throw ValidationError("--frames-per-file must be ≥ 1 (got \(n))") }
        }
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
            request.otherInputs = config.path.map { [("--config", $0)] } ?? []
            request.phantom = Phantom(rawValue: phantom)!; request.rows = rows; request.cols = cols; request.seed = seed
            request.noise = noise; request.profile = model.profile; request.force = output.force
            if let raw = try detectorRequest, let n = framesPerFile {
                try simulateRawScan(ctx, request, detector: raw, framesPerFile: n)
            } else if let raw = try detectorRequest {
                try simulateRawScan(ctx, request, detector: raw)
            } else {
                try simulateScan(ctx, request)
            }
        }
    }
}
