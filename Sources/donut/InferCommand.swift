import ArgumentParser
import DonutCore
import DonutPipeline

struct Infer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Maps from a trained model (DONUT or NanobeamNN): strain, tilts[, thickness], residual, valid[, *_sigma].",
        usage: "donut infer --model <model.h5> --scan <scan.h5> --out <maps.h5>\n[<options>]",
        discussion: """
        Ranks split the frames; each reads only its block and all write one NeXus file collectively. \
        --mc-samples N adds MC-dropout standard deviations (*_sigma maps) from N passes with dropout on.
        """)

    @Option(help: ArgumentHelp("Model file from `donut train`.", valueName: "model.h5")) var model: String
    @OptionGroup(title: "Input") var scan: ScanOptions
    @OptionGroup(title: "Output") var output: OutputOptions
    @Flag(inversion: .prefixedNo, help: "Write a PNG quick-look per map beside the output.") var quicklook = true
    @Option(help: "Frames per batch.") var batch = defaultFramesPerBatch
    @Option(help: "MC-dropout passes for *_sigma maps (0: none; 30 is typical).") var mcSamples = 0
    @OptionGroup(title: "Refinement") var refinement: RefinementOptions

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be positive (got \(batch))") }
        guard mcSamples == 0 || mcSamples >= 2 else { throw ValidationError("--mc-samples must be 0 or ≥ 2 (got \(mcSamples))") }
        guard mcSamples <= RequestLimits.monteCarloSamples else {
            throw ValidationError("--mc-samples must be at most \(RequestLimits.monteCarloSamples) (got \(mcSamples))")
        }
        guard mcSamples == 0 || !refinement.physicsRefine else {
            throw ValidationError("--mc-samples and --physics-refine both write *_sigma maps: choose one")
        }
        try scan.require()
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions
    @OptionGroup(title: "Progress") var verboseOptions: VerboseOptions

    func run() throws {
        try RunContext.run(quiet: progressOptions.quiet, verbose: verboseOptions.verbose) { ctx in
            try inferScan(ctx, InferRequest(modelPath: model, scan: try scan.required,
                                            outputs: MapOutputs(path: output.path, force: output.force, quickLooks: quicklook),
                                            batch: batch, mcSamples: mcSamples, refineIterations: refinement.iterations))
        }
    }
}
