import Foundation

/// What a rerun compares to decide whether an input changed: the file's **content**, never
/// its modification time alone (a `touch` changes nothing; `touch -r` after an edit hides a
/// change from mtime but not from the content).
///
/// The digest is a streamed 128-bit hash of every byte of the file (two lanes of a
/// multiply–rotate mix over 8-byte words, the length folded in), read in 4 MiB blocks: memory
/// stays one block whatever the file's size. Hashing a scan costs one sequential read of it,
/// which a rerun avoids when the file's `stat` is unchanged: size, mtime, ctime, inode and
/// device all equal to those recorded with the digest. ctime cannot be set by a user
/// (`touch -r` sets mtime and atime only), so any write to the file changes it and the content
/// is hashed again; a touched but unchanged file is re-hashed and found equal.
public struct FileContent: Codable, Equatable, Sendable {
    /// Absolute path (standardised) as given.
    public var path: String
    public var size: Int64
    /// Modification and status-change times (ns since 1970) and file identity, for the shortcut.
    public var mtimeNS: Int64
    public var ctimeNS: Int64
    public var inode: UInt64
    public var device: UInt64
    /// "c128:<32 hex digits>" of the bytes; "missing" when the file does not exist.
    public var digest: String

    enum CodingKeys: String, CodingKey {
        case path, size, digest, inode, device
        case mtimeNS = "mtime_ns", ctimeNS = "ctime_ns"
    }

    /// Same file, same `stat`: the recorded digest still holds.
    func sameStat(as other: FileContent) -> Bool {
        path == other.path && size == other.size && mtimeNS == other.mtimeNS && ctimeNS == other.ctimeNS
            && inode == other.inode && device == other.device
    }
}

public enum ContentFingerprint {
    /// Bytes read per call while hashing.
    static let blockBytes = 4 << 20

    /// The content of `path`, reusing the digest of a `previous` record of the same path whose
    /// `stat` is identical (see `FileContent`), else hashing the file. A file that does not
    /// exist gives digest "missing" (the caller's own checks name it); one that exists but
    /// cannot be read, or is not a regular file, is an error naming it.
    public static func content(of path: String, reusing previous: [FileContent] = []) throws -> FileContent {
        let path = URL(fileURLWithPath: path).standardizedFileURL.path
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT || errno == ENOTDIR {
                return FileContent(path: path, size: -1, mtimeNS: 0, ctimeNS: 0, inode: 0, device: 0, digest: "missing")
            }
            throw DonutIOError(file: path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        if let kind = FileKind.nonRegular(path) { throw DonutIOError(file: path, "is \(kind), not a regular file") }
        var record = FileContent(
            path: path, size: Int64(st.st_size),
            mtimeNS: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
            ctimeNS: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec),
            inode: UInt64(st.st_ino), device: UInt64(st.st_dev), digest: "")
        if let old = previous.first(where: { $0.sameStat(as: record) }), old.digest.hasPrefix("c128:") {
            record.digest = old.digest
        } else {
            record.digest = try digest(ofFile: path)
        }
        return record
    }

    /// The streamed 128-bit content hash of a file ("c128:" + 32 hex digits).
    public static func digest(ofFile path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else { throw DonutIOError(file: path, "cannot open to hash its content: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var hasher = Hasher128()
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: blockBytes, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer, blockBytes)
            if n < 0 {
                if errno == EINTR { continue }
                throw DonutIOError(file: path, "cannot read to hash its content: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            hasher.add(UnsafeRawBufferPointer(start: buffer, count: n))
        }
        return hasher.finish()
    }

    /// The digest of a text (settings rendered as text): same hash, "c128:" prefix.
    public static func digest(ofText text: String) -> String {
        var hasher = Hasher128()
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { hasher.add(UnsafeRawBufferPointer($0)) }
        return hasher.finish()
    }
}

/// Two 64-bit lanes over 8-byte little-endian words: lane = rotl(lane ⊕ mix(w), r) · 5 + c
/// (MurmurHash3-style), tail bytes zero-padded, length folded into the final avalanche.
/// Not cryptographic: it detects changed files, it does not resist forgery.
struct Hasher128 {
    var a: UInt64 = 0x9E37_79B9_7F4A_7C15, b: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    var length: UInt64 = 0
    /// Bytes carried over between calls (< 8).
    var carry: [UInt8] = []

    @inline(__always) static func mix(_ w: UInt64, _ k: UInt64) -> UInt64 {
        var x = w &* k
        x = (x << 31) | (x >> 33)
        return x &* 0x4CF5_AD43_2745_937F
    }

    @inline(__always) mutating func word(_ w: UInt64) {
        a ^= Self.mix(w, 0x87C3_7B91_1142_53D5); a = ((a << 27) | (a >> 37)) &* 5 &+ 0x52DC_E729
        b ^= Self.mix(w, 0x4CF5_AD43_2745_937F); b = ((b << 33) | (b >> 31)) &* 5 &+ 0x3849_5AB5
    }

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        length &+= UInt64(bytes.count)
        var start = 0
        if !carry.isEmpty {
            while carry.count < 8 && start < bytes.count { carry.append(bytes[start]); start += 1 }
            guard carry.count == 8 else { return }
            word(carry.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian)
            carry.removeAll(keepingCapacity: true)
        }
        let words = (bytes.count - start) / 8
        if let base = bytes.baseAddress {
            for i in 0..<words { word((base + start + 8 * i).loadUnaligned(as: UInt64.self).littleEndian) }
        }
        for i in (start + 8 * words)..<bytes.count { carry.append(bytes[i]) }
    }

    @inline(__always) static func avalanche(_ h: UInt64) -> UInt64 {
        var x = h
        x ^= x >> 33; x = x &* 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33; x = x &* 0xC4CE_B9FE_1A85_EC53
        return x ^ (x >> 33)
    }

    mutating func finish() -> String {
        if !carry.isEmpty {
            var w: UInt64 = 0
            for (i, byte) in carry.enumerated() { w |= UInt64(byte) << (8 * UInt64(i)) }
            word(w)
        }
        a ^= length; b ^= length &* 0x9E37_79B9_7F4A_7C15
        a = a &+ b; b = b &+ a
        let x = Self.avalanche(a), y = Self.avalanche(b)
        func hex(_ v: UInt64) -> String { String(v, radix: 16).leftPadded(to: 16) }
        return "c128:" + hex(x) + hex(y)
    }
}
