import Foundation
import DonutCore
import DonutIO

/// The folder of grid point `i` inside a sweep's output folder.
public func sweepRunFolder(_ outDir: String, _ i: Int) -> String {
    URL(fileURLWithPath: outDir).appendingPathComponent(String(format: "run-%03d", i)).path
}

/// Writes one training preset per grid point of the sweep definition `definition` into
/// `<outDir>/run-NNN/train.yaml` and `<outDir>/points.tsv`; every point is checked by the
/// strict loader before anything is written. Returns the number of points.
public func planSweep(definition: String, outDir: String, force: Bool) throws -> Int {
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
    return points.count
}

/// The runs of a sweep ranked by their last validation loss (from run-NNN/model.loss.csv),
/// as tab-separated lines (header first), plus a note on runs without a finished log.
public func summariseSweep(outDir: String) throws -> String {
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
    var out = [header.joined(separator: "\t") + "\tvalidation_loss\tphysics_mae\tsteps"]
    for r in rows.sorted(by: { $0.validation < $1.validation }) { out.append(r.text) }
    if pending > 0 { out.append("(\(pending) run(s) without a finished loss log)") }
    return out.joined(separator: "\n")
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
