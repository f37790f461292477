import Foundation

/// The status file of `donut reprocess` (`<output folder>/reprocess-status.json`): one entry
/// per manifest scan, rewritten atomically (temp + rename) by rank 0 whenever a scan starts
/// or ends, so a killed run leaves a readable file saying what finished.
///
///     {"manifest": "...", "updated": "ISO 8601", "scans": [
///       {"name": "scans[0] a.h5", "scan": "/abs/a.h5", "output": "/abs/out/a_maps.h5",
///        "state": "done", "reason": "", "fingerprint": "c128:…", "frames": 4096, "seconds": 3.2,
///        "inputs": [FileContent…], "result": FileContent}, …]}
///
/// `inputs` and `result` record the content (and `stat`) of the input files and of the result
/// as written, so a rerun hashes a file again only when its `stat` changed (`ContentFingerprint`)
/// and recognises a result that someone else truncated or replaced.
public struct ReprocessStatus: Codable, Equatable, Sendable {
    public enum State: String, Codable, Sendable { case pending, running, done, failed }

    public struct Entry: Codable, Equatable, Sendable {
        public var name: String
        public var scan: String
        public var output: String
        public var state: State
        /// Why the scan failed (file and field named), empty otherwise.
        public var reason: String
        /// `ReprocessJob.fingerprint(inputs:)` of the run that produced the result.
        public var fingerprint: String
        public var frames: Int
        /// Wall time of the scan (s).
        public var seconds: Double
        /// The input files' content when the result was made (nil in files of older versions).
        public var inputs: [FileContent]?
        /// The result file's content as written (nil until done, and in older files).
        public var result: FileContent?
        public init(name: String, scan: String, output: String, state: State = .pending, reason: String = "",
                    fingerprint: String = "", frames: Int = 0, seconds: Double = 0,
                    inputs: [FileContent]? = nil, result: FileContent? = nil) {
            self.name = name; self.scan = scan; self.output = output; self.state = state; self.reason = reason
            self.fingerprint = fingerprint; self.frames = frames; self.seconds = seconds
            self.inputs = inputs; self.result = result
        }
    }

    public var manifest: String
    public var updated: String
    public var scans: [Entry]

    public init(manifest: String, scans: [Entry]) {
        self.manifest = manifest; self.scans = scans
        updated = ISO8601DateFormatter().string(from: Date())
    }

    /// The status file in `folder`.
    public static func path(inFolder folder: String) -> String {
        URL(fileURLWithPath: folder).appendingPathComponent("reprocess-status.json").path
    }

    /// The file at `path`, or nil when there is none. A file that exists but cannot be read
    /// is an error naming it (it is never silently replaced).
    public static func read(path: String) throws -> ReprocessStatus? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        do {
            return try JSONDecoder().decode(Self.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw DonutIOError(file: path, "is not a reprocess status file (\(error.localizedDescription)); move it away or pass --force")
        }
    }

    /// Writes the file (as `write(path:)`) unless it already holds these entries for this
    /// manifest: a rerun that changes nothing leaves the file — and its mtime — alone.
    /// Returns whether it wrote.
    @discardableResult
    public func writeIfChanged(path: String) throws -> Bool {
        if let old = try? Self.read(path: path), old.manifest == manifest, old.scans == scans { return false }
        try write(path: path)
        return true
    }

    /// Writes the file atomically: a temporary file in the same folder, then rename.
    public func write(path: String) throws {
        var copy = self
        copy.updated = ISO8601DateFormatter().string(from: Date())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(copy)
        do { try AtomicOutput.write(data, to: path, force: true) } catch {
            throw DonutIOError(file: path, "cannot write the status file: \(error.localizedDescription)")
        }
    }
}
