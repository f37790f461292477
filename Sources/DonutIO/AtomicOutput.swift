import DonutMPI
import Foundation

/// The rule every Donut output follows: never overwrite without `--force`, and never leave
/// a half-written file under the final name.
///
/// `init` (collective) checks up front, on rank 0, that the folder is writable and that the
/// final path does not exist unless `force`; the verdict is broadcast so every rank throws
/// the same error. Writers then write `temporaryPath` (`.<name>.partial-<token>` in the same
/// folder, the token chosen by rank 0), close it, and call `commit()` (collective: barrier,
/// rank 0 renames onto the final path, barrier). On any error call `discard()`.
public struct AtomicOutput: Sendable {
    /// The path the user asked for.
    public let finalPath: String
    /// Where to write until `commit()`.
    public let temporaryPath: String
    public let comm: Communicator?

    /// `expectedBytes`: about how large the file will be; the folder must have twice that
    /// plus 1 MiB free, checked up front. A full disk met halfway through an HDF5 write leaves
    /// HDF5 1.10 with a half-closed file that crashes the process at MPI_Finalize; refusing
    /// early gives a clear error instead (the temporary file is never started).
    ///
    /// `inputs` (role, path), e.g. ("--scan", "scan.h5"): the files the output is computed
    /// from; an output that is the same file as one of them (by identity: symlinks, hard
    /// links, `./`) is refused with or without `force`.
    public init(path: String, force: Bool, comm: Communicator? = nil, expectedBytes: Int = 0,
                inputs: [(role: String, path: String)] = []) throws {
        finalPath = path; self.comm = comm
        let isRoot = comm?.isRoot ?? true
        var verdict = ""  // empty: fine; else the error message
        var token = ""
        if isRoot {
            verdict = FileIdentity.clash(output: path, inputs: inputs)
                ?? Self.check(path: path, force: force) ?? Self.checkSpace(path: path, expectedBytes: expectedBytes) ?? ""
            if verdict.isEmpty { Self.removeStalePartials(of: path) }
            token = "\(Self.hostTag)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0 ... .max))"
        }
        if let comm {
            verdict = comm.broadcast(verdict)
            token = comm.broadcast(token)
        }
        guard verdict.isEmpty else { throw DonutIOError(file: path, verdict) }
        let url = URL(fileURLWithPath: path)
        temporaryPath = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).partial-\(token)").path
    }

    /// Why `path` cannot be written, or nil.
    static func check(path: String, force: Bool) -> String? {
        let fm = FileManager.default
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            return "output folder '\(folder)' does not exist"
        }
        guard fm.isWritableFile(atPath: folder) else { return "output folder '\(folder)' is not writable" }
        if fm.fileExists(atPath: path, isDirectory: &isDir) {
            if isDir.boolValue { return "exists and is a folder" }
            if let kind = FileKind.nonRegular(path) { return "exists and is \(kind), not a regular file: refusing to replace it" }
            if !force { return "exists; pass --force to overwrite" }
        }
        return nil
    }

    /// Eight hex digits naming this host in temporary names, so a run only ever removes
    /// temporary files made on its own host (a process id means nothing on another node).
    static let hostTag: String = {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        var h: UInt32 = 2_166_136_261   // FNV-1a
        for b in String(cString: name).utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        return String(format: "%08x", h)
    }()

    /// Removes the temporary files `.<name>.partial-<host>-<pid>-<random>` of `path` left
    /// by a killed run: only those made on this host by a process that no longer exists
    /// (a live process, or one of another host, may still be writing). Best effort.
    static func removeStalePartials(of path: String) {
        let url = URL(fileURLWithPath: path)
        let folder = url.deletingLastPathComponent().path
        let prefix = ".\(url.lastPathComponent).partial-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return }
        for name in names where name.hasPrefix(prefix) {
            let parts = name.dropFirst(prefix.count).split(separator: "-")
            guard parts.count == 3, parts[0] == hostTag, let pid = pid_t(parts[1]), pid > 0,
                  pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            let stale = folder + "/" + name
            guard FileKind.nonRegular(stale) == nil else { continue }
            unlink(stale)
        }
    }

    /// Why the folder of `path` cannot take a file of `expectedBytes`, or nil.
    static func checkSpace(path: String, expectedBytes: Int) -> String? {
        guard expectedBytes > 0 else { return nil }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var fs = statvfs()
        guard statvfs(folder, &fs) == 0 else { return nil }   // unknown: let the write tell
        let free = Int(fs.f_bavail) * Int(fs.f_frsize), needed = 2 * expectedBytes + (1 << 20)
        guard free < needed else { return nil }
        return "not enough free space in '\(folder)': \(free / 1024) KiB free, the file needs about \(expectedBytes / 1024) KiB (refusing below \(needed / 1024) KiB)"
    }

    /// Publishes the finished file under its final name. Collective; the temporary file must
    /// be closed on every rank before. Throws on every rank if the rename fails.
    public func commit() throws {
        comm?.barrier()
        var failure = ""
        if comm?.isRoot ?? true {
            if rename(temporaryPath, finalPath) != 0 {
                failure = "cannot rename '\(temporaryPath)' onto it: \(String(cString: strerror(errno)))"
                unlink(temporaryPath)
            }
        }
        if let comm { failure = comm.broadcast(failure) }
        guard failure.isEmpty else { throw DonutIOError(file: finalPath, failure) }
    }

    /// Writes a small file (text, JSON) from one process the same way: refused if it exists
    /// without `force`, written under the temporary name, renamed into place.
    public static func write(_ data: Data, to path: String, force: Bool, inputs: [(role: String, path: String)] = []) throws {
        let output = try AtomicOutput(path: path, force: force, inputs: inputs)
        do {
            try data.write(to: URL(fileURLWithPath: output.temporaryPath))
            try output.commit()
        } catch let e as DonutIOError {
            output.discard(); throw e
        } catch {
            output.discard()
            throw DonutIOError(file: path, "cannot write: \(error.localizedDescription)")
        }
    }

    /// Empties the temporary file before an abandoned HDF5 file is closed. A write that met
    /// a full disk leaves HDF5 1.10 unable to flush at close, and a failed close leaves a
    /// half-closed file that crashes the process at exit (MPI_Finalize / atexit); with the
    /// space given back the close succeeds. Not collective; harmless when there is no file.
    public func releaseSpace() {
        truncate(temporaryPath, 0)
    }

    /// Removes the temporary file (harmless when it does not exist). Not collective, so an
    /// error path on any subset of ranks may call it.
    public func discard() {
        unlink(temporaryPath)
    }
}
