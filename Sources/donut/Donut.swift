import ArgumentParser
import Foundation
import DonutBLAS
import DonutPipeline

struct Donut: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "donut",
        abstract: "Strain, tilt and thickness maps from scanning X-ray nanodiffraction (SXDM).",
        subcommands: [Simulate.self, Inspect.self, Fit.self, Train.self, Infer.self, Reprocess.self, Refine.self, Evaluate.self, Plot.self, Sweep.self, Demo.self, Bench.self])
}

@main
enum Main {
    static func main() {
        // train, refine and sweep turn SIGTERM/SIGUSR1 into a stop request (exit 75): the
        // handlers are installed before main (CDonutSignals), and the request survives the
        // OpenBLAS re-exec (blocked, re-raised as pending, received by the new image).
        StopSignal.preservedAcrossExec { OpenBLASCore.reexecWithBetterCoreIfNeeded() }
        if let command = CommandLine.arguments.dropFirst().first, ["train", "refine", "sweep"].contains(command) {
            StopSignal.install()   // also where the executable has no .preinit_array support
        }
        do {
            var command = try Donut.parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    /// Ends the process for `error` with the code of `DonutExitCode` and the one-line
    /// reason as the last line on stderr (`RunContext.run` has already printed it for the
    /// commands that run through it and throws only an `ExitCode`).
    static func exit(withError error: Error) -> Never {
        if error is ExitCode { Donut.exit(withError: error) }
        let parserCode = Donut.exitCode(for: error)
        if parserCode == .success { Donut.exit(withError: error) }   // --help, --version
        if parserCode == .validationFailure {
            // A usage error: the usage first, the reason last.
            let reason = Donut.message(for: error)
            let usage = Donut.fullMessage(for: error).replacingOccurrences(of: "Error: \(reason)\n", with: "")
            FileHandle.standardError.write(Data("\(usage)\ndonut: error: \(reason)\n".utf8))
            Foundation.exit(DonutExitCode.badInput.rawValue)
        }
        FileHandle.standardError.write(Data("donut: error: \(error)\n".utf8))
        Foundation.exit(DonutExitCode(for: error).rawValue)
    }
}
