import DonutCore
import DonutMPI
import Foundation

// NeXus result maps (docs/design.md, "Files"):
//   /                      @default="entry" @donut_file="result" @donut_format_version
//   /entry                 NXentry @default="result"
//   /entry/result          NXdata @signal="strain" @auxiliary_signals=[other maps]
//                          @axes=["y","x"] @y_indices=0 @x_indices=1
//     strain ""  tilt_lr "deg"  tilt_ud "deg"  [thickness "angstrom"]  [residual "counts"]
//     valid (uint8, "")  [<map>_sigma, units of <map>]
//                          each (rows, cols) float64 (valid uint8) @interpretation="image" @units
//     y, x                 1-D float64, @units = ScanLayout.axisUnits ("um" or "")
//   /entry/process         NXprocess: program, version, date, method, command_line, model_id,
//                          config (NXnote), inputs (NXcollection of NXnote)

/// Optional maps in file order: name and units. Sigma maps carry their map's units.
private let optionalMaps: [(name: String, units: String)] = [
    ("thickness", "angstrom"), ("residual", "counts"),
    ("strain_sigma", ""), ("tilt_lr_sigma", "deg"), ("tilt_ud_sigma", "deg"), ("thickness_sigma", "angstrom"),
]
private let resultGroup = "/entry/result"

private func optionalMap(_ r: FrameResults, _ name: String) -> [Double]? {
    switch name {
    case "thickness": return r.thicknessA
    case "residual": return r.residual
    default: return r.sigmas[name]
    }
}

/// Writes result maps collectively: every rank passes the `FrameResults` block it
/// computed (contiguous frames; blocks together covering the scan once), the same layout
/// and the same provenance. **Collective**: every rank calls it, even with an empty block.
/// Ranks with non-empty blocks must carry the same optional maps.
public enum ResultMapsWriter {
    public static func write(path: String, results: FrameResults, layout: ScanLayout, provenance: Provenance,
                             force: Bool = false, comm: Communicator? = nil) throws {
        // 1. Local checks, then one allreduce so that every rank throws together.
        let n = results.frameRange.count
        var problem: String?
        if results.frameRange.lowerBound < 0 || results.frameRange.upperBound > layout.frameCount {
            problem = "frames \(results.frameRange) outside the scan's \(layout.frameCount)"
        } else if layout.y.count != layout.rows || layout.x.count != layout.cols {
            problem = "layout axes y (\(layout.y.count)) and x (\(layout.x.count)) do not match \(layout.rows)×\(layout.cols)"
        }
        for (name, values) in [("strain", results.strain), ("tilt_lr", results.tiltLRDeg), ("tilt_ud", results.tiltUDDeg)]
            where values.count != n { problem = problem ?? "map '\(name)' has \(values.count) values for \(n) frames" }
        if results.valid.count != n { problem = problem ?? "map 'valid' has \(results.valid.count) values for \(n) frames" }
        for key in results.sigmas.keys where !optionalMaps.contains(where: { $0.name == key && key.hasSuffix("_sigma") }) {
            problem = problem ?? "unknown sigma map '\(key)' (known: strain_sigma, tilt_lr_sigma, tilt_ud_sigma, thickness_sigma)"
        }
        for (name, _) in optionalMaps {
            if let v = optionalMap(results, name), v.count != n {
                problem = problem ?? "map '\(name)' has \(v.count) values for \(n) frames"
            }
        }
        // [problems, non-empty blocks, frames, presence of each optional map (non-empty blocks)]
        var tally = [problem == nil ? 0 : 1, n > 0 ? 1 : 0, Double(n)]
        tally += optionalMaps.map { n > 0 && optionalMap(results, $0.name) != nil ? 1 : 0 }
        comm?.allreduceSum(&tally)
        if let problem { throw DonutIOError(file: path, problem) }
        guard tally[0] == 0 else { throw DonutIOError(file: path, "another rank passed invalid results (see its message)") }
        guard Int(tally[2]) == layout.frameCount else {
            throw DonutIOError(file: path, "the ranks' blocks cover \(Int(tally[2])) frames, the scan has \(layout.frameCount)")
        }
        var present: [(name: String, units: String)] = []
        for (i, m) in optionalMaps.enumerated() where tally[3 + i] > 0 {
            guard tally[3 + i] == tally[1] else {
                throw DonutIOError(file: path, "map '\(m.name)' is present on some ranks and missing on others")
            }
            present.append(m)
        }

        // 2. The file, every create on every rank, then one collective write per map.
        // Maps (≤ 8 bytes per frame each) + provenance text; metadata ~64 KiB.
        let expected = layout.frameCount * 8 * (6 + present.count) + provenance.configJSON.utf8.count + (64 << 10)
        let output = try AtomicOutput(path: path, force: force, comm: comm, expectedBytes: expected)
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "result", entryDefault: "result")
            try f.createGroup(resultGroup, nxClass: "NXdata")
            let shape = [layout.rows, layout.cols]
            let selection = FlatSelection(leadingRank: 2, range: results.frameRange)
            func map<T: H5Numeric>(_ name: String, _ values: [T], units: String) throws {
                let p = "\(resultGroup)/\(name)"
                let d = try f.createDataset(p, type: T.h5ElementType, shape: shape)
                try values.withUnsafeBufferPointer { try d.write($0, selection: selection) }
                try d.close()
                try f.setAttribute("interpretation", "image", on: p)
                try f.setAttribute("units", units, on: p)
            }
            try map("strain", results.strain, units: "")
            try map("tilt_lr", results.tiltLRDeg, units: "deg")
            try map("tilt_ud", results.tiltUDDeg, units: "deg")
            try map("valid", results.valid, units: "")
            for m in present { try map(m.name, optionalMap(results, m.name) ?? [], units: m.units) }
            try f.writeDataset("\(resultGroup)/y", layout.y, shape: [layout.rows], units: layout.axisUnits)
            try f.writeDataset("\(resultGroup)/x", layout.x, shape: [layout.cols], units: layout.axisUnits)
            let names = present.map(\.name)
            let auxiliary = ["tilt_lr", "tilt_ud"] + names.filter { !$0.hasSuffix("_sigma") } + ["valid"]
                + names.filter { $0.hasSuffix("_sigma") }
            try f.setAttribute("signal", "strain", on: resultGroup)
            try f.setAttribute("auxiliary_signals", auxiliary, on: resultGroup)
            try f.setAttribute("axes", ["y", "x"], on: resultGroup)
            try f.setAttribute("y_indices", 0, on: resultGroup)
            try f.setAttribute("x_indices", 1, on: resultGroup)
            try f.writeProcess(provenance)
        }
    }
}

/// A result file read back whole.
public struct ResultMaps: Sendable {
    public var layout: ScanLayout
    /// All frames (frameRange = 0 ..< rows·cols).
    public var results: FrameResults
    public var provenance: Provenance?
    public var signal: String
    public var auxiliarySignals: [String]
}

/// Reads result maps (serial; for tests and commands that compare or plot results).
public enum ResultMapsReader {
    public static func read(path: String) throws -> ResultMaps {
        let f = try H5File.open(path)
        defer { try? f.close() }
        guard f.exists(resultGroup) else { throw DonutIOError.group(path, resultGroup, "not found (not a Donut result file?)") }
        func values(_ name: String) throws -> [Double] { try f.readDataset("\(resultGroup)/\(name)", as: Double.self) }
        let strain = try f.openDataset("\(resultGroup)/strain")
        guard strain.shape.count == 2 else {
            throw DonutIOError.dataset(path, "\(resultGroup)/strain", "expected a 2-D (rows, cols) map, got shape \(strain.shape)")
        }
        let rows = strain.shape[0], cols = strain.shape[1]
        try strain.close()
        let units = f.attributeExists("units", on: "\(resultGroup)/y") ? try f.readStringAttribute("units", on: "\(resultGroup)/y") : ""
        let layout = ScanLayout(rows: rows, cols: cols, y: try values("y"), x: try values("x"), axisUnits: units)
        var r = FrameResults(frameRange: 0 ..< rows * cols)
        r.strain = try values("strain")
        r.tiltLRDeg = try values("tilt_lr")
        r.tiltUDDeg = try values("tilt_ud")
        r.valid = try f.readDataset("\(resultGroup)/valid", as: UInt8.self)
        for (name, _) in optionalMaps where f.exists("\(resultGroup)/\(name)") {
            let v = try values(name)
            switch name {
            case "thickness": r.thicknessA = v
            case "residual": r.residual = v
            default: r.sigmas[name] = v
            }
        }
        for (name, v) in [("strain", r.strain), ("tilt_lr", r.tiltLRDeg), ("tilt_ud", r.tiltUDDeg)] where v.count != rows * cols {
            throw DonutIOError.dataset(path, "\(resultGroup)/\(name)", "has \(v.count) values, strain is \(rows)×\(cols)")
        }
        return ResultMaps(layout: layout, results: r, provenance: try f.readProcess(),
                          signal: try f.readStringAttribute("signal", on: resultGroup),
                          auxiliarySignals: try f.readStringArrayAttribute("auxiliary_signals", on: resultGroup))
    }
}
