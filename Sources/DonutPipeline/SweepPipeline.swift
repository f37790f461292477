import Foundation
import DonutCore
import DonutIO

/// A planned sweep (`donut sweep plan`).
public struct SweepPlanOutcome {
    public var points: Int
    public var pointsPerTask: Int
    /// Array tasks to submit: ⌈points / pointsPerTask⌉.
    public var tasks: Int
}

/// `<outDir>/plan.json`: what `donut sweep run --task T` needs to find its points.
struct SweepPlanFile: Codable {
    var points: Int
    var pointsPerTask: Int
    enum CodingKeys: String, CodingKey { case points; case pointsPerTask = "points_per_task" }

    static func path(_ outDir: String) -> String { URL(fileURLWithPath: outDir).appendingPathComponent("plan.json").path }
    static func read(_ outDir: String) throws -> SweepPlanFile {
        let p = path(outDir)
        guard let data = FileManager.default.contents(atPath: p) else {
            throw DonutIOError(file: p, "no sweep plan here (run `donut sweep plan` first)")
        }
        do { return try JSONDecoder().decode(Self.self, from: data) } catch {
            throw DonutIOError(file: p, "is not a sweep plan (\(error.localizedDescription))")
        }
    }
}

/// Writes one training preset per point of the sweep definition `definition` into
/// `<outDir>/run-NNN/train.yaml`, `<outDir>/points.tsv` (index, then one column per swept key)
/// and `<outDir>/plan.json` (points, points per task); every point is checked by the strict
/// loader before anything is written. `pointsPerTask` overrides the definition's.
public func planSweep(definition: String, outDir: String, force: Bool, pointsPerTask: Int? = nil) throws -> SweepPlanOutcome {
    let sweep = try SweepDefinition.load(path: definition)
    let base = try sweep.basePath.map { try ConfigFile.load(TrainingConfig.self, path: $0) } ?? .donutPaper
    let points = try (0..<sweep.pointCount).map { try sweep.point($0, base: base) }   // all checked first
    let perTask = pointsPerTask ?? sweep.pointsPerTask
    guard perTask >= 1 else { throw PipelineError("--points-per-task must be ≥ 1 (got \(perTask))") }
    try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
    var table = "index\t" + sweep.keys.joined(separator: "\t") + "\n"
    for (i, preset) in points.enumerated() {
        let folder = SweepPlanLayout.runFolder(outDir, i)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try AtomicOutput.write(Data(ConfigFile.yaml(of: preset).utf8), to: folder + "/train.yaml", force: force)
        table += "\(i)\t" + sweep.assignment(i).map(\.value).joined(separator: "\t") + "\n"
    }
    try AtomicOutput.write(Data(table.utf8), to: outDir + "/points.tsv", force: force)
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try AtomicOutput.write(try encoder.encode(SweepPlanFile(points: points.count, pointsPerTask: perTask)),
                           to: SweepPlanFile.path(outDir), force: force)
    return SweepPlanOutcome(points: points.count, pointsPerTask: perTask, tasks: (points.count + perTask - 1) / perTask)
}

/// One array task of a sweep: its points trained one after another (`donut sweep run`).
public struct SweepTaskRequest {
    public var outDir: String
    /// The array task (SLURM_ARRAY_TASK_ID): points task·K ..< (task+1)·K of the plan.
    public var task: Int
    /// The training inputs every point shares.
    public var scans: [ScanInput]
    public var libraryPath: String?
    public var mix = 0.0
    public var supervised = false
    public var syncBatchNorm = false
    public var force = false
    public var shouldStop: () -> Bool = { StopSignal.requested }

    public init(outDir: String, task: Int, scans: [ScanInput]) {
        self.outDir = outDir; self.task = task; self.scans = scans
    }
}

public struct SweepTaskOutcome {
    /// The task's points.
    public var points: Range<Int>
    public var trained: Int, alreadyDone: Int
    /// Points that failed, with the reason (also in `run-NNN/status.json`).
    public var failed: [(point: Int, reason: String)]
    /// False when a stop signal interrupted a point (its checkpoint resumes on the next run).
    public var completed: Bool
}

/// Trains the points of array task `request.task`, each into `run-NNN/model.h5` (checkpoint
/// `run-NNN/model.checkpoint.h5`, metrics `run-NNN/model.metrics.json`). A finished point
/// is left alone, an interrupted one resumes (the training's own rerun rules); a point that
/// fails is recorded in `run-NNN/status.json` and the next one runs. Collective.
public func runSweepTask(_ ctx: RunContext, _ request: SweepTaskRequest) throws -> SweepTaskOutcome {
    let plan = try SweepPlanFile.read(request.outDir)
    let tasks = (plan.points + plan.pointsPerTask - 1) / plan.pointsPerTask
    guard (0..<tasks).contains(request.task) else {
        throw DonutIOError(file: SweepPlanFile.path(request.outDir),
                           "the plan has \(plan.points) point(s), \(plan.pointsPerTask) per task: tasks 0…\(tasks - 1) (got task \(request.task))")
    }
    let first = request.task * plan.pointsPerTask
    let points = first ..< min(first + plan.pointsPerTask, plan.points)
    var outcome = SweepTaskOutcome(points: points, trained: 0, alreadyDone: 0, failed: [], completed: true)
    for i in points {
        let folder = SweepPlanLayout.runFolder(request.outDir, i)
        ctx.log("sweep point \(i) (task \(request.task), points \(points.lowerBound)…\(points.upperBound - 1)): \(folder)")
        var state = SweepPointStatus(state: "done", reason: "")
        do {
            let preset = try ConfigFile.load(TrainingConfig.self, path: folder + "/train.yaml")
            var train = TrainRequest(scans: request.scans, libraryPath: request.libraryPath, mix: request.mix,
                                     supervised: request.supervised, training: preset, outPath: folder + "/model.h5",
                                     force: request.force, checkpointPath: folder + "/model.checkpoint.h5", resume: nil)
            train.syncBatchNorm = request.syncBatchNorm
            train.shouldStop = request.shouldStop
            let trained = try trainModel(ctx, train)
            if !trained.completed { outcome.completed = false; return outcome }
            if trained.alreadyDone { outcome.alreadyDone += 1 } else { outcome.trained += 1 }
        } catch {
            state = SweepPointStatus(state: "failed", reason: "\(error)")
            outcome.failed.append((i, "\(error)"))
            ctx.log("sweep point \(i): FAILED: \(error)")
        }
        // The point's status, rewritten only when it changes (a rerun that changes nothing writes nothing).
        if ctx.comm.isRoot, (try? SweepPointStatus.read(folder: folder)) != state {
            do { try state.write(folder: folder) } catch { ctx.log("sweep point \(i): warning: \(error)") }
        }
    }
    return outcome
}

/// Ranks the finished points of the sweep in `outDir` by `metric` and writes summary.csv,
/// summary.md and one PNG per swept key there (`SweepSummary.write`); returns the summary.
public func summariseSweep(outDir: String, metric: String = SweepSummary.defaultMetric, force: Bool = false) throws -> (summary: SweepSummary, files: [String]) {
    let summary = try SweepSummary.collect(outDir: outDir, metric: metric)
    return (summary, try summary.write(outDir: outDir, force: force))
}
