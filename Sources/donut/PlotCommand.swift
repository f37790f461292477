import ArgumentParser
import Foundation
import DonutIO

struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "PNG figures of result maps: maps, quality maps, and against ground truth errors, parity and crosstalk.",
        usage: "donut plot <result.h5> [--compare <other.h5> ...] [--truth <scan.h5>]\n[--scan <scan.h5>] [--frames <n>] --out <dir> [--force]",
        discussion: """
        Writes <out>/<name>_<map>.png for RESULT and every --compare file (strain and tilts in a \
        diverging colour map centred on 0 with the same limits across the files, axes in µm when \
        the scan positions are known, σ / goodness-of-fit / residual / valid maps), and with \
        --truth: truth_<map>.png, <name>_<map>_error.png, <name>_<map>_parity.png and \
        <name>_crosstalk.png (tilt_lr error against true strain), printing each map's RMSE; with \
        a scan (--scan, else --truth): <name>_frame_r<row>_c<col>_{measured,model,difference}.png \
        for --frames pixels (worst and median goodness of fit, largest |strain|), the model \
        frame from the forward model at the pixel's parameters scaled to the measured counts. \
        Refuses (exit 2, nothing written) when a figure exists, unless --force. For figures \
        with matplotlib, see the notebooks in notebooks-export/.
        """)

    @Argument(help: ArgumentHelp("Result file (from fit, infer, refine or reprocess).", valueName: "result.h5")) var result: String
    @Option(parsing: .upToNextOption, help: ArgumentHelp("Result files to draw beside it (same scan).", valueName: "other.h5"))
    var compare: [String] = []
    @Option(help: ArgumentHelp("Scan with /entry/ground_truth (from `donut simulate scan`).", valueName: "scan.h5")) var truth: String?
    @Option(help: ArgumentHelp("Scan whose frames are drawn beside the model's (default: --truth).", valueName: "scan.h5")) var scan: String?
    @Option(help: "Pixels of RESULT whose measured frame, model frame and difference are drawn (needs --scan or --truth).")
    var frames = 3
    @Option(help: ArgumentHelp("Folder for the PNG files (created if missing).", valueName: "dir")) var out: String
    @Flag(help: "Overwrite existing figures.") var force = false

    func validate() throws { guard frames >= 0 else { throw ValidationError("--frames must be ≥ 0 (got \(frames))") } }

    func run() throws {
        let report = try ResultPlots.write(.init(result: result, compare: compare, truthScan: truth, outDir: out, force: force,
                                                 frameScan: scan, frameCount: frames))
        for line in report.metrics { print(line) }
        print("wrote \(report.files.count) figure(s) into \(out)/")
    }
}
