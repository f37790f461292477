import ArgumentParser
import DonutIO
import DonutPipeline

/// Which scan to read and how.
struct ScanOptions: ParsableArguments {
    @Option(name: .customLong("scan"), help: ArgumentHelp("Scan file (HDF5 or .npy).", valueName: "scan.h5"))
    var path: String
    @Option(help: "Dataset holding the frames (HDF5).") var dataset = "/entry/data/data"
    @Option(help: ArgumentHelp("Scan shape for 3-D (N, H, W) frames, as ROWSxCOLS.", valueName: "rowsxcols"))
    var scanShape: String?
    @OptionGroup(title: "Raw detector files") var read: ScanReadFlags

    var shape: (rows: Int, cols: Int)? { get throws { try Self.parseShape(scanShape) } }
    /// The scan as the pipelines take it.
    var input: ScanInput { get throws { ScanInput(path: path, dataset: dataset, scanShape: try shape, options: try read.options) } }

    /// "64x64" → (64, 64); nil stays nil.
    static func parseShape(_ text: String?) throws -> (rows: Int, cols: Int)? {
        guard let s = text else { return nil }
        guard let shape = parseScanShape(s) else { throw ValidationError("--scan-shape must look like 64x64 (got '\(s)')") }
        return shape
    }
}

struct Fit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a scan with the published correlation method against a simulated library.",
        discussion: """
        Each library pattern is normalised to unit sum and correlated with every frame; the
        correlation cube is summed onto each parameter axis, each projection has its minimum
        subtracted, and the centre of mass is the estimate (Zhou et al.). Ranks split the library
        (each holds only its slab) and the output frames; one allreduce per frame batch makes the
        projections exact. Bad frames (NaN, negative, empty) become NaN with valid = 0.
        """)

    @OptionGroup(title: "Input") var scan: ScanOptions
    @Option(help: ArgumentHelp("Library file from `donut simulate library`.", valueName: "lib.h5")) var library: String
    @OptionGroup(title: "Output") var output: OutputOptions
    @Flag(inversion: .prefixedNo, help: "Write a PNG quick-look per map beside the output.") var quicklook = true
    @Option(help: "Frames per batch (one GEMM per batch and library chunk).") var batch = 256
    @OptionGroup(title: "Refinement") var refinement: RefinementOptions

    func validate() throws {
        guard batch > 0 else { throw ValidationError("--batch must be positive (got \(batch))") }
        _ = try scan.shape
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions

    func run() throws {
        try RunContext.run(quiet: progressOptions.quiet) { ctx in
            let outputs = MapOutputs(path: output.path, force: output.force, quickLooks: quicklook)
            try fitScan(ctx, FitRequest(scan: try scan.input, libraryPath: library, outputs: outputs, batch: batch,
                                        refineIterations: refinement.iterations))
        }
    }
}
