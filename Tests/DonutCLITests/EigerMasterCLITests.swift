import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// Dectris masters (`simulate scan --detector eiger --frames-per-file N`): the frames split
/// over external-linked data files are read as the single file of the same scan.
final class EigerMasterCLITests: XCTestCase {
    /// 12 frames in data files of 5 + 5 + 2: inspect lists the parts; fit under mpirun -np 2
    /// (each rank's frames span two parts) gives exactly the maps of the single-file scan,
    /// and records the parts; a missing data file is refused before anything is written.
    func testMasterFitsAsTheSingleFileUnderTwoRanks() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir) { $0.instrument.roi = DetectorROI(x: 16, y: 24, width: 128, height: 128) }
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        let common = ["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "3", "--cols", "4", "--seed", "3",
                      "--detector", "eiger", "--detector-size", "300x300"]
        assertSucceeded(try donut(common + ["--out", "single.h5"], in: dir), "single-file scan")
        assertSucceeded(try donut(common + ["--frames-per-file", "5", "--out", "scan_master.h5"], ranks: 2, in: dir), "master scan")
        let names = (try FileManager.default.contentsOfDirectory(atPath: dir.path)).filter { $0.hasPrefix("scan_") || $0.hasPrefix(".scan") }.sorted()
        XCTAssertEqual(names, ["scan_data_000001.h5", "scan_data_000002.h5", "scan_data_000003.h5", "scan_master.h5"])
        assertFailed(try donut(common + ["--frames-per-file", "0", "--out", "x.h5"], in: dir), naming: ["--frames-per-file", "0"])

        let inspect = try donut(["inspect", "scan_master.h5", "--config", config], in: dir)
        assertSucceeded(inspect, "inspect")
        for fragment in ["parts: 3 data files linked from the master, frames each: 5 + 5 + 2 = 12",
                         "/entry/data/data_000002 → scan_data_000002.h5:/entry/data/data (5 frames)", "(12, 300, 300)",
                         "bitshuffle (id 32008, with LZ4) [decoder found]", "/entry/instrument/detector/detectorSpecific/pixel_mask",
                         "3×4 frames, order serpentine (positioners)"] {
            XCTAssert(inspect.stdout.contains(fragment), "inspect lacks '\(fragment)':\n\(inspect.stdout)")
        }

        let fit = ["fit", "--library", "lib.h5"]
        assertSucceeded(try donut(fit + ["--scan", "single.h5", "--out", "single_maps.h5"], ranks: 2, in: dir), "fit single, 2 ranks")
        assertSucceeded(try donut(fit + ["--scan", "scan_master.h5", "--out", "master_maps.h5"], ranks: 2, in: dir), "fit master, 2 ranks")
        let a = try ResultMapsReader.read(path: dir.appendingPathComponent("single_maps.h5").path).results
        let b = try ResultMapsReader.read(path: dir.appendingPathComponent("master_maps.h5").path).results
        XCTAssertEqual(b.strain, a.strain); XCTAssertEqual(b.tiltLRDeg, a.tiltLRDeg); XCTAssertEqual(b.tiltUDDeg, a.tiltUDDeg)
        XCTAssertEqual(b.valid, a.valid); XCTAssertEqual(b.goodnessOfFit, a.goodnessOfFit)
        XCTAssertGreaterThan(Set(a.strain).count, 1, "the maps are not constant")
        XCTAssertEqual(a.valid.filter { $0 == 1 }.count, 12)
        let f = try H5File.open(dir.appendingPathComponent("master_maps.h5").path)
        XCTAssertEqual(try f.readStringArrayAttribute("frames_source", on: "/entry/instrument/detector"),
                       (1...3).map { "/entry/data/data_00000\($0) → scan_data_00000\($0).h5:/entry/data/data (\($0 == 3 ? 2 : 5) frames)" })
        XCTAssertEqual(try f.readStringAttribute("source", on: "/entry/instrument/detector/pixel_mask"),
                       "/entry/instrument/detector/detectorSpecific/pixel_mask")
        try f.close()

        try FileManager.default.removeItem(at: dir.appendingPathComponent("scan_data_000002.h5"))
        assertFailed(try donut(fit + ["--scan", "scan_master.h5", "--out", "lost.h5"], ranks: 2, in: dir),
                     naming: ["scan_master.h5", "link '/entry/data/data_000002'", "'scan_data_000002.h5'", "does not exist"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("lost.h5").path), "nothing written on a missing part")
    }

    /// The log of `simulate scan --frames-per-file` names the master and its data files, not
    /// the hidden single file it writes first and removes.
    func testSimulateLogsTheMasterAndItsDataFiles() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir) { $0.instrument.roi = DetectorROI(x: 16, y: 24, width: 128, height: 128) }
        let r = try donut(["simulate", "scan", "--config", config, "--rows", "3", "--cols", "4", "--detector", "eiger",
                           "--detector-size", "200x200", "--frames-per-file", "5", "--out", "scan_master.h5"], in: dir)
        assertSucceeded(r, "master scan")
        XCTAssert(r.stderr.contains("→ scan_master.h5 and 3 data files of 5 frames beside it (scan_data_000001.h5 … scan_data_000003.h5)"), r.stderr)
        XCTAssert(r.stderr.contains("wrote scan_master.h5 and scan_data_000001.h5 … scan_data_000003.h5"), r.stderr)
        XCTAssertFalse(r.stderr.contains("single-file"), r.stderr)
    }
}
