import ArgumentParser
import DonutPipeline

struct Reprocess: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Process every scan of a manifest: one NeXus map file per scan and a status file.",
        usage: "donut reprocess --manifest <scans.yaml> [--out-dir <dir>] [<options>]",
        discussion: """
        The manifest (YAML, configs/README.md) lists scan files with defaults and per-scan overrides \
        (method donut|fit, model or library, dataset, scan_shape, roi, physics_refine, …). Scans run one \
        after another, each on all ranks together (frames split between ranks, one collective write), so \
        the work is balanced inside every scan and no HDF5 collective ever waits for a busy rank. Each \
        rank streams its frames in chunks: memory is a chunk, never a scan.

        <output folder>/reprocess-status.json says, per scan, pending / running / done / failed with the \
        reason; it is rewritten atomically whenever an entry changes. A rerun leaves a scan done (and \
        writes nothing) when its settings and the CONTENT of its inputs (scan, model or library, mask; \
        a streamed hash, not modification times) are unchanged and its result is verified readable, \
        complete and identical to the one recorded; it redoes a scan whose inputs or settings changed \
        (replacing its own earlier result) or whose result was truncated or damaged, and refuses to \
        overwrite any other file without --force. --force redoes everything. A scan that fails (missing or corrupt file, wrong \
        frame size, duplicate entry, unwritable output) is recorded and skipped while the others finish; \
        the exit status is non-zero when any scan failed, after a summary.
        """)

    @Option(help: ArgumentHelp("Manifest listing the scans (YAML).", valueName: "scans.yaml")) var manifest: String
    @Option(help: ArgumentHelp("Output folder (default: the manifest's output_dir, relative to the manifest).", valueName: "dir"))
    var outDir: String?
    @Flag(help: "Redo scans already done and overwrite their results.") var force = false
    @Flag(help: "Refine every scan by per-frame Poisson maximum likelihood (overrides the manifest's physics_refine).")
    var physicsRefine = false
    @Option(help: "Levenberg–Marquardt iterations per frame (overrides the manifest's refine_iterations).")
    var refineIterations: Int?
    @Flag(inversion: .prefixedNo, help: "Write PNG quick-looks beside every result.") var quicklook = false
    @OptionGroup(title: "Raw detector files (these win over the manifest's keys)") var read: ScanReadFlags
    @Option(help: "Frames per streamed chunk and rank (memory: chunk × 16 KiB for 64×64 frames).") var chunk = InferRequest.defaultChunkFrames

    func validate() throws {
        if let n = refineIterations, n < 1 { throw ValidationError("--refine-iterations must be ≥ 1 (got \(n))") }
        guard chunk >= 1 else { throw ValidationError("--chunk must be positive (got \(chunk))") }
    }

    @OptionGroup(title: "Progress") var progressOptions: ProgressOptions
    @OptionGroup(title: "Progress") var verboseOptions: VerboseOptions

    func run() throws {
        var outcome: ReprocessOutcome?
        try RunContext.run(quiet: progressOptions.quiet, verbose: verboseOptions.verbose) { ctx in
            var request = ReprocessRequest(manifestPath: manifest, outDir: outDir)
            request.force = force; request.physicsRefine = physicsRefine; request.refineIterations = refineIterations
            request.quickLooks = quicklook; request.chunkFrames = chunk
            request.scanRead = try read.manifestOverride
            outcome = try reprocess(ctx, request)
        }
        if let outcome, outcome.failed > 0 { throw outcome.failure() }
    }
}
