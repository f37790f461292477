import Foundation
import Yams
import DonutPhysics
import DonutNN

/// A hyperparameter sweep (`configs/sweep-*.yaml`): a base training preset and either a grid
/// of dotted keys, each with the list of values to try, or a random search over ranges.
///
/// Grid points are the Cartesian product, numbered in row-major order of the keys as written
/// (the last key varies fastest). Random points are drawn per point from (seed, index) alone:
/// point i is the same on every machine whatever the other points, so a Slurm array task can
/// find its own, and growing `n` keeps the first points.
///
/// ```yaml
/// base: train-donut.yaml          # relative to this file; "builtin" = the DONUT paper preset
/// grid:
///   loss.physics: [1.0, 5.0, 10.0]
///   optimiser.lr_encoder: [1.0e-4, 3.0e-4]
/// points_per_task: 2              # optional: points trained one after another per array task
/// ```
/// or
/// ```yaml
/// base: builtin
/// random: {n: 20, seed: 1}
/// ranges:
///   loss.physics: {min: 0.5, max: 20, log: true}      # log-uniform
///   network.dropout: {min: 0.0, max: 0.3}             # uniform
///   schedule.batch_size: {values: [16, 32, 64]}       # one of these
///   network.latent_channels: {min: 4, max: 16, integer: true}  # uniform integer, ends included
/// ```
public struct SweepDefinition {
    /// How one key of a random search is drawn (u uniform in [0, 1)).
    public enum Distribution: Equatable, Sendable {
        /// min + u (max − min); `log`: exp(ln min + u (ln max − ln min)).
        case uniform(min: Double, max: Double, log: Bool)
        /// ⌊min + u (max − min + 1)⌋: every integer of [min, max] equally likely.
        case integer(min: Int, max: Int)
        /// values[⌊u · count⌋], JSON text.
        case choice([String])
    }

    /// Where the definition was read from (names it in errors).
    public let source: String
    /// The base preset's path (resolved against the definition's folder), nil for the built-in one.
    public let basePath: String?
    /// Grid: (dotted key, values as JSON text) in the order written; empty for a random search.
    public let axes: [(key: String, values: [String])]
    /// Random search: (dotted key, distribution) in the order written; empty for a grid.
    public let ranges: [(key: String, distribution: Distribution)]
    /// Random search: number of points and seed.
    public let randomCount: Int, randomSeed: UInt64
    /// Points trained one after another by one array task (≥ 1).
    public let pointsPerTask: Int

    /// The swept keys, in the order written.
    public var keys: [String] { axes.isEmpty ? ranges.map(\.key) : axes.map(\.key) }

    /// Points: the product of the axes' lengths (grid) or `n` (random).
    public var pointCount: Int { axes.isEmpty ? randomCount : axes.reduce(1) { $0 * $1.values.count } }

    /// Array tasks needed: ⌈points / points_per_task⌉.
    public var taskCount: Int { (pointCount + pointsPerTask - 1) / pointsPerTask }

    /// The points array task `task` trains.
    public func points(ofTask task: Int) -> Range<Int> {
        let first = task * pointsPerTask
        return min(first, pointCount) ..< min(first + pointsPerTask, pointCount)
    }

    init(source: String, basePath: String?, axes: [(key: String, values: [String])],
         ranges: [(key: String, distribution: Distribution)] = [], randomCount: Int = 0, randomSeed: UInt64 = 0,
         pointsPerTask: Int = 1) {
        self.source = source; self.basePath = basePath; self.axes = axes; self.ranges = ranges
        self.randomCount = randomCount; self.randomSeed = randomSeed; self.pointsPerTask = pointsPerTask
    }

    static let topKeys = ["base", "grid", "random", "ranges", "points_per_task"]

    /// Reads and checks the structure of a sweep file (keys of the base preset are checked
    /// when points are built: `point(_:base:)`).
    public static func load(path: String) throws -> SweepDefinition {
        if let kind = FileKind.nonRegular(path) { throw ConfigFileError(file: path, key: "", "is \(kind), not a YAML file") }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigFileError(file: path, key: "", "cannot read the sweep definition")
        }
        try YAMLNesting.check(text, source: path)
        let parsed: Any?
        do { parsed = try Yams.load(yaml: text) } catch {
            throw ConfigFileError(file: path, key: "", "is not valid YAML: \(error)")
        }
        guard let top = parsed as? [String: Any] else {
            throw ConfigFileError(file: path, key: "", "expected a mapping with the keys base and grid (or random and ranges)")
        }
        for k in top.keys where !topKeys.contains(k) {
            throw ConfigFileError(file: path, key: k, "unknown key; allowed keys at the top level: \(topKeys.joined(separator: ", "))")
        }
        guard let base = top["base"] as? String else {
            throw ConfigFileError(file: path, key: "base", "required: a training preset path or \"builtin\"")
        }
        var perTask = 1
        if let v = top["points_per_task"] {
            guard let n = v as? Int, n >= 1 else {
                throw ConfigFileError(file: path, key: "points_per_task", "must be an integer ≥ 1 (got \(v))")
            }
            perTask = n
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        let basePath = base == "builtin" ? nil
            : (base.hasPrefix("/") ? base : folder.appendingPathComponent(base).standardizedFileURL.path)
        // Yams loses key order in a dictionary: walk the nodes for it.
        guard let root = try Yams.compose(yaml: text) else {
            throw ConfigFileError(file: path, key: "", "is empty")
        }
        switch (top["grid"] != nil, top["random"] != nil) {
        case (true, true):
            throw ConfigFileError(file: path, key: "random", "give either grid or random (with ranges), not both")
        case (false, false):
            throw ConfigFileError(file: path, key: "grid", "required: a mapping of dotted training keys to lists of values (or random: {n, seed} with ranges)")
        case (true, false):
            if top["ranges"] != nil { throw ConfigFileError(file: path, key: "ranges", "belongs to a random search (random: {n, seed}); a grid lists its values under grid") }
            guard let gridNode = root.mapping?["grid"], let grid = gridNode.mapping, !grid.isEmpty else {
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
            return SweepDefinition(source: path, basePath: basePath, axes: axes.map { (key: $0.0, values: $0.1) },
                                   pointsPerTask: perTask)
        case (false, true):
            guard let random = top["random"] as? [String: Any] else {
                throw ConfigFileError(file: path, key: "random", "expected {n: POINTS, seed: SEED}")
            }
            for k in random.keys where !["n", "seed"].contains(k) {
                throw ConfigFileError(file: path, key: "random.\(k)", "unknown key; allowed: n, seed")
            }
            guard let n = random["n"] as? Int, n >= 1 else {
                throw ConfigFileError(file: path, key: "random.n", "required: the number of points, an integer ≥ 1 (got \(random["n"].map { "\($0)" } ?? "nothing"))")
            }
            guard let seed = random["seed"] as? Int, seed >= 0 else {
                throw ConfigFileError(file: path, key: "random.seed", "required: an integer ≥ 0 (got \(random["seed"].map { "\($0)" } ?? "nothing"))")
            }
            guard let rangesNode = root.mapping?["ranges"], let mapping = rangesNode.mapping, !mapping.isEmpty else {
                throw ConfigFileError(file: path, key: "ranges", "required with random: a mapping of dotted training keys to {min, max[, log, integer]} or {values: [...]}")
            }
            var ranges: [(key: String, distribution: Distribution)] = []
            for (k, v) in mapping {
                guard let key = k.scalar?.string else { throw ConfigFileError(file: path, key: "ranges", "keys must be dotted names") }
                guard !ranges.contains(where: { $0.key == key }) else { throw ConfigFileError(file: path, key: "ranges.\(key)", "appears twice") }
                ranges.append((key, try distribution(v, file: path, key: "ranges.\(key)")))
            }
            return SweepDefinition(source: path, basePath: basePath, axes: [], ranges: ranges, randomCount: n,
                                   randomSeed: UInt64(seed), pointsPerTask: perTask)
        }
    }

    /// One entry of `ranges`.
    static func distribution(_ node: Node, file: String, key: String) throws -> Distribution {
        guard let m = node.mapping else {
            throw ConfigFileError(file: file, key: key, "expected {min, max[, log: true][, integer: true]} or {values: [...]}")
        }
        var fields: [String: Node] = [:]
        for (k, v) in m {
            let name = k.scalar?.string ?? ""
            guard ["min", "max", "log", "integer", "values"].contains(name) else {
                throw ConfigFileError(file: file, key: "\(key).\(name)", "unknown key; allowed: min, max, log, integer, values")
            }
            fields[name] = v
        }
        if let values = fields["values"] {
            guard fields.count == 1 else { throw ConfigFileError(file: file, key: key, "values excludes min, max, log and integer") }
            guard let items = values.sequence, !items.isEmpty else {
                throw ConfigFileError(file: file, key: "\(key).values", "expected a non-empty list of values")
            }
            return .choice(try items.map { try jsonText($0, file: file, key: "\(key).values") })
        }
        func flag(_ name: String) throws -> Bool {
            guard let n = fields[name] else { return false }
            guard let s = n.scalar, let b = Bool.construct(from: s) else {
                throw ConfigFileError(file: file, key: "\(key).\(name)", "expected true or false")
            }
            return b
        }
        func number(_ name: String) throws -> Double {
            guard let n = fields[name], let s = n.scalar, let d = Double.construct(from: s), d.isFinite else {
                throw ConfigFileError(file: file, key: "\(key).\(name)", "required: a finite number")
            }
            return d
        }
        let lo = try number("min"), hi = try number("max"), log = try flag("log"), integer = try flag("integer")
        guard lo < hi else { throw ConfigFileError(file: file, key: key, "needs min < max (got min \(lo), max \(hi))") }
        if integer {
            guard !log else { throw ConfigFileError(file: file, key: key, "integer and log cannot be combined") }
            guard lo.rounded() == lo, hi.rounded() == hi, abs(lo) < 1e15, abs(hi) < 1e15 else {
                throw ConfigFileError(file: file, key: key, "integer ranges need whole min and max (got \(lo), \(hi))")
            }
            return .integer(min: Int(lo), max: Int(hi))
        }
        if log { guard lo > 0 else { throw ConfigFileError(file: file, key: "\(key).min", "a log-uniform range needs min > 0 (got \(lo))") } }
        return .uniform(min: lo, max: hi, log: log)
    }

    /// The value drawn for `distribution` from u ∈ [0, 1), as JSON text.
    static func draw(_ distribution: Distribution, _ u: Double) -> String {
        switch distribution {
        case .uniform(let lo, let hi, let log):
            let x = log ? Foundation.exp(Foundation.log(lo) + u * (Foundation.log(hi) - Foundation.log(lo))) : lo + u * (hi - lo)
            return "\(Swift.min(Swift.max(x, lo), hi))"
        case .integer(let lo, let hi):
            return "\(Swift.min(lo + Int((u * Double(hi - lo + 1)).rounded(.down)), hi))"
        case .choice(let values):
            return values[Swift.min(Int((u * Double(values.count)).rounded(.down)), values.count - 1)]
        }
    }

    /// The values of point `index`: one (key, JSON value) per axis.
    public func assignment(_ index: Int) -> [(key: String, value: String)] {
        precondition(index >= 0 && index < pointCount, "sweep point \(index) outside 0..<\(pointCount)")
        if axes.isEmpty {
            // One stream per point: u_k of point i depends on (seed, i, k) only.
            var rng = SplitMix64.seeded(randomSeed, stream: UInt64(index))
            return ranges.map { (key: $0.key, value: Self.draw($0.distribution, rng.uniform())) }
        }
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
