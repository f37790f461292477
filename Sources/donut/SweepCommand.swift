import ArgumentParser
import Foundation
import DonutIO
import DonutMPI
import DonutPipeline

/// Hyperparameter sweeps: `plan` expands a sweep definition (grid or random search) into one
/// training preset per point (`run-NNN/train.yaml`); `run` trains the points of one array task
/// (`slurm/sweep.sbatch`); `summary` ranks the finished points by a metric that does not
/// contain the swept loss weights.
struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hyperparameter sweeps over training presets (plan the points, train a task's points, summarise).",
        subcommands: [SweepPlan.self, SweepRun.self, SweepSummaryCommand.self])
}

struct SweepPlan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Write one training preset per point of a sweep definition (grid or random search).",
        usage: "donut sweep plan --definition <sweep.yaml> --out-dir <dir> [<options>]",
        discussion: """
        Every point's preset is checked by the strict loader before anything is written, so a \
        misspelt key or a bad value fails here, not hours later on the cluster. Writes \
        <out-dir>/run-NNN/train.yaml, <out-dir>/points.tsv (index, then one column per key) and \
        <out-dir>/plan.json, and prints the sbatch line for slurm/sweep.sbatch (one array task per \
        points_per_task points).
        """)
    @Option(help: ArgumentHelp("Sweep definition (YAML: base, grid — or random and ranges).", valueName: "sweep.yaml")) var definition: String
    @Option(help: ArgumentHelp("Folder for the runs.", valueName: "dir")) var outDir: String
    @Option(help: "Points trained one after another per array task (overrides the definition's points_per_task).")
    var pointsPerTask: Int?
    @Flag(help: "Overwrite presets of an existing plan.") var force = false

    func validate() throws {
        if let k = pointsPerTask, k < 1 { throw ValidationError("--points-per-task must be ≥ 1 (got \(k))") }
    }

    func run() throws {
        let plan = try planSweep(definition: definition, outDir: outDir, force: force, pointsPerTask: pointsPerTask)
        print("\(plan.points) point(s) in \(outDir), \(plan.pointsPerTask) per task; submit with:")
        print("  sbatch --array=0-\(plan.tasks - 1) slurm/sweep.sbatch \(outDir) --scan SCAN.h5 [more training inputs]")
    }
}

struct SweepRun: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Train the points of one array task of a planned sweep.",
        discussion: """
        Task T trains points T·K … T·K+K−1 (K = points per task of the plan) one after another, \
        each into <out-dir>/run-NNN/model.h5 with its checkpoint, loss log and held-out metrics \
        (model.metrics.json) beside it. Reruns are safe: a finished point is left alone (nothing \
        rewritten), an interrupted one resumes from its checkpoint, a point whose scan changed is \
        trained again; a failing point is recorded in run-NNN/status.json and the next one runs \
        (exit status \(DonutExitCode.scansFailed.rawValue) when any failed). SIGTERM/SIGUSR1: the running point \
        checkpoints and the command exits \(DonutExitCode.preempted.rawValue).
        """)
    @Option(help: ArgumentHelp("Folder of the planned sweep.", valueName: "dir")) var outDir: String
    @Option(help: "Array task (SLURM_ARRAY_TASK_ID).") var task: Int
    @OptionGroup(title: "Input") var scanOptions: ScanOptions
    @Option(help: ArgumentHelp("Simulated library (needed with --supervised or --mix).", valueName: "lib.h5")) var library: String?
    @Option(help: "Fraction of every batch drawn from the library (0…1).") var mix: Double = 0
    @Flag(help: "NanobeamNN: supervised training on library frames and labels.") var supervised = false
    @Flag(help: "Data-parallel: BatchNorm statistics over the global batch.") var syncBatchnorm = false
    @Flag(help: "Train the task's points again, overwriting their models.") var force = false

    func validate() throws {
        guard task >= 0 else { throw ValidationError("--task must be ≥ 0 (got \(task))") }
        guard (0...1).contains(mix) else { throw ValidationError("--mix must be between 0 and 1 (got \(mix))") }
        if supervised || mix > 0 { guard library != nil else { throw ValidationError("--supervised and --mix need --library lib.h5") } }
        if !supervised && mix < 1 { guard scanOptions.path != nil else { throw ValidationError("training on measured frames needs --scan scan.h5 (or --mix 1 with --library)") } }
    }

    func run() throws {
        StopSignal.install()
        var outcome: SweepTaskOutcome?
        try RunContext.run { ctx in
            let scans = try scanOptions.input.map { [$0] } ?? []
            var request = SweepTaskRequest(outDir: outDir, task: task, scans: scans)
            request.libraryPath = library; request.mix = mix; request.supervised = supervised
            request.syncBatchNorm = syncBatchnorm; request.force = force
            let o = try runSweepTask(ctx, request)
            ctx.log("sweep task \(task): points \(o.points.lowerBound)…\(o.points.upperBound - 1): \(o.trained) trained, \(o.alreadyDone) done before, \(o.failed.count) failed\(o.completed ? "" : ", interrupted (resume by running the task again)")")
            for f in o.failed { ctx.log("  failed: point \(f.point): \(f.reason)") }
            outcome = o
        }
        guard let outcome else { return }
        if !outcome.completed { throw ExitCode(DonutExitCode.preempted.rawValue) }
        if !outcome.failed.isEmpty {
            if Communicator.world.isRoot {
                let reason = "\(outcome.failed.count) of \(outcome.points.count) point(s) of task \(task) failed (the others are done); reasons in run-NNN/status.json under \(outDir)"
                FileHandle.standardError.write(Data("donut: error: \(reason)\n".utf8))
            }
            throw ExitCode(DonutExitCode.scansFailed.rawValue)
        }
    }
}

struct SweepSummaryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Rank the finished points of a sweep; write summary.csv, summary.md and a PNG per swept key.",
        discussion: """
        Points are ranked by --rank-by (default held_out_deviance: the mean reduced Poisson \
        deviance of the held-out frames, comparable whatever loss weights are swept; the \
        validation loss Σ w_k·L_k is not). Metrics: \(SweepSummary.metricNames.joined(separator: ", ")). \
        Failed, unfinished and not started points are listed with their reason. Files with the \
        same content are left alone; files with other content need --force.
        """)
    @Option(help: ArgumentHelp("Folder of the runs (as given to plan).", valueName: "dir")) var outDir: String
    @Option(help: ArgumentHelp("Metric to rank by.", valueName: "metric")) var rankBy = SweepSummary.defaultMetric
    @Flag(help: "Replace summary files of an earlier summary.") var force = false

    func run() throws {
        let (summary, files) = try summariseSweep(outDir: outDir, metric: rankBy, force: force)
        print("ranked by \(rankBy) (best first):")
        print(summary.tsv(), terminator: "")
        print("wrote " + files.joined(separator: ", "))
    }
}
