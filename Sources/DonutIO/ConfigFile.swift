import Foundation
import DonutPhysics
import Yams

/// A config file that cannot be used: `file` is the path (or source name) as given,
/// `key` the dotted key path (`instrument.detector_distance_m`, `ranges.strain[1]`), empty
/// when the problem is the file as a whole (unreadable, not YAML, not a mapping).
public struct ConfigFileError: Error, Equatable, CustomStringConvertible, Sendable {
    public var file: String
    public var key: String
    public var message: String
    public init(file: String, key: String, _ message: String) {
        self.file = file; self.key = key; self.message = message
    }
    public var description: String {
        key.isEmpty ? "config '\(file)': \(message)" : "config '\(file)', key '\(key)': \(message)"
    }
}

/// Reads and writes `DonutConfig` as YAML (`configs/*.yaml`) and as the JSON copy stored in
/// result files.
///
/// Checking happens in three passes, each error naming the file and the dotted key:
/// 1. structure against the schema of `DonutConfig` (unknown keys, with the allowed keys at
///    that level; missing keys; duplicate keys),
/// 2. types (a number where a number is expected, an integer where an integer is),
/// 3. `DonutConfig.validate()` (the physics: positive distances, inner stop < zone plate,
///    Bragg angle defined, ...).
///
/// The schema is not written by hand: it is recorded by encoding the published preset
/// `DonutConfig.srio3LSAT002` with `SchemaRecorder`, so it cannot drift from `Config.swift`.
/// JSON input goes through the same path (JSON is valid YAML flow syntax).
public enum ConfigFile {
    /// Reads `path`, parses, checks keys and types, then runs `validate()`.
    public static func load(path: String) throws -> DonutConfig { try load(DonutConfig.self, path: path) }

    /// Parses YAML text; `source` names it in error messages (a path, or e.g. "<stdin>").
    public static func parse(yaml: String, source: String) throws -> DonutConfig {
        try parse(DonutConfig.self, yaml: yaml, source: source)
    }

    /// Pretty-printed JSON with sorted keys: the copy stored in result files.
    public static func json(_ c: DonutConfig) -> String { json(of: c) }

    /// Reads the JSON written by `json(_:)`, with the same checks as `parse(yaml:source:)`.
    public static func fromJSON(_ json: String, source: String) throws -> DonutConfig {
        try parse(DonutConfig.self, yaml: json, source: source)
    }

    /// Block-style YAML in the key order of `Config.swift`; reads back equal through `parse`.
    public static func yaml(_ c: DonutConfig) -> String { yaml(of: c) }

    /// The shape of `DonutConfig`, recorded from the preset (see `SchemaRecorder`).
    static var schema: SchemaRecorder.Node { SchemaRecorder.record(DonutConfig.schemaExample) }

    // MARK: - Any strict config (DonutConfig, TrainingConfig, …)

    /// Reads `path` as a `C`: parses, checks keys and types against `C.schemaExample`, then `validate()`.
    public static func load<C: StrictConfig>(_ type: C.Type, path: String) throws -> C {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ConfigFileError(file: path, key: "", "no such file")
        }
        guard !isDir.boolValue else { throw ConfigFileError(file: path, key: "", "is a directory, not a YAML file") }
        // Before reading: a FIFO blocks until a writer appears, a device may never end.
        if let kind = FileKind.nonRegular(path) { throw ConfigFileError(file: path, key: "", "is \(kind), not a YAML file") }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ConfigFileError(file: path, key: "", "cannot read the file (\(error.localizedDescription))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigFileError(file: path, key: "", "is not UTF-8 text")
        }
        return try parse(C.self, yaml: text, source: path)
    }

    /// Parses YAML (or JSON) text as a `C`; `source` names it in error messages.
    public static func parse<C: StrictConfig>(_ type: C.Type, yaml: String, source: String) throws -> C {
        let schema = SchemaRecorder.record(C.schemaExample)
        let root: Node?
        try YAMLNesting.check(yaml, source: source)
        do { root = try Yams.compose(yaml: yaml) } catch {
            throw ConfigFileError(file: source, key: "", "is not valid YAML: \(error)")
        }
        guard let root else {
            throw ConfigFileError(file: source, key: "", "is empty; expected the sections \(schema.keyList)")
        }
        var json = ""
        try check(root, against: schema, path: "", source: source, optional: C.optionalKeys, into: &json)
        let config: C
        do { config = try JSONDecoder().decode(C.self, from: Data(json.utf8)) } catch {
            // Unreachable when the schema walk above passed; reported rather than trapped.
            throw ConfigFileError(file: source, key: "", "internal error decoding the checked config: \(error)")
        }
        do { try config.validate() } catch let e as ConfigError {
            throw ConfigFileError(file: source, key: e.key, e.message)
        }
        return config
    }

    /// Pretty-printed JSON with sorted keys: the copy stored in result files.
    /// Numbers are written with the shortest digits that read back to the same Double.
    public static func json<C: StrictConfig>(of c: C) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // A validated config is finite; a non-finite value is spelled as YAML would, so the
        // text still says what was there (and `fromJSON` rejects it with the key name).
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: ".inf", negativeInfinity: "-.inf", nan: ".nan")
        do { return String(decoding: try encoder.encode(c), as: UTF8.self) } catch {
            preconditionFailure("a config is plain numbers and text and cannot fail to encode: \(error)")
        }
    }

    /// Block-style YAML in the key order of the type's declaration; reads back equal through `parse`.
    public static func yaml<C: StrictConfig>(of c: C) -> String {
        var out = "# Donut config (written by Donut; keys and units: configs/README.md)\n"
        emitYAML(SchemaRecorder.record(c), indent: 0, into: &out)
        return out
    }

    // MARK: - Schema


    /// Walks `node` against `schema`, appending canonical JSON for the decoder to `json`.
    private static func check(_ node: Node, against schema: SchemaRecorder.Node, path: String,
                              source: String, optional: Set<String> = [], into json: inout String) throws {
        func fail(_ message: String) -> ConfigFileError {
            ConfigFileError(file: source, key: path, message + line(node))
        }
        switch schema {
        case .object(let fields):
            guard let mapping = node.mapping else {
                throw fail("expected a mapping with the keys \(schema.keyList), got \(describe(node))")
            }
            var seen: [String: Node] = [:]
            for (k, v) in mapping {
                guard let name = k.scalar?.string else {
                    throw ConfigFileError(file: source, key: path, "keys must be plain names, got \(describe(k))" + line(k))
                }
                let keyPath = path.isEmpty ? name : "\(path).\(name)"
                guard fields.contains(where: { $0.0 == name }) else {
                    let level = path.isEmpty ? "at the top level" : "in '\(path)'"
                    var msg = "unknown key" + line(k) + "; allowed keys \(level): \(schema.keyList)"
                    if let near = closest(name, fields.map(\.0)) { msg += " (did you mean '\(near)'?)" }
                    throw ConfigFileError(file: source, key: keyPath, msg)
                }
                guard seen[name] == nil else {
                    throw ConfigFileError(file: source, key: keyPath, "appears twice" + line(k))
                }
                seen[name] = v
            }
            json += "{"
            for (name, sub) in fields {
                let keyPath = path.isEmpty ? name : "\(path).\(name)"
                guard let v = seen[name] else {
                    if optional.contains(Self.pattern(of: keyPath)) { continue }
                    let within = path.isEmpty ? "at the top level" : "from '\(path)'" + line(node)
                    throw ConfigFileError(file: source, key: keyPath, "required but missing \(within); expected \(sub.typeName)")
                }
                if json.last != "{" { json += "," }
                json += "\"\(name)\":"
                try check(v, against: sub, path: keyPath, source: source, optional: optional, into: &json)
            }
            json += "}"
        case .array(let element, _):
            guard let items = node.sequence else {
                throw fail("expected a list of \(element.typeName)s, got \(describe(node))")
            }
            json += "["
            for (i, item) in items.enumerated() {
                if i > 0 { json += "," }
                try check(item, against: element, path: "\(path)[\(i)]", source: source, optional: optional, into: &json)
            }
            json += "]"
        case .double:
            guard let s = node.scalar, !isNull(s), let v = Double.construct(from: s) else {
                throw fail("expected a number, got \(describe(node))")
            }
            guard v.isFinite else { throw fail("must be a finite number (got \(s.string))") }
            json += "\(v)"
        case .int:
            guard let s = node.scalar, !isNull(s), let v = Int.construct(from: s) else {
                throw fail("expected an integer, got \(describe(node))")
            }
            json += "\(v)"
        case .bool:
            guard let s = node.scalar, s.style == .plain || s.style == .any, let v = Bool.construct(from: s) else {
                throw fail("expected true or false, got \(describe(node))")
            }
            json += v ? "true" : "false"
        case .string:
            guard let s = node.scalar, !isNull(s) else { throw fail("expected a string, got \(describe(node))") }
            let data = try! JSONEncoder().encode(s.string)   // a String always encodes
            json += String(decoding: data, as: UTF8.self)
        }
    }

    /// `scans[2].dataset` → `scans[].dataset`: the form of `StrictConfig.optionalKeys`.
    static func pattern(of keyPath: String) -> String {
        keyPath.replacingOccurrences(of: #"\[[0-9]+\]"#, with: "[]", options: .regularExpression)
    }

    /// " (line N)" when the node knows where it came from.
    private static func line(_ node: Node) -> String {
        node.mark.map { " (line \($0.line))" } ?? ""
    }

    /// What a node holds, for "expected X, got Y" messages.
    private static func describe(_ node: Node) -> String {
        // if/else rather than a switch: newer Yams versions add Node cases (aliases).
        if node.mapping != nil { return "a mapping" }
        if node.sequence != nil { return "a list" }
        guard let s = node.scalar else { return "an unsupported YAML node" }
        if isNull(s) { return "nothing (null)" }
        let quoted = s.style != .plain && s.style != .any
        return quoted ? "the string \"\(s.string)\"" : "'\(s.string)'"
    }

    /// An empty or `~`/`null` plain scalar (`key:` with no value).
    private static func isNull(_ s: Node.Scalar) -> Bool {
        (s.style == .plain || s.style == .any) && ["", "~", "null", "Null", "NULL"].contains(s.string)
    }

    /// The allowed name nearest to a misspelt one (edit distance ≤ 3), for a hint.
    private static func closest(_ name: String, _ allowed: [String]) -> String? {
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            var prev = Array(0...b.count)
            for i in 1...max(a.count, 1) where !a.isEmpty {
                var cur = [i] + Array(repeating: 0, count: b.count)
                for j in 1...max(b.count, 1) where !b.isEmpty {
                    cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                }
                prev = cur
            }
            return prev[b.count]
        }
        let a = Array(name.lowercased())
        let best = allowed.map { ($0, distance(a, Array($0.lowercased()))) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= 3 else { return nil }
        return best.0
    }

    private static func emitYAML(_ node: SchemaRecorder.Node, indent: Int, into out: inout String) {
        guard case .object(let fields) = node else { return }
        let pad = String(repeating: " ", count: indent)
        for (name, sub) in fields {
            switch sub {
            case .object:
                out += "\(pad)\(name):\n"
                emitYAML(sub, indent: indent + 2, into: &out)
            default:
                out += "\(pad)\(name): \(scalarText(sub))\n"
            }
        }
    }

    private static func scalarText(_ node: SchemaRecorder.Node) -> String {
        switch node {
        case .double(let v):
            if v.isNaN { return ".nan" }
            if v.isInfinite { return v > 0 ? ".inf" : "-.inf" }
            return "\(v)"   // shortest digits that read back to the same Double
        case .int(let v): return "\(v)"
        case .bool(let v): return v ? "true" : "false"
        case .string(let v): return String(decoding: try! JSONEncoder().encode(v), as: UTF8.self)
        case .array(_, let items): return "[" + items.map(scalarText).joined(separator: ", ") + "]"
        case .object: return "{}"
        }
    }
}

// MARK: - Recording the schema

/// An `Encoder` that records the tree of keys, types and values a `Codable` value encodes:
/// the key order is the `CodingKeys` order, and `Double` and `Int` stay distinct (a JSON
/// round trip would turn `X0: 256.0` into an integer-looking `256`).
enum SchemaRecorder {
    indirect enum Node: Equatable, Sendable {
        case object([(String, Node)])
        /// Element type (from the first element) and the recorded elements.
        case array(Node, [Node])
        case double(Double), int(Int), bool(Bool), string(String)

        static func == (a: Node, b: Node) -> Bool {
            switch (a, b) {
            case let (.object(x), .object(y)): return x.map(\.0) == y.map(\.0) && x.map(\.1) == y.map(\.1)
            case let (.array(e1, x), .array(e2, y)): return e1 == e2 && x == y
            case let (.double(x), .double(y)): return x == y || (x.isNaN && y.isNaN)
            case let (.int(x), .int(y)): return x == y
            case let (.bool(x), .bool(y)): return x == y
            case let (.string(x), .string(y)): return x == y
            default: return false
            }
        }

        /// "a, b, c" — the keys allowed at this level.
        var keyList: String {
            if case .object(let f) = self { return f.map(\.0).joined(separator: ", ") }
            return ""
        }
        var typeName: String {
            switch self {
            case .object(let f): return "a mapping with the keys " + f.map(\.0).joined(separator: ", ")
            case .array(let e, _): return "a list of \(e.typeName)s"
            case .double: return "a number"
            case .int: return "an integer"
            case .bool: return "true or false"
            case .string: return "a string"
            }
        }
    }

    static func record<T: Encodable>(_ value: T) -> Node {
        let box = Box()
        do { try value.encode(to: Recorder(box: box)) } catch {
            preconditionFailure("SchemaRecorder never throws: \(error)")
        }
        return box.node
    }

    /// A growing node; containers hand out child boxes and read them back at the end.
    final class Box {
        var kind: Kind = .empty
        enum Kind { case empty, leaf(Node), object([(String, Box)]), array([Box]) }
        var node: Node {
            switch kind {
            case .empty: return .object([])
            case .leaf(let n): return n
            case .object(let f): return .object(f.map { ($0.0, $0.1.node) })
            case .array(let items):
                let nodes = items.map(\.node)
                return .array(nodes.first ?? .double(0), nodes)
            }
        }
        func addField(_ name: String) -> Box {
            let child = Box()
            if case .object(var f) = kind { f.append((name, child)); kind = .object(f) } else { kind = .object([(name, child)]) }
            return child
        }
        func addItem() -> Box {
            let child = Box()
            if case .array(var a) = kind { a.append(child); kind = .array(a) } else { kind = .array([child]) }
            return child
        }
    }

    struct Recorder: Encoder {
        let box: Box
        var codingPath: [any CodingKey] = []
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            if case .object = box.kind {} else { box.kind = .object([]) }
            return KeyedEncodingContainer(Keyed<Key>(box: box))
        }
        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            if case .array = box.kind {} else { box.kind = .array([]) }
            return Unkeyed(box: box)
        }
        func singleValueContainer() -> any SingleValueEncodingContainer { Single(box: box) }
    }

    /// Stores one leaf; every primitive goes through `put`.
    static func put<T: Encodable>(_ value: T, into box: Box) throws {
        switch value {
        case let v as Double: box.kind = .leaf(.double(v))
        case let v as Float: box.kind = .leaf(.double(Double(v)))
        case let v as Int: box.kind = .leaf(.int(v))
        case let v as Bool: box.kind = .leaf(.bool(v))
        case let v as String: box.kind = .leaf(.string(v))
        case let v as any BinaryInteger: box.kind = .leaf(.int(Int(v)))
        default: try value.encode(to: Recorder(box: box))
        }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let box: Box
        var codingPath: [any CodingKey] = []
        mutating func encodeNil(forKey key: Key) throws { _ = box.addField(key.stringValue) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try SchemaRecorder.put(value, into: box.addField(key.stringValue))
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            Recorder(box: box.addField(key.stringValue)).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            Recorder(box: box.addField(key.stringValue)).unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder { Recorder(box: box.addField("super")) }
        mutating func superEncoder(forKey key: Key) -> any Encoder { Recorder(box: box.addField(key.stringValue)) }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let box: Box
        var codingPath: [any CodingKey] = []
        var count: Int { if case .array(let a) = box.kind { return a.count }; return 0 }
        mutating func encodeNil() throws { _ = box.addItem() }
        mutating func encode<T: Encodable>(_ value: T) throws { try SchemaRecorder.put(value, into: box.addItem()) }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            Recorder(box: box.addItem()).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer { Recorder(box: box.addItem()).unkeyedContainer() }
        mutating func superEncoder() -> any Encoder { Recorder(box: box.addItem()) }
    }

    struct Single: SingleValueEncodingContainer {
        let box: Box
        var codingPath: [any CodingKey] = []
        mutating func encodeNil() throws {}
        mutating func encode<T: Encodable>(_ value: T) throws { try SchemaRecorder.put(value, into: box) }
    }
}
