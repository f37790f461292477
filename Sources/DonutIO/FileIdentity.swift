import Foundation

/// Which file a path names, by identity rather than spelling: `./a.h5`, `../x/a.h5`, a
/// symlink to it and a hard link to it all have the same (device, inode). A path that does
/// not exist yet is named by its folder's identity and its last component, so two outputs
/// spelled differently (`out.h5`, `./sub/../out.h5`) are still recognised as one.
///
/// Used to refuse an output that is the same file as an input (with or without `--force`:
/// the result would replace the data it was computed from) or as another output.
public enum FileIdentity: Hashable, Sendable {
    /// An existing file (symlinks followed): device and inode.
    case file(device: UInt64, inode: UInt64)
    /// A name not yet in its (existing) folder: the folder's device and inode, and the name.
    case entry(device: UInt64, inode: UInt64, name: String)

    /// The identity of `path`; nil when neither it nor its folder exists.
    public init?(path: String) {
        var s = stat()
        if stat(path, &s) == 0 {
            self = .file(device: UInt64(s.st_dev), inode: UInt64(s.st_ino))
            return
        }
        // A dangling symlink: the file written would be its target, which does not exist
        // yet; name it by the target's folder and name.
        var target = path
        var l = stat()
        if lstat(path, &l) == 0, (l.st_mode & S_IFMT) == S_IFLNK,
           let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: path) {
            target = dest.hasPrefix("/") ? dest
                : URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(dest).path
        }
        let url = URL(fileURLWithPath: target)
        var d = stat()
        guard stat(url.deletingLastPathComponent().path, &d) == 0 else { return nil }
        self = .entry(device: UInt64(d.st_dev), inode: UInt64(d.st_ino), name: url.lastPathComponent)
    }

    /// Why `output` may not be written because it is the same file as one of `inputs`
    /// (pairs of role and path, e.g. ("--scan", "scan.h5")), or nil. Inputs that do not
    /// exist are skipped (their own reader reports them).
    public static func clash(output: String, inputs: [(role: String, path: String)]) -> String? {
        guard let out = FileIdentity(path: output) else { return nil }
        for (role, path) in inputs where !path.isEmpty {
            if FileIdentity(path: path) == out {
                let spelled = path == output ? "" : " ('\(path)')"
                return "is the same file as the input \(role)\(spelled); refusing to write a result onto its input (even with --force): choose another output name"
            }
        }
        return nil
    }

    /// Throws when two of `outputs` (role, path) name the same file, or one of them is one of `inputs`.
    public static func checkDistinct(outputs: [(role: String, path: String)], inputs: [(role: String, path: String)]) throws {
        for (i, o) in outputs.enumerated() where !o.path.isEmpty {
            if let why = clash(output: o.path, inputs: inputs) { throw DonutIOError(file: o.path, "\(o.role) " + why) }
            for p in outputs[..<i] where !p.path.isEmpty {
                if let a = FileIdentity(path: o.path), a == FileIdentity(path: p.path) {
                    throw DonutIOError(file: o.path, "\(o.role) is the same file as \(p.role) ('\(p.path)'): give them different names")
                }
            }
        }
    }
}

/// Checks on the kind of file a path names, made before any `open`: opening a FIFO for
/// reading blocks until a writer appears (a hang), a device may never end, a folder is no file.
public enum FileKind {
    /// "a folder", "a FIFO (named pipe)", … for a path that exists and is not a regular
    /// file (symlinks followed); nil for a regular file or a path that does not exist.
    public static func nonRegular(_ path: String) -> String? {
        var s = stat()
        guard stat(path, &s) == 0 else { return nil }
        switch s.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a FIFO (named pipe)"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a regular file"
        }
    }

    /// Throws unless `path` exists and is a regular file (symlinks followed), naming `what`
    /// ("HDF5 file", "YAML file").
    public static func requireRegularFile(_ path: String, what: String) throws {
        guard !path.isEmpty else { throw DonutIOError(file: path, "empty file name") }
        var s = stat()
        guard stat(path, &s) == 0 else {
            let why = errno == ENOENT ? "does not exist" : "cannot be examined (\(String(cString: strerror(errno))))"
            throw DonutIOError(file: path, why)
        }
        if let kind = nonRegular(path) { throw DonutIOError(file: path, "is \(kind), not a regular \(what)") }
    }
}

/// `path` without a trailing `suffix` (only at the end: "a.h5.d/m.h5" → "a.h5.d/m").
public func removingSuffix(_ suffix: String, from path: String) -> String {
    path.hasSuffix(suffix) ? String(path.dropLast(suffix.count)) : path
}
