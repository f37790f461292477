import DonutPhysics
import Foundation

// NumPy `.npy` files (format versions 1–3): little-endian `<f4`, `<f8`, `|u1`, `<i8`,
// C order. Anything else is refused with an error naming the file and what it holds.

/// Element types Donut reads and writes in `.npy` files.
public enum NpyDType: String, Sendable {
    case float32 = "<f4", float64 = "<f8", uint8 = "|u1", int64 = "<i8"
    public var size: Int {
        switch self { case .float32: return 4; case .float64: return 8; case .uint8: return 1; case .int64: return 8 }
    }
    init?(descr: String) {
        switch descr {
        case "<f4": self = .float32
        case "<f8": self = .float64
        case "|u1", "<u1", "u1": self = .uint8
        case "<i8": self = .int64
        default: return nil
        }
    }
}

/// Swift types that `.npy` files store directly.
public protocol NpyElement { static var npyDType: NpyDType { get } }
extension Float: NpyElement { public static var npyDType: NpyDType { .float32 } }
extension Double: NpyElement { public static var npyDType: NpyDType { .float64 } }
extension UInt8: NpyElement { public static var npyDType: NpyDType { .uint8 } }
extension Int64: NpyElement { public static var npyDType: NpyDType { .int64 } }

/// An `.npy` file's header; the data are read on demand, a range at a time.
public struct NpyFile: Sendable {
    public let path: String
    public let dtype: NpyDType
    public let shape: [Int]
    /// Byte offset of the first element.
    public let dataOffset: Int
    public var count: Int { shape.reduce(1, *) }

    /// Parses the header and checks that the file holds all the data it announces.
    public init(path: String) throws {
        self.path = path
        try FileKind.requireRegularFile(path, what: ".npy file")
        guard let h = FileHandle(forReadingAtPath: path) else { throw DonutIOError(file: path, "cannot be opened for reading") }
        defer { try? h.close() }
        let head = (try? h.read(upToCount: 12)) ?? Data()
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
        guard head.count >= 10, Array(head.prefix(6)) == magic else {
            throw DonutIOError(file: path, "not a .npy file (no \\x93NUMPY magic)")
        }
        let b = [UInt8](head)
        let major = b[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(b[8]) | Int(b[9]) << 8; headerStart = 10
        case 2, 3:
            guard b.count >= 12 else { throw DonutIOError(file: path, "truncated .npy header") }
            headerLength = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; headerStart = 12
        default:
            throw DonutIOError(file: path, "unsupported .npy format version \(major).\(b[7])")
        }
        try h.seek(toOffset: UInt64(headerStart))
        guard let headerData = try h.read(upToCount: headerLength), headerData.count == headerLength else {
            throw DonutIOError(file: path, "truncated .npy header")
        }
        let header = String(decoding: headerData, as: UTF8.self)
        func value(_ key: String) -> String? {
            guard let k = header.range(of: "'\(key)'") else { return nil }
            var rest = header[k.upperBound...].drop { $0 == " " || $0 == ":" }
            if rest.first == "(" {
                rest = rest.dropFirst()
                return rest.firstIndex(of: ")").map { String(rest[..<$0]) }
            }
            if rest.first == "'" {
                rest = rest.dropFirst()
                return rest.firstIndex(of: "'").map { String(rest[..<$0]) }
            }
            return String(rest.prefix { $0 != "," && $0 != "}" }).trimmingCharacters(in: .whitespaces)
        }
        guard let descr = value("descr"), let fortran = value("fortran_order"), let shapeText = value("shape") else {
            throw DonutIOError(file: path, "malformed .npy header: \(header.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard fortran == "False" else {
            throw DonutIOError(file: path, "array is stored in Fortran order; save it in C order (numpy.ascontiguousarray)")
        }
        guard let dtype = NpyDType(descr: descr) else {
            throw DonutIOError(file: path, "unsupported dtype '\(descr)' (supported: little-endian <f4, <f8, u1, <i8)")
        }
        let dims = shapeText.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let shape = dims.compactMap { Int($0) }
        guard shape.count == dims.count, shape.allSatisfy({ $0 >= 0 }) else {
            throw DonutIOError(file: path, "malformed shape (\(shapeText)) in the .npy header")
        }
        self.dtype = dtype; self.shape = shape; dataOffset = headerStart + headerLength
        let fileSize = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard let count = Sizes.product(shape), let bytes = Sizes.product([count, dtype.size]), bytes <= Int.max - dataOffset else {
            throw DonutIOError(file: path, "shape \(shape) of \(descr) in the .npy header overflows a 64-bit size (the file has \(fileSize) bytes)")
        }
        let need = dataOffset + bytes
        guard fileSize >= need else {
            throw DonutIOError(file: path, "truncated: shape \(shape) of \(descr) needs \(need) bytes, the file has \(fileSize)")
        }
    }

    /// Elements `range` (flat, C order; all when nil) converted to Double.
    public func readDoubles(_ range: Range<Int>? = nil) throws -> [Double] {
        try read(range) { $0 }
    }
    /// Elements `range` (flat, C order; all when nil) converted to Float (`<f4` bits unchanged:
    /// Float → Double → Float is exact).
    public func readFloats(_ range: Range<Int>? = nil) throws -> [Float] {
        try read(range) { Float($0) }
    }

    private func read<T>(_ range: Range<Int>?, _ convert: (Double) -> T) throws -> [T] {
        let r = range ?? 0..<count
        guard r.lowerBound >= 0, r.upperBound <= count else {
            throw DonutIOError(file: path, "elements \(r) outside an array of \(count) (shape \(shape))")
        }
        guard !r.isEmpty else { return [] }
        guard let h = FileHandle(forReadingAtPath: path) else { throw DonutIOError(file: path, "cannot be opened for reading") }
        defer { try? h.close() }
        try h.seek(toOffset: UInt64(dataOffset + r.lowerBound * dtype.size))
        guard let data = try h.read(upToCount: r.count * dtype.size), data.count == r.count * dtype.size else {
            throw DonutIOError(file: path, "truncated data")
        }
        let dtype = self.dtype
        return data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [T] in
            (0..<r.count).map { (i: Int) -> T in
                let v: Double
                switch dtype {
                case .float32:
                    v = Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))))
                case .float64:
                    v = Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)))
                case .uint8:
                    v = Double(raw[i])
                case .int64:
                    v = Double(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)))
                }
                return convert(v)
            }
        }
    }

    /// Writes `values` (C order) with `shape` as a version-1 `.npy` (version 2 if the header
    /// needs it). Plain write; wrap it in `AtomicOutput` for the no-overwrite rule.
    public static func write<T: NpyElement>(_ values: [T], shape: [Int], to path: String) throws {
        guard shape.reduce(1, *) == values.count else {
            throw DonutIOError(file: path, "shape \(shape) holds \(shape.reduce(1, *)) values, got \(values.count)")
        }
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(T.npyDType.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        let v1 = header.utf8.count + 11 < 65536
        let prefix = v1 ? 10 : 12
        let total = (prefix + header.utf8.count + 1 + 63) / 64 * 64  // data aligned to 64 bytes
        header += String(repeating: " ", count: total - prefix - header.utf8.count - 1) + "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, v1 ? 1 : 2, 0])
        let n = header.utf8.count
        out.append(contentsOf: v1 ? [UInt8(n & 0xFF), UInt8(n >> 8)]
                                  : [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)])
        out.append(contentsOf: Array(header.utf8))
        // Swift's numeric types are little-endian on every platform Donut runs on (x86-64, arm64).
        values.withUnsafeBytes { out.append(contentsOf: $0) }
        do { try out.write(to: URL(fileURLWithPath: path)) } catch {
            throw DonutIOError(file: path, "cannot write: \(error.localizedDescription)")
        }
    }
}
