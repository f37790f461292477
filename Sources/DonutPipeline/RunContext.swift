import Foundation
import DonutMPI
import DonutCore

/// What every pipeline that touches files or ranks shares: the MPI world, logging (rank 0,
/// stderr; results go to files), and the rule that one failing rank ends the whole job
/// with a message (MPI_Abort), never a hang (the command does the ending, see `donut`).
public struct RunContext {
    public let comm: Communicator
    public let started = Date()

    public init(comm: Communicator) { self.comm = comm }

    /// A line on stderr from rank 0, prefixed with the elapsed time.
    public func log(_ message: @autoclosure () -> String) {
        guard comm.isRoot else { return }
        let t = Date().timeIntervalSince(started)
        FileHandle.standardError.write(Data(String(format: "[%7.2fs] ", t).appending(message() + "\n").utf8))
    }

    /// A progress reporter that logs at most every ~2 s and at the end.
    public func progress(_ what: String) -> (Int, Int) -> Void {
        var last = Date.distantPast
        return { done, total in
            guard Date().timeIntervalSince(last) > 2 || done == total else { return }
            last = Date()
            log("\(what): \(done)/\(total) (\(Int(100 * Double(done) / Double(max(total, 1))))%)")
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
