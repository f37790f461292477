import DonutPhysics
import DonutCore
import DonutIO

/// How a `donut` command ended, as its exit status: one table for every command and
/// Slurm template (slurm/README.md, README). A wrapper decides from it alone whether to
/// resubmit (75), fix the input (2), look at the failed scans (3) or report a bug (1).
public enum DonutExitCode: Int32, CaseIterable, Sendable {
    /// Done (also "already done, nothing to do").
    case success = 0
    /// An internal error: a bug, or a failure Donut cannot attribute to its input.
    case internalError = 1
    /// Bad input or usage, refused before the long computation: a missing or malformed
    /// file, dataset or config key, an invalid option.
    case badInput = 2
    /// Some scans of a manifest failed (`reprocess`, `refine`); the others are done.
    case scansFailed = 3
    /// Stopped by SIGTERM/SIGUSR1 after writing a checkpoint: resume with `--resume`
    /// (EX_TEMPFAIL of sysexits.h).
    case preempted = 75

    /// The code for an error that ended a command: file, config and request errors are
    /// bad input; an error agreed on from another rank keeps that rank's code.
    public init(for error: Error) {
        switch error {
        case let failure as RankFailure: self = failure.code
        case is DonutIOError, is ConfigError, is ConfigFileError, is QuickLookError, is PipelineError: self = .badInput
        default: self = .internalError
        }
    }
}
