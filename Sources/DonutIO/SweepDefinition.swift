import Foundation
import Yams
import DonutPhysics

/// A hyperparameter sweep (`configs/sweep-*.yaml`): a base training preset and a grid of
/// dotted keys, each with the list of values to try. The points are the Cartesian product,
/// numbered in row-major order of the keys as written (the last key varies fastest), so
/// point i is the same on every machine and a Slurm array task can find its own.
///
/// ```yaml
/// base: train-donut.yaml          # relative to this file; "builtin" = the DONUT paper preset
/// grid:
///   loss.physics: [1.0, 5.0, 10.0]
///   optimiser.lr_encoder: [1.0e-4, 3.0e-4]
/// ```
public struct SweepDefinition {
    /// Where the definition was read from (names it in errors).
    public let source: String
    /// The base preset's path (resolved against the definition's folder), nil for the built-in one.
    public let basePath: String?
    /// (dotted key, values as JSON text) in the order written.
    public let axes: [(key: String, values: [String])]

    /// Points in the grid: the product of the axes' lengths.
    public var pointCount: Int { axes.reduce(1) { $0 * $1.values.count } }

    /// Reads and checks the structure of a sweep file (keys of the base preset are checked
    /// when points are built: `point(_:base:)`).
    public static func load(path: String) throws -> SweepDefinition {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigFileError(file: path, key: "", "cannot read the sweep definition")
        }
        let parsed: Any?
        do { parsed = try Yams.load(yaml: text) } catch {
            throw ConfigFileError(file: path, key: "", "is not valid YAML: \(error)")
        }
        guard let top = parsed as? [String: Any] else {
            throw ConfigFileError(file: path, key: "", "expected a mapping with the keys base, grid")
        }
        for k in top.keys where !["base", "grid"].contains(k) {
            throw ConfigFileError(file: path, key: k, "unknown key; allowed keys at the top level: base, grid")
        }
        guard let base = top["base"] as? String else {
            throw ConfigFileError(file: path, key: "base", "required: a training preset path or \"builtin\"")
        }
        // Yams loses key order in a dictionary: walk the node for it.
        guard let root = try Yams.compose(yaml: text), let gridNode = root.mapping?["grid"], let grid = gridNode.mapping,
              !grid.isEmpty else {
            throw ConfigFileError(file: path, key: "grid", "required: a mapping of dotted training keys to lists of values")
        }
        var axes: [(String, [String])] = []
        for (k, v) in grid {
            guard let key = k.scalar?.string else { throw ConfigFileError(file: path, key: "grid", "keys must be dotted names") }
            guard let items = v.sequence, !items.isEmpty else {
                throw ConfigFileError(file: path, key: "grid.\(key)", "expected a non-empty list of values to try")
            }
            guard !axes.contains(where: { $0.0 == key }) else { throw ConfigFileError(file: path, key: "grid.\(key)", "appears twice") }
            axes.append((key, try items.map { try jsonText($0, file: path, key: "grid.\(key)") }))
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        let basePath = base == "builtin" ? nil
            : (base.hasPrefix("/") ? base : folder.appendingPathComponent(base).standardizedFileURL.path)
        return SweepDefinition(source: path, basePath: basePath, axes: axes.map { (key: $0.0, values: $0.1) })
    }

    /// The values of point `index`: one (key, JSON value) per axis.
    public func assignment(_ index: Int) -> [(key: String, value: String)] {
        precondition(index >= 0 && index < pointCount, "sweep point \(index) outside 0..<\(pointCount)")
        var rest = index, out: [(key: String, value: String)] = []
        for axis in axes.reversed() {
            out.append((axis.key, axis.values[rest % axis.values.count]))
            rest /= axis.values.count
        }
        return out.reversed()
    }

    /// The training preset of point `index`: `baseJSON` (the base preset as JSON) with the
    /// point's keys replaced, checked by the strict loader (`C`'s schema and `validate()`),
    /// so a misspelt or mistyped key names the sweep file, the point and the key.
    public func point<C: StrictConfig>(_ index: Int, base: C) throws -> C {
        guard var tree = try JSONSerialization.jsonObject(with: Data(ConfigFile.json(of: base).utf8)) as? [String: Any] else {
            preconditionFailure("a config encodes to a JSON object")
        }
        for (key, value) in assignment(index) {
            let parsed = try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed)
            try Self.set(&tree, path: key.split(separator: ".").map(String.init), to: parsed, file: source, key: "grid.\(key)")
        }
        let text = String(decoding: try JSONSerialization.data(withJSONObject: tree, options: [.sortedKeys]), as: UTF8.self)
        return try ConfigFile.parse(C.self, yaml: text, source: "\(source) point \(index)")
    }

    /// Replaces an existing key of a nested JSON object (a key the base lacks is an error:
    /// sweeps change settings, they do not invent them).
    static func set(_ tree: inout [String: Any], path: [String], to value: Any, file: String, key: String) throws {
        guard let head = path.first, tree[head] != nil else {
            throw ConfigFileError(file: file, key: key, "no such key in the training preset; allowed here: \(tree.keys.sorted().joined(separator: ", "))")
        }
        if path.count == 1 { tree[head] = value; return }
        guard var sub = tree[head] as? [String: Any] else {
            throw ConfigFileError(file: file, key: key, "'\(head)' is a value, not a section")
        }
        try set(&sub, path: Array(path.dropFirst()), to: value, file: file, key: key)
        tree[head] = sub
    }

    /// A YAML value (scalar or list, nested) as JSON text, numbers as numbers.
    static func jsonText(_ node: Node, file: String, key: String) throws -> String {
        if let items = node.sequence { return "[" + (try items.map { try jsonText($0, file: file, key: key) }).joined(separator: ",") + "]" }
        guard let s = node.scalar else { throw ConfigFileError(file: file, key: key, "values must be numbers, strings, booleans or lists") }
        let plain = s.style == .plain || s.style == .any
        if plain, let i = Int.construct(from: s) { return "\(i)" }
        if plain, let d = Double.construct(from: s), d.isFinite { return "\(d)" }
        if plain, let b = Bool.construct(from: s) { return b ? "true" : "false" }
        return String(decoding: try JSONEncoder().encode(s.string), as: UTF8.self)
    }
}
