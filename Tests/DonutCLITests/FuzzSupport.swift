import Foundation
import XCTest
import DonutIO

// The machinery of the fuzz suite (FuzzTests.swift, docs/robustness.md): cases that run the
// built `donut` binary on a hostile input and classify what happened.

/// What a run of `donut` did, from the user's point of view.
enum FuzzOutcome: String, CaseIterable {
    /// Non-zero exit, the last stderr line an error naming every expected fragment.
    case clearError = "clear error"
    /// Exit 0 and the case's own check of the result passed (bad frames NaN with valid 0, …).
    case handled = "handled"
    /// Exit 75 with a resumable checkpoint (signals).
    case preempted = "preempted"
    /// Failed, but the message misses an expected fragment (file, field, number).
    case vagueError = "vague error"
    /// Exit 0 where an error was due, or a result that fails the case's check.
    case silentAccept = "silent accept"
    /// A signal, a Swift trap, a segfault, an MPI abort banner without our message.
    case crash = "crash"
    /// Still running at the case's deadline (killed).
    case hang = "hang"
    /// An input file changed or disappeared.
    case changedInput = "changed input"
    /// A non-zero exit code other than the one the case expects.
    case wrongExitCode = "wrong exit code"
}

/// What a case expects.
enum FuzzExpectation {
    /// A refusal: non-zero exit whose stderr names every fragment.
    case error([String])
    /// Success, then `check` (nil = fine, else the problem) on the result.
    case success((CommandResult, URL) -> String?)
    /// Exit 75 (preempted), then `check`. `alsoAccepted`: other exit codes that count
    /// (mpirun exits 1 after SIGTERM whatever its ranks return: its own rule).
    case preempted((CommandResult, URL) -> String?, alsoAccepted: Set<Int32> = [])
    /// Either a refusal naming the fragments or a success passing `check` (a huge value
    /// that is clamped harmlessly, e.g. a batch larger than the scan).
    case errorOrSuccess([String], (CommandResult, URL) -> String?)
}

struct FuzzCase {
    var category: String
    var name: String
    var args: [String]
    var ranks: Int? = nil
    /// Fixture files copied into the case's own folder (inputs: must be unchanged after).
    var needs: [String] = []
    var expect: FuzzExpectation
    var timeout: Double = 60
    /// Extra preparation in the case folder (special files, symlinks, existing outputs).
    var prepare: ((URL) throws -> Void)? = nil
    /// Files created by `prepare` that count as inputs too (checked unchanged).
    var alsoProtect: [String] = []
    /// Custom runner (signals, kills): returns the result and whether it timed out.
    var run: ((FuzzCase, URL) throws -> (CommandResult, Bool))? = nil
}

struct FuzzRecord {
    var category: String
    var name: String
    var outcome: FuzzOutcome
    var expected: Bool
    var detail: String
}

/// Runs `donut args` in `folder` and kills it (and an mpirun's children) at `timeout`.
func runDonut(_ args: [String], ranks: Int? = nil, in folder: URL, timeout: Double,
              environment: [String: String] = [:], whileRunning: ((Process) -> Void)? = nil) throws -> (CommandResult, Bool) {
    try runProcess(donutProcess(args, ranks: ranks, in: folder, environment: environment), timeout: timeout, whileRunning: whileRunning)
}

/// Sends `signal` to the direct children of `pid` (the ranks an mpirun started).
func killChildren(of pid: Int32, signal: Int32) {
    for child in childProcesses(of: pid) { kill(child, signal) }
}

/// Waits (up to 60 s) until the donut process `pid` — or, under mpirun, each of its `ranks`
/// children — catches SIGTERM and SIGUSR1 (/proc/PID/status SigCgt); returns the donut pids.
func waitForStopHandlers(_ pid: Int32, ranks: Int) -> [Int32] {
    func catches(_ p: Int32) -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/\(p)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigCgt:") }),
              let mask = UInt64(line.dropFirst("SigCgt:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { return false }
        let wanted = (UInt64(1) << UInt64(SIGTERM - 1)) | (UInt64(1) << UInt64(SIGUSR1 - 1))
        return mask & wanted == wanted
    }
    for _ in 0..<3000 {
        let donuts = ranks > 1 ? childProcesses(of: pid) : [pid]
        if donuts.count == ranks, donuts.allSatisfy(catches) { return donuts }
        usleep(20_000)
    }
    return ranks > 1 ? childProcesses(of: pid) : [pid]
}

func childProcesses(of pid: Int32) -> [Int32] {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8) else { return [] }
    return text.split(separator: " ").compactMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
}

/// Signs of a crash in a run's output (Swift runtime traps, segfaults, MPI reporting a
/// rank killed by a signal).
func crashSigns(_ r: CommandResult) -> String? {
    if r.status >= 128 && r.status != 128 + SIGTERM { return "killed by signal \(r.status - 128)" }
    for sign in ["Fatal error", "Segmentation fault", "Illegal instruction", "Backtrace", "Trace/breakpoint", "Bus error",
                 "exited on signal", "Precondition failed", "Assertion failed", "double free", "malloc():", "Stack dump",
                 "core dumped", "Signal: Segmentation", "Abort(6)"] where r.all.contains(sign) {
        return "output shows '\(sign)'"
    }
    if [132, 133, 134, 135, 136, 139].contains(r.status) { return "exit status \(r.status)" }
    return nil
}

/// The last non-empty line of stderr.
func lastLine(_ text: String) -> String {
    text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty } ?? ""
}

/// Held while a case's `prepare` or result check runs. Those call HDF5 in this process
/// (H5File.create, ResultMapsReader, LibraryReader, CheckpointFile, …) from the queue's
/// threads, and Debian's libhdf5-openmpi is not built thread-safe: two threads inside it at
/// once corrupt its global state (property-list skip lists, free lists, the error stack) and
/// crash with a segfault or fail at random. The donut runs themselves stay parallel.
private let inProcessHDF5 = NSLock()

/// Runs the cases (up to `parallel` at once), each in its own folder under `root` with
/// copies of its fixtures, and classifies each outcome.
func runFuzzCases(_ cases: [FuzzCase], fixtures: URL, root: URL, parallel: Int = 3) -> [FuzzRecord] {
    final class Results: @unchecked Sendable {
        var records: [FuzzRecord?]
        let lock = NSLock()
        init(_ n: Int) { records = Array(repeating: nil, count: n) }
    }
    let results = Results(cases.count)
    let queue = OperationQueue()
    queue.maxConcurrentOperationCount = parallel
    for (i, c) in cases.enumerated() {
        queue.addOperation {
            let record = runFuzzCase(c, index: i, fixtures: fixtures, root: root)
            results.lock.lock(); results.records[i] = record; results.lock.unlock()
        }
    }
    queue.waitUntilAllOperationsAreFinished()
    return results.records.map { $0! }
}

func runFuzzCase(_ c: FuzzCase, index: Int, fixtures: URL, root: URL) -> FuzzRecord {
    let fm = FileManager.default
    let folder = root.appendingPathComponent(String(format: "%03d-%@", index, c.name))
    func record(_ outcome: FuzzOutcome, _ detail: String) -> FuzzRecord {
        let expected: Bool
        switch c.expect {
        case .error: expected = outcome == .clearError
        case .success: expected = outcome == .handled
        case .preempted: expected = outcome == .preempted
        case .errorOrSuccess: expected = outcome == .clearError || outcome == .handled
        }
        return FuzzRecord(category: c.category, name: c.name, outcome: outcome, expected: expected, detail: detail)
    }
    do {
        try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        for name in c.needs {
            try fm.copyItem(at: fixtures.appendingPathComponent(name), to: folder.appendingPathComponent(name))
        }
        try inProcessHDF5.withLock { try c.prepare?(folder) }
    } catch {
        return record(.crash, "case setup failed: \(error)")
    }
    func snapshot() -> [String: Data?] {
        var s: [String: Data?] = [:]
        for name in c.needs + c.alsoProtect {
            let p = folder.appendingPathComponent(name).path
            s[name] = FileKind.nonRegular(p) == nil ? (try? Data(contentsOf: URL(fileURLWithPath: p))) : Data("special".utf8)
        }
        return s
    }
    let before = snapshot()
    let result: CommandResult, timedOut: Bool
    do {
        (result, timedOut) = try c.run?(c, folder) ?? runDonut(c.args, ranks: c.ranks, in: folder, timeout: c.timeout)
    } catch {
        return record(.crash, "could not run: \(error)")
    }
    let summary = "exit \(result.status); last line: \(lastLine(result.stderr).prefix(300))"
    if timedOut { return record(.hang, "no exit after \(c.timeout) s; " + summary) }
    if let sign = crashSigns(result) { return record(.crash, sign + "; " + summary + "\n" + String(result.stderr.suffix(1500))) }
    let after = snapshot()
    for (name, data) in before where after[name]! != data {
        return record(.changedInput, "\(name) changed or disappeared; " + summary)
    }
    func checkError(_ fragments: [String]) -> FuzzRecord {
        guard result.status != 75 else { return record(.wrongExitCode, summary) }
        // The reason may sit above ArgumentParser's usage lines or an MPI abort banner.
        // reprocess reports scans that failed one by one ("FAILED: <reason>").
        let lower = result.stderr.lowercased()
        guard lower.contains("error") || lower.contains("failed") else { return record(.vagueError, "stderr shows no error: " + summary) }
        let missing = fragments.filter { !result.stderr.contains($0) }
        guard missing.isEmpty else { return record(.vagueError, "does not name \(missing); " + summary) }
        return record(.clearError, summary)
    }
    switch c.expect {
    case .errorOrSuccess(let fragments, let check):
        if result.status != 0 { return checkError(fragments) }
        if let problem = inProcessHDF5.withLock({ check(result, folder) }) { return record(.silentAccept, problem) }
        return record(.handled, summary)
    case .error(let fragments):
        guard result.status != 0 else { return record(.silentAccept, "exit 0, expected an error naming \(fragments)") }
        return checkError(fragments)
    case .success(let check):
        guard result.status == 0 else { return record(.wrongExitCode, "expected success; " + summary + "\n" + String(result.stderr.suffix(800))) }
        if let problem = inProcessHDF5.withLock({ check(result, folder) }) { return record(.silentAccept, problem) }
        return record(.handled, summary)
    case .preempted(let check, let alsoAccepted):
        guard result.status == 75 || alsoAccepted.contains(result.status) else { return record(.wrongExitCode, "expected 75 (preempted); " + summary + "\n" + String(result.stderr.suffix(800))) }
        if let problem = inProcessHDF5.withLock({ check(result, folder) }) { return record(.silentAccept, problem) }
        return record(.preempted, summary)
    }
}

/// Prints a table of outcomes per category and fails the test for every unexpected one.
func reportFuzz(_ records: [FuzzRecord], title: String, file: StaticString = #filePath, line: UInt = #line) {
    var byCategory: [String: [FuzzRecord]] = [:]
    for r in records { byCategory[r.category, default: []].append(r) }
    var text = "fuzz \(title): \(records.count) cases\n"
    for (category, rs) in byCategory.sorted(by: { $0.key < $1.key }) {
        let counts = FuzzOutcome.allCases.compactMap { o -> String? in
            let n = rs.filter { $0.outcome == o }.count
            return n == 0 ? nil : "\(n) \(o.rawValue)"
        }
        text += "  \(category.padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(format: "%3d", rs.count)) cases: \(counts.joined(separator: ", "))\n"
    }
    print(text, terminator: "")
    for r in records where !r.expected {
        XCTFail("fuzz [\(r.category)] \(r.name): \(r.outcome.rawValue): \(r.detail)", file: file, line: line)
    }
}
