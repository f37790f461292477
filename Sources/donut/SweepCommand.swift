import ArgumentParser
import DonutPipeline

/// Hyperparameter sweeps: `plan` expands a sweep definition into one training preset per
/// grid point (`run-NNN/train.yaml`), which a Slurm array (`slurm/sweep.sbatch`) trains one
/// task per point; `summary` ranks the finished runs by their final validation loss.
struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hyperparameter sweeps over training presets (plan the grid, summarise the runs).",
        subcommands: [SweepPlan.self, SweepSummary.self])
}

struct SweepPlan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Write one training preset per grid point of a sweep definition.",
        discussion: """
        Every point's preset is checked by the strict loader before anything is written, so a
        misspelt key or a bad value fails here, not hours later on the cluster. Writes
        <out-dir>/run-NNN/train.yaml and <out-dir>/points.tsv (index, then one column per key),
        and prints the sbatch line for slurm/sweep.sbatch.
        """)
    @Option(help: ArgumentHelp("Sweep definition (YAML: base, grid).", valueName: "sweep.yaml")) var definition: String
    @Option(help: ArgumentHelp("Folder for the runs.", valueName: "dir")) var outDir: String
    @Flag(help: "Overwrite presets of an existing plan.") var force = false

    func run() throws {
        let count = try planSweep(definition: definition, outDir: outDir, force: force)
        print("\(count) point(s) in \(outDir); submit with:")
        print("  sbatch --array=0-\(count - 1) slurm/sweep.sbatch \(outDir) --scan SCAN.h5 [more donut train options]")
    }
}

struct SweepSummary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Rank the runs of a sweep by their last validation loss (from run-NNN/model.loss.csv).")
    @Option(help: ArgumentHelp("Folder of the runs (as given to plan).", valueName: "dir")) var outDir: String

    func run() throws {
        print(try summariseSweep(outDir: outDir))
    }
}
