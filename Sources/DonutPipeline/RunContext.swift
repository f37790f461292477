import Foundation
import DonutMPI
import DonutCore

/// What every pipeline that touches files or ranks shares: the MPI world, logging (rank 0,
/// stderr; results go to files), and the rule that one failing rank ends the whole job
/// with a message (MPI_Abort), never a hang (the command does the ending, see `donut`).
public struct RunContext {
    public let comm: Communicator
    public let started = Date()
    /// No progress output (`--quiet`); log lines, warnings and errors still print.
    public var quiet: Bool
    /// Log the details of a run too (`--verbose`): the network plan of train and infer.
    public var verbose: Bool

    public init(comm: Communicator, quiet: Bool = false, verbose: Bool = false) {
        self.comm = comm; self.quiet = quiet; self.verbose = verbose
    }

    /// A line on stderr from rank 0, prefixed with the elapsed time (clearing a progress bar
    /// drawn in place first; the bar redraws at its next update).
    public func log(_ message: @autoclosure () -> String) {
        guard comm.isRoot else { return }
        let t = Date().timeIntervalSince(started)
        let clear = ProgressMeter.barOnScreen ? "\r\u{1B}[K" : ""
        ProgressMeter.barOnScreen = false
        FileHandle.standardError.write(Data((clear + String(format: "[%7.2fs] ", t)).appending(message() + "\n").utf8))
    }

    /// At `--verbose`: the kernels each conv layer of `network` runs, as planned
    /// (`NetworkPlan.description`, what `donut bench … --show-plan` prints).
    public func logPlan<T>(of network: DonutNetwork<T>) {
        guard verbose, let plan = network.networkPlan else { return }
        log("\(plan)")
    }

    /// The progress of a phase of `total` items (global count), of which this rank does
    /// `share` (default: all of them); `already` were done before (a resumed run).
    public func progress(_ what: String, total: Int, share: Int? = nil, already: Int = 0, unit: String) -> ProgressMeter {
        ProgressMeter(what: what, total: total, share: share, already: already, unit: unit,
                 mode: ProgressMeter.mode(quiet: quiet, isRoot: comm.isRoot), commandStart: started)
    }

    /// The same as a callback `(done, share)` for the loops of DonutCore (correlation fit,
    /// refinement): the ProgressMeter is made at the first call, when the share is known.
    /// `total`: the global count when this rank does only a share of it.
    public func progressCallback(_ what: String, total: Int? = nil, unit: String) -> (Int, Int) -> Void {
        var p: ProgressMeter?
        return { done, share in
            if p == nil { p = progress(what, total: total ?? share, share: share, unit: unit) }
            p!.update(done)
        }
    }

    /// The provenance of a result made now by this command.
    public func provenance(method: String, config: String, inputs: [Provenance.Input], modelID: String) -> Provenance {
        Provenance(version: donutVersion, date: ISO8601DateFormatter().string(from: Date()), method: method,
                   commandLine: CommandLine.arguments.joined(separator: " "), configJSON: config,
                   inputs: inputs, modelID: modelID)
    }

    /// Runs a phase that may fail on some ranks only (reads, local compute), then agrees:
    /// if any rank failed, every rank throws the lowest failing rank's message, so no rank
    /// is left waiting in the next collective. One allreduce (+ one broadcast on failure).
    public func agreeing<T>(_ body: () throws -> T) throws -> T {
        var result: T?, failure: Error?
        do { result = try body() } catch { failure = error }
        guard comm.size > 1 else {
            if let failure { throw failure }
            return result!
        }
        let first = comm.allreduceMin(failure == nil ? Double(comm.size) : Double(comm.rank))
        guard first < Double(comm.size) else { return result! }
        let message = comm.broadcast(failure.map { "\($0)" } ?? "", root: Int(first))
        let code = comm.broadcast([Double(failure.map { DonutExitCode(for: $0) }?.rawValue ?? 0)], root: Int(first))[0]
        if let failure, Int(first) == comm.rank { throw failure }
        throw RankFailure(message: message, code: DonutExitCode(rawValue: Int32(code)) ?? .internalError)
    }
}

/// An error every rank throws together after a rank-local phase failed somewhere: the
/// message is the first failing rank's.
public struct RankFailure: Error, CustomStringConvertible {
    public var message: String
    /// The exit code the failing rank's error maps to.
    public var code: DonutExitCode = .internalError
    public var description: String { message }
}

/// A request a pipeline cannot carry out as given (no usable scan, no config, …): the
/// message says what to give instead.
public struct PipelineError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// `path` relative to the folder of `output` ("scan.h5", "../raw/scan.h5") when the two
/// share a folder below the root, else absolute: provenance that survives moving the
/// whole project folder.
public func relativePath(_ path: String, from output: String) -> String {
    let target = URL(fileURLWithPath: path).standardizedFileURL.pathComponents
    let base = URL(fileURLWithPath: output).standardizedFileURL.deletingLastPathComponent().pathComponents
    var common = 0
    while common < min(target.count, base.count), target[common] == base[common] { common += 1 }
    guard common > 1 else { return URL(fileURLWithPath: path).standardizedFileURL.path }   // only "/" in common
    let ups = [String](repeating: "..", count: base.count - common)
    return (ups + target[common...]).joined(separator: "/")
}
