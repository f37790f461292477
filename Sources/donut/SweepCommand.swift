import ArgumentParser
import Foundation
import DonutCore
import DonutIO

/// Hyperparameter sweeps: `plan` expands a sweep definition into one training preset per
/// grid point (`run-NNN/train.yaml`), which a Slurm array (`slurm/sweep.sbatch`) trains one
/// task per point; `summary` ranks the finished runs by their final validation loss.
struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hyperparameter sweeps over training presets (plan the grid, summarise the runs).",
        subcommands: [SweepPlan.self, SweepSummary.self])
}

/// The folder of grid point `i` inside a sweep's output folder.
func sweepRunFolder(_ outDir: String, _ i: Int) -> String {
    URL(fileURLWithPath: outDir).appendingPathComponent(String(format: "run-%03d", i)).path
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
        let sweep = try SweepDefinition.load(path: definition)
        let base = try sweep.basePath.map { try ConfigFile.load(TrainingConfig.self, path: $0) } ?? .donutPaper
        let points = try (0..<sweep.pointCount).map { try sweep.point($0, base: base) }   // all checked first
        try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        var table = "index\t" + sweep.axes.map(\.key).joined(separator: "\t") + "\n"
        for (i, preset) in points.enumerated() {
            let folder = sweepRunFolder(outDir, i)
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try AtomicOutput.write(Data(ConfigFile.yaml(of: preset).utf8), to: folder + "/train.yaml", force: force)
            table += "\(i)\t" + sweep.assignment(i).map(\.value).joined(separator: "\t") + "\n"
        }
        try AtomicOutput.write(Data(table.utf8), to: outDir + "/points.tsv", force: force)
        print("\(points.count) point(s) in \(outDir); submit with:")
        print("  sbatch --array=0-\(points.count - 1) slurm/sweep.sbatch \(outDir) --scan SCAN.h5 [more donut train options]")
    }
}

struct SweepSummary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Rank the runs of a sweep by their last validation loss (from run-NNN/model.loss.csv).")
    @Option(help: ArgumentHelp("Folder of the runs (as given to plan).", valueName: "dir")) var outDir: String

    func run() throws {
        guard let points = try? String(contentsOfFile: outDir + "/points.tsv", encoding: .utf8) else {
            throw DonutIOError(file: outDir + "/points.tsv", "no sweep plan here (run `donut sweep plan` first)")
        }
        let lines = points.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first else { throw DonutIOError(file: outDir + "/points.tsv", "empty") }
        var rows: [(validation: Double, text: String)] = []
        var pending = 0
        for fields in lines.dropFirst() {
            guard let i = Int(fields[0]) else { continue }
            let log = sweepRunFolder(outDir, i) + "/model.loss.csv"
            guard let text = try? String(contentsOfFile: log, encoding: .utf8),
                  let last = lastValidation(text) else { pending += 1; continue }
            rows.append((last.validation, String(format: "%@\t%.6g\t%.6g\t%d", fields.joined(separator: "\t"), last.validation, last.physics, last.step)))
        }
        print(header.joined(separator: "\t") + "\tvalidation_loss\tphysics_mae\tsteps")
        for r in rows.sorted(by: { $0.validation < $1.validation }) { print(r.text) }
        if pending > 0 { print("(\(pending) run(s) without a finished loss log)") }
    }

    /// The last record of a loss log with a validation loss: (validation, physics MAE, step).
    func lastValidation(_ csv: String) -> (validation: Double, physics: Double, step: Int)? {
        for line in csv.split(separator: "\n").reversed() {
            let f = line.split(separator: ",").map(String.init)
            guard f.count >= 6, let step = Int(f[0]), let v = Double(f[3]), v.isFinite else { continue }
            return (v, Double(f[5]) ?? .nan, step)
        }
        return nil
    }
}
