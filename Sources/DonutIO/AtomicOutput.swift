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
    public init(path: String, force: Bool, comm: Communicator? = nil, expectedBytes: Int = 0) throws {
        finalPath = path; self.comm = comm
        let isRoot = comm?.isRoot ?? true
        var verdict = ""  // empty: fine; else the error message
        var token = ""
        if isRoot {
            verdict = Self.check(path: path, force: force) ?? Self.checkSpace(path: path, expectedBytes: expectedBytes) ?? ""
            token = "\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0 ... .max))"
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
            if !force { return "exists; pass --force to overwrite" }
        }
        return nil
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
    public static func write(_ data: Data, to path: String, force: Bool) throws {
        let output = try AtomicOutput(path: path, force: force)
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

    /// Removes the temporary file (harmless when it does not exist). Not collective, so an
    /// error path on any subset of ranks may call it.
    public func discard() {
        unlink(temporaryPath)
    }
}
