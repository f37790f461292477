import XCTest

/// `donut plot`: figures of a fit against a simulated scan's truth, beside a second result;
/// never overwrites without --force; bad input refused with exit 2 naming the file.
final class PlotTests: XCTestCase {
    func testPlotWritesFiguresRefusesOverwriteAndAgreesWithEvaluate() throws {
        let dir = try scratchFolder(self)
        let config = try writeSmallConfig(in: dir)
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "paper", "--rows", "4", "--cols", "6",
                                   "--out", "scan.h5"], in: dir), "scan")
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "fit.h5"], in: dir), "fit")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("b"), withIntermediateDirectories: true)
        assertSucceeded(try donut(["fit", "--scan", "scan.h5", "--library", "lib.h5", "--out", "b/fit.h5", "--no-quicklook"], in: dir), "fit 2")

        let r = try donut(["plot", "fit.h5", "--compare", "b/fit.h5", "--truth", "scan.h5", "--out", "plots"], in: dir)
        assertSucceeded(r, "plot")
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("plots").path))
        for name in ["fit_strain.png", "fit-2_strain.png", "truth_tilt_lr.png", "fit_tilt_ud_error.png", "fit-2_strain_parity.png",
                     "fit_crosstalk.png", "fit_valid.png"] {
            XCTAssert(files.contains(name), "\(name) missing: \(files.sorted())")
        }
        let frameFiles = files.filter { $0.hasPrefix("fit_frame_") }
        XCTAssert([6, 9].contains(frameFiles.count) && frameFiles.count % 3 == 0,
                  "2–3 distinct pixels × measured, model, difference: \(files.sorted())")
        XCTAssertFalse(files.contains { $0.hasPrefix("fit-2_frame_") }, "frames of RESULT only")
        // The RMSE printed is the one `donut evaluate` reports for the same file.
        let evaluate = try donut(["evaluate", "--scan", "scan.h5", "fit.h5"], in: dir)
        assertSucceeded(evaluate, "evaluate")
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("fit strain: RMSE") })
        let rmse = try XCTUnwrap(Double(line.split(separator: " ").last!))
        let row = try XCTUnwrap(evaluate.stdout.split(separator: "\n").first { $0.hasPrefix("fit.h5") })
        let evaluated = try XCTUnwrap(row.split(separator: " ").compactMap { Double($0) }.first)
        XCTAssertEqual(rmse, evaluated, accuracy: evaluated * 2e-3, "plot \(line) vs evaluate \(row)")

        let before = try Data(contentsOf: dir.appendingPathComponent("plots/fit_strain.png"))
        let again = try donut(["plot", "fit.h5", "--out", "plots"], in: dir)
        XCTAssertEqual(again.status, 2, again.all)
        XCTAssert(again.stderr.contains("--force"), again.stderr)
        XCTAssertEqual(try Data(contentsOf: dir.appendingPathComponent("plots/fit_strain.png")), before)
        assertSucceeded(try donut(["plot", "fit.h5", "--out", "plots", "--force"], in: dir), "plot --force")

        let noTruth = try donut(["plot", "fit.h5", "--truth", "fit.h5", "--out", "p2"], in: dir)
        XCTAssertEqual(noTruth.status, 2, noTruth.all)
        XCTAssert(noTruth.stderr.contains("fit.h5") && noTruth.stderr.contains("ground_truth"), noTruth.stderr)
    }
}
