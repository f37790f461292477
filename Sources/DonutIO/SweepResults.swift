import Foundation

// Sweep results: what each point records (`run-NNN/metrics.json`), and `donut sweep summary`'s
// ranking, tables and plots. Points are compared by metrics that do not contain the swept
// weights: validation_loss is Σ w_k L_k, so sweeping a weight w_k moves it whatever the model's
// quality (a larger loss.physics gives a larger loss); held-out physics MAE and Poisson deviance
// measure the model against frames it never trained on, whatever the weights.

/// What one sweep point (any training) records beside its model.
public struct SweepPointMetrics: Codable, Equatable, Sendable {
    /// Measured frames held out of training (the trainer's validation split, fixed by
    /// schedule.seed; every point of a sweep that does not sweep the seed uses the same frames).
    public var heldOutFrames: Int
    /// Mean |physics(prediction) − frame| over the held-out frames' pixels, in counts.
    public var heldOutPhysicsMAE: Double
    /// Mean reduced Poisson deviance D/E[D|μ] of the held-out frames (≈ 1 when the model explains them).
    public var heldOutDeviance: Double
    /// RMSE of each map against the scan's ground truth over the held-out frames (map name →
    /// RMSE in the map's units: strain "", tilt_lr/tilt_ud "deg", thickness "angstrom"); empty
    /// when the scan has none.
    public var groundTruthRMSE: [String: Double]
    /// The last validation loss (Σ w_k L_k: contains the loss weights; for reference only).
    public var validationLoss: Double
    /// Wall time of the training (s) and its throughput (training samples per second, all ranks).
    public var wallSeconds: Double
    public var samplesPerSecond: Double
    public var steps: Int

    enum CodingKeys: String, CodingKey {
        case heldOutFrames = "held_out_frames", heldOutPhysicsMAE = "held_out_physics_mae"
        case heldOutDeviance = "held_out_deviance", groundTruthRMSE = "ground_truth_rmse"
        case validationLoss = "validation_loss", wallSeconds = "wall_seconds", samplesPerSecond = "samples_per_second"
        case steps
    }

    public init(heldOutFrames: Int, heldOutPhysicsMAE: Double, heldOutDeviance: Double, groundTruthRMSE: [String: Double],
                validationLoss: Double, wallSeconds: Double, samplesPerSecond: Double, steps: Int) {
        self.heldOutFrames = heldOutFrames; self.heldOutPhysicsMAE = heldOutPhysicsMAE; self.heldOutDeviance = heldOutDeviance
        self.groundTruthRMSE = groundTruthRMSE; self.validationLoss = validationLoss; self.wallSeconds = wallSeconds
        self.samplesPerSecond = samplesPerSecond; self.steps = steps
    }

    /// Every metric by its column name (`SweepSummary.metricNames`); NaN when not measured.
    public var columns: [String: Double] {
        var c: [String: Double] = [
            "held_out_deviance": heldOutDeviance, "held_out_physics_mae": heldOutPhysicsMAE,
            "validation_loss": validationLoss, "wall_seconds": wallSeconds, "samples_per_second": samplesPerSecond,
        ]
        for name in SweepSummary.groundTruthMaps { c["rmse_\(name)"] = groundTruthRMSE[name] ?? .nan }
        return c
    }

    /// JSON with NaN/inf written as null (JSON has no NaN) — read back as NaN.
    public func json() throws -> Data {
        func finite(_ x: Double) -> Any { x.isFinite ? x : NSNull() }
        let object: [String: Any] = [
            "held_out_frames": heldOutFrames,
            "held_out_physics_mae": finite(heldOutPhysicsMAE), "held_out_deviance": finite(heldOutDeviance),
            "ground_truth_rmse": groundTruthRMSE.mapValues(finite),
            "validation_loss": finite(validationLoss), "wall_seconds": finite(wallSeconds),
            "samples_per_second": finite(samplesPerSecond), "steps": steps,
        ]
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    public static func read(path: String) throws -> SweepPointMetrics {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw DonutIOError(file: path, "cannot read the point's metrics: \(error.localizedDescription)")
        }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw DonutIOError(file: path, "is not a metrics file (expected a JSON object)")
        }
        func number(_ key: String) -> Double { (o[key] as? NSNumber)?.doubleValue ?? .nan }
        let rmse = (o["ground_truth_rmse"] as? [String: Any] ?? [:]).compactMapValues { ($0 as? NSNumber)?.doubleValue }
        return SweepPointMetrics(heldOutFrames: (o["held_out_frames"] as? NSNumber)?.intValue ?? 0,
                                 heldOutPhysicsMAE: number("held_out_physics_mae"), heldOutDeviance: number("held_out_deviance"),
                                 groundTruthRMSE: rmse, validationLoss: number("validation_loss"),
                                 wallSeconds: number("wall_seconds"), samplesPerSecond: number("samples_per_second"),
                                 steps: (o["steps"] as? NSNumber)?.intValue ?? 0)
    }

    /// The metrics file of the model `modelPath` ("<model without .h5>.metrics.json").
    public static func path(forModel modelPath: String) -> String {
        removingSuffix(".h5", from: modelPath) + ".metrics.json"
    }
}

/// `donut sweep summary`: the points of a planned sweep, ranked by one metric.
public struct SweepSummary {
    public static let groundTruthMaps = ["strain", "tilt_lr", "tilt_ud", "thickness"]
    /// Metrics a summary can rank by; all lower-is-better except samples_per_second.
    public static let metricNames = ["held_out_deviance", "held_out_physics_mae"]
        + groundTruthMaps.map { "rmse_\($0)" } + ["validation_loss", "wall_seconds", "samples_per_second"]
    /// The default: comparable across points whatever weights are swept.
    public static let defaultMetric = "held_out_deviance"
    static func higherIsBetter(_ metric: String) -> Bool { metric == "samples_per_second" }

    /// A finished point: index, its swept values (JSON text, in key order), its metrics.
    public struct Point: Sendable {
        public var index: Int
        public var values: [String]
        public var metrics: SweepPointMetrics
    }
    /// A point without metrics, and why.
    public struct Missing: Sendable {
        public var index: Int
        public var values: [String]
        public var reason: String
    }

    public var keys: [String]
    public var metric: String
    /// Ranked best first; points whose metric is not finite come last (in index order).
    public var ranked: [Point]
    public var missing: [Missing]

    /// Reads the plan (`points.tsv`) and every point's folder in `outDir`. A point counts when
    /// `run-NNN/model.h5` is a readable model and its metrics file reads; otherwise it is
    /// listed with the reason (failed: the point's `status.json` says why; unfinished: a
    /// checkpoint and its step; not started).
    public static func collect(outDir: String, metric: String = defaultMetric) throws -> SweepSummary {
        guard metricNames.contains(metric) else {
            throw DonutIOError(file: outDir, "no metric '\(metric)' to rank by; choose one of \(metricNames.joined(separator: ", "))")
        }
        let planPath = URL(fileURLWithPath: outDir).appendingPathComponent("points.tsv").path
        guard let text = try? String(contentsOfFile: planPath, encoding: .utf8) else {
            throw DonutIOError(file: planPath, "no sweep plan here (run `donut sweep plan` first)")
        }
        let lines = text.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first, header.first == "index" else { throw DonutIOError(file: planPath, "expected a header line starting with 'index'") }
        var points: [Point] = [], missing: [Missing] = []
        for (n, fields) in lines.dropFirst().enumerated() {
            guard let i = Int(fields[0]), fields.count == header.count else {
                throw DonutIOError(file: planPath, "line \(n + 2): expected \(header.count) tab-separated fields starting with the point's index")
            }
            let values = Array(fields.dropFirst())
            let folder = SweepPlanLayout.runFolder(outDir, i)
            let model = folder + "/model.h5"
            if FileManager.default.fileExists(atPath: model) {
                do {
                    _ = try CheckpointFile.read(path: model)
                    let metrics = try SweepPointMetrics.read(path: SweepPointMetrics.path(forModel: model))
                    points.append(Point(index: i, values: values, metrics: metrics))
                } catch {
                    missing.append(Missing(index: i, values: values, reason: "finished model unusable: \(error)"))
                }
                continue
            }
            if let status = try? SweepPointStatus.read(folder: folder), status.state == "failed" {
                missing.append(Missing(index: i, values: values, reason: "failed: \(status.reason)"))
            } else if let ck = try? CheckpointFile.read(path: folder + "/model.checkpoint.h5") {
                missing.append(Missing(index: i, values: values, reason: "unfinished: checkpoint at step \(ck.step) (epoch \(ck.epoch))"))
            } else {
                missing.append(Missing(index: i, values: values, reason: "not started (no model, no checkpoint)"))
            }
        }
        let sign = higherIsBetter(metric) ? -1.0 : 1.0
        let ranked = points.sorted { a, b in
            let x = a.metrics.columns[metric] ?? .nan, y = b.metrics.columns[metric] ?? .nan
            switch (x.isFinite, y.isFinite) {
            case (true, true): return sign * x < sign * y || (x == y && a.index < b.index)
            case (true, false): return true
            case (false, true): return false
            case (false, false): return a.index < b.index
            }
        }
        return SweepSummary(keys: Array(header.dropFirst()), metric: metric, ranked: ranked, missing: missing)
    }

    /// Columns of the tables: rank, index, the swept keys, then every metric.
    var columnNames: [String] { ["rank", "index"] + keys + Self.metricNames + ["held_out_frames", "steps"] }

    func rows() -> [[String]] {
        func number(_ x: Double) -> String { x.isFinite ? String(format: "%.6g", x) : "nan" }
        return ranked.enumerated().map { r, p in
            let c = p.metrics.columns
            return ["\(r + 1)", "\(p.index)"] + p.values + Self.metricNames.map { number(c[$0] ?? .nan) }
                + ["\(p.metrics.heldOutFrames)", "\(p.metrics.steps)"]
        }
    }

    /// The ranking as CSV (one header line; values with commas or quotes quoted).
    public func csv() -> String {
        func field(_ s: String) -> String {
            s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
        }
        var text = columnNames.map(field).joined(separator: ",") + "\n"
        for row in rows() { text += row.map(field).joined(separator: ",") + "\n" }
        return text
    }

    /// The ranking for a terminal or a script: tab-separated, the point's index first, best
    /// first (the header names the columns), then one `not ranked:` line per point without
    /// results and its reason.
    public func tsv() -> String {
        var text = (["index"] + keys + Self.metricNames + ["held_out_frames", "steps"]).joined(separator: "\t") + "\n"
        for row in rows() { text += row.dropFirst().joined(separator: "\t") + "\n" }
        for m in missing { text += "not ranked: point \(m.index): \(m.reason)\n" }
        return text
    }

    /// The ranking as a markdown table, then the points without results and their reasons.
    public func markdown() -> String {
        var text = "Sweep ranked by **\(metric)** (\(Self.higherIsBetter(metric) ? "higher" : "lower") is better)"
        text += metric == "validation_loss" ? "; validation_loss contains the loss weights: compare it only when no weight is swept.\n\n" : ".\n\n"
        text += "| " + columnNames.joined(separator: " | ") + " |\n"
        text += "|" + String(repeating: "---|", count: columnNames.count) + "\n"
        for row in rows() { text += "| " + row.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |\n" }
        if !missing.isEmpty {
            text += "\nPoints without results (\(missing.count)):\n\n"
            for m in missing {
                text += "- point \(m.index) (" + zip(keys, m.values).map { "\($0) = \($1)" }.joined(separator: ", ") + "): \(m.reason)\n"
            }
        }
        return text
    }

    /// The PNG of the metric against swept key `key`: one dot per finished point (numeric keys
    /// on a linear axis, or a log axis when all values are positive and span more than a
    /// decade; other keys as equally spaced categories), the best point ringed.
    public func plot(key: String) -> [UInt8] {
        let k = keys.firstIndex(of: key)!
        let points = ranked.compactMap { p -> (x: String, y: Double)? in
            let y = p.metrics.columns[metric] ?? .nan
            return y.isFinite ? (p.values[k], y) : nil
        }
        return ScatterPlot(title: "\(metric) vs \(key)", xLabel: key, yLabel: metric,
                           points: points.map(\.x), values: points.map(\.y), best: points.isEmpty ? nil : 0).png()
    }

    /// Writes summary.csv, summary.md and summary-<metric>-<key>.png into `outDir`. An
    /// existing file with the same content is left alone (a rerun that changes nothing writes
    /// nothing); one with other content is replaced only with `force`. Returns the paths.
    @discardableResult
    public func write(outDir: String, force: Bool) throws -> [String] {
        var files: [(String, Data)] = [("summary.csv", Data(csv().utf8)), ("summary.md", Data(markdown().utf8))]
        for key in keys {
            let safe = key.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" ? $0 : "_" }
            files.append(("summary-\(metric)-\(String(safe)).png", Data(plot(key: key))))
        }
        // Check every file first: either all are written or none.
        var pending: [(String, Data)] = []
        for (name, data) in files {
            let path = URL(fileURLWithPath: outDir).appendingPathComponent(name).path
            if let old = FileManager.default.contents(atPath: path) {
                if old == data { continue }
                guard force else { throw DonutIOError(file: path, "exists with other content (an earlier summary); pass --force to replace it") }
            }
            pending.append((path, data))
        }
        for (path, data) in pending { try AtomicOutput.write(data, to: path, force: true) }
        return files.map { URL(fileURLWithPath: outDir).appendingPathComponent($0.0).path }
    }
}

/// Where a sweep plan puts things.
public enum SweepPlanLayout {
    /// The folder of point `i`: `<outDir>/run-NNN`.
    public static func runFolder(_ outDir: String, _ i: Int) -> String {
        URL(fileURLWithPath: outDir).appendingPathComponent(String(format: "run-%03d", i)).path
    }
}

/// `run-NNN/status.json`: written when a point's training fails (the reason named), removed
/// from consideration once its model exists.
public struct SweepPointStatus: Codable, Equatable, Sendable {
    public var state: String
    public var reason: String
    public init(state: String, reason: String) { self.state = state; self.reason = reason }

    public static func read(folder: String) throws -> SweepPointStatus {
        try JSONDecoder().decode(Self.self, from: Data(contentsOf: URL(fileURLWithPath: folder).appendingPathComponent("status.json")))
    }
    public func write(folder: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicOutput.write(try encoder.encode(self), to: URL(fileURLWithPath: folder).appendingPathComponent("status.json").path, force: true)
    }
}

/// A small scatter plot in the quick-looks' style (built-in font, PNG encoder): values
/// against x given as JSON text, numeric or categorical.
struct ScatterPlot {
    var title: String, xLabel: String, yLabel: String
    var points: [String]
    var values: [Double]
    /// Index of the point to ring (the best).
    var best: Int?

    static let width = 640, height = 420
    static let left = 110, right = 30, top = 50, bottom = 70

    /// x positions in [0, 1] and the axis labels (low, high or the categories) and whether log.
    func xPositions() -> (positions: [Double], ticks: [(Double, String)], log: Bool) {
        let numbers = points.map { Double($0) }
        if !numbers.isEmpty, numbers.allSatisfy({ $0 != nil && $0!.isFinite }) {
            let x = numbers.map { $0! }
            let lo = x.min()!, hi = x.max()!
            let log = lo > 0 && hi / lo > 10
            let f: (Double) -> Double = log ? { Foundation.log10($0) } : { $0 }
            let a = f(lo), b = f(hi)
            let pos = x.map { b > a ? (f($0) - a) / (b - a) : 0.5 }
            let labels = QuickLook.tickLabels(lo: lo, hi: hi)
            return (pos, b > a ? [(0, labels[2]), (1, labels[0])] : [(0.5, labels[0])], log)
        }
        let categories = Array(Set(points)).sorted()
        let pos = points.map { p in categories.count > 1 ? Double(categories.firstIndex(of: p)!) / Double(categories.count - 1) : 0.5 }
        let ticks = categories.enumerated().map { i, c in (categories.count > 1 ? Double(i) / Double(categories.count - 1) : 0.5, c) }
        return (pos, ticks, false)
    }

    func png() -> [UInt8] {
        var image = QuickLook.Image(width: Self.width, height: Self.height, fill: QuickLook.background)
        let ink = QuickLook.ink
        let x0 = Self.left, x1 = Self.width - Self.right, y0 = Self.top, y1 = Self.height - Self.bottom
        let cw = QuickLook.charW, ch = QuickLook.charH
        image.text(title, x: QuickLook.margin, y: QuickLook.margin, ink)
        // Axes.
        image.fillRect(x: x0, y: y0, w: 2, h: y1 - y0, ink)
        image.fillRect(x: x0, y: y1, w: x1 - x0, h: 2, ink)
        let (xs, xTicks, log) = xPositions()
        let plotW = Double(x1 - x0 - 20), plotH = Double(y1 - y0 - 20)
        func px(_ t: Double) -> Int { x0 + 10 + Int((t * plotW).rounded()) }
        for (t, label) in xTicks {
            image.fillRect(x: px(t), y: y1, w: 2, h: 6, ink)
            let text = String(label.prefix(12))
            image.text(text, x: max(0, min(Self.width - text.count * cw, px(t) - text.count * cw / 2)), y: y1 + 10, ink)
        }
        let axisLabel = xLabel + (log ? " (log)" : "")
        image.text(axisLabel, x: max(0, (x0 + x1 - axisLabel.count * cw) / 2), y: y1 + 14 + ch + 6, ink)
        guard let lo = values.min(), let hi = values.max() else {
            image.text("no finished point", x: x0 + 20, y: (y0 + y1) / 2, ink)
            return PNG.encodeRGB(width: image.width, height: image.height, rgb: image.rgb)
        }
        func py(_ v: Double) -> Int { y1 - 10 - Int((hi > lo ? (v - lo) / (hi - lo) : 0.5) * plotH) }
        let labels = QuickLook.tickLabels(lo: lo, hi: hi)
        for (v, label) in hi > lo ? [(hi, labels[0]), (lo, labels[2])] : [(lo, labels[0])] {
            image.fillRect(x: x0 - 6, y: py(v), w: 6, h: 2, ink)
            image.text(label, x: max(0, x0 - 10 - label.count * cw), y: py(v) - ch / 2, ink)
        }
        image.text(yLabel, x: QuickLook.margin, y: y0 - ch - 6 + 0, ink)
        for (i, (t, v)) in zip(xs, values).enumerated() {
            let c = QuickLook.viridis(0.25)
            image.fillRect(x: px(t) - 4, y: py(v) - 4, w: 9, h: 9, c)
            if i == best {
                for (dx, dy, w, h) in [(-8, -8, 17, 2), (-8, 7, 17, 2), (-8, -8, 2, 17), (7, -8, 2, 17)] {
                    image.fillRect(x: px(t) + dx, y: py(v) + dy, w: w, h: h, (220, 50, 32))
                }
            }
        }
        return PNG.encodeRGB(width: image.width, height: image.height, rgb: image.rgb)
    }
}
