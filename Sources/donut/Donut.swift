import ArgumentParser
import DonutBLAS

struct Donut: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "donut",
        abstract: "Strain, tilt and thickness maps from scanning X-ray nanodiffraction (SXDM).",
        subcommands: [Simulate.self, Fit.self, Train.self, Infer.self, Reprocess.self, Refine.self, Evaluate.self, Sweep.self, Demo.self, Bench.self])
}

@main
enum Main {
    static func main() {
        OpenBLASCore.reexecWithBetterCoreIfNeeded()
        Donut.main()
    }
}
