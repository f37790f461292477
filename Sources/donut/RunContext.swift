import ArgumentParser
import Foundation
import DonutMPI
import DonutIO
import DonutPipeline

extension RunContext {
    /// How long a failing rank waits for the others to fail too (an error agreed on by
    /// every rank) before it ends the job with MPI_Abort (an error of its own).
    static let failureHandshakeSeconds = 10.0

    /// Runs `body` with the MPI world. On an error, the exit code is `DonutExitCode(for:)`'s
    /// and rank 0's one-line reason is the last line on stderr: when every rank failed
    /// (rank-local failures are agreed on, `RunContext.agreeing`), all ranks end cleanly
    /// (no MPI_Abort banner); a rank that failed alone ends the job with MPI_Abort.
    static func run(quiet: Bool = false, verbose: Bool = false, _ body: (RunContext) throws -> Void) throws {
        let comm = Communicator.world
        let context = RunContext(comm: comm, quiet: quiet, verbose: verbose)
        // Its own channel, so the failure handshake never meets a pending collective.
        let failures = comm.size > 1 ? comm.duplicate() : nil
        do {
            if let message = slurmWorldSizeMismatch(worldSize: comm.size) { throw ValidationError(message) }
            try body(context)
        } catch {
            let code: DonutExitCode = error is ValidationError ? .badInput : DonutExitCode(for: error)
            let reason = "\(error)"
            if let failures, !failures.barrier(within: failureHandshakeSeconds) {
                comm.abort(reason, code: code.rawValue)
            }
            if comm.isRoot { FileHandle.standardError.write(Data("donut: error: \(reason)\n".utf8)) }
            finalize(comm)
            throw ExitCode(code.rawValue)
        }
        finalize(comm)
    }

    /// MPI_Finalize, unless an HDF5 file could not be closed (a full disk): HDF5 would crash
    /// finalizing it (`H5File.hasFailedClose`); the process then ends without it.
    private static func finalize(_ comm: Communicator) {
        guard !H5File.hasFailedClose else { return }
        comm.finalize()
    }
}

extension ReprocessOutcome {
    /// Exit 3 (some scans failed, the others are done), with the reason as the last line
    /// on stderr (rank 0).
    func failure() -> ExitCode {
        if Communicator.world.isRoot {
            let reason = "\(failed) of \(done + skipped + failed) scan(s) failed (the others are done); reasons in \(statusPath)"
            FileHandle.standardError.write(Data("donut: error: \(reason)\n".utf8))
        }
        return ExitCode(DonutExitCode.scansFailed.rawValue)
    }
}
