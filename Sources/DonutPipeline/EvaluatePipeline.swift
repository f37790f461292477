import Foundation
import DonutCore
import DonutIO

/// The accuracy of result maps against a simulated scan's ground truth (`donut evaluate`).
public struct EvaluateRequest {
    /// Scan with /entry/ground_truth (from `donut simulate scan`).
    public var scanPath: String
    /// (label, result file) per row.
    public var results: [(label: String, path: String)]

    public init(scanPath: String, results: [(label: String, path: String)]) { self.scanPath = scanPath; self.results = results }
}

/// The accuracy table (RMSE per map, crosstalk, valid frames) of every result against the truth.
public func evaluate(_ request: EvaluateRequest) throws -> String {
    let truth = try groundTruth(scanPath: request.scanPath)
    var rows: [(String, FrameResults)] = []
    for (label, path) in request.results {
        let r = try ResultMapsReader.read(path: path).results
        guard r.strain.count == truth["strain"]?.count else {
            throw DonutIOError(file: path, object: "/entry/result/strain", "\(r.strain.count) frames, the scan's ground truth has \(truth["strain"]?.count ?? 0)")
        }
        rows.append((label, r))
    }
    return accuracyTable(title: "accuracy against \(request.scanPath)", rows: rows, truth: truth)
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

/// Population standard deviation.
func standardDeviation(_ v: [Double]) -> Double {
    let m = v.reduce(0, +) / Double(v.count)
    return (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count)).squareRoot()
}
