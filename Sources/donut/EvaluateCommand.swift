import ArgumentParser
import Foundation
import DonutPhysics
import DonutCore
import DonutIO

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy of result maps against a simulated scan's ground truth (RMSE per map, crosstalk).",
        discussion: "Prints one row per result file: RMSE of strain, tilt_lr, tilt_ud (and thickness when both have it), |r| crosstalk, valid frames.")

    @Option(help: ArgumentHelp("Scan with /entry/ground_truth (from `donut simulate scan`).", valueName: "scan.h5")) var scan: String
    @Argument(help: ArgumentHelp("Result files, optionally labelled as LABEL=maps.h5.", valueName: "maps.h5")) var maps: [String]

    func validate() throws { guard !maps.isEmpty else { throw ValidationError("give at least one result file") } }

    func run() throws {
        let file = try H5File.open(scan)
        defer { try? file.close() }
        var truth: [String: [Double]] = [:]
        for name in ["strain", "tilt_lr", "tilt_ud", "thickness"] where file.exists("/entry/ground_truth/\(name)") {
            truth[name] = try file.readDataset("/entry/ground_truth/\(name)", as: Double.self)
        }
        guard !truth.isEmpty else { throw DonutIOError.group(scan, "/entry/ground_truth", "not found: the scan has no ground truth") }
        var rows: [(String, FrameResults)] = []
        for item in maps {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            let (label, path) = parts.count == 2 ? (parts[0], parts[1]) : (URL(fileURLWithPath: item).lastPathComponent, item)
            let r = try ResultMapsReader.read(path: path).results
            guard r.strain.count == truth["strain"]?.count else {
                throw DonutIOError(file: path, object: "/entry/result/strain", "\(r.strain.count) frames, the scan's ground truth has \(truth["strain"]?.count ?? 0)")
            }
            rows.append((label, r))
        }
        print(accuracyTable(title: "accuracy against \(scan)", rows: rows, truth: truth))
    }
}
