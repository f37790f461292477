import ArgumentParser
import Foundation
import DonutCore
import DonutIO
import DonutMPI

struct Reprocess: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Process every scan of a manifest: one NeXus map file per scan and a status file.",
        discussion: """
        The manifest (YAML, configs/README.md) lists scan files with defaults and per-scan overrides
        (method donut|fit, model or library, dataset, scan_shape, roi, physics_refine, …). Scans run one
        after another, each on all ranks together (frames split between ranks, one collective write), so
        the work is balanced inside every scan and no HDF5 collective ever waits for a busy rank. Each
        rank streams its frames in chunks: memory is a chunk, never a scan.

        <output folder>/reprocess-status.json says, per scan, pending / running / done / failed with the
        reason; it is rewritten atomically after every scan. A rerun skips scans recorded as done whose
        inputs and settings are unchanged (file sizes and times, method, model, refinement) and whose
        result still exists; --force redoes everything. A scan that fails (missing or corrupt file, wrong
        frame size, duplicate entry, unwritable output) is recorded and skipped while the others finish;
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
    @Option(help: "Frames per streamed chunk and rank (memory: chunk × 16 KiB for 64×64 frames).") var chunk = 4096

    func validate() throws {
        if let n = refineIterations, n < 1 { throw ValidationError("--refine-iterations must be ≥ 1 (got \(n))") }
        guard chunk >= 1 else { throw ValidationError("--chunk must be positive (got \(chunk))") }
    }

    func run() throws {
        var failed = 0
        try RunContext.run { ctx in failed = try reprocess(ctx) }
        if failed > 0 { throw ExitCode(2) }
    }

    /// Runs every job; returns the number of failed scans (the same on every rank).
    func reprocess(_ ctx: RunContext) throws -> Int {
        let m = try ReprocessManifest.load(path: manifest)
        var jobs = m.jobs(manifestPath: manifest, outputDir: outDir)
        for i in jobs.indices {
            if physicsRefine { jobs[i].refineIterations = refineIterations ?? jobs[i].refineIterations ?? 8 }
            else if let n = refineIterations, jobs[i].refineIterations != nil { jobs[i].refineIterations = n }
        }
        return try runReprocessJobs(ctx, jobs: jobs, manifest: manifest, folder: m.outputFolder(manifestPath: manifest, override: outDir),
                                    force: force, quicklook: quicklook, chunk: chunk)
    }
}

/// Runs the resolved `jobs` of `manifest` one after another on all ranks, keeping the status
/// file in `folder` (see `Reprocess`); returns the number of failed scans (the same on every
/// rank). Shared by `reprocess` and `refine` (which re-infers every scan with the refined model).
func runReprocessJobs(_ ctx: RunContext, jobs: [ReprocessJob], manifest: String, folder: String, force: Bool,
                      quicklook: Bool, chunk: Int) throws -> Int {
    let comm = ctx.comm
    // This loop's own wall and CPU time (refine runs it after training in the same process).
    let started = Date(), startCPU = processCPUSeconds()
    let statusPath = ReprocessStatus.path(inFolder: folder)
    // Rank 0 owns the status file; every decision it takes is broadcast.
    var previous: [String: ReprocessStatus.Entry] = [:]
    var setupProblem = ""
    if comm.isRoot {
        do {
            if !FileManager.default.fileExists(atPath: folder) {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            }
            if !force, let old = try ReprocessStatus.read(path: statusPath) {
                for e in old.scans where e.state == .done { previous[e.output + "\u{0}" + e.scan] = e }
            }
        } catch {
            setupProblem = "\(error)"
        }
    }
    setupProblem = comm.broadcast(setupProblem)
    if !setupProblem.isEmpty { ctx.log("reprocess: \(setupProblem)") }
    var status = ReprocessStatus(manifest: URL(fileURLWithPath: manifest).standardizedFileURL.path,
                                 scans: jobs.map { .init(name: $0.name, scan: $0.scanPath, output: $0.outputPath) })
    var statusWritable = true
    func saveStatus() {
        guard comm.isRoot, statusWritable else { return }
        do { try status.write(path: statusPath) } catch {
            statusWritable = false
            ctx.log("reprocess: warning: \(error) — status is reported here only")
        }
    }
    saveStatus()
    ctx.log("reprocess: \(jobs.count) scan(s) from \(manifest), results in \(folder), \(comm.size) rank(s)")
    let totals = StageTimes()
    var frames = 0, skipped = 0
    for (i, job) in jobs.enumerated() {
        // Skip or run: decided on rank 0 (it alone reads the status and stats the files).
        var verdict = ""   // "skip", "fail:<reason>" or "" (run)
        var fingerprint = ""
        if comm.isRoot {
            fingerprint = job.fingerprint
            if let reason = job.duplicateOf {
                verdict = "fail:" + reason
            } else if let old = previous[job.outputPath + "\u{0}" + job.scanPath], old.state == .done,
                      old.fingerprint == fingerprint, FileManager.default.fileExists(atPath: job.outputPath) {
                verdict = "skip"
                status.scans[i] = old
            }
        }
        verdict = comm.broadcast(verdict)
        if verdict == "skip" {
            skipped += 1
            ctx.log("\(job.name): done before with the same inputs, skipped (--force redoes it)")
            continue
        }
        if verdict.hasPrefix("fail:") {
            status.scans[i].state = .failed; status.scans[i].reason = String(verdict.dropFirst(5))
            ctx.log("\(job.name): FAILED: \(status.scans[i].reason)")
            saveStatus()
            continue
        }
        status.scans[i].state = .running
        saveStatus()
        let times = StageTimes(), t0 = Date()
        var count = 0
        var reason = ""
        do {
            let scan = ScanInput(path: job.scanPath, dataset: job.dataset, scanShape: job.scanShape, roi: job.roi)
            let outputs = MapOutputs(path: job.outputPath, force: force, quickLooks: quicklook)
            if job.method == "fit" {
                count = try fitScan(ctx, scan: scan, libraryPath: job.modelPath, outputs: outputs, batch: job.batch,
                                    refineIterations: job.refineIterations, times: times)
            } else {
                count = try inferScan(ctx, modelPath: job.modelPath, scan: scan, outputs: outputs, batch: job.batch,
                                      mcSamples: 0, refineIterations: job.refineIterations, times: times, chunkFrames: chunk)
            }
        } catch {
            reason = "\(error)"
        }
        // Belt and braces: every rank must agree on the outcome.
        if !comm.allAgree(reason.isEmpty) && reason.isEmpty { reason = "failed on another rank" }
        let seconds = Date().timeIntervalSince(t0)
        if reason.isEmpty {
            frames += count; totals.add(times)
            status.scans[i].state = .done; status.scans[i].fingerprint = fingerprint
            status.scans[i].frames = count; status.scans[i].seconds = seconds
            ctx.log(String(format: "%@: done, %d frames in %.2f s (%.0f frames/s) — %@, other (open, load, check) %.3f s", job.name,
                           count, seconds, Double(count) / max(seconds, 1e-9),
                           times.summary(estimateName: job.method == "fit" ? "fit" : "infer"), seconds - times.total))
        } else {
            status.scans[i].state = .failed; status.scans[i].reason = reason; status.scans[i].seconds = seconds
            ctx.log("\(job.name): FAILED: \(reason)")
        }
        saveStatus()
    }
    let failures = status.scans.filter { $0.state == .failed }
    let done = status.scans.count - failures.count - skipped
    ctx.log(String(format: "reprocess: %d done, %d skipped (done before), %d failed; %d frames in %.1f s wall, %.1f s CPU on rank 0; stages: %@",
                   done, skipped, failures.count, frames, Date().timeIntervalSince(started), processCPUSeconds() - startCPU,
                   totals.summary(estimateName: "estimate")))
    for f in failures { ctx.log("  failed: \(f.name): \(f.reason)") }
    if comm.isRoot && statusWritable { ctx.log("status: \(statusPath)") }
    return failures.count
}
