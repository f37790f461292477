import Foundation
import DonutCore
import DonutIO
import DonutMPI

/// Every scan of a manifest, one NeXus map file each and a status file (`donut reprocess`).
public struct ReprocessRequest {
    /// Manifest listing the scans (YAML).
    public var manifestPath: String
    /// Output folder; nil: the manifest's output_dir, relative to the manifest.
    public var outDir: String?
    /// Redo scans already done and overwrite their results.
    public var force = false
    /// Refine every scan by per-frame Poisson maximum likelihood (overrides the manifest).
    public var physicsRefine = false
    /// Levenberg–Marquardt iterations per frame (overrides the manifest's refine_iterations).
    public var refineIterations: Int?
    /// PNG quick-looks beside every result.
    public var quickLooks = false
    /// Frames per streamed chunk and rank.
    public var chunkFrames = InferRequest.defaultChunkFrames
    /// Scan-reading settings from the command line (roi, mask, monitor, scan_order,
    /// hot_pixel_threshold), over the manifest's for every scan.
    public var scanRead: ReprocessManifest.Settings?

    public init(manifestPath: String, outDir: String? = nil) {
        self.manifestPath = manifestPath; self.outDir = outDir
    }
}

/// What a run over a manifest did, the same on every rank.
public struct ReprocessOutcome {
    /// Scans processed now.
    public var done: Int
    /// Scans done before with the same inputs, left alone.
    public var skipped: Int
    /// Scans that failed (the others are done): their reasons are in the status file.
    public var failed: Int
    /// The status file (`reprocess-status.json` in the output folder).
    public var statusPath: String
    /// True when a stop request (`refine`: SIGTERM/SIGUSR1) ended the run between two scans:
    /// the rest are pending in the status file and the same command again continues.
    public var interrupted = false
}

/// Runs every scan of `request`'s manifest one after another on all ranks. Collective.
public func reprocess(_ ctx: RunContext, _ request: ReprocessRequest) throws -> ReprocessOutcome {
    let manifest = request.manifestPath
    let m = try ReprocessManifest.load(path: manifest)
    var jobs = m.jobs(manifestPath: manifest, outputDir: request.outDir, override: request.scanRead)
    for i in jobs.indices {
        if request.physicsRefine {
            jobs[i].refineIterations = request.refineIterations ?? jobs[i].refineIterations ?? PhysicsRefinement.defaultMaxIterations
        } else if let n = request.refineIterations, jobs[i].refineIterations != nil {
            jobs[i].refineIterations = n
        }
    }
    return try runReprocessJobs(ctx, jobs: jobs, manifest: manifest,
                                folder: m.outputFolder(manifestPath: manifest, override: request.outDir),
                                force: request.force, quicklook: request.quickLooks, chunk: request.chunkFrames)
}

/// Runs the resolved `jobs` of `manifest` one after another on all ranks, keeping the status
/// file in `folder` (see `donut reprocess --help`). Shared by `reprocess` and `refine`
/// (which re-infers every scan with the refined model).
/// `shouldStop`, when given, is asked before every scan (on every rank; any rank's request
/// stops all): true ends the run there, the scans not reached left pending in the status file.
func runReprocessJobs(_ ctx: RunContext, jobs: [ReprocessJob], manifest: String, folder: String, force: Bool,
                      quicklook: Bool, chunk: Int, shouldStop: (() -> Bool)? = nil) throws -> ReprocessOutcome {
    let comm = ctx.comm
    // This loop's own wall and CPU time (refine runs it after training in the same process).
    let started = Date(), startCPU = CommunicationClock.processCPUSeconds()
    let statusPath = ReprocessStatus.path(inFolder: folder)
    // Rank 0 owns the status file; every decision it takes is broadcast.
    var previous: [String: ReprocessStatus.Entry] = [:]
    func key(_ output: String, _ scan: String) -> String { output + "\u{0}" + scan }
    var setupProblem = ""
    if comm.isRoot {
        do {
            if !FileManager.default.fileExists(atPath: folder) {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            }
            // With --force an unreadable status file is replaced; without, it is an error.
            if let old = force ? (try? ReprocessStatus.read(path: statusPath)) ?? nil : try ReprocessStatus.read(path: statusPath) {
                // A duplicate entry (same scan and output, failed) must not hide the done one.
                for e in old.scans where previous[key(e.output, e.scan)]?.state != .done { previous[key(e.output, e.scan)] = e }
            }
        } catch {
            setupProblem = "\(error)"
        }
    }
    // The status file is the run's record: a path it cannot be written to (a folder, a
    // FIFO, the manifest itself) ends the run before any scan, not with a warning.
    var statusProblem = ""
    if comm.isRoot {
        if let kind = FileKind.nonRegular(statusPath) {
            statusProblem = "\(DonutIOError(file: statusPath, "is \(kind), not a status file: move it away or choose another output folder"))"
        } else if let why = FileIdentity.clash(output: statusPath, inputs: [("--manifest", manifest)]) {
            statusProblem = "\(DonutIOError(file: statusPath, why))"
        }
    }
    statusProblem = comm.broadcast(statusProblem)
    if !statusProblem.isEmpty { throw PipelineError(statusProblem) }
    setupProblem = comm.broadcast(setupProblem)
    if !setupProblem.isEmpty { ctx.log("reprocess: \(setupProblem)") }
    // Every scan starts from what the status file says of it (done stays done), else pending;
    // a scan recorded as running was interrupted: pending.
    var status = ReprocessStatus(manifest: URL(fileURLWithPath: manifest).standardizedFileURL.path, scans: jobs.map { job in
        guard var e = previous[key(job.outputPath, job.scanPath)] else { return .init(name: job.name, scan: job.scanPath, output: job.outputPath) }
        e.name = job.name
        if e.state == .running { e.state = .pending }
        return e
    })
    var statusWritable = true
    /// Writes the status file when an entry changed (a rerun that changes nothing writes nothing).
    func saveStatus() {
        guard comm.isRoot, statusWritable else { return }
        do { try status.writeIfChanged(path: statusPath) } catch {
            statusWritable = false
            ctx.log("reprocess: warning: \(error) — status is reported here only")
        }
    }
    saveStatus()
    ctx.log("reprocess: \(jobs.count) scan(s) from \(manifest), results in \(folder), \(comm.size) rank(s)")
    let totals = StageTimes()
    var frames = 0, skipped = 0
    let progress = ctx.progress("reprocess scans", total: jobs.count, unit: "scans")
    var warnings: [String] = []
    var interrupted = false
    for (i, job) in jobs.enumerated() {
        if let shouldStop {
            var requests = [shouldStop() ? 1.0 : 0.0]
            comm.allreduceSum(&requests)
            if requests[0] > 0 {
                interrupted = true
                ctx.log("reprocess: stopped by signal before \(job.name): \(jobs.count - i) of \(jobs.count) scan(s) left pending in the status file; the same command again continues")
                break
            }
        }
        defer { progress.update(i + 1, detail: job.name) }
        // Done, run (replacing our own stale or a damaged result) or fail: decided on rank 0,
        // which alone reads the status, hashes the inputs and verifies the result.
        var verdict = ""   // "done", "fail:<reason>", "run" or "replace"
        var why = ""
        var fingerprint = "", inputs: [FileContent] = []
        if comm.isRoot {
            if let reason = job.duplicateOf {
                verdict = "fail:" + reason
            } else {
                do {
                    let d = try ReprocessRerun.decide(job, previous: force ? nil : previous[key(job.outputPath, job.scanPath)], force: force)
                    fingerprint = d.fingerprint; inputs = d.inputs
                    switch d.verdict {
                    case .done(let entry):
                        verdict = "done"
                        status.scans[i] = entry; status.scans[i].name = job.name
                    case .run(let replace, let reason):
                        verdict = replace ? "replace" : "run"; why = reason
                    case .refuse(let message):
                        verdict = "fail:" + "\(DonutIOError(file: job.outputPath, message))"
                    }
                } catch {
                    verdict = "fail:\(error)"
                }
            }
        }
        verdict = comm.broadcast(verdict)
        why = comm.broadcast(why)
        if verdict == "done" {
            skipped += 1
            ctx.log("\(job.name): done before with the same inputs and settings, result verified; left alone (--force redoes it)")
            saveStatus()
            continue
        }
        if verdict.hasPrefix("fail:") {
            status.scans[i].state = .failed; status.scans[i].reason = String(verdict.dropFirst(5))
            ctx.log("\(job.name): FAILED: \(status.scans[i].reason)")
            saveStatus()
            continue
        }
        if !why.isEmpty && why != "--force" { ctx.log("\(job.name): \(why)") }
        let replace = verdict == "replace"
        status.scans[i].state = .running; status.scans[i].reason = ""
        saveStatus()
        let times = StageTimes(), t0 = Date()
        var count = 0
        var reason = "", warning: String?
        do {
            let scan = ScanInput(path: job.scanPath, dataset: job.dataset, scanShape: job.scanShape, roi: job.roi, options: job.readOptions)
            let outputs = MapOutputs(path: job.outputPath, force: force || replace, quickLooks: quicklook)
            let manifestInput = [(role: "--manifest", path: manifest), (role: "the status file", path: statusPath)]
            if job.method == "fit" {
                var request = FitRequest(scan: scan, libraryPath: job.modelPath, outputs: outputs, batch: job.batch,
                                         refineIterations: job.refineIterations)
                request.otherInputs = manifestInput
                let outcome = try fitScan(ctx, request, times: times)
                count = outcome.frames; warning = outcome.warning
            } else {
                var request = InferRequest(modelPath: job.modelPath, scan: scan, outputs: outputs, batch: job.batch,
                                           mcSamples: 0, refineIterations: job.refineIterations, chunkFrames: chunk)
                request.otherInputs = manifestInput
                let outcome = try inferScan(ctx, request, times: times)
                count = outcome.frames; warning = outcome.warning
            }
        } catch {
            reason = "\(error)"
        }
        // Belt and braces: every rank must agree on the outcome.
        if !comm.allAgree(reason.isEmpty) && reason.isEmpty { reason = "failed on another rank" }
        let seconds = Date().timeIntervalSince(t0)
        if reason.isEmpty {
            frames += count; totals.add(times)
            if let warning { warnings.append(warning) }
            status.scans[i].state = .done; status.scans[i].fingerprint = fingerprint
            status.scans[i].frames = count; status.scans[i].seconds = seconds
            status.scans[i].inputs = inputs
            if comm.isRoot { status.scans[i].result = try? ContentFingerprint.content(of: job.outputPath) }
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
    let done = status.scans.filter { $0.state == .done }.count - skipped
    ctx.log(String(format: "reprocess: %d done, %d skipped (done before), %d failed; %d frames in %.1f s wall, %.1f s CPU on rank 0; stages: %@",
                   done, skipped, failures.count, frames, Date().timeIntervalSince(started), CommunicationClock.processCPUSeconds() - startCPU,
                   totals.summary(estimateName: "estimate")))
    for f in failures { ctx.log("  failed: \(f.name): \(f.reason)") }
    for w in warnings { ctx.log(w) }   // the scans whose maps should not be trusted, again at the end
    if comm.isRoot && statusWritable { ctx.log("status: \(statusPath)") }
    return ReprocessOutcome(done: done, skipped: skipped, failed: failures.count, statusPath: statusPath, interrupted: interrupted)
}
