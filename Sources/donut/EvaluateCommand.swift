import ArgumentParser
import Foundation
import DonutPipeline

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy of result maps against a simulated scan's ground truth (RMSE per map, crosstalk).",
        discussion: "Prints one row per result file: RMSE of strain, tilt_lr, tilt_ud (and thickness when both have it), |r| crosstalk, valid frames.")

    @Option(help: ArgumentHelp("Scan with /entry/ground_truth (from `donut simulate scan`).", valueName: "scan.h5")) var scan: String
    @Argument(help: ArgumentHelp("Result files, optionally labelled as LABEL=maps.h5.", valueName: "maps.h5")) var maps: [String]

    func validate() throws { guard !maps.isEmpty else { throw ValidationError("give at least one result file") } }

    func run() throws {
        let results = maps.map { item -> (label: String, path: String) in
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            return parts.count == 2 ? (parts[0], parts[1]) : (URL(fileURLWithPath: item).lastPathComponent, item)
        }
        print(try evaluate(EvaluateRequest(scanPath: scan, results: results)))
    }
}
