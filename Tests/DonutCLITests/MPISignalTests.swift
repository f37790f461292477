import XCTest
import DonutIO

/// SIGTERM under `mpirun -np 2` (docs/training.md, "Signals under mpirun"): sent to the job
/// script of the Slurm templates (slurm/common.sh passes it on as SIGUSR1) it ends with 75
/// and a checkpoint; sent to mpirun itself, Open MPI 4.1 ends with 1 whatever the ranks
/// return, but the ranks still write the checkpoint in the grace `odls_base_sigkill_timeout`
/// gives them. Either way the same command again resumes it and finishes.
final class MPISignalTests: XCTestCase {
    var dir: URL!
    static let commonScript = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("slurm/common.sh")

    override func setUpWithError() throws {
        dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--out", "scan.h5"], in: dir), "scan")
        // 36 training frames, batch 2 per rank on 2 ranks: 9 steps per epoch, 900 in all (10–30 s).
        _ = try writeTinyTrainingPreset(in: dir, name: "long.yaml", batch: 2, epochs: 100, checkpointEvery: 1000, seed: 7)
    }

    let train = ["train", "--scan", "scan.h5", "--training", "long.yaml", "--out", "t.h5"]

    /// Starts `executable arguments` in `dir` with no signal blocked (as a shell or Slurm would),
    /// waits until both ranks (children of the mpirun found under `pid` by `mpirunPID`) catch
    /// SIGTERM and SIGUSR1, lets them train `after` seconds, sends SIGTERM to `target(pid)`.
    func runAndTerminate(_ executable: String, _ arguments: [String], environment: [String: String] = [:], after: Double = 2,
                         mpirunPID: @escaping (Int32) -> Int32?, target: @escaping (Int32, Int32) -> Int32) throws -> CommandResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable); p.arguments = arguments
        p.environment = donutProcess([], ranks: 2, in: dir, environment: environment).environment
        p.currentDirectoryURL = dir
        let (result, timedOut) = try runProcess(p, timeout: 240) { process in
            var mpirun: Int32?
            for _ in 0..<3000 {
                mpirun = mpirunPID(process.processIdentifier)
                if mpirun != nil { break }
                usleep(20_000)
            }
            guard let mpirun else { return }
            let ranks = waitForStopHandlers(mpirun, ranks: 2)
            XCTAssertEqual(ranks.count, 2, "two ranks")
            Thread.sleep(forTimeInterval: after)
            kill(target(process.processIdentifier, mpirun), SIGTERM)
        }
        XCTAssertFalse(timedOut, "hang:\n\(result.all)")
        return result
    }

    /// The checkpoint after a stop mid-training: readable, short of the end; no model yet.
    func assertStoppedWithCheckpoint(_ r: CommandResult, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssert(r.stderr.contains("stopped by signal after step"), "the ranks checkpointed:\n\(r.all)", file: file, line: line)
        let checkpoint = try CheckpointFile.read(path: dir.appendingPathComponent("t.checkpoint.h5").path)
        XCTAssertGreaterThan(checkpoint.step, 0, file: file, line: line)
        XCTAssertLessThan(checkpoint.step, 900, "stopped early", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("t.h5").path), "no model yet", file: file, line: line)
        let partials = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".partial") }
        XCTAssertEqual(partials, [], file: file, line: line)
    }

    /// The same command again finds the checkpoint (run records), resumes it and finishes.
    func assertResumesAndFinishes(file: StaticString = #filePath, line: UInt = #line) throws {
        let again = try donut(train, ranks: 2, in: dir, timeout: 240)
        XCTAssertEqual(again.status, 0, again.all, file: file, line: line)
        XCTAssert(again.stderr.contains("resumed from"), again.stderr, file: file, line: line)
        XCTAssertEqual(try CheckpointFile.read(path: dir.appendingPathComponent("t.h5").path).step, 900, file: file, line: line)
    }

    /// SIGTERM to the job script (Slurm ending the job, `scancel --batch`, a site's preemption
    /// script) running `donut_mpi train …; donut_requeue_or_exit` of slurm/common.sh (as
    /// slurm/train.sbatch does) with DONUT_LAUNCH=mpirun: passed on as SIGUSR1, exit 75, a
    /// checkpoint — and no requeue (Slurm is ending the job: a user's scancel must not come
    /// back), the last line says to resubmit; the same command then resumes.
    func testSigtermToTheTemplateShellGives75AndAResumableCheckpoint() throws {
        let script = """
            source "$1"; shift
            DONUT_STAGE=train DONUT=\(donutBinary.path) DONUT_LAUNCH="mpirun --oversubscribe -np 2"
            scontrol() { echo "scontrol $*" >> scontrol-calls; }
            donut_mpi "$@"
            donut_requeue_or_exit
            """
        let r = try runAndTerminate("/bin/bash", ["-c", script, "job", Self.commonScript.path] + train,
                                    mpirunPID: { shell in childProcesses(of: shell).first { processName($0) == "mpirun" } },
                                    target: { shell, _ in shell })
        XCTAssertEqual(r.status, 75, "the documented code of a preempted training:\n\(r.all)")
        XCTAssert(lastLine(r.stderr).contains("exit 75: preempted: SIGTERM") && lastLine(r.stderr).contains("not requeued"), lastLine(r.stderr))
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("scontrol-calls").path), "no requeue after SIGTERM")
        try assertStoppedWithCheckpoint(r)
        try assertResumesAndFinishes()
    }

    /// SIGTERM to mpirun itself (a user's `kill`): Open MPI 4.1.4 exits 1 — its signal
    /// handler sets that status, whatever the ranks return. It sends the ranks SIGCONT, then
    /// SIGTERM odls_base_sigkill_timeout seconds later, then SIGKILL as long again later: in
    /// that grace the ranks finish their step and write the checkpoint; the same command
    /// resumes it. (Exit 1 is asserted so that this test tells when an Open MPI release
    /// changes the rule: docs/training.md must then change too.)
    func testSigtermToMpirunEndsWith1ButTheCheckpointIsWrittenAndResumed() throws {
        let r = try runAndTerminate("/usr/bin/env", ["mpirun", "--oversubscribe", "-np", "2", donutBinary.path] + train,
                                    environment: ["OMPI_MCA_odls_base_sigkill_timeout": "2"], after: 1,
                                    mpirunPID: { $0 }, target: { _, mpirun in mpirun })
        XCTAssertEqual(r.status, 1, "Open MPI's exit code after SIGTERM to mpirun:\n\(r.all)")
        try assertStoppedWithCheckpoint(r)
        try assertResumesAndFinishes()
    }
}

/// The command name of process `pid` (/proc/PID/comm), nil once it is gone.
func processName(_ pid: Int32) -> String? {
    (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Runs `process` with no signal blocked (a child inherits the spawning thread's mask, and
/// worker threads block most signals: else mpirun would ignore SIGTERM), kills it at
/// `timeout`; `whileRunning` runs meanwhile on another thread.
func runProcess(_ process: Process, timeout: Double, whileRunning: ((Process) -> Void)? = nil) throws -> (CommandResult, Bool) {
    let out = Pipe(), err = Pipe()
    process.standardOutput = out; process.standardError = err
    var none = sigset_t(), saved = sigset_t()
    sigemptyset(&none)
    pthread_sigmask(SIG_SETMASK, &none, &saved)
    defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
    try process.run()
    pthread_sigmask(SIG_SETMASK, &saved, nil)
    final class Flag: @unchecked Sendable { var timedOut = false }
    let flag = Flag()
    let pid = process.processIdentifier
    let deadline = DispatchWorkItem {
        guard process.isRunning else { return }
        flag.timedOut = true
        for child in childProcesses(of: pid) { killChildren(of: child, signal: SIGKILL); kill(child, SIGKILL) }
        kill(pid, SIGKILL)
    }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: deadline)
    if let whileRunning { DispatchQueue.global().async { whileRunning(process) } }
    final class Buffer: @unchecked Sendable { var data = Data() }
    let errBuffer = Buffer()
    let readErr = DispatchWorkItem { errBuffer.data = err.fileHandleForReading.readDataToEndOfFile() }
    DispatchQueue.global().async(execute: readErr)
    let o = out.fileHandleForReading.readDataToEndOfFile()
    readErr.wait()
    process.waitUntilExit()
    deadline.cancel()
    var status = process.terminationStatus
    if process.terminationReason == .uncaughtSignal { status = 128 + status }
    return (CommandResult(status: status, stdout: String(decoding: o, as: UTF8.self),
                          stderr: String(decoding: errBuffer.data, as: UTF8.self)), flag.timedOut)
}
