import CDonutBridge
import DonutMPI
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` and restores this thread's floating-point environment afterwards. Some HDF5
/// filter plugins are built with -ffast-math (Debian 12's bitshuffle, libh5bshuf.so), whose
/// load-time constructor turns on flush-to-zero and denormals-are-zero for the thread that
/// loads them (MXCSR 0x1f80 → 0x9fc0, measured): every later Float/Double operation of that
/// thread would flush denormals, so results would depend on whether a compressed file had been
/// read first. Every call that can load a plugin (filter probes, dataset creation with filters,
/// reads) runs inside this.
@inline(__always)
func keepingFloatingPointEnvironment<T>(_ body: () throws -> T) rethrows -> T {
    #if canImport(Glibc)
    var environment = fenv_t()
    fegetenv(&environment)
    defer { fesetenv(&environment) }
    #endif
    return try body()
}

// The HDF5 handle types. Every hid_t and unsafe pointer of the HDF5 C API stays in this
// file; the file-format modules (scans, libraries, result maps) work with `H5File` and
// `H5Dataset` and their Swift arrays.
//
// Parallel files (opened with a `Communicator`) follow the HDF5 1.10 rules: every rank
// makes every create call (file, group, dataset, attribute) with the same arguments and
// every `write` (collective transfer); a rank with nothing to write passes an empty
// selection. Reads are independent: each rank reads its own range when it likes.

/// An I/O failure, naming the file, the object in it (dataset, attribute or group path)
/// when there is one, and what is wrong.
public struct DonutIOError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file as the user named it.
    public var file: String
    /// "dataset '/entry/data/data'", "attribute '/entry@default'", … or nil for the file itself.
    public var object: String?
    public var message: String

    public init(file: String, object: String? = nil, _ message: String) {
        self.file = file; self.object = object; self.message = message
    }
    public static func dataset(_ file: String, _ path: String, _ message: String) -> DonutIOError {
        DonutIOError(file: file, object: "dataset '\(path)'", message)
    }
    public static func attribute(_ file: String, _ objectPath: String, _ name: String, _ message: String) -> DonutIOError {
        DonutIOError(file: file, object: "attribute '\(objectPath)@\(name)'", message)
    }
    public static func group(_ file: String, _ path: String, _ message: String) -> DonutIOError {
        DonutIOError(file: file, object: "group '\(path)'", message)
    }
    public var description: String {
        "file '\(file)'" + (object.map { ", \($0)" } ?? "") + ": \(message)"
    }
}

/// Element types Donut writes. Files it reads may hold any integer or float type; reads
/// convert to the requested Swift type.
public enum H5ElementType: String, Sendable {
    case float32, float64, uint8, uint16, uint32, int32, int64, uint64
    var native: hid_t {
        switch self {
        case .float32: return donut_h5t_native_float()
        case .float64: return donut_h5t_native_double()
        case .uint8: return donut_h5t_native_uint8()
        case .uint16: return donut_h5t_native_uint16()
        case .uint32: return donut_h5t_native_uint32()
        case .int32: return donut_h5t_native_int32()
        case .int64: return donut_h5t_native_int64()
        case .uint64: return donut_h5t_native_uint64()
        }
    }
}

/// Swift element types that map onto an HDF5 native type.
public protocol H5Numeric { static var h5ElementType: H5ElementType { get } }
extension Float: H5Numeric { public static var h5ElementType: H5ElementType { .float32 } }
extension Double: H5Numeric { public static var h5ElementType: H5ElementType { .float64 } }
extension UInt8: H5Numeric { public static var h5ElementType: H5ElementType { .uint8 } }
extension UInt16: H5Numeric { public static var h5ElementType: H5ElementType { .uint16 } }
extension UInt32: H5Numeric { public static var h5ElementType: H5ElementType { .uint32 } }
extension Int32: H5Numeric { public static var h5ElementType: H5ElementType { .int32 } }
extension Int64: H5Numeric { public static var h5ElementType: H5ElementType { .int64 } }
extension UInt64: H5Numeric { public static var h5ElementType: H5ElementType { .uint64 } }

/// HDF5's own error messages go to our errors, not to stderr (our errors name things).
private let silenceHDF5: Void = {
    H5open()
    H5Eset_auto2(donut_h5e_default(), nil, nil)
}()

/// The innermost message of HDF5's current error stack (e.g. "truncated file: eof = …"),
/// then clears the stack. Empty when there is none.
func takeHDF5ErrorMessage() -> String {
    final class Box { var messages: [String] = [] }
    let box = Box()
    let walker: H5E_walk2_t = { _, err, data in
        guard let err, let data else { return 0 }
        let box = Unmanaged<Box>.fromOpaque(data).takeUnretainedValue()
        if let d = err.pointee.desc { box.messages.append(String(cString: d)) }
        return 0
    }
    withExtendedLifetime(box) {
        _ = H5Ewalk2(donut_h5e_default(), H5E_WALK_DOWNWARD, walker, Unmanaged.passUnretained(box).toOpaque())
    }
    H5Eclear2(donut_h5e_default())
    return box.messages.last ?? ""
}

/// An open HDF5 file, serial or (with a communicator) parallel through MPI-IO.
public final class H5File {
    /// The path as the user gave it; used in every error.
    public let path: String
    /// True when opened through MPI-IO with a communicator of any size.
    public let isParallel: Bool
    /// The communicator of a parallel file.
    public let comm: Communicator?
    var id: hid_t
    /// Transfer list for writes: collective MPI-IO for parallel files, default otherwise.
    let writeXfer: hid_t

    private init(path: String, id: hid_t, comm: Communicator?) {
        self.path = path; self.id = id; self.comm = comm; isParallel = comm != nil
        if comm != nil {
            let x = H5Pcreate(donut_h5p_dataset_xfer())
            donut_h5_set_dxpl_mpio(x, 1)
            writeXfer = x
        } else {
            writeXfer = donut_h5p_default()
        }
    }

    deinit {
        if id >= 0 { H5Fclose(id) }
        if writeXfer != donut_h5p_default() { H5Pclose(writeXfer) }
    }

    private static func fileAccess(_ comm: Communicator?) -> hid_t {
        _ = silenceHDF5
        guard let comm else { return donut_h5p_default() }
        let fapl = H5Pcreate(donut_h5p_file_access())
        comm.withMPIComm { _ = donut_h5_set_fapl_mpio(fapl, $0) }
        return fapl
    }

    /// Creates (truncating) `path`. Collective when `comm` is given.
    public static func create(_ path: String, comm: Communicator? = nil) throws -> H5File {
        let fapl = fileAccess(comm)
        defer { if fapl != donut_h5p_default() { H5Pclose(fapl) } }
        let id = H5Fcreate(path, donut_h5f_acc_trunc(), donut_h5p_default(), fapl)
        guard id >= 0 else {
            throw DonutIOError(file: path, "cannot create the HDF5 file (\(takeHDF5ErrorMessage()))")
        }
        return H5File(path: path, id: id, comm: comm)
    }

    /// Opens an existing file read-only (or read-write). Collective when `comm` is given.
    public static func open(_ path: String, writable: Bool = false, comm: Communicator? = nil) throws -> H5File {
        // Before H5Fopen: a FIFO would block it forever, a folder or device is no HDF5 file.
        try FileKind.requireRegularFile(path, what: "HDF5 file")
        let fapl = fileAccess(comm)
        defer { if fapl != donut_h5p_default() { H5Pclose(fapl) } }
        let id = H5Fopen(path, writable ? donut_h5f_acc_rdwr() : donut_h5f_acc_rdonly(), fapl)
        guard id >= 0 else {
            let why = takeHDF5ErrorMessage()
            throw DonutIOError(file: path, "cannot open as HDF5: not an HDF5 file, or truncated or corrupted"
                               + (why.isEmpty ? "" : " (\(why))"))
        }
        return H5File(path: path, id: id, comm: comm)
    }

    /// Closes the file (collective for parallel files). Datasets of this file must be
    /// released first: MPI-IO files refuse to close with open objects.
    public func close() throws {
        guard id >= 0 else { return }
        let rc = H5Fclose(id)
        id = -1
        if rc < 0 {
            H5File.noteFailedClose()
            throw DonutIOError(file: path, "closing failed (\(takeHDF5ErrorMessage()))")
        }
    }

    /// True once a file could not be closed (a write met a full disk). HDF5 1.10 then holds
    /// a half-closed file that crashes its own shutdown (at MPI_Finalize or at exit): the
    /// process must end without it — skip MPI_Finalize (see `donut`'s RunContext), and
    /// leave at exit, with the exit status, before HDF5's exit handler runs.
    nonisolated(unsafe) public private(set) static var hasFailedClose = false

    static func noteFailedClose() {
        guard !hasFailedClose else { return }
        hasFailedClose = true
        // Registered after HDF5's own atexit handler, so it runs first (reverse order).
        on_exit({ status, _ in
            fflush(nil)
            _exit(status)
        }, nil)
    }

    // MARK: Links and groups

    /// True when every component of the absolute path `path` exists.
    public func exists(_ path: String) -> Bool {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if H5Lexists(id, prefix, donut_h5p_default()) <= 0 { H5Eclear2(donut_h5e_default()); return false }
        }
        return true
    }

    /// The link at `path` as stored, not followed (an external link's file may be missing:
    /// following it would fail without saying which file); nil when there is no such link.
    public func link(_ path: String) -> H5Link? {
        guard exists(path) else { return nil }
        var info = H5L_info_t()
        guard H5Lget_info(id, path, &info, donut_h5p_default()) >= 0 else { H5Eclear2(donut_h5e_default()); return nil }
        switch info.type {
        case H5L_TYPE_HARD: return .hard
        case H5L_TYPE_SOFT, H5L_TYPE_EXTERNAL:
            let size = info.u.val_size
            var buf = [UInt8](repeating: 0, count: size + 1)
            guard H5Lget_val(id, path, &buf, size, donut_h5p_default()) >= 0 else { H5Eclear2(donut_h5e_default()); return nil }
            if info.type == H5L_TYPE_SOFT { return .soft(target: String(decoding: buf.prefix { $0 != 0 }, as: UTF8.self)) }
            var flags: UInt32 = 0
            var file: UnsafePointer<CChar>?, object: UnsafePointer<CChar>?
            guard H5Lunpack_elink_val(buf, size, &flags, &file, &object) >= 0, let file, let object else {
                H5Eclear2(donut_h5e_default()); return nil
            }
            return .external(file: String(cString: file), object: String(cString: object))
        default: return nil
        }
    }

    /// True when `path` is a regular file with the HDF5 signature: HDF5's search for an
    /// external link's file (`ExternalFileSearch`) passes over a path that is missing or
    /// holds no HDF5 file. A FIFO or folder is refused before H5Fis_hdf5, which would block
    /// on a FIFO.
    static func isHDF5File(_ path: String) -> Bool {
        guard FileManager.default.fileExists(atPath: path), FileKind.nonRegular(path) == nil else { return false }
        let rc = H5Fis_hdf5(path)
        if rc < 0 { H5Eclear2(donut_h5e_default()) }
        return rc > 0
    }

    /// The name of the file HDF5 itself opens when it follows the link `path` (nil when it
    /// finds none): what Donut's own search (`ExternalFileSearch`) is checked against.
    func fileOpenedByHDF5(following path: String) -> String? {
        let o = H5Oopen(id, path, donut_h5p_default())
        guard o >= 0 else { H5Eclear2(donut_h5e_default()); return nil }
        defer { H5Oclose(o) }
        let size = H5Fget_name(o, nil, 0)
        guard size > 0 else { H5Eclear2(donut_h5e_default()); return nil }
        var buf = [CChar](repeating: 0, count: size + 1)
        guard H5Fget_name(o, &buf, size + 1) >= 0 else { H5Eclear2(donut_h5e_default()); return nil }
        return String(cString: buf)
    }

    /// Creates an external link at `path` (its parent group must exist) to `object` in the
    /// file `file` (as stored; `ExternalFileSearch` says where it is looked for). The target need not exist yet. Collective.
    public func createExternalLink(_ path: String, file: String, object: String) throws {
        guard H5Lcreate_external(file, object, id, path, donut_h5p_default(), donut_h5p_default()) >= 0 else {
            throw DonutIOError(file: self.path, object: "link '\(path)'", "cannot create an external link to \(file):\(object) (\(takeHDF5ErrorMessage()))")
        }
    }

    /// Creates a group (its parent must exist), with `@NX_class` when given. Collective.
    public func createGroup(_ path: String, nxClass: String? = nil) throws {
        let g = H5Gcreate2(id, path, donut_h5p_default(), donut_h5p_default(), donut_h5p_default())
        guard g >= 0 else { throw DonutIOError.group(self.path, path, "cannot create (\(takeHDF5ErrorMessage()))") }
        H5Gclose(g)
        if let nxClass { try setAttribute("NX_class", nxClass, on: path) }
    }

    // MARK: Datasets

    /// Creates a dataset: contiguous and uncompressed by default, or in `chunks` passed
    /// through `filters` (in order; e.g. bitshuffle-LZ4 as detector file writers do, whose
    /// plugin must then be able to encode). Collective.
    public func createDataset(_ path: String, type: H5ElementType, shape: [Int],
                              chunks: [Int]? = nil, filters: [H5Filter] = []) throws -> H5Dataset {
        let dims = shape.map { hsize_t($0) }
        let space = H5Screate_simple(Int32(dims.count), dims, nil)
        guard space >= 0 else { throw DonutIOError.dataset(self.path, path, "invalid shape \(shape)") }
        defer { H5Sclose(space) }
        var dcpl = donut_h5p_default()
        defer { if dcpl != donut_h5p_default() { H5Pclose(dcpl) } }
        if let chunks {
            guard chunks.count == shape.count, chunks.allSatisfy({ $0 >= 1 }) else {
                throw DonutIOError.dataset(self.path, path, "chunks \(chunks) do not fit shape \(shape)")
            }
            H5Plugins.registerSearchPath()
            dcpl = H5Pcreate(donut_h5p_dataset_create())
            H5Pset_chunk(dcpl, Int32(chunks.count), chunks.map { hsize_t($0) })
            for f in filters {
                let rc = keepingFloatingPointEnvironment {
                    H5Pset_filter(dcpl, H5Z_filter_t(f.id), f.isOptional ? 1 : 0, f.parameters.count, f.parameters)
                }
                guard rc >= 0 else {
                    throw DonutIOError.dataset(self.path, path, "cannot add filter \(f) (\(takeHDF5ErrorMessage())); \(f.installHint)")
                }
            }
        } else if !filters.isEmpty {
            throw DonutIOError.dataset(self.path, path, "filters need chunks")
        }
        let d = keepingFloatingPointEnvironment { H5Dcreate2(id, path, type.native, space, donut_h5p_default(), dcpl, donut_h5p_default()) }
        guard d >= 0 else { throw DonutIOError.dataset(self.path, path, "cannot create (\(takeHDF5ErrorMessage()))") }
        return H5Dataset(file: self, path: path, id: d)
    }

    /// Opens an existing dataset; a clear error when it (or a parent group) is missing.
    /// `chunkCacheBytes`: this dataset's chunk cache (HDF5's default is 1 MiB, less than one
    /// 514×1030 uint32 detector frame); reads hold at most this much decompressed data.
    public func openDataset(_ path: String, chunkCacheBytes: Int? = nil) throws -> H5Dataset {
        guard exists(path) else { throw DonutIOError.dataset(self.path, path, "not found") }
        var dapl = donut_h5p_default()
        if let bytes = chunkCacheBytes {
            dapl = H5Pcreate(donut_h5p_dataset_access())
            // A prime number of hash slots well above the chunks the cache holds; w0 = 1:
            // a chunk read completely is evicted first (frames are read once, in order).
            H5Pset_chunk_cache(dapl, 12_421, bytes, 1.0)
        }
        defer { if dapl != donut_h5p_default() { H5Pclose(dapl) } }
        H5Plugins.registerSearchPath()
        let d = H5Dopen2(id, path, dapl)
        guard d >= 0 else {
            throw DonutIOError.dataset(self.path, path, "cannot open as a dataset (\(takeHDF5ErrorMessage()))")
        }
        return H5Dataset(file: self, path: path, id: d)
    }

    /// What kind of object is at `path`: a group, a dataset, or nil (missing or other).
    public func objectKind(_ path: String) -> H5ObjectKind? {
        guard path == "/" || exists(path) else { return nil }
        let o = H5Oopen(id, path, donut_h5p_default())
        guard o >= 0 else { H5Eclear2(donut_h5e_default()); return nil }
        defer { H5Oclose(o) }
        switch H5Iget_type(o) {
        case H5I_GROUP: return .group
        case H5I_DATASET: return .dataset
        default: return nil
        }
    }

    /// Names of the links in group `path` (sorted by name); empty when it is not a group.
    public func children(of path: String) -> [String] {
        guard objectKind(path) == .group else { return [] }
        let g = H5Gopen2(id, path, donut_h5p_default())
        guard g >= 0 else { H5Eclear2(donut_h5e_default()); return [] }
        defer { H5Gclose(g) }
        var info = H5G_info_t()
        guard H5Gget_info(g, &info) >= 0 else { H5Eclear2(donut_h5e_default()); return [] }
        var names: [String] = []
        for i in 0..<info.nlinks {
            let n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, donut_h5p_default())
            guard n > 0 else { continue }
            var buf = [CChar](repeating: 0, count: n + 1)
            H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, n + 1, donut_h5p_default())
            names.append(String(cString: buf))
        }
        H5Eclear2(donut_h5e_default())
        return names
    }

    /// Convenience: create a dataset and write all of it (collective), with `@units` when given.
    public func writeDataset<T: H5Numeric>(_ path: String, _ values: [T], shape: [Int], units: String? = nil) throws {
        let d = try createDataset(path, type: T.h5ElementType, shape: shape)
        try values.withUnsafeBufferPointer { try d.write($0) }
        try d.close()
        if let units { try setAttribute("units", units, on: path) }
    }

    /// Convenience: read all of a numeric dataset, converted to `T`.
    public func readDataset<T: H5Numeric>(_ path: String, as: T.Type) throws -> [T] {
        let d = try openDataset(path)
        defer { try? d.close() }
        return try d.read(as: T.self)
    }

    // MARK: Strings

    /// Writes a scalar string dataset (UTF-8). Fixed length by default, which parallel HDF5
    /// 1.10 can write; variable length for serial files only. Collective.
    public func writeString(_ path: String, _ value: String, variableLength: Bool = false) throws {
        if variableLength && isParallel {
            throw DonutIOError.dataset(self.path, path, "variable-length strings cannot be written in parallel")
        }
        let type = stringType(variableLength ? nil : max(value.utf8.count, 1))
        defer { H5Tclose(type) }
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        let d = H5Dcreate2(id, path, type, space, donut_h5p_default(), donut_h5p_default(), donut_h5p_default())
        guard d >= 0 else { throw DonutIOError.dataset(self.path, path, "cannot create (\(takeHDF5ErrorMessage()))") }
        defer { H5Dclose(d) }
        let rc: herr_t = withStringBuffer([value], fixedSize: variableLength ? nil : max(value.utf8.count, 1)) {
            H5Dwrite(d, type, donut_h5s_all(), donut_h5s_all(), writeXfer, $0)
        }
        guard rc >= 0 else { throw DonutIOError.dataset(self.path, path, "writing failed (\(takeHDF5ErrorMessage()))") }
    }

    /// Reads a string dataset (scalar, fixed or variable length).
    public func readString(_ path: String) throws -> String {
        let d = try openDataset(path)
        defer { try? d.close() }
        guard let s = try readStrings(object: d.id, isAttribute: false).first else {
            throw DonutIOError.dataset(self.path, path, "is empty, expected one string")
        }
        return s
    }

    // MARK: Attributes

    /// Sets a string attribute on the object at `objectPath` ("/" for the root), replacing
    /// any attribute of that name. Collective for parallel files (same value on every rank).
    public func setAttribute(_ name: String, _ value: String, on objectPath: String) throws {
        try setStringAttribute(name, [value], scalar: true, on: objectPath)
    }
    /// A 1-D array of fixed-length strings (e.g. NeXus `@axes`).
    public func setAttribute(_ name: String, _ values: [String], on objectPath: String) throws {
        try setStringAttribute(name, values, scalar: false, on: objectPath)
    }
    public func setAttribute(_ name: String, _ value: Double, on objectPath: String) throws {
        var v = value
        try setNumericAttribute(name, donut_h5t_native_double(), &v, on: objectPath)
    }
    public func setAttribute(_ name: String, _ value: Int, on objectPath: String) throws {
        var v = Int64(value)
        try setNumericAttribute(name, donut_h5t_native_int64(), &v, on: objectPath)
    }

    public func attributeExists(_ name: String, on objectPath: String) -> Bool {
        guard exists(objectPath) || objectPath == "/" else { return false }
        let r = H5Aexists_by_name(id, objectPath, name, donut_h5p_default())
        if r < 0 { H5Eclear2(donut_h5e_default()) }
        return r > 0
    }

    /// A string attribute (scalar or the first of an array).
    public func readStringAttribute(_ name: String, on objectPath: String) throws -> String {
        guard let s = try readStringArrayAttribute(name, on: objectPath).first else {
            throw DonutIOError.attribute(path, objectPath, name, "is empty, expected a string")
        }
        return s
    }
    public func readStringArrayAttribute(_ name: String, on objectPath: String) throws -> [String] {
        let a = try openAttribute(name, on: objectPath)
        defer { H5Aclose(a) }
        return try readStrings(object: a, isAttribute: true, describe: .attribute(path, objectPath, name, ""))
    }
    public func readDoubleAttribute(_ name: String, on objectPath: String) throws -> Double {
        var v = 0.0
        try readNumericAttribute(name, donut_h5t_native_double(), &v, on: objectPath)
        return v
    }
    public func readIntAttribute(_ name: String, on objectPath: String) throws -> Int {
        var v: Int64 = 0
        try readNumericAttribute(name, donut_h5t_native_int64(), &v, on: objectPath)
        return Int(v)
    }

    // MARK: Internals

    /// A UTF-8 string type: fixed `size` bytes (NUL-padded), or variable length when nil.
    private func stringType(_ size: Int?) -> hid_t {
        let t = H5Tcopy(donut_h5t_c_s1())
        H5Tset_size(t, size.map { $0 } ?? donut_h5t_variable())
        if size != nil { H5Tset_strpad(t, H5T_STR_NULLPAD) }
        H5Tset_cset(t, H5T_CSET_UTF8)
        return t
    }

    /// Calls `body` with a buffer of the strings in HDF5 memory layout: `fixedSize` bytes each
    /// (NUL-padded), or an array of C-string pointers for variable length.
    private func withStringBuffer<R>(_ values: [String], fixedSize: Int?, _ body: (UnsafeRawPointer) -> R) -> R {
        if let size = fixedSize {
            var bytes = [UInt8](repeating: 0, count: max(size * values.count, 1))
            for (i, v) in values.enumerated() {
                for (j, b) in v.utf8.prefix(size).enumerated() { bytes[i * size + j] = b }
            }
            return bytes.withUnsafeBytes { body($0.baseAddress!) }
        }
        let cStrings = values.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        return cStrings.withUnsafeBufferPointer { body(UnsafeRawPointer($0.baseAddress!)) }
    }

    private func setStringAttribute(_ name: String, _ values: [String], scalar: Bool, on objectPath: String) throws {
        let size = max(values.map(\.utf8.count).max() ?? 1, 1)
        let type = stringType(size)
        defer { H5Tclose(type) }
        var dims = [hsize_t(values.count)]
        let space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dims, nil)
        defer { H5Sclose(space) }
        try writeAttribute(name, type: type, space: space, on: objectPath) { a in
            withStringBuffer(values, fixedSize: size) { H5Awrite(a, type, $0) }
        }
    }

    private func setNumericAttribute(_ name: String, _ type: hid_t, _ value: UnsafeRawPointer, on objectPath: String) throws {
        let space = H5Screate(H5S_SCALAR)
        defer { H5Sclose(space) }
        try writeAttribute(name, type: type, space: space, on: objectPath) { H5Awrite($0, type, value) }
    }

    private func writeAttribute(_ name: String, type: hid_t, space: hid_t, on objectPath: String,
                                _ write: (hid_t) -> herr_t) throws {
        if H5Aexists_by_name(id, objectPath, name, donut_h5p_default()) > 0 {
            H5Adelete_by_name(id, objectPath, name, donut_h5p_default())
        }
        let a = H5Acreate_by_name(id, objectPath, name, type, space, donut_h5p_default(), donut_h5p_default(), donut_h5p_default())
        guard a >= 0 else {
            throw DonutIOError.attribute(path, objectPath, name, "cannot create (\(takeHDF5ErrorMessage()))")
        }
        defer { H5Aclose(a) }
        guard write(a) >= 0 else {
            throw DonutIOError.attribute(path, objectPath, name, "writing failed (\(takeHDF5ErrorMessage()))")
        }
    }

    private func openAttribute(_ name: String, on objectPath: String) throws -> hid_t {
        guard attributeExists(name, on: objectPath) else {
            throw DonutIOError.attribute(path, objectPath, name, "not found")
        }
        let a = H5Aopen_by_name(id, objectPath, name, donut_h5p_default(), donut_h5p_default())
        guard a >= 0 else { throw DonutIOError.attribute(path, objectPath, name, "cannot open (\(takeHDF5ErrorMessage()))") }
        return a
    }

    private func readNumericAttribute(_ name: String, _ memType: hid_t, _ out: UnsafeMutableRawPointer, on objectPath: String) throws {
        let a = try openAttribute(name, on: objectPath)
        defer { H5Aclose(a) }
        let space = H5Aget_space(a)
        defer { H5Sclose(space) }
        let type = H5Aget_type(a)
        defer { H5Tclose(type) }
        let cls = H5Tget_class(type)
        guard cls == H5T_INTEGER || cls == H5T_FLOAT, H5Sget_simple_extent_npoints(space) == 1 else {
            throw DonutIOError.attribute(path, objectPath, name, "expected one number, got \(describeType(type))")
        }
        guard H5Aread(a, memType, out) >= 0 else {
            throw DonutIOError.attribute(path, objectPath, name, "reading failed (\(takeHDF5ErrorMessage()))")
        }
    }

    /// All strings of a dataset or attribute, fixed or variable length.
    func readStrings(object: hid_t, isAttribute: Bool, describe: DonutIOError? = nil) throws -> [String] {
        let fail = { (msg: String) -> DonutIOError in
            var e = describe ?? DonutIOError(file: self.path, "")
            if describe == nil, let n = Self.name(of: object) { e.object = "dataset '\(n)'" }
            e.message = msg
            return e
        }
        let fileType = isAttribute ? H5Aget_type(object) : H5Dget_type(object)
        defer { H5Tclose(fileType) }
        guard H5Tget_class(fileType) == H5T_STRING else {
            throw fail("expected a string, got \(describeType(fileType))")
        }
        let space = isAttribute ? H5Aget_space(object) : H5Dget_space(object)
        defer { H5Sclose(space) }
        let n = Int(H5Sget_simple_extent_npoints(space))
        guard n > 0 else { return [] }
        let read = { (mem: hid_t, buf: UnsafeMutableRawPointer) -> herr_t in
            isAttribute ? H5Aread(object, mem, buf)
                        : keepingFloatingPointEnvironment { H5Dread(object, mem, donut_h5s_all(), donut_h5s_all(), donut_h5p_default(), buf) }
        }
        if H5Tis_variable_str(fileType) > 0 {
            let mem = H5Tcopy(donut_h5t_c_s1())
            H5Tset_size(mem, donut_h5t_variable())
            H5Tset_cset(mem, H5Tget_cset(fileType))
            defer { H5Tclose(mem) }
            var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
            let rc = ptrs.withUnsafeMutableBytes { read(mem, $0.baseAddress!) }
            guard rc >= 0 else { throw fail("reading failed (\(takeHDF5ErrorMessage()))") }
            let out = ptrs.map { $0.map { String(cString: $0) } ?? "" }
            ptrs.withUnsafeMutableBytes { _ = H5Dvlen_reclaim(mem, space, donut_h5p_default(), $0.baseAddress!) }
            return out
        }
        let size = H5Tget_size(fileType)
        var bytes = [UInt8](repeating: 0, count: size * n)
        let rc = bytes.withUnsafeMutableBytes { read(fileType, $0.baseAddress!) }
        guard rc >= 0 else { throw fail("reading failed (\(takeHDF5ErrorMessage()))") }
        return (0..<n).map { i in
            let chunk = bytes[i * size ..< (i + 1) * size]
            let end = chunk.firstIndex(of: 0) ?? chunk.endIndex
            var s = String(decoding: chunk[chunk.startIndex..<end], as: UTF8.self)
            if H5Tget_strpad(fileType) == H5T_STR_SPACEPAD { while s.hasSuffix(" ") { s.removeLast() } }
            return s
        }
    }

    static func name(of object: hid_t) -> String? {
        let n = H5Iget_name(object, nil, 0)
        guard n > 0 else { return nil }
        var buf = [CChar](repeating: 0, count: n + 1)
        H5Iget_name(object, &buf, n + 1)
        return String(cString: buf)
    }
}

/// "float32", "int16", "uint8", "string", … for error messages.
func describeType(_ type: hid_t) -> String {
    let size = H5Tget_size(type)
    switch H5Tget_class(type) {
    case H5T_FLOAT: return "float\(size * 8)"
    case H5T_INTEGER: return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + "\(size * 8)"
    case H5T_STRING: return "string"
    case H5T_COMPOUND: return "compound"
    case H5T_ENUM: return "enum"
    case H5T_ARRAY: return "array"
    case H5T_VLEN: return "variable-length sequence"
    default: return "unsupported type"
    }
}

/// One rectangular block of a hyperslab selection.
public struct HyperslabBox: Equatable, Sendable, CustomStringConvertible {
    public var start: [Int]
    public var count: [Int]
    public init(start: [Int], count: [Int]) { self.start = start; self.count = count }
    public var description: String { "start \(start) count \(count)" }
}

/// The flat indices `range` over the leading dimensions `leading` (C order) as a union of
/// rectangular boxes: at most 2·(leading.count − 1) + 1 of them (a partial head row, full
/// middle rows, a partial tail row, recursively). Empty range → no boxes.
///
/// This is the one selection used by scans (frames over (rows, cols)), libraries (entries
/// over (nε, nω, nχ[, nt])) and result maps (frames over (rows, cols)).
public func flatRangeBoxes(leading: [Int], range: Range<Int>) -> [HyperslabBox] {
    precondition(!leading.isEmpty && range.lowerBound >= 0 && range.upperBound <= leading.reduce(1, *),
                 "flat range \(range) outside leading shape \(leading)")
    guard !range.isEmpty else { return [] }
    if leading.count == 1 { return [HyperslabBox(start: [range.lowerBound], count: [range.count])] }
    let sub = Array(leading.dropFirst())
    let inner = sub.reduce(1, *)
    func prefixed(_ i: Int, _ boxes: [HyperslabBox]) -> [HyperslabBox] {
        boxes.map { HyperslabBox(start: [i] + $0.start, count: [1] + $0.count) }
    }
    var first = range.lowerBound / inner
    let last = range.upperBound / inner  // row holding the (exclusive) end
    if first == last {
        return prefixed(first, flatRangeBoxes(leading: sub, range: range.lowerBound % inner ..< range.upperBound % inner))
    }
    var boxes: [HyperslabBox] = []
    if range.lowerBound % inner != 0 {
        boxes += prefixed(first, flatRangeBoxes(leading: sub, range: range.lowerBound % inner ..< inner))
        first += 1
    }
    if last > first {
        boxes.append(HyperslabBox(start: [first] + sub.map { _ in 0 }, count: [last - first] + sub))
    }
    if range.upperBound % inner != 0 {
        boxes += prefixed(last, flatRangeBoxes(leading: sub, range: 0 ..< range.upperBound % inner))
    }
    return boxes
}

/// A selection of a dataset shaped `leading + trailing`: the flat index range `range`
/// over the first `leadingRank` dimensions, and in the trailing dimensions either all of
/// them or the sub-box `trailingStart`, `trailingCount` (e.g. a detector ROI).
public struct FlatSelection: Equatable, Sendable {
    public var leadingRank: Int
    public var range: Range<Int>
    public var trailingStart: [Int]?
    public var trailingCount: [Int]?
    public init(leadingRank: Int, range: Range<Int>, trailingStart: [Int]? = nil, trailingCount: [Int]? = nil) {
        self.leadingRank = leadingRank; self.range = range
        self.trailingStart = trailingStart; self.trailingCount = trailingCount
    }
}

/// An open dataset of an `H5File`.
public final class H5Dataset {
    public let file: H5File
    public let path: String
    var id: hid_t
    /// Dimensions as stored.
    public let shape: [Int]
    /// "float32", "uint16", "string", …
    public let typeDescription: String
    let isNumeric: Bool

    init(file: H5File, path: String, id: hid_t) {
        self.file = file; self.path = path; self.id = id
        let space = H5Dget_space(id)
        let rank = Int(H5Sget_simple_extent_ndims(space))
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        H5Sget_simple_extent_dims(space, &dims, nil)
        H5Sclose(space)
        shape = rank > 0 ? dims.prefix(rank).map { Int($0) } : []
        let type = H5Dget_type(id)
        typeDescription = describeType(type)
        let cls = H5Tget_class(type)
        isNumeric = cls == H5T_INTEGER || cls == H5T_FLOAT
        H5Tclose(type)
    }

    deinit { if id >= 0 { H5Dclose(id) } }

    /// Releases the dataset now (parallel files need this before the file closes).
    public func close() throws {
        guard id >= 0 else { return }
        let rc = H5Dclose(id)
        id = -1
        if rc < 0 { throw error("closing failed (\(takeHDF5ErrorMessage()))") }
    }

    func error(_ message: String) -> DonutIOError { .dataset(file.path, path, message) }

    /// File and memory dataspaces for `selection` (nil: everything), and the element count.
    private func spaces(_ selection: FlatSelection?) throws -> (file: hid_t, memory: hid_t, count: Int) {
        let fileSpace = H5Dget_space(id)
        guard let sel = selection else {
            let n = shape.reduce(1, *)
            var dims = [hsize_t(max(n, 1))]
            let mem = H5Screate_simple(1, &dims, nil)
            if n == 0 { H5Sselect_none(mem); H5Sselect_none(fileSpace) }
            return (fileSpace, mem, n)
        }
        guard sel.leadingRank >= 1, sel.leadingRank <= shape.count else {
            H5Sclose(fileSpace)
            throw error("selection over \(sel.leadingRank) leading dimensions of a \(shape.count)-D dataset \(shape)")
        }
        let leading = Array(shape.prefix(sel.leadingRank)), trailing = Array(shape.dropFirst(sel.leadingRank))
        let tStart = sel.trailingStart ?? trailing.map { _ in 0 }
        let tCount = sel.trailingCount ?? trailing
        guard sel.range.lowerBound >= 0, sel.range.upperBound <= leading.reduce(1, *),
              tStart.count == trailing.count, tCount.count == trailing.count,
              zip(zip(tStart, tCount), trailing).allSatisfy({ $0.0 >= 0 && $0.1 >= 0 && $0.0 + $0.1 <= $1 }) else {
            H5Sclose(fileSpace)
            throw error("selection \(sel.range) × trailing start \(tStart) count \(tCount) outside shape \(shape)")
        }
        let boxes = flatRangeBoxes(leading: leading, range: sel.range)
        let n = sel.range.count * tCount.reduce(1, *)
        if boxes.isEmpty || n == 0 {
            H5Sselect_none(fileSpace)
        } else {
            for (i, box) in boxes.enumerated() {
                let start = (box.start + tStart).map { hsize_t($0) }
                let count = (box.count + tCount).map { hsize_t($0) }
                H5Sselect_hyperslab(fileSpace, i == 0 ? H5S_SELECT_SET : H5S_SELECT_OR, start, nil, count, nil)
            }
        }
        var dims = [hsize_t(max(n, 1))]
        let mem = H5Screate_simple(1, &dims, nil)
        if n == 0 { H5Sselect_none(mem) }
        return (fileSpace, mem, n)
    }

    /// Number of elements `selection` covers (all elements when nil).
    public func elementCount(_ selection: FlatSelection?) throws -> Int {
        let s = try spaces(selection)
        H5Sclose(s.file); H5Sclose(s.memory)
        return s.count
    }

    /// Writes `values` (C order) into `selection`, or the whole dataset when nil. Must be in
    /// the dataset's own type. **Collective** for parallel files: every rank calls it, a rank
    /// with nothing to write passes an empty range.
    public func write<T: H5Numeric>(_ values: UnsafeBufferPointer<T>, selection: FlatSelection? = nil) throws {
        let type = H5Dget_type(id)
        let same = H5Tequal(type, T.h5ElementType.native) > 0
        H5Tclose(type)
        guard same else { throw error("writing \(T.h5ElementType.rawValue) into a \(typeDescription) dataset (write in the dataset's own type)") }
        let s = try spaces(selection)
        defer { H5Sclose(s.file); H5Sclose(s.memory) }
        guard values.count == s.count else {
            throw error("writing \(values.count) values into a selection of \(s.count)")
        }
        var dummy: UInt64 = 0  // a valid pointer when there is nothing to write
        let rc = withUnsafeMutablePointer(to: &dummy) { d in
            H5Dwrite(id, T.h5ElementType.native, s.memory, s.file, file.writeXfer,
                     values.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(d))
        }
        guard rc >= 0 else { throw error("writing failed (\(takeHDF5ErrorMessage()))") }
    }

    /// Reads `selection` (or everything) converted to `T` (any integer or float type on disk).
    /// Independent: each rank reads when it likes.
    public func read<T: H5Numeric>(as: T.Type, selection: FlatSelection? = nil) throws -> [T] {
        guard isNumeric else { throw error("expected numbers, got \(typeDescription)") }
        let s = try spaces(selection)
        defer { H5Sclose(s.file); H5Sclose(s.memory) }
        var out = [T](unsafeUninitializedCapacity: max(s.count, 1)) { _, n in n = max(s.count, 1) }
        let rc = out.withUnsafeMutableBytes { buffer in
            keepingFloatingPointEnvironment { H5Dread(id, T.h5ElementType.native, s.memory, s.file, donut_h5p_default(), buffer.baseAddress) }
        }
        guard rc >= 0 else { throw error("reading failed (\(takeHDF5ErrorMessage()))") }
        if s.count == 0 { out.removeAll() }
        return out
    }
}

// MARK: Object kinds, stored types, chunks and filters

public enum H5ObjectKind: Sendable { case group, dataset }

/// A link as stored in its group: hard (the object is here), soft (a path in this file) or
/// external (an object in another file, named as the writer named it).
public enum H5Link: Equatable, Sendable {
    case hard
    case soft(target: String)
    case external(file: String, object: String)
}

/// The element type of a dataset as stored: what detectors write (uint8/16/32, int32,
/// float32) decides how values are read and which value is the dtype's sentinel.
public struct H5StoredType: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case unsignedInteger, signedInteger, float, other }
    public var kind: Kind
    /// Bits per element (8, 16, 32, 64).
    public var bits: Int
    public var description: String {
        switch kind {
        case .unsignedInteger: return "uint\(bits)"
        case .signedInteger: return "int\(bits)"
        case .float: return "float\(bits)"
        case .other: return "non-numeric"
        }
    }
}

/// One filter of a chunked dataset's pipeline (HDF5 filter id, its parameters).
public struct H5Filter: Equatable, Sendable, CustomStringConvertible {
    /// Registered HDF5 filter id (1 gzip, 32004 LZ4, 32008 bitshuffle, …).
    public var id: Int
    /// The name stored with the filter, or the registered name when the file has none.
    public var name: String
    /// The filter's client data (`cd_values`).
    public var parameters: [UInt32]
    /// Optional filters may be skipped by HDF5 when they fail (on write only).
    public var isOptional: Bool

    public init(id: Int, name: String? = nil, parameters: [UInt32] = [], isOptional: Bool = false) {
        self.id = id; self.parameters = parameters; self.isOptional = isOptional
        self.name = name ?? H5Filter.known[id]?.name ?? "filter \(id)"
    }

    /// Bitshuffle (32008) with LZ4 for writing: block size 0 (automatic), compression 2 (LZ4).
    /// The filter stores them after three values of its own (version, element size), so
    /// a file read back lists five parameters, the compression fifth.
    public static let bitshuffleLZ4 = H5Filter(id: 32008, parameters: [0, 2])
    public static func gzip(level: UInt32 = 4) -> H5Filter { H5Filter(id: 1, parameters: [level]) }

    /// "bitshuffle (id 32008, with zstd)": the compressor inside bitshuffle and Blosc
    /// matters, since a plugin may decode one and not the other.
    public var description: String {
        var inner = ""
        if id == 32008, parameters.count > 4 {
            inner = [0: ", no compression", 2: ", with LZ4", 3: ", with zstd"][parameters[4]] ?? ", compression \(parameters[4])"
        }
        if id == 32001, parameters.count > 6 {
            inner = [0: ", blosclz", 1: ", lz4", 2: ", lz4hc", 3: ", snappy", 4: ", zlib", 5: ", zstd"][parameters[6]].map { " with\($0)" } ?? ""
        }
        return "\(displayName) (id \(id)\(inner))"
    }
    /// The registered name (the file's stored comment may be a long sentence).
    public var displayName: String { H5Filter.known[id]?.name ?? name }

    /// Registered filters Donut knows how to get on Debian 12 (the HDF5 filter registry's
    /// ids): name and how to install a decoder. Built-in filters need nothing.
    static let known: [Int: (name: String, install: String)] = [
        1: ("gzip", "built into HDF5"),
        2: ("shuffle", "built into HDF5"),
        3: ("fletcher32", "built into HDF5"),
        4: ("szip", "built into Debian's HDF5"),
        5: ("nbit", "built into HDF5"),
        6: ("scaleoffset", "built into HDF5"),
        307: ("bzip2", "apt-get install hdf5-filter-plugin (scripts/setup does)"),
        32000: ("lzf", "apt-get install bitshuffle (scripts/setup does)"),
        32001: ("blosc", "apt-get install hdf5-filter-plugin-blosc-serial (scripts/setup does)"),
        32004: ("lz4", "apt-get install hdf5-filter-plugin (scripts/setup does)"),
        32008: ("bitshuffle", "apt-get install bitshuffle (scripts/setup does; Debian 12's bitshuffle "
                + "plugins decode bitshuffle+LZ4, not bitshuffle+zstd)"),
        32015: ("zstd", "not packaged for Debian 12"),
        32026: ("blosc2", "not packaged for Debian 12"),
    ]

    /// How to get a decoder, for error messages.
    public var installHint: String {
        let how = H5Filter.known[id]?.install ?? "not a filter Donut knows a package for"
        return "to read it: \(how); any HDF5 filter plugin built for HDF5 1.10 can be put in a folder named by "
            + "HDF5_PLUGIN_PATH (e.g. the plugins of Python's hdf5plugin: python3 -c 'import hdf5plugin; "
            + "print(hdf5plugin.PLUGIN_PATH)'), or the file recompressed with h5repack -f GZIP=4 where the filter is available"
    }
}

/// HDF5's dynamic filter plugins (LZ4, bitshuffle, Blosc, …).
///
/// Why this exists: the Open MPI build of libhdf5 on Debian searches only
/// …/hdf5/openmpi/plugins, which Debian's plugin packages do not fill (they install into
/// …/hdf5/serial/plugins); and HDF5 1.10 fails the whole search ("can't open directory")
/// at the first folder that does not exist — at the first read of a chunk, after any
/// amount of computation. Debian's serial plugins load into the Open MPI libhdf5 (they
/// call only the stable H5P/H5Z API).
public enum H5Plugins {
    /// Debian's plugin folders for this architecture (serial first: the packages' home).
    public static var debianFolders: [String] {
        #if arch(x86_64)
        let triplet = "x86_64-linux-gnu"
        #elseif arch(arm64)
        let triplet = "aarch64-linux-gnu"
        #else
        let triplet = ""
        #endif
        guard !triplet.isEmpty else { return [] }
        return ["serial", "openmpi"].map { "/usr/lib/\(triplet)/hdf5/\($0)/plugins" }
    }

    private static let registered: Void = {
        _ = silenceHDF5
        // Drop folders that do not exist (HDF5_PLUGIN_PATH entries included), then append
        // Debian's folders that do. HDF5_PLUGIN_PATH's existing folders keep their priority.
        var i: UInt32 = 0
        while i < pathCount {
            if let p = path(at: i), !isFolder(p) { H5PLremove(i) } else { i += 1 }
        }
        for folder in debianFolders where isFolder(folder) && !searchPath.contains(folder) {
            H5PLappend(folder)
        }
        H5Eclear2(donut_h5e_default())
    }()

    /// Makes the plugin folders known (once per process; every dataset open calls it).
    public static func registerSearchPath() { _ = registered }

    private static var pathCount: UInt32 {
        var n: UInt32 = 0
        H5PLsize(&n)
        return n
    }
    private static func path(at i: UInt32) -> String? {
        let n = H5PLget(i, nil, 0)
        guard n > 0 else { return nil }
        var buf = [CChar](repeating: 0, count: n + 1)
        H5PLget(i, &buf, n + 1)
        return String(cString: buf)
    }
    private static func isFolder(_ p: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: p, isDirectory: &isDir) && isDir.boolValue
    }

    /// The folders HDF5 searches for plugins, in order.
    public static var searchPath: [String] { (0..<pathCount).compactMap(path(at:)) }

    /// True when a decoder for filter `id` is registered or loads from the search path.
    public static func canDecode(_ id: Int) -> Bool {
        registerSearchPath()
        let avail = keepingFloatingPointEnvironment { H5Zfilter_avail(H5Z_filter_t(id)) }
        guard avail > 0 else { H5Eclear2(donut_h5e_default()); return false }
        var flags: UInt32 = 0
        guard H5Zget_filter_info(H5Z_filter_t(id), &flags) >= 0 else { H5Eclear2(donut_h5e_default()); return false }
        return flags & UInt32(H5Z_FILTER_CONFIG_DECODE_ENABLED) != 0
    }
}

extension H5Dataset {
    /// The stored element type.
    public var storedType: H5StoredType {
        let type = H5Dget_type(id)
        defer { H5Tclose(type) }
        let bits = H5Tget_size(type) * 8
        switch H5Tget_class(type) {
        case H5T_INTEGER: return H5StoredType(kind: H5Tget_sign(type) == H5T_SGN_NONE ? .unsignedInteger : .signedInteger, bits: bits)
        case H5T_FLOAT: return H5StoredType(kind: .float, bits: bits)
        default: return H5StoredType(kind: .other, bits: bits)
        }
    }

    /// Chunk shape when the dataset is chunked, nil when contiguous or compact.
    public var chunkShape: [Int]? {
        let dcpl = H5Dget_create_plist(id)
        defer { H5Pclose(dcpl) }
        guard H5Pget_layout(dcpl) == H5D_CHUNKED else { return nil }
        var dims = [hsize_t](repeating: 0, count: max(shape.count, 1))
        let rank = H5Pget_chunk(dcpl, Int32(dims.count), &dims)
        guard rank > 0 else { H5Eclear2(donut_h5e_default()); return nil }
        return dims.prefix(Int(rank)).map { Int($0) }
    }

    /// The source files and datasets of a virtual dataset, one per mapping, as stored ("."
    /// is this file; a name may hold printf-like patterns); nil when the dataset is not virtual.
    public var virtualSources: [(file: String, dataset: String)]? {
        let dcpl = H5Dget_create_plist(id)
        defer { H5Pclose(dcpl) }
        guard H5Pget_layout(dcpl) == H5D_VIRTUAL else { return nil }
        var count = 0
        guard H5Pget_virtual_count(dcpl, &count) >= 0 else { H5Eclear2(donut_h5e_default()); return [] }
        func text(_ i: Int, _ get: (hid_t, Int, UnsafeMutablePointer<CChar>?, Int) -> Int) -> String {
            let n = get(dcpl, i, nil, 0)
            guard n > 0 else { return "" }
            var buf = [CChar](repeating: 0, count: n + 1)
            _ = get(dcpl, i, &buf, n + 1)
            return String(cString: buf)
        }
        return (0..<count).map { (text($0, H5Pget_virtual_filename), text($0, H5Pget_virtual_dsetname)) }
    }

    /// The filter pipeline, in the order it was applied on write.
    public var filters: [H5Filter] {
        let dcpl = H5Dget_create_plist(id)
        defer { H5Pclose(dcpl) }
        let n = H5Pget_nfilters(dcpl)
        guard n > 0 else { return [] }
        return (0..<UInt32(n)).compactMap { i in
            var flags: UInt32 = 0, config: UInt32 = 0
            var nValues = 16
            var values = [UInt32](repeating: 0, count: nValues)
            var name = [CChar](repeating: 0, count: 256)
            let fid = H5Pget_filter2(dcpl, i, &flags, &nValues, &values, name.count, &name, &config)
            guard fid >= 0 else { H5Eclear2(donut_h5e_default()); return nil }
            let stored = String(cString: name)
            return H5Filter(id: Int(fid), name: stored.isEmpty ? nil : stored,
                            parameters: Array(values.prefix(min(nValues, values.count))),
                            isOptional: flags & 1 != 0)
        }
    }
}

extension H5Dataset {
    /// Refuses a dataset whose chunks cannot be decoded here, before any computation: each
    /// filter must have a decoder, and the first chunk must actually decode (a plugin may
    /// be present yet not handle this variant, e.g. Debian 12's bitshuffle with zstd).
    /// The error names the filter, this dataset and file, and how to get a decoder.
    public func checkFiltersDecode() throws {
        let pipeline = filters
        guard !pipeline.isEmpty else { return }
        let all = pipeline.map(\.description).joined(separator: " → ")
        for f in pipeline where !H5Plugins.canDecode(f.id) {
            throw error("compressed with \(all): no decoder for \(f) was found (plugin folders searched: "
                        + "\(H5Plugins.searchPath.joined(separator: ", ")); \(f.installHint)")
        }
        guard let chunk = chunkShape, !shape.isEmpty, shape.allSatisfy({ $0 > 0 }) else { return }
        let sel = FlatSelection(leadingRank: 1, range: 0 ..< min(chunk[0], shape[0]),
                                trailingStart: shape.dropFirst().map { _ in 0 },
                                trailingCount: zip(chunk.dropFirst(), shape.dropFirst()).map { min($0, $1) })
        do {
            _ = try read(as: Float.self, selection: sel)
        } catch let e as DonutIOError {
            let culprit = pipeline.first { H5Filter.known[$0.id].map { !$0.install.hasPrefix("built") } ?? true } ?? pipeline[0]
            throw error("compressed with \(all): the first chunk does not decode (\(e.message)); the decoder found for "
                        + "\(culprit) does not handle this variant; \(culprit.installHint)")
        }
    }
}
