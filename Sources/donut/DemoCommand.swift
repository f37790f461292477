import ArgumentParser
import Foundation
import DonutPhysics
import DonutCore
import DonutIO

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the whole chain on a built-in example: library, phantom scan, correlation fit, accuracy table.",
        discussion: """
        Simulates a box-model library over the published ranges, a scan of the published
        `paper` phantom at 7 photons peak with Poisson noise, fits it with the correlation
        method, trains DONUT on the scan's own frames (no labels) for --epochs, infers, writes
        NeXus maps and PNG quick-looks into --out-dir, and prints the error of each method's
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

    func run() throws {
        try RunContext.run { ctx in
            var cfg = try config.load()
            cfg.library.strain = steps; cfg.library.tiltLR = steps; cfg.library.tiltUD = steps
            let kind = Phantom(rawValue: phantom)!
            if kind == .thickness, cfg.library.thickness < 2 { cfg.library.thickness = 9 }
            try cfg.validate()
            var folder = outDir ?? ""
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
            guard problem.isEmpty else { throw ValidationError(problem) }
            let library = "\(folder)/library.h5", scan = "\(folder)/scan.h5", maps = "\(folder)/fit.h5"
            ctx.log("demo: config \(config.sourceDescription), library \(LibraryGrid(config: cfg).shape.map(String.init).joined(separator: "×")), phantom \(kind.rawValue) 64×64 at \(cfg.noise.peakPhotons) photons, files in \(folder)/")
            try writeLibrary(ctx, config: cfg, path: library, force: force, profile: .box)
            try writeScan(ctx, config: cfg, phantom: kind, rows: 64, cols: 64, seed: seed, noise: true, profile: .box,
                          path: scan, force: force)
            let t0 = Date()
            try fitScan(ctx, scan: ScanInput(path: scan), libraryPath: library,
                        outputs: MapOutputs(path: maps, force: force, quickLooks: true), batch: 256)
            let fitSeconds = Date().timeIntervalSince(t0)
            var donutMaps: String?, trainSeconds = 0.0
            if epochs > 0 {
                guard ctx.comm.size == 1 else { throw ValidationError("the demo trains DONUT on one rank; run it without mpirun or with --epochs 0") }
                var train = try training.map { try ConfigFile.load(TrainingConfig.self, path: $0) } ?? .donutPaper
                train.schedule.epochs = epochs
                let model = "\(folder)/donut-model.h5"
                let t1 = Date()
                _ = try trainModel(ctx, TrainRequest(scans: [ScanInput(path: scan)], libraryPath: nil, mix: 0,
                                                    supervised: false, training: train, outPath: model, force: force,
                                                    checkpointPath: "\(folder)/donut-model.checkpoint.h5", resume: nil))
                trainSeconds = Date().timeIntervalSince(t1)
                donutMaps = "\(folder)/donut.h5"
                try inferScan(ctx, modelPath: model, scan: ScanInput(path: scan),
                              outputs: MapOutputs(path: donutMaps!, force: force, quickLooks: true), batch: 256, mcSamples: 0)
            }
            guard ctx.comm.isRoot else { return }
            let result = try ResultMapsReader.read(path: maps).results
            let reader = try ScanReader(path: scan, config: cfg)
            guard let truth = try reader.groundTruth() else { throw ValidationError("\(scan) has no ground truth") }
            try reader.close()
            var rows = [("correlation fit", result)]
            if let donutMaps { rows.append(("DONUT (no labels)", try ResultMapsReader.read(path: donutMaps).results)) }
            print(accuracyTable(title: "Donut demo: \(kind.rawValue) phantom 64×64, \(cfg.noise.peakPhotons) photons peak, library \(steps)³ box model",
                                rows: rows, truth: truth))
            print(String(format: "fit: %.1f s for 4096 frames on %d rank(s)%@; maps in %@/ (+ PNG quick-looks)", fitSeconds, ctx.comm.size,
                         donutMaps == nil ? "" : String(format: "; DONUT: %d epochs trained in %.0f s", epochs, trainSeconds), folder))
        }
    }
}

/// A plain-text table of RMSE per map and crosstalk, one row per method.
func accuracyTable(title: String, rows: [(String, FrameResults)], truth: [String: [Double]]) -> String {
    guard let ts = truth["strain"], let tw = truth["tilt_lr"], let tc = truth["tilt_ud"] else { return "no ground truth" }
    var lines = [title,
                 "method             RMSE strain   RMSE tilt_lr   RMSE tilt_ud   |r| tilt_lr err~strain   |r| strain err~tilt_lr   valid",
                 "                                 (deg)          (deg)"]
    let thickness = truth["thickness"].flatMap { t in rows.contains { $0.1.thicknessA != nil } && standardDeviation(t) > 0 ? t : nil }
    if thickness != nil { lines[1] += "   RMSE thickness (Å)" }
    for (name, r) in rows {
        let valid = r.valid.reduce(0) { $0 + Int($1) }
        defer { if let t = thickness { lines[lines.count - 1] += String(format: "   %.2f", r.thicknessA.map { MapMetrics.rmse($0, t) } ?? .nan) } }
        lines.append(name.padding(toLength: 19, withPad: " ", startingAt: 0) + String(format: "%-13.3e %-14.3e %-14.3e %-24.3f %-24.3f %d/%d",
                            MapMetrics.rmse(r.strain, ts), MapMetrics.rmse(r.tiltLRDeg, tw), MapMetrics.rmse(r.tiltUDDeg, tc),
                            MapMetrics.crosstalk(errorOf: r.tiltLRDeg, truth: tw, against: ts),
                            MapMetrics.crosstalk(errorOf: r.strain, truth: ts, against: tw), valid, r.valid.count))
    }
    lines.append(String(format: "ground truth spread (std): strain %.3e, tilt_lr %.3e deg, tilt_ud %.3e deg",
                        standardDeviation(ts), standardDeviation(tw), standardDeviation(tc)))
    return lines.joined(separator: "\n")
}

func standardDeviation(_ v: [Double]) -> Double {
    let m = v.reduce(0, +) / Double(v.count)
    return (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count)).squareRoot()
}
