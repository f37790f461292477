import Foundation
import XCTest
import DonutPhysics
import DonutIO
import DonutCore

/// The `donut` binary built beside this test bundle (SwiftPM builds it: the test target
/// depends on the executable).
let donutBinary: URL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    .appendingPathComponent("donut")

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var all: String { stdout + stderr }
}

/// Runs `donut args…`, under `mpirun -np ranks` when `ranks` is given (as root, one BLAS
/// thread per rank so two ranks fit the two cores).
@discardableResult
func donut(_ args: [String], ranks: Int? = nil, in folder: URL, environment extra: [String: String] = [:],
           timeout: Double = 180) throws -> CommandResult {
    let process = donutProcess(args, ranks: ranks, in: folder, environment: extra)
    let out = Pipe(), err = Pipe()
    process.standardOutput = out; process.standardError = err
    try process.run()
    // A hang (e.g. a collective one rank never reaches) must fail the test, not stall CI.
    let deadline = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: deadline)
    // Read before waiting: a full pipe would block the child.
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    deadline.cancel()
    return CommandResult(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                         stderr: String(decoding: e, as: UTF8.self))
}

/// The process `donut(…)` runs (not started), for tests that signal it while it runs.
func donutProcess(_ args: [String], ranks: Int? = nil, in folder: URL, environment extra: [String: String] = [:]) -> Process {
    let process = Process()
    // A test process that initialised MPI itself (a singleton, e.g. DonutMPITests) carries
    // Open MPI/PMIx variables that would confuse a child mpirun: start children clean.
    var env = ProcessInfo.processInfo.environment.filter { key, _ in
        !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
    }
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    env.removeValue(forKey: "SLURM_NTASKS")
    // One OpenBLAS thread per process, for one rank as for many: OpenBLAS's own threading
    // changes the Float summation order of a GEMM on some CPUs (AMD EPYC: a library made with
    // 2 threads differs in the last bit from one made with 1), and the tests compare 1 and N
    // ranks bit for bit — the rank count, not the BLAS thread count, is what they check.
    env["OPENBLAS_NUM_THREADS"] = "1"
    for (k, v) in extra { env[k] = v }
    if let ranks {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["mpirun", "--oversubscribe", "-np", "\(ranks)", donutBinary.path] + args
    } else {
        process.executableURL = donutBinary
        process.arguments = args
    }
    process.environment = env
    process.currentDirectoryURL = folder
    return process
}

/// A fresh folder removed after the test.
func scratchFolder(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("donut-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// The published preset with a small library (fast in debug builds), written as YAML.
func writeSmallConfig(in folder: URL, name: String = "small.yaml", edit: (inout DonutConfig) -> Void = { _ in }) throws -> String {
    var c = DonutConfig.srio3LSAT002
    c.library = LibrarySteps(strain: 5, tiltLR: 4, tiltUD: 6, thickness: 1)
    edit(&c)
    let path = folder.appendingPathComponent(name).path
    try ConfigFile.yaml(c).write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// The published instrument shrunk to 16×16 frames (a 32×32 ROI binned 2×2, a shorter focal
/// length so the annulus fits) with a 4×3×3 library: networks train in seconds in debug builds.
func writeTinyConfig(in folder: URL) throws -> String {
    try writeSmallConfig(in: folder, name: "tiny.yaml") { c in
        c.model.frameSize = 16
        c.instrument.roi = DetectorROI(x: 0, y: 0, width: 32, height: 32)
        c.zonePlate.focalLengthM = 0.1     // the annulus fits the 16-pixel frame
        c.library = LibrarySteps(strain: 4, tiltLR: 3, tiltUD: 3, thickness: 1)
    }
}

/// The DONUT preset with a tiny network (4→8 channels, 8 hidden units, dropout 0.2 by default so
/// MC sigmas exist; 0 takes the fused BatchNorm → ReLU → pool encoder path) and the given
/// schedule, written as YAML to `folder/name`; returns the path.
func writeTinyTrainingPreset(in folder: URL, name: String = "train.yaml", batch: Int = 4, epochs: Int,
                             validation: Double = 0.1, checkpointEvery: Int, seed: Int = 1, dropout: Double = 0.2) throws -> String {
    var t = TrainingConfig.donutPaper
    t.network = NetworkSettings(encoderChannels: [4, 8], dropout: dropout, hiddenUnits: 8, predictThickness: false, decoder: true)
    t.schedule = Schedule(batchSize: batch, epochs: epochs, validationFraction: validation, checkpointEvery: checkpointEvery, seed: seed)
    let path = folder.appendingPathComponent(name).path
    try ConfigFile.yaml(of: t).write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

func assertSucceeded(_ r: CommandResult, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.status, 0, "\(what) failed:\n\(r.all)", file: file, line: line)
}

/// The command failed with a message naming every fragment (file, dataset, key…).
func assertFailed(_ r: CommandResult, naming fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertNotEqual(r.status, 0, "expected failure, got success:\n\(r.all)", file: file, line: line)
    for f in fragments where !r.stderr.contains(f) {
        XCTFail("stderr does not name '\(f)':\n\(r.stderr)", file: file, line: line)
    }
}
