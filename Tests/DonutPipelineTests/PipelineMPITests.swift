import XCTest
import Foundation
import DonutCore
import DonutIO
import DonutMPI
@testable import DonutPipeline

/// The collective pipelines under a real `mpirun -np 2`: this test bundle runs
/// `PipelineMPIChildTests` on two ranks (in-process pipelines, `Communicator.world` of size 2)
/// and compares their results with the same pipelines on one rank here.
final class PipelineMPITests: XCTestCase {
    func testFitInferAndTrainOnTwoRanksMatchOneRank() throws {
        let dir = try scratchFolder(self)
        let config = smallConfig(steps: 5)
        try simulateInputs(in: dir, config: config, rows: 6, cols: 6)
        let runs = PipelineMPIChildTests.self
        try runs.fit(in: dir, out: "fit-1.h5")
        try runs.train(in: dir, out: "model-1.h5", batch: 4, context: context)
        try runs.infer(in: dir, model: "model-1.h5", out: "infer-1.h5")

        // The same on two ranks; the model-1 inference is repeated there for a like-for-like map.
        let status = try mpirun(ranks: 2, test: "DonutPipelineTests.PipelineMPIChildTests/testPipelinesOnTheWorld",
                                environment: [PipelineMPIChildTests.folderVariable: dir.path])
        XCTAssertEqual(status.code, 0, "mpirun -np 2 failed:\n\(status.output)")

        let fit1 = try ResultMapsReader.read(path: dir.appendingPathComponent("fit-1.h5").path).results
        let fit2 = try ResultMapsReader.read(path: dir.appendingPathComponent("fit-2.h5").path).results
        let infer1 = try ResultMapsReader.read(path: dir.appendingPathComponent("infer-1.h5").path).results
        let infer2 = try ResultMapsReader.read(path: dir.appendingPathComponent("infer-2.h5").path).results
        for (name, a, b) in [("fit strain", fit1.strain, fit2.strain), ("fit tilt_lr", fit1.tiltLRDeg, fit2.tiltLRDeg),
                             ("infer strain", infer1.strain, infer2.strain), ("infer tilt_ud", infer1.tiltUDDeg, infer2.tiltUDDeg)] {
            XCTAssertEqual(a.count, 36, name)
            // Only the reduction order of the fit's projections differs between rank counts.
            let scale = a.map(abs).max() ?? 1
            for i in a.indices { XCTAssertEqual(a[i], b[i], accuracy: 1e-6 * scale, "\(name) at frame \(i): np 1 vs np 2") }
        }
        XCTAssertEqual(fit1.valid, fit2.valid)
        // np 2 × batch 2 with synchronised BatchNorm is np 1 × batch 4, to float rounding.
        let one = try CheckpointFile.read(path: dir.appendingPathComponent("model-1.h5").path)
        let two = try CheckpointFile.read(path: dir.appendingPathComponent("model-2.h5").path)
        XCTAssertEqual(one.step, two.step)
        let scale = one.parameters.map { abs(Double($0)) }.max() ?? 1
        let worst = zip(one.parameters, two.parameters).map { abs(Double($0) - Double($1)) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst / scale, 1e-4, "weights np 1 vs np 2 (max difference over the largest weight)")
    }

    /// Runs `test` of this bundle under `mpirun -np ranks` (as root, one BLAS thread per rank),
    /// with a clean MPI environment (this process is an MPI singleton).
    func mpirun(ranks: Int, test: String, environment extra: [String: String]) throws -> (code: Int32, output: String) {
        let process = Process()
        var env = ProcessInfo.processInfo.environment.filter { key, _ in
            !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
        }
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        env["OPENBLAS_NUM_THREADS"] = "1"
        env.removeValue(forKey: "SLURM_NTASKS")
        for (k, v) in extra { env[k] = v }
        process.environment = env
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["mpirun", "--oversubscribe", "-np", "\(ranks)", CommandLine.arguments[0], test]
        let pipe = Pipe()
        process.standardOutput = pipe; process.standardError = pipe
        try process.run()
        let deadline = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 300, execute: deadline)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        deadline.cancel()
        return (process.terminationStatus, output)
    }
}

/// Runs only when `PipelineMPITests` launches it under mpirun (skipped otherwise).
final class PipelineMPIChildTests: XCTestCase {
    static let folderVariable = "DONUT_PIPELINE_MPI_FOLDER"

    func testPipelinesOnTheWorld() throws {
        guard let folder = ProcessInfo.processInfo.environment[Self.folderVariable] else {
            throw XCTSkip("launched by PipelineMPITests under mpirun")
        }
        let world = Communicator.world
        defer { world.finalize() }   // the process ends after this test; mpirun wants a clean MPI exit
        XCTAssertEqual(world.size, 2)
        let dir = URL(fileURLWithPath: folder), ctx = RunContext(comm: world)
        try Self.fit(in: dir, out: "fit-2.h5", context: ctx)
        try Self.train(in: dir, out: "model-2.h5", batch: 2, context: ctx)
        try Self.infer(in: dir, model: "model-1.h5", out: "infer-2.h5", context: ctx)
    }

    static func fit(in dir: URL, out: String, context: RunContext = context) throws {
        try fitScan(context, FitRequest(scan: ScanInput(path: dir.appendingPathComponent("scan.h5").path),
                                        libraryPath: dir.appendingPathComponent("lib.h5").path,
                                        outputs: MapOutputs(path: dir.appendingPathComponent(out).path, force: false, quickLooks: false),
                                        batch: 8))
    }

    /// `batch` per rank; synchronised BatchNorm makes N ranks × batch b equal one rank × N·b.
    static func train(in dir: URL, out: String, batch: Int, context: RunContext) throws {
        var request = TrainRequest(scans: [ScanInput(path: dir.appendingPathComponent("scan.h5").path)],
                                   libraryPath: dir.appendingPathComponent("lib.h5").path, mix: 0.5,
                                   training: tinyTraining(epochs: 2, batch: batch), outPath: dir.appendingPathComponent(out).path)
        request.syncBatchNorm = true
        XCTAssertTrue(try trainModel(context, request).completed)
    }

    static func infer(in dir: URL, model: String, out: String, context: RunContext = context) throws {
        try inferScan(context, InferRequest(modelPath: dir.appendingPathComponent(model).path,
                                            scan: ScanInput(path: dir.appendingPathComponent("scan.h5").path),
                                            outputs: MapOutputs(path: dir.appendingPathComponent(out).path, force: false, quickLooks: false),
                                            batch: 4))
    }
}
