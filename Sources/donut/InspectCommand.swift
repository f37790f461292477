import ArgumentParser
import DonutIO
import Foundation

/// `donut inspect SCAN`: what a detector file holds, before choosing a ROI and a mask.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a scan file: dtype, shape, chunks, filters, mask, hot pixels, monitor, positioners, order, and a suggested ROI.",
        discussion: """
        Sums the frames (at most --frames, evenly spread), counts masked, sentinel (gap) and hot \
        pixels, finds the brightest region of the model's ROI size (frame_size × binning of the \
        config) and writes the summed frame as a PNG with that ROI drawn in red. Prints the \
        --roi, --mask, --monitor and --hot-pixel-threshold a fit or an inference would need.
        """)

    @Argument(help: ArgumentHelp("Scan file (HDF5).", valueName: "scan.h5")) var scan: String
    @Option(help: "Dataset holding the frames.") var dataset = defaultFramesDataset
    @Option(help: ArgumentHelp("Config whose frame_size × binning sizes the suggested ROI (default: the file's, else the preset).", valueName: "file.yaml"))
    var config: String?
    @Option(help: ArgumentHelp("Scan shape for 3-D (N, H, W) frames without positioners, as ROWSxCOLS.", valueName: "rowsxcols"))
    var scanShape: String?
    @OptionGroup(title: "Raw detector files") var read: ScanReadFlags
    @Option(help: "Frames summed, evenly spread over the scan (0: all).") var frames = 256
    @Option(help: ArgumentHelp("Summed frame with the suggested ROI (default: <scan name>_summed.png in the working folder).", valueName: "file.png"))
    var png: String?
    @Flag(help: "Overwrite the PNG.") var force = false

    func run() throws {
        let cfg = try config.map { try ConfigFile.load(path: $0) }
        let out = png ?? URL(fileURLWithPath: scan).deletingPathExtension().lastPathComponent + "_summed.png"
        let result = try inspectScan(path: scan, dataset: dataset, config: cfg, options: try read.options,
                                     scanShape: try ScanOptions.parseShape(scanShape), maxFrames: frames, pngPath: out, force: force)
        print(result.report.joined(separator: "\n"))
    }
}
