import DonutCore
import DonutMPI
import DonutPhysics
import Foundation

// Library files: simulated patterns over the parameter grid.
//   /                      @default="entry" @donut_file="library" @donut_format_version
//   /entry                 NXentry @default="library"
//   /entry/library         NXdata @signal="patterns"
//                          @sample_thickness_A (only without a thickness axis)
//     patterns             (nε, nω, nχ[, nt], H, W) float32 @units="arbitrary"
//     strain ""  tilt_lr "deg"  tilt_ud "deg"  [thickness "angstrom"]   1-D float64
//   /entry/process         NXprocess + config NXnote (see NeXusProcess.swift)

private let libraryGroup = "/entry/library"
/// Where a library holds its patterns.
public let libraryPatternsDataset = "/entry/library/patterns"

/// Writes a library in parallel, each rank its slab of entries. `init`, `writeSlab` and
/// `finish` are **collective**: every rank calls each, the same number of times (a rank
/// with no entries passes an empty range). With `comm == nil` it is serial.
public final class LibraryWriter {
    public let grid: LibraryGrid
    public let frameSize: Int
    private let output: AtomicOutput
    private var file: H5File?
    private var patterns: H5Dataset?

    public init(path: String, grid: LibraryGrid, frameSize: Int, provenance: Provenance,
                force: Bool = false, comm: Communicator? = nil, inputs: [(role: String, path: String)] = []) throws {
        self.grid = grid; self.frameSize = frameSize
        output = try AtomicOutput(path: path, force: force, comm: comm,
                                  expectedBytes: grid.count * frameSize * frameSize * 4 + (64 << 10), inputs: inputs)
        do {
            let f = try H5File.create(output.temporaryPath, comm: comm)
            file = f
            try f.writeRootAndEntry(kind: "library", entryDefault: "library")
            try f.createGroup(libraryGroup, nxClass: "NXdata")
            try f.setAttribute("signal", "patterns", on: libraryGroup)
            let axes = grid.hasThicknessAxis ? ["strain", "tilt_lr", "tilt_ud", "thickness"] : ["strain", "tilt_lr", "tilt_ud"]
            try f.setAttribute("axes", axes + [".", "."], on: libraryGroup)
            patterns = try f.createDataset(libraryPatternsDataset, type: .float32, shape: grid.shape + [frameSize, frameSize])
            try f.setAttribute("units", "arbitrary", on: libraryPatternsDataset)
            try f.writeDataset("\(libraryGroup)/strain", grid.strain, shape: [grid.strain.count], units: "")
            try f.writeDataset("\(libraryGroup)/tilt_lr", grid.tiltLRDeg, shape: [grid.tiltLRDeg.count], units: "deg")
            try f.writeDataset("\(libraryGroup)/tilt_ud", grid.tiltUDDeg, shape: [grid.tiltUDDeg.count], units: "deg")
            if grid.hasThicknessAxis {
                try f.writeDataset("\(libraryGroup)/thickness", grid.thicknessA, shape: [grid.thicknessA.count], units: "angstrom")
            } else {
                try f.setAttribute("sample_thickness_A", grid.thicknessA[0], on: libraryGroup)
            }
            try f.writeProcess(provenance)
        } catch {
            abandon()
            throw rename(error)
        }
    }

    /// Writes entries `entries` (flat, C order over `grid.shape`): entries.count × H × W floats.
    /// Collective.
    public func writeSlab(entries: Range<Int>, patterns values: UnsafeBufferPointer<Float>) throws {
        guard let patterns else { throw DonutIOError(file: output.finalPath, "library writer is closed") }
        guard entries.lowerBound >= 0, entries.upperBound <= grid.count else {
            throw DonutIOError.dataset(output.finalPath, libraryPatternsDataset, "entries \(entries) outside the library's \(grid.count)")
        }
        do {
            try patterns.write(values, selection: FlatSelection(leadingRank: grid.shape.count, range: entries))
        } catch { throw rename(error) }
    }

    /// Closes the file and publishes it under its final name. Collective.
    public func finish() throws {
        do {
            try patterns?.close(); patterns = nil
            try file?.close(); file = nil
            try output.commit()
        } catch {
            abandon()
            throw rename(error)
        }
    }

    /// Gives up: closes what is open and removes the temporary file.
    public func abandon() {
        output.releaseSpace()
        try? patterns?.close(); patterns = nil
        try? file?.close(); file = nil
        output.discard()
    }

    private func rename(_ error: Error) -> Error {
        guard var e = error as? DonutIOError, e.file == output.temporaryPath else { return error }
        e.file = output.finalPath
        return e
    }
}

/// Reads a library: the grid, the frame size, the config, and slabs of patterns.
/// `init` and `close` are collective with a communicator; `readSlab` is independent.
public final class LibraryReader {
    public let path: String
    public let grid: LibraryGrid
    public let frameSize: Int
    public let configJSON: String?
    public let provenance: Provenance?
    private var file: H5File?
    private var patterns: H5Dataset?

    public init(path: String, comm: Communicator? = nil) throws {
        self.path = path
        let f = try H5File.open(path, comm: comm)
        let d = try f.openDataset(libraryPatternsDataset)
        let s = d.shape
        guard s.count == 5 || s.count == 6, s[s.count - 1] == s[s.count - 2], s[s.count - 1] > 0 else {
            throw DonutIOError.dataset(path, libraryPatternsDataset, "expected (nε, nω, nχ[, nt], H, W) with square frames, got \(s.count)-D \(s)")
        }
        guard d.isNumeric else { throw DonutIOError.dataset(path, libraryPatternsDataset, "expected numbers, got \(d.typeDescription)") }
        func axis(_ name: String, _ dim: Int) throws -> [Double] {
            let p = "\(libraryGroup)/\(name)"
            let values = try f.readDataset(p, as: Double.self)
            guard values.count == s[dim] else {
                throw DonutIOError.dataset(path, p, "has \(values.count) values but \(libraryPatternsDataset) has \(s[dim]) along axis \(dim) \(s)")
            }
            return values
        }
        let hasT = s.count == 6
        let strain = try axis("strain", 0), tiltLR = try axis("tilt_lr", 1), tiltUD = try axis("tilt_ud", 2)
        let thickness: [Double]
        if hasT {
            thickness = try axis("thickness", 3)
        } else if f.attributeExists("sample_thickness_A", on: libraryGroup) {
            thickness = [try f.readDoubleAttribute("sample_thickness_A", on: libraryGroup)]
        } else {
            throw DonutIOError.attribute(path, libraryGroup, "sample_thickness_A", "not found (needed without a thickness axis)")
        }
        grid = LibraryGrid(strain: strain, tiltLRDeg: tiltLR, tiltUDDeg: tiltUD, thicknessA: thickness, hasThicknessAxis: hasT)
        frameSize = s[s.count - 1]
        provenance = try f.readProcess()
        configJSON = provenance.map(\.configJSON).flatMap { $0.isEmpty ? nil : $0 }
        file = f; patterns = d
        if let configJSON { try checkAgainstStoredConfig(configJSON) }
    }

    /// The patterns and axes are the ones the stored config describes: frame size, steps,
    /// ranges (a library edited or assembled by hand would be fitted under a wrong config).
    /// A stored config that cannot be read is left to the callers that need it (they name it).
    private func checkAgainstStoredConfig(_ json: String) throws {
        guard let config = try? ConfigFile.fromJSON(json, source: "\(path):/entry/process/config/data") else { return }
        guard config.model.frameSize == frameSize else {
            throw DonutIOError.dataset(path, libraryPatternsDataset, "holds \(frameSize)×\(frameSize) patterns but the stored config says model.frame_size \(config.model.frameSize)")
        }
        let expected = LibraryGrid(config: config)
        guard expected.shape == grid.shape else {
            throw DonutIOError.dataset(path, libraryPatternsDataset, "has the grid \(grid.shape) but the stored config's library steps give \(expected.shape)")
        }
        for (name, a, b) in [("strain", grid.strain, expected.strain), ("tilt_lr", grid.tiltLRDeg, expected.tiltLRDeg),
                             ("tilt_ud", grid.tiltUDDeg, expected.tiltUDDeg), ("thickness", grid.thicknessA, expected.thicknessA)]
        where name != "thickness" || grid.hasThicknessAxis {
            for (x, y) in zip(a, b) where !(abs(x - y) <= 1e-9 * max(1, abs(y))) {
                throw DonutIOError.dataset(path, "\(libraryGroup)/\(name)", "holds \(a) but the stored config's ranges give \(b)")
            }
        }
    }

    /// Throws naming the first entry of `values` (entries `entries`) that is not finite,
    /// negative or all zero: such an entry is no diffraction pattern (a damaged file, or a
    /// config whose annulus misses the frame) and would make every frame look bad.
    public func checkEntries(_ entries: Range<Int>, _ values: [Float]) throws {
        let np = frameSize * frameSize
        for (k, e) in entries.enumerated() {
            var sum: Float = 0, bad: Float? = nil
            for v in values[(k * np)..<((k + 1) * np)] {
                if !v.isFinite || v < 0 { bad = v; break }
                sum += v
            }
            let what = bad.map { "holds \($0)" } ?? (sum > 0 ? nil : "is all zero")
            guard let what else { continue }
            let p = grid.parameters(at: e)
            throw DonutIOError.dataset(path, libraryPatternsDataset, "library entry \(e) (strain \(p.strain), tilt_lr \(p.tiltLRDeg)°, tilt_ud \(p.tiltUDDeg)°, thickness \(p.thicknessA) Å) \(what): the library is damaged or its config puts the pattern outside the frame; simulate it again")
        }
    }

    /// Patterns of entries `entries` (flat, C order over `grid.shape`), frameSize² each,
    /// each checked (`checkEntries`) unless `checkEntries` is false (raw file round trips).
    public func readSlab(_ entries: Range<Int>, checkEntries check: Bool = true) throws -> [Float] {
        guard let patterns else { throw DonutIOError(file: path, "library reader is closed") }
        guard entries.lowerBound >= 0, entries.upperBound <= grid.count else {
            throw DonutIOError.dataset(path, libraryPatternsDataset, "entries \(entries) outside the library's \(grid.count)")
        }
        let values = try patterns.read(as: Float.self, selection: FlatSelection(leadingRank: grid.shape.count, range: entries))
        if check { try checkEntries(entries, values) }
        return values
    }

    /// Collective with a communicator. Also done on deinit.
    public func close() throws {
        try patterns?.close(); patterns = nil
        try file?.close(); file = nil
    }
}
