import Foundation
import DonutPhysics
import DonutCore
import DonutIO

/// The whole chain on a built-in example (`donut demo`): library, phantom scan,
/// correlation fit, DONUT training and inference, accuracy against the ground truth.
public struct DemoRequest {
    /// Instrument and sample; its library steps are replaced by `steps` per axis.
    public var config: DonutConfig
    /// Where `config` came from (for the log).
    public var configSource: String
    /// Folder for the demo's files; nil: a new `donut-demo-<time>` folder.
    public var outDir: String?
    /// Library steps per axis.
    public var steps = 21
    public var phantom: Phantom = .paper
    /// Seed of the scan's noise.
    public var seed: UInt64 = 1
    /// DONUT training epochs over the scan's frames (0: skip DONUT).
    public var epochs = 4
    /// Training preset; nil: the built-in DONUT paper preset.
    public var training: TrainingConfig?
    /// Overwrite files in an existing folder.
    public var force = false

    public init(config: DonutConfig, configSource: String) { self.config = config; self.configSource = configSource }
}

/// Runs the demo; returns the report to print (rank 0; nil on the other ranks). Collective.
public func runDemo(_ ctx: RunContext, _ request: DemoRequest) throws -> String? {
    var cfg = request.config
    let steps = request.steps, epochs = request.epochs, force = request.force, seed = request.seed
    cfg.library.strain = steps; cfg.library.tiltLR = steps; cfg.library.tiltUD = steps
    let kind = request.phantom
    if kind == .thickness, cfg.library.thickness < 2 { cfg.library.thickness = 9 }
    try cfg.validate()
    var folder = request.outDir ?? ""
    if ctx.comm.isRoot && folder.isEmpty {
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        folder = "donut-demo-\(stamp)"
    }
    folder = ctx.comm.broadcast(folder)
    var problem = ""
    if ctx.comm.isRoot {
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) } catch {
            problem = "cannot create folder '\(folder)': \(error.localizedDescription)"
        }
    }
    problem = ctx.comm.broadcast(problem)
    guard problem.isEmpty else { throw PipelineError(problem) }
    let library = "\(folder)/library.h5", scan = "\(folder)/scan.h5", maps = "\(folder)/fit.h5"
    ctx.log("demo: config \(request.configSource), library \(LibraryGrid(config: cfg).shape.map(String.init).joined(separator: "×")), phantom \(kind.rawValue) 64×64 at \(cfg.noise.peakPhotons) photons, files in \(folder)/")
    var libraryRequest = LibraryRequest(config: cfg, outPath: library)
    libraryRequest.force = force
    try simulateLibrary(ctx, libraryRequest)
    var scanRequest = ScanSimulationRequest(config: cfg, outPath: scan)
    scanRequest.phantom = kind; scanRequest.seed = seed; scanRequest.force = force
    try simulateScan(ctx, scanRequest)
    let t0 = Date()
    try fitScan(ctx, FitRequest(scan: ScanInput(path: scan), libraryPath: library,
                                outputs: MapOutputs(path: maps, force: force, quickLooks: true)))
    let fitSeconds = Date().timeIntervalSince(t0)
    var donutMaps: String?, trainSeconds = 0.0
    if epochs > 0 {
        guard ctx.comm.size == 1 else { throw PipelineError("the demo trains DONUT on one rank; run it without mpirun or with --epochs 0") }
        var train = request.training ?? .donutPaper
        train.schedule.epochs = epochs
        let model = "\(folder)/donut-model.h5"
        let t1 = Date()
        _ = try trainModel(ctx, TrainRequest(scans: [ScanInput(path: scan)], training: train, outPath: model, force: force))
        trainSeconds = Date().timeIntervalSince(t1)
        donutMaps = "\(folder)/donut.h5"
        try inferScan(ctx, InferRequest(modelPath: model, scan: ScanInput(path: scan),
                                        outputs: MapOutputs(path: donutMaps!, force: force, quickLooks: true)))
    }
    guard ctx.comm.isRoot else { return nil }
    let truth = try groundTruth(scanPath: scan)
    var rows = [("correlation fit", try ResultMapsReader.read(path: maps).results)]
    if let donutMaps { rows.append(("DONUT (no labels)", try ResultMapsReader.read(path: donutMaps).results)) }
    let table = accuracyTable(title: "Donut demo: \(kind.rawValue) phantom 64×64, \(cfg.noise.peakPhotons) photons peak, library \(steps)³ box model",
                              rows: rows, truth: truth)
    return table + "\n" + String(format: "fit: %.1f s for 4096 frames on %d rank(s)%@; maps in %@/ (+ PNG quick-looks)", fitSeconds, ctx.comm.size,
                                 donutMaps == nil ? "" : String(format: "; DONUT: %d epochs trained in %.0f s", epochs, trainSeconds), folder)
}
