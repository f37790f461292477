import ArgumentParser
import Foundation
import DonutMPI
import DonutPipeline

extension RunContext {
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
}
