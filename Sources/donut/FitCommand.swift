import ArgumentParser
import DonutCore
import DonutPipeline

struct Fit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a scan with the published correlation method against a simulated library.",
        usage: "donut fit --scan <scan.h5> --library <lib.h5> --out <maps.h5> [<options>]",
        discussion: """
        Each library pattern is normalised to unit sum and correlated with every frame; the \
        correlation cube is summed onto each parameter axis, each projection has its minimum \
        subtracted, and the centre of mass is the estimate (Zhou et al.). Ranks split the library \
        (each holds only its slab) and the output frames; one allreduce per frame batch makes the \
        projections exact. Bad frames (NaN, negative, empty) become NaN with valid = 0.
        """)

    @OptionGroup(title: "Input") var scan: ScanOptions
    @Option(help: ArgumentHelp("Library file from `donut simulate library`.", valueName: "lib.h5")) var library: String
    @OptionGroup(title: "Output") var output: OutputOptions
    @Flag(inversion: .prefixedNo, help: "Write a PNG quick-look per map beside the output.") var quicklook = true
    @Option(help: "Frames per batch (one GEMM per batch and library chunk).") var batch = defaultFramesPerBatch
    @OptionGroup(title: "Refinement") var refinement: RefinementOptions

    func validate() throws {
        guard batch > 0 else { throw ValidationError("--batch must be positive (got \(batch))") }
        try scan.require()
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions

    func run() throws {
        try RunContext.run(quiet: progressOptions.quiet) { ctx in
            let outputs = MapOutputs(path: output.path, force: output.force, quickLooks: quicklook)
            try fitScan(ctx, FitRequest(scan: try scan.required, libraryPath: library, outputs: outputs, batch: batch,
                                        refineIterations: refinement.iterations))
        }
    }
}
