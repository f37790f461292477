import XCTest
import DonutCore
@testable import DonutIO
import DonutPhysics

/// `donut plot`'s library side: which figures, shared limits, truth comparisons, no overwrite.
final class ResultPlotsTests: XCTestCase {
    let rows = 6, cols = 8

    func provenance() -> Provenance {
        Provenance(version: "t", date: "t", method: "test", commandLine: "donut test", configJSON: "{}", inputs: [], modelID: "")
    }

    /// Truth maps of a scan (x in µm), and a result that is truth + offsets (strain + 1e-4,
    /// tilt_lr + 0.002°, tilt_ud exact), with pixel 5 invalid (NaN maps, valid 0).
    func makeFiles(in folder: URL) throws -> (result: String, scan: String, truth: [String: [Double]]) {
        let n = rows * cols
        let truth: [String: [Double]] = [
            "strain": (0..<n).map { 1e-3 * sin(Double($0)) },
            "tilt_lr": (0..<n).map { 0.01 * cos(Double($0) / 3) },
            "tilt_ud": (0..<n).map { -0.02 + 0.001 * Double($0) },
        ]
        var r = FrameResults(frameRange: 0..<n)
        r.strain = truth["strain"]!.map { $0 + 1e-4 }
        r.tiltLRDeg = truth["tilt_lr"]!.map { $0 + 0.002 }
        r.tiltUDDeg = truth["tilt_ud"]!
        r.valid = [UInt8](repeating: 1, count: n)
        r.valid[5] = 0; r.strain[5] = .nan; r.tiltLRDeg[5] = .nan; r.tiltUDDeg[5] = .nan
        r.sigmas["strain_sigma"] = [Double](repeating: 1e-5, count: n)
        let layout = ScanLayout(rows: rows, cols: cols, y: (0..<rows).map { 0.5 * Double($0) }, x: (0..<cols).map { 2 + 0.5 * Double($0) }, axisUnits: "um")
        let result = folder.appendingPathComponent("fit.h5").path
        try ResultMapsWriter.write(path: result, results: r, layout: layout, provenance: provenance())
        let scan = folder.appendingPathComponent("scan.h5").path
        let f = try H5File.create(scan)
        try f.createGroup("/entry", nxClass: "NXentry")
        try f.createGroup("/entry/ground_truth", nxClass: "NXcollection")
        for (name, v) in truth { try f.writeDataset("/entry/ground_truth/\(name)", v, shape: [rows, cols]) }
        try f.close()
        return (result, scan, truth)
    }

    func testWritesMapsErrorsParityAndCrosstalkWithRMSEOfTheKnownOffsets() throws {
        let folder = makeScratchFolder(self)
        let (result, scan, _) = try makeFiles(in: folder)
        let out = folder.appendingPathComponent("plots").path
        let report = try ResultPlots.write(.init(result: result, truthScan: scan, outDir: out, frameCount: 0))
        let names = Set(report.files.map { URL(fileURLWithPath: $0).lastPathComponent })
        for expected in ["fit_strain.png", "fit_tilt_lr.png", "fit_tilt_ud.png", "fit_strain_sigma.png", "fit_valid.png",
                         "truth_strain.png", "fit_strain_error.png", "fit_tilt_lr_error.png", "fit_strain_parity.png",
                         "fit_crosstalk.png"] {
            XCTAssert(names.contains(expected), "missing \(expected) in \(names.sorted())")
        }
        for path in report.files {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], path)
        }
        // The offsets are the RMSE (the invalid pixel excluded).
        func rmse(_ name: String) -> Double? {
            report.metrics.first { $0.hasPrefix("fit \(name): RMSE") }.flatMap { Double($0.split(separator: " ").last!) }
        }
        XCTAssertEqual(try XCTUnwrap(rmse("strain")), 1e-4, accuracy: 1e-7)
        XCTAssertEqual(try XCTUnwrap(rmse("tilt_lr")), 0.002, accuracy: 1e-6)
        XCTAssertEqual(try XCTUnwrap(rmse("tilt_ud")), 0, accuracy: 1e-12)
    }

    func testRefusesToOverwriteWithoutForceAndWritesNothing() throws {
        let folder = makeScratchFolder(self)
        let (result, _, _) = try makeFiles(in: folder)
        let out = folder.appendingPathComponent("plots").path
        let first = try ResultPlots.write(.init(result: result, outDir: out))
        let victim = first.files[1]
        try Data("mine".utf8).write(to: URL(fileURLWithPath: victim))
        try FileManager.default.removeItem(atPath: first.files[0])
        XCTAssertThrowsError(try ResultPlots.write(.init(result: result, outDir: out))) { e in
            XCTAssert("\(e)".contains("--force"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: first.files[0]), "nothing written when refusing")
        XCTAssertEqual(try String(contentsOfFile: victim, encoding: .utf8), "mine")
        let again = try ResultPlots.write(.init(result: result, outDir: out, force: true))
        XCTAssertEqual(again.files, first.files)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: victim)), Data("mine".utf8))
    }

    func testCompareSharesLimitsAndNamesFilesUniquely() throws {
        let folder = makeScratchFolder(self)
        let (result, _, _) = try makeFiles(in: folder)
        let other = folder.appendingPathComponent("b")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        let (result2, _, _) = try makeFiles(in: other)
        XCTAssertEqual(ResultPlots.stems([result, result2]), ["fit", "fit-2"])
        let files = try [result, result2].map { try ResultMapsReader.read(path: $0) }
        let figures = ResultPlots.plan(stems: ["fit", "fit-2"], files: files, truth: nil)
        let strain = figures.filter { $0.name.hasSuffix("_strain.png") }
        XCTAssertEqual(strain.count, 2)
        XCTAssert(strain.allSatisfy { $0.style.signed && $0.style.axes?.xLabel == "x [µm]" })
        XCTAssertEqual(strain[0].style.limits?.0, strain[1].style.limits?.0)
        XCTAssertEqual(strain[0].style.limits?.0, -(strain[0].style.limits?.1 ?? 0), "centred on 0")
        XCTAssertFalse(figures.first { $0.name == "fit_strain_sigma.png" }!.style.signed, "σ is not signed")
    }

    func testParityDensityOfAPerfectEstimateLiesOnTheDiagonal() throws {
        let truth = (0..<500).map { sin(Double($0)) * 1e-3 }
        let d = try XCTUnwrap(ResultPlots.density(x: truth, y: truth, xLabel: "t", yLabel: "e", square: true))
        XCTAssertEqual(d.counts.filter { !$0.isNaN }.reduce(0, +), Double(truth.count - 10), accuracy: 10,
                       "the robust range drops at most the ~1 % tails on each side")
        for r in 0..<d.rows { for c in 0..<d.cols where !d.counts[r * d.cols + c].isNaN {
            XCTAssertEqual(r, d.rows - 1 - c, "bin (\(r), \(c)) off the diagonal")
        } }
        XCTAssertGreaterThan(d.axes.y[0], d.axes.y[d.rows - 1], "top row = high values")
    }

    func testMissingGroundTruthIsNamed() throws {
        let folder = makeScratchFolder(self)
        let (result, _, _) = try makeFiles(in: folder)
        XCTAssertThrowsError(try ResultPlots.write(.init(result: result, truthScan: result, outDir: folder.appendingPathComponent("p").path))) { e in
            XCTAssert("\(e)".contains("ground_truth") && "\(e)".contains("fit.h5"), "\(e)")
        }
    }
}

/// The model frame `donut plot` draws beside a measured one is the forward model at the
/// result's parameters: on noise-free frames simulated at those parameters the difference
/// vanishes (to Float precision of the stored frames), and a wrong parameter shows.
final class ResultPlotsFrameTests: XCTestCase {
    func testModelFrameMatchesNoiseFreeFramesAtTheirParameters() throws {
        let folder = makeScratchFolder(self)
        let config = DonutConfig.srio3LSAT002
        let params = [FrameParameters(strain: 0.002, tiltLRDeg: 0.01, tiltUDDeg: -0.03, thicknessA: config.sample.thicknessA),
                      FrameParameters(strain: -0.001, tiltLRDeg: -0.02, tiltUDDeg: 0.05, thicknessA: config.sample.thicknessA)]
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let frames = model.patterns(params).map { $0 * 3 }            // any scale: the plot fits it
        let layout = ScanLayout(rows: 1, cols: 2)
        let prov = Provenance(version: "t", date: "t", method: "correlation-fit", commandLine: "t",
                              configJSON: ConfigFile.json(config), inputs: [], modelID: "")
        let scan = folder.appendingPathComponent("scan.h5").path
        try ScanWriter.write(path: scan, frames: frames, layout: layout, frameSize: 64, provenance: prov)
        var r = FrameResults(frameRange: 0..<2)
        r.strain = params.map(\.strain); r.tiltLRDeg = params.map(\.tiltLRDeg); r.tiltUDDeg = params.map(\.tiltUDDeg)
        r.valid = [1, 1]
        r.strain[1] = 0                                                  // pixel 1: a wrong strain (true −0.001)
        r.residual = [0.1, 0.9]                                          // chosen: worst residual (1), largest |strain| (0)
        let result = folder.appendingPathComponent("fit.h5").path
        try ResultMapsWriter.write(path: result, results: r, layout: layout, provenance: prov)

        let figures = try ResultPlots.frameFigures(stem: "fit", path: result, maps: try ResultMapsReader.read(path: result),
                                                   scanPath: scan, count: 3)
        func map(_ name: String) throws -> [Double] { try XCTUnwrap(figures.first { $0.name == name }).map }
        let measured0 = try map("fit_frame_r0_c0_measured.png"), diff0 = try map("fit_frame_r0_c0_difference.png")
        let peak = measured0.max()!
        XCTAssertGreaterThan(peak, 0)
        XCTAssertLessThan(diff0.map(abs).max()!, 1e-5 * peak, "right parameters: the model is the frame")
        XCTAssertEqual(try map("fit_frame_r0_c0_model.png").reduce(0, +), measured0.reduce(0, +), accuracy: 1e-6 * measured0.reduce(0, +))
        let diff1 = try map("fit_frame_r0_c1_difference.png"), measured1 = try map("fit_frame_r0_c1_measured.png")
        XCTAssertGreaterThan(diff1.map(abs).max()!, 0.1 * measured1.max()!, "a wrong strain shows in the difference")
        XCTAssert(figures.first { $0.name.hasSuffix("difference.png") }!.style.signed)
    }
}
