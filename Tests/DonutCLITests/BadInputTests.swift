import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// docs/design.md "Contract with users": clear errors naming the file and the field, bad
/// frames as NaN with valid = 0, no overwrite without --force, one failing rank aborts.
final class BadInputTests: XCTestCase {
    var dir: URL!
    var config: String!

    override func setUpWithError() throws {
        dir = try scratchFolder(self)
        config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--rows", "3", "--cols", "4", "--out", "scan.h5"], in: dir), "scan")
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func testMissingFileOrDataset() throws {
        assertFailed(try donut(["fit", "--scan", "nothere.h5", "--library", "lib.h5", "--out", "m.h5"], in: dir), naming: ["nothere.h5"])
        assertFailed(try donut(["fit", "--scan", "scan.h5", "--library", "nolib.h5", "--out", "m.h5"], in: dir), naming: ["nolib.h5"])
        assertFailed(try donut(["fit", "--scan", "scan.h5", "--dataset", "/entry/nothing", "--library", "lib.h5", "--out", "m.h5"], in: dir),
                     naming: ["scan.h5", "/entry/nothing"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.h5")), "no output after a failure")
    }

    func testWrongFrameShape() throws {
        let frames = [Float](repeating: 1, count: 2 * 2 * 50 * 50)
        try ScanWriter.write(path: path("odd.h5"), frames: frames, layout: ScanLayout(rows: 2, cols: 2), frameSize: 50,
                             provenance: Provenance(version: "t", date: "t", method: "t", commandLine: "t", configJSON: "", inputs: [], modelID: ""))
        assertFailed(try donut(["fit", "--scan", "odd.h5", "--library", "lib.h5", "--out", "m.h5"], in: dir),
                     naming: ["odd.h5", "/entry/data/data", "50×50"])
    }

    /// A NaN or negative value is an excluded pixel (weight 0, as int32 detectors write −1 for
    /// bad pixels): its frame is fitted from the other pixels. A frame with nothing left to fit
    /// — all-zero, or every pixel NaN — becomes a NaN pixel of the maps with valid = 0.
    func testBadPixelsAreExcludedAndBadFramesBecomeInvalidPixels() throws {
        let cfg = try ConfigFile.load(path: config)
        let reader = try ScanReader(path: path("scan.h5"), config: cfg)
        var frames = try reader.readFrames(0..<12)
        try reader.close()
        frames[1 * 4096 + 100] = .nan
        frames[5 * 4096 + 7] = -3
        for i in (9 * 4096)..<(10 * 4096) { frames[i] = 0 }
        for i in (10 * 4096)..<(11 * 4096) { frames[i] = .nan }
        try ScanWriter.write(path: path("bad.h5"), frames: frames, layout: ScanLayout(rows: 3, cols: 4), frameSize: 64,
                             provenance: Provenance(version: "t", date: "t", method: "t", commandLine: "t", configJSON: ConfigFile.json(cfg), inputs: [], modelID: ""))
        let r = try donut(["fit", "--scan", "bad.h5", "--library", "lib.h5", "--out", "m.h5"], ranks: 2, in: dir)
        assertSucceeded(r, "fit with bad frames")
        XCTAssert(r.stderr.contains("marked valid = 0"), "reports the frames it could not fit: \(r.stderr)")
        let maps = try ResultMapsReader.read(path: path("m.h5")).results
        for i in 0..<12 {
            let bad = [9, 10].contains(i)
            XCTAssertEqual(maps.valid[i], bad ? 0 : 1, "valid at frame \(i)")
            XCTAssertEqual(maps.strain[i].isNaN, bad, "strain NaN at frame \(i)")
            XCTAssertEqual(maps.tiltLRDeg[i].isNaN, bad)
        }
    }

    func testTruncatedFile() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: path("scan.h5")))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path("cut.h5")))
        assertFailed(try donut(["fit", "--scan", "cut.h5", "--library", "lib.h5", "--out", "m.h5"], in: dir), naming: ["cut.h5"])
    }

    func testLibraryFromAnotherConfigIsRefused() throws {
        let other = try writeSmallConfig(in: dir, name: "other.yaml") { $0.instrument.energyKeV = 11.0 }
        assertSucceeded(try donut(["simulate", "library", "--config", other, "--out", "other.h5"], in: dir), "other library")
        assertFailed(try donut(["fit", "--scan", "scan.h5", "--library", "other.h5", "--out", "m.h5"], in: dir),
                     naming: ["other.h5", "scan.h5", "instrument.energy_keV"])
    }

    func testExistingOutputIsNotOverwrittenWithoutForce() throws {
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "m.h5"], in: dir), "first fit")
        let before = try Data(contentsOf: URL(fileURLWithPath: path("m.h5")))
        for ranks in [nil, 2] as [Int?] {
            assertFailed(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "m.h5"], ranks: ranks, in: dir),
                         naming: ["m", "--force"])
            assertFailed(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], ranks: ranks, in: dir),
                         naming: ["lib.h5", "--force"])
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path("m.h5"))), before, "the existing result is untouched")
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "m.h5", "--force"], ranks: 2, in: dir), "with --force")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".partial") }
        XCTAssertEqual(leftovers, [], "no temporary files left behind")
    }

    func testConfigErrorsNameTheKey() throws {
        let bad = path("bad.yaml")
        var text = try String(contentsOfFile: config, encoding: .utf8)
        text = text.replacingOccurrences(of: "energy_keV", with: "enrgy_keV")
        try text.write(toFile: bad, atomically: true, encoding: .utf8)
        assertFailed(try donut(["simulate", "library", "--config", "bad.yaml", "--out", "x.h5"], in: dir), naming: ["bad.yaml", "enrgy_keV"])
        let negative = try writeSmallConfig(in: dir, name: "neg.yaml") { $0.instrument.detectorDistanceM = -0.85 }
        assertFailed(try donut(["simulate", "library", "--config", negative, "--out", "x.h5"], in: dir), naming: ["detector_distance_m"])
    }

    /// A failure under mpirun ends the job with a message and a non-zero code, never a hang.
    func testFailureUnderMPIAbortsWithAMessage() throws {
        let r = try donut(["fit", "--scan", "scan.h5", "--library", "nolib.h5", "--out", "m.h5"], ranks: 2, in: dir, timeout: 60)
        assertFailed(r, naming: ["nolib.h5"])
        // Every rank failed alike: a clean exit with the bad-input code, no MPI_Abort banner.
        XCTAssertEqual(r.status, 2, r.all)
        XCTAssertFalse(r.stderr.contains("MPI_ABORT"), r.stderr)
    }

    func testHelpListsCommandsAndOptions() throws {
        let root = try donut(["--help"], in: dir)
        for c in ["simulate", "fit", "demo", "bench"] { XCTAssert(root.stdout.contains(c), "root help lacks \(c):\n\(root.stdout)") }
        let fit = try donut(["fit", "--help"], in: dir)
        for o in ["--scan", "--library", "--out", "--force", "--scan-shape", "--dataset", "--no-quicklook"] {
            XCTAssert(fit.stdout.contains(o), "fit help lacks \(o):\n\(fit.stdout)")
        }
        let bad = try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "m.h5", "--batch", "0"], in: dir)
        assertFailed(bad, naming: ["--batch"])
    }
}

/// `--physics-refine` on `fit`: maps move to the Poisson maximum likelihood and gain σ maps.
final class PhysicsRefineCLITests: XCTestCase {
    func testFitWithPhysicsRefinementImprovesTheMapsAndWritesSigmas() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        // The smooth model made the frames: refinement's model is the true one here.
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "4", "--cols", "5",
                                   "--smooth", "--peak", "60", "--seed", "2", "--out", "scan.h5"], in: dir), "scan")
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "fit.h5", "--no-quicklook"], in: dir), "fit")
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "refined.h5", "--no-quicklook",
                                   "--physics-refine"], ranks: 2, in: dir), "fit --physics-refine")
        let truth = try ScanReader(path: dir.appendingPathComponent("scan.h5").path, config: .srio3LSAT002).groundTruth()!
        let fit = try ResultMapsReader.read(path: dir.appendingPathComponent("fit.h5").path).results
        let refined = try ResultMapsReader.read(path: dir.appendingPathComponent("refined.h5").path)
        XCTAssertEqual(refined.provenance?.method, "correlation-fit+physics-refine")
        let r = refined.results
        // 20 frames give 5 bootstrap pairs: too few to test the model, so σ takes the safe side.
        XCTAssert(r.sigmaModel?.contains("widened by the box-model mismatch term: too few frames") ?? false, "\(r.sigmaModel ?? "no sigma_model")")
        XCTAssertLessThan(MapMetrics.rmse(r.strain, truth["strain"]!), MapMetrics.rmse(fit.strain, truth["strain"]!), "strain RMSE")
        XCTAssertLessThan(MapMetrics.rmse(r.tiltLRDeg, truth["tilt_lr"]!), MapMetrics.rmse(fit.tiltLRDeg, truth["tilt_lr"]!), "tilt_lr RMSE")
        for name in ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"] {
            XCTAssert(r.sigmas[name]?.allSatisfy { $0.isFinite && $0 > 0 } ?? false, "\(name)")
        }
        let both = try donut(["infer", "--model", "m.h5", "--scan", "scan.h5", "--out", "x.h5", "--mc-samples", "5", "--physics-refine"], in: dir)
        assertFailed(both, naming: ["--mc-samples", "--physics-refine"])
    }
}
