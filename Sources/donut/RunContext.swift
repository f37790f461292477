import ArgumentParser
import Foundation
import DonutMPI
import DonutCore
import DonutIO

/// What every command that touches files or ranks shares: the MPI world, logging (rank 0,
/// stderr; results go to files), and the rule that one failing rank ends the whole job
/// with a message (MPI_Abort), never a hang.
struct RunContext {
    let comm: Communicator
    let started = Date()

    /// Runs `body` with the MPI world. Errors: on one rank, a clean non-zero exit; on
    /// several, MPI_Abort from the failing rank with its message.
    static func run(_ body: (RunContext) throws -> Void) throws {
        let comm = Communicator.world
        let context = RunContext(comm: comm)
        do {
            if let message = slurmWorldSizeMismatch(worldSize: comm.size) { throw ValidationError(message) }
            try body(context)
        } catch {
            let message = "\(error)"
            if comm.size > 1 { comm.abort(message) }
            FileHandle.standardError.write(Data("donut: error: \(message)\n".utf8))
            comm.finalize()
            throw ExitCode.failure
        }
        comm.finalize()
    }

    /// A line on stderr from rank 0, prefixed with the elapsed time.
    func log(_ message: @autoclosure () -> String) {
        guard comm.isRoot else { return }
        let t = Date().timeIntervalSince(started)
        FileHandle.standardError.write(Data(String(format: "[%7.2fs] ", t).appending(message() + "\n").utf8))
    }

    /// A progress reporter that logs at most every ~2 s and at the end.
    func progress(_ what: String) -> (Int, Int) -> Void {
        var last = Date.distantPast
        return { done, total in
            guard Date().timeIntervalSince(last) > 2 || done == total else { return }
            last = Date()
            log("\(what): \(done)/\(total) (\(Int(100 * Double(done) / Double(max(total, 1))))%)")
        }
    }

    /// The provenance of a result made now by this command.
    func provenance(method: String, config: String, inputs: [Provenance.Input], modelID: String) -> Provenance {
        Provenance(version: donutVersion, date: ISO8601DateFormatter().string(from: Date()), method: method,
                   commandLine: CommandLine.arguments.joined(separator: " "), configJSON: config,
                   inputs: inputs, modelID: modelID)
    }
}

/// `path` relative to the folder of `output` ("scan.h5", "../raw/scan.h5") when the two
/// share a folder below the root, else absolute: provenance that survives moving the
/// whole project folder.
func relativePath(_ path: String, from output: String) -> String {
    let target = URL(fileURLWithPath: path).standardizedFileURL.pathComponents
    let base = URL(fileURLWithPath: output).standardizedFileURL.deletingLastPathComponent().pathComponents
    var common = 0
    while common < min(target.count, base.count), target[common] == base[common] { common += 1 }
    guard common > 1 else { return URL(fileURLWithPath: path).standardizedFileURL.path }   // only "/" in common
    let ups = [String](repeating: "..", count: base.count - common)
    return (ups + target[common...]).joined(separator: "/")
}
