import Foundation

// Reruns (reprocess, refine's re-inference, train, sweep points): what counts as done, what is
// redone, and when an existing file may be replaced without --force. One rule everywhere:
// a result counts as done only when it is verified readable and complete AND was made from
// inputs with the same content and the same settings; a stale result Donut recorded as its own
// (or a damaged one) is replaced; any other existing file needs --force.

/// A result file checked before a rerun counts it as done.
public enum ResultCheck {
    /// Reads every map of the result at `path` back whole and checks that each holds
    /// rows × cols values (and `expectedFrames` of them when given). Throws, naming the file
    /// and the map, when the file is unreadable (truncated, corrupt) or incomplete.
    /// Returns the number of frames.
    @discardableResult
    public static func verify(path: String, expectedFrames: Int? = nil) throws -> Int {
        let maps = try ResultMapsReader.read(path: path)
        let n = maps.layout.frameCount, r = maps.results
        var named: [(String, Int)] = [("strain", r.strain.count), ("tilt_lr", r.tiltLRDeg.count),
                                      ("tilt_ud", r.tiltUDDeg.count), ("valid", r.valid.count)]
        if let t = r.thicknessA { named.append(("thickness", t.count)) }
        if let t = r.residual { named.append(("residual", t.count)) }
        for (k, v) in r.sigmas { named.append((k, v.count)) }
        for (name, count) in named where count != n {
            throw DonutIOError.dataset(path, "/entry/result/\(name)", "holds \(count) values, the maps are \(maps.layout.rows)×\(maps.layout.cols)")
        }
        if let expectedFrames, expectedFrames != n {
            throw DonutIOError(file: path, "holds \(n) frames, the scan has \(expectedFrames)")
        }
        return n
    }
}

/// What a reprocess rerun does with one scan.
public enum ReprocessVerdict: Equatable, Sendable {
    /// Done before with the same fingerprint, result verified: leave it (entry to keep, with
    /// refreshed file records when a file was only touched).
    case done(ReprocessStatus.Entry)
    /// Process it; `replace`: overwrite the existing output (Donut's own stale result, or a
    /// damaged file), with `why` for the log.
    case run(replace: Bool, why: String)
    /// Do not process: the output exists and is not Donut's recorded result (message says so).
    case refuse(String)
}

public enum ReprocessRerun {
    /// Decides what to do with `job` given its `previous` status entry (nil: none, or --force
    /// given — then `force` is true too). Returns the verdict with the current input records
    /// and fingerprint (to record when the scan is done). Throws when an input exists but
    /// cannot be read (the scan fails with that reason).
    public static func decide(_ job: ReprocessJob, previous: ReprocessStatus.Entry?, force: Bool) throws
        -> (verdict: ReprocessVerdict, inputs: [FileContent], fingerprint: String) {
        let inputs = try job.inputFiles.map { try ContentFingerprint.content(of: $0, reusing: previous?.inputs ?? []) }
        let fingerprint = job.fingerprint(inputs: inputs)
        let out = job.outputPath
        guard FileManager.default.fileExists(atPath: out) else {
            return (.run(replace: false, why: previous?.state == .done ? "result \(out) is missing" : ""), inputs, fingerprint)
        }
        if force { return (.run(replace: true, why: "--force"), inputs, fingerprint) }
        var damage: String?
        do { try ResultCheck.verify(path: out, expectedFrames: previous?.state == .done ? previous?.frames : nil) } catch {
            damage = "\(error)"
        }
        let current = try? ContentFingerprint.content(of: out, reusing: previous?.result.map { [$0] } ?? [])
        let ours = previous?.result.map { $0.digest == current?.digest } ?? false
        if let previous, previous.state == .done, damage == nil, ours || previous.result == nil,
           previous.fingerprint == fingerprint {
            var keep = previous
            keep.inputs = inputs
            if let current { keep.result = current }
            return (.done(keep), inputs, fingerprint)
        }
        if let damage {
            return (.run(replace: true, why: "the existing result is not usable (\(damage)); redoing it"), inputs, fingerprint)
        }
        if ours {
            return (.run(replace: true, why: "inputs or settings changed since the result was made; redoing it"), inputs, fingerprint)
        }
        return (.refuse("exists and is not the result this status file recorded for the scan; pass --force to overwrite it"),
                inputs, fingerprint)
    }
}

/// What a training (train, refine, sweep point) records in its checkpoints and in the final
/// model, so that a rerun can tell a finished run from an interrupted one and a checkpoint of
/// this run from one of another: the digest of its settings, and the content of its inputs.
///
/// Stored as JSON in `/entry/model/run` of checkpoint and model files.
public struct TrainingRun: Codable, Equatable, Sendable {
    /// `ContentFingerprint.digest(ofText:)` of everything that decides the weights except the
    /// input files' content: the training preset, the mode, the mix, the scans' paths, datasets
    /// and ROIs, the library path.
    public var settings: String
    /// A short, human-readable account of the settings (named in messages).
    public var settingsText: String
    /// The input files (scans, library, base model) with their content.
    public var inputs: [FileContent]
    /// True in the final model, false in checkpoints.
    public var finished: Bool

    public init(settingsText: String, inputs: [FileContent], finished: Bool = false) {
        self.settings = ContentFingerprint.digest(ofText: settingsText)
        self.settingsText = settingsText; self.inputs = inputs; self.finished = finished
    }

    /// The input files, read afresh (digests reused from `previous` records when unchanged).
    public static func inputs(_ paths: [String], reusing previous: [FileContent]) throws -> [FileContent] {
        try paths.map { try ContentFingerprint.content(of: $0, reusing: previous) }
    }

    /// The settings that differ from `other`'s, as "key: old → new" (settings texts of
    /// `key=value` lines), at most `limit` of them and a count of the rest.
    public func settingsChanges(from other: TrainingRun, limit: Int = 6) -> String {
        func pairs(_ text: String) -> [String: String] {
            var d: [String: String] = [:]
            for line in text.split(separator: "\n") {
                let kv = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                d[String(kv[0])] = kv.count > 1 ? String(kv[1]) : ""
            }
            return d
        }
        let old = pairs(other.settingsText), now = pairs(settingsText)
        let changed = Set(old.keys).union(now.keys).sorted().filter { old[$0] != now[$0] }
        var parts = changed.prefix(limit).map { "\($0): \(old[$0] ?? "—") → \(now[$0] ?? "—")" }
        if changed.count > limit { parts.append("and \(changed.count - limit) more") }
        return parts.isEmpty ? "settings differ" : parts.joined(separator: "; ")
    }

    /// The inputs whose content differs from `other`'s (paths), empty when all agree.
    public func changedInputs(since other: TrainingRun) -> [String] {
        let old = Dictionary(other.inputs.map { ($0.path, $0.digest) }, uniquingKeysWith: { a, _ in a })
        var changed = inputs.filter { old[$0.path] != $0.digest }.map(\.path)
        let now = Set(inputs.map(\.path))
        changed += other.inputs.map(\.path).filter { !now.contains($0) }
        return changed
    }
}

/// What a training rerun does.
public enum TrainingVerdict: Equatable, Sendable {
    /// The model at `out` is finished with these settings and inputs: nothing to do (exit 0).
    case alreadyDone
    /// Continue the interrupted run from this checkpoint.
    case resume(String)
    /// Start from step 0; `replace`: overwrite Donut's own stale model/checkpoint; `why` for the log.
    case fresh(replace: Bool, why: String)
    /// Refuse (before any computation): the file in the way and why.
    case refuse(file: String, message: String)

    /// The refusal as an error naming the file.
    public var error: DonutIOError? {
        if case .refuse(let file, let message) = self { return DonutIOError(file: file, message) }
        return nil
    }
}

public enum TrainingRerun {
    /// The run record of a model or checkpoint file; nil when the file has none (written by
    /// an older version). Throws when the file cannot be read as a model/checkpoint.
    public static func record(of path: String) throws -> TrainingRun? {
        try CheckpointFile.readRun(path: path)
    }

    /// Decides between "already done", "resume", "start afresh" and "refuse".
    ///
    /// - `out` exists, readable, finished with the same settings and inputs → `.alreadyDone`
    ///   (unless `force`).
    /// - `out` exists with the same settings but changed inputs (a repaired or replaced scan)
    ///   → `.fresh(replace:)`: trained again on the new frames; its checkpoint is ignored.
    /// - `out` exists with other settings, no record, or unreadable → `.refuse` unless `force`.
    /// - else a checkpoint (`resume`, or `checkpoint` when it exists and `resume` is nil):
    ///   same settings and inputs and unfinished → `.resume`; same settings but other inputs →
    ///   `.fresh(replace: true)` (the checkpoint is stale); other settings or no record →
    ///   `.refuse` unless `force`.
    public static func decide(current: TrainingRun, out: String, checkpoint: String, resume: String?,
                              force: Bool) -> TrainingVerdict {
        let fm = FileManager.default
        if force {
            if let resume, fm.fileExists(atPath: resume) {
                return verdictForCheckpoint(resume, current: current, force: true)
            }
            return .fresh(replace: true, why: "--force")
        }
        if fm.fileExists(atPath: out) {
            let done: TrainingRun?
            do {
                _ = try CheckpointFile.read(path: out)   // readable and complete
                done = try record(of: out)
            } catch {
                return .refuse(file: out, message: "exists but is not a readable model (\(error)); move it away or pass --force")
            }
            guard let done else {
                return .refuse(file: out, message: "exists and records no run fingerprint (an older donut wrote it); pass --force to overwrite it")
            }
            if done.settings != current.settings {
                return .refuse(file: out, message: "exists and was trained with other settings (\(current.settingsChanges(from: done))); pass --force to overwrite it or choose another --out")
            }
            let changed = current.changedInputs(since: done)
            if changed.isEmpty && done.finished { return .alreadyDone }
            return .fresh(replace: true, why: "\(out) was trained before on other content of \(changed.joined(separator: ", ")): training again on the current frames")
        }
        if let resume {
            guard fm.fileExists(atPath: resume) else { return .refuse(file: resume, message: "no such checkpoint to resume") }
            return verdictForCheckpoint(resume, current: current, force: false)
        }
        if fm.fileExists(atPath: checkpoint) {
            return verdictForCheckpoint(checkpoint, current: current, force: false, explicit: false)
        }
        return .fresh(replace: false, why: "")
    }

    static func verdictForCheckpoint(_ path: String, current: TrainingRun, force: Bool, explicit: Bool = true) -> TrainingVerdict {
        let saved: TrainingRun?
        do {
            _ = try CheckpointFile.read(path: path)
            saved = try record(of: path)
        } catch {
            return force ? .fresh(replace: true, why: "--force (the checkpoint \(path) is unreadable: \(error))")
                : .refuse(file: path, message: "is not a readable checkpoint (\(error)); move it away or pass --force to start afresh")
        }
        guard let saved else {
            return force ? .fresh(replace: true, why: "--force")
                : .refuse(file: path, message: "records no run fingerprint (an older donut wrote it), so it cannot be told to belong to this run; pass --force to start afresh")
        }
        if saved.settings != current.settings {
            return force ? .fresh(replace: true, why: "--force (the checkpoint \(path) belongs to other settings)")
                : .refuse(file: path, message: "this checkpoint belongs to a run with other settings (\(current.settingsChanges(from: saved))); it is not resumed — remove it, choose another --checkpoint, or pass --force to start afresh")
        }
        let changed = current.changedInputs(since: saved)
        if !changed.isEmpty {
            return .fresh(replace: true, why: "the checkpoint \(path) was made from other content of \(changed.joined(separator: ", ")): not resumed, training afresh on the current frames")
        }
        return .resume(path)
    }
}
