import ArgumentParser
import DonutCore
import DonutIO
import DonutPipeline

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole chain on a built-in example: library, phantom scan, correlation fit, accuracy table.",
        usage: "donut demo [--out-dir <dir>] [--epochs <epochs>] [<options>]",
        discussion: """
        Simulates a box-model library over the published ranges, a scan of the published \
        `paper` phantom at 7 photons peak with Poisson noise, fits it with the correlation \
        method, trains DONUT on the scan's own frames (no labels) for --epochs, infers, writes \
        NeXus maps and PNG quick-looks into --out-dir, and prints the error of each method's \
        maps against the ground truth.
        """)

    @OptionGroup(title: "Input") var config: ConfigOptions
    @Option(help: "Folder for the demo's files (default: a new donut-demo-<time> folder).") var outDir: String?
    @Option(help: "Library steps per axis (the published library has 41).") var steps = 21
    @Option(help: "Phantom: \(Phantom.allCases.map(\.rawValue).joined(separator: ", ")).") var phantom = Phantom.paper.rawValue
    @Option(help: "Random seed of the noise.") var seed: UInt64 = 1
    @Option(help: "DONUT training epochs over the scan's frames (0: skip DONUT).") var epochs = 4
    @Option(help: ArgumentHelp("Training preset.", valueName: "train.yaml")) var training: String?
    @Flag(help: "Overwrite files in an existing --out-dir.") var force = false

    func validate() throws {
        guard steps >= 2 else { throw ValidationError("--steps must be ≥ 2 (got \(steps))") }
        guard epochs >= 0 else { throw ValidationError("--epochs must be ≥ 0 (got \(epochs))") }
        guard Phantom(rawValue: phantom) != nil else {
            throw ValidationError("--phantom must be one of \(Phantom.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(phantom)')")
        }
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions

    func run() throws {
        try RunContext.run(quiet: progressOptions.quiet) { ctx in
            var request = DemoRequest(config: try config.load(), configSource: config.sourceDescription)
            request.outDir = outDir; request.steps = steps; request.phantom = Phantom(rawValue: phantom)!
            request.seed = seed; request.epochs = epochs; request.force = force
            request.training = try training.map { try ConfigFile.load(TrainingConfig.self, path: $0) }
            if let report = try runDemo(ctx, request) { print(report) }
        }
    }
}
