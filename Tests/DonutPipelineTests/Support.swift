import XCTest
import Foundation
import DonutPhysics
import DonutCore
import DonutIO
import DonutMPI
@testable import DonutPipeline

/// The pipelines run in this process: MPI is a singleton (one rank) here, and
/// `mpirun -np 2` runs of this same test bundle (`PipelineMPITests`) check the collectives.
let world = Communicator.world
let context = RunContext(comm: world)

/// A fresh folder removed after the test.
func scratchFolder(_ test: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("donut-pipeline-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// The published preset with a small library (fast in debug builds): `steps` points per axis.
func smallConfig(steps: Int = 7) -> DonutConfig {
    var c = DonutConfig.srio3LSAT002
    c.library = LibrarySteps(strain: steps, tiltLR: steps, tiltUD: steps, thickness: 1)
    return c
}

/// Library and scan made by the simulate pipelines into `folder` (lib.h5, `scan`).
func simulateInputs(in folder: URL, config: DonutConfig, scan: String = "scan.h5", phantom: Phantom = .domains,
                    rows: Int = 5, cols: Int = 6, seed: UInt64 = 3, noise: Bool = true, library: Bool = true) throws {
    if library {
        try simulateLibrary(context, LibraryRequest(config: config, outPath: folder.appendingPathComponent("lib.h5").path))
    }
    var s = ScanSimulationRequest(config: config, outPath: folder.appendingPathComponent(scan).path)
    s.phantom = phantom; s.rows = rows; s.cols = cols; s.seed = seed; s.noise = noise
    try simulateScan(context, s)
}

/// A DONUT preset small enough to train in seconds in a debug build.
func tinyTraining(epochs: Int, batch: Int = 4, checkpointEvery: Int = 1000, seed: Int = 1, dropout: Double = 0) -> TrainingConfig {
    var t = TrainingConfig.donutPaper
    t.network = NetworkSettings(encoderChannels: [4, 8], dropout: dropout, hiddenUnits: 8, predictThickness: false, decoder: true)
    t.schedule = Schedule(batchSize: batch, epochs: epochs, validationFraction: 0.1, checkpointEvery: checkpointEvery, seed: seed)
    return t
}

/// The ground-truth maps of a simulated scan.
func truth(_ scan: URL) throws -> [String: [Double]] { try groundTruth(scanPath: scan.path) }

/// Bit patterns of a map (NaN-safe equality).
func bits(_ v: [Double]) -> [UInt64] { v.map(\.bitPattern) }
