import ArgumentParser
import Foundation
import DonutPhysics
import DonutIO
import DonutCore
import DonutPipeline

/// Which configuration to use: a YAML file, or the published preset built in.
struct ConfigOptions: ParsableArguments {
    @Option(name: .customLong("config"), help: ArgumentHelp("Instrument/sample/library YAML (see configs/).", valueName: "file.yaml"))
    var path: String?

    /// The config in force: the file's, or the built-in SrIrO3 (002) on LSAT preset.
    func load() throws -> DonutConfig {
        guard let path else { return .srio3LSAT002 }
        return try ConfigFile.load(path: path)
    }
    var sourceDescription: String { path ?? "built-in preset srio3-lsat-002" }
}

/// Progress output of long commands (rank 0, stderr): a bar on a terminal, a plain line
/// every 10 % or 30 s otherwise (Slurm logs).
struct ProgressOptions: ParsableArguments {
    @Flag(help: "No progress bar or progress lines (log lines, warnings and errors still print).")
    var quiet = false
}

/// `--verbose` of the commands that run a network (train, infer, refine, reprocess): the
/// network plan in the log, printed by the pipelines (`RunContext.logPlan`).
struct VerboseOptions: ParsableArguments {
    @Flag(help: "Also log the network plan: the kernels of every conv layer, forward and backward.")
    var verbose = false
}

/// Where results go and whether existing files may be replaced.
struct OutputOptions: ParsableArguments {
    @Option(name: .customLong("out"), help: ArgumentHelp("Output HDF5 file.", valueName: "file.h5"))
    var path: String

    @Flag(help: "Overwrite existing outputs.")
    var force = false

    func validate() throws {
        guard !path.isEmpty else { throw ValidationError("--out needs a file name, e.g. --out maps.h5") }
    }
}

/// Exclusive choice of forward model for simulations.
enum ProfileChoice: String, EnumerableFlag {
    case box, smooth
    static func help(for value: ProfileChoice) -> ArgumentHelp? {
        switch value {
        case .box: return "Box rocking-curve model (the published library model; default)."
        case .smooth: return "Smooth Gaussian model (DONUT's differentiable model)."
        }
    }
    var profile: Profile { self == .box ? .box : .smooth }
}

/// Per-frame Poisson maximum-likelihood refinement after the first estimate.
struct RefinementOptions: ParsableArguments {
    @Flag(help: "Refine every frame by Poisson maximum likelihood under the smooth model (writes *_sigma from the Fisher information).")
    var physicsRefine = false
    @Option(help: "Levenberg–Marquardt iterations per frame (Jacobian evaluations).") var refineIterations = PhysicsRefinement.defaultMaxIterations

    func validate() throws {
        guard (1...RequestLimits.refineIterations).contains(refineIterations) else {
            throw ValidationError("--refine-iterations must be between 1 and \(RequestLimits.refineIterations) (got \(refineIterations))")
        }
    }
    /// Iterations when refinement is on, else nil.
    var iterations: Int? { physicsRefine ? refineIterations : nil }
}

/// Which scan to read and how: the options of every command that reads one scan. A new
/// scan-input option goes here and into `ScanInput` (what the pipelines take).
struct ScanOptions: ParsableArguments {
    @Option(name: .customLong("scan"), help: ArgumentHelp("Scan file (HDF5 or .npy).", valueName: "scan.h5"))
    var path: String?
    @Option(help: "Dataset holding the frames (HDF5).") var dataset = ScanInput.defaultDataset
    @Option(help: ArgumentHelp("Scan shape for 3-D (N, H, W) frames, as ROWSxCOLS.", valueName: "rowsxcols"))
    var scanShape: String?
    @OptionGroup(title: "Raw detector files") var read: ScanReadFlags

    func validate() throws { _ = try shape }

    /// The --scan-shape given, as (rows, cols); nil without it.
    var shape: (rows: Int, cols: Int)? { get throws { try Self.parseShape(scanShape) } }

    /// "64x64" → (64, 64); nil stays nil.
    static func parseShape(_ text: String?) throws -> (rows: Int, cols: Int)? {
        guard let s = text else { return nil }
        guard let shape = parseScanShape(s) else { throw ValidationError("--scan-shape must look like 64x64 (got '\(s)')") }
        return shape
    }

    /// The scan as the pipelines take it; nil without --scan.
    var input: ScanInput? {
        get throws { try path.map { ScanInput(path: $0, dataset: dataset, scanShape: try shape, options: try read.options) } }
    }

    /// For commands that cannot run without a scan: refuses a missing --scan (in `validate`).
    func require() throws {
        guard path != nil else { throw ValidationError("Missing expected argument '--scan <scan.h5>'") }
    }
    var required: ScanInput { get throws { try require(); return try input! } }
}
