import DonutCore
import Foundation

// Pieces every Donut HDF5 file shares: the root attributes (NeXus `@default`, Donut's
// file kind and format version) and `/entry/process` (NXprocess) with the config NXnote
// and the inputs. All calls are collective for parallel files (same values on every rank).

/// Version of the layouts written by this module; bump on any incompatible change.
public let donutFileFormatVersion = 1

extension H5File {
    /// Root `@default="entry"`, `@donut_file=<kind>`, `@donut_format_version`, and `/entry`
    /// (NXentry) with `@default=<entryDefault>`.
    func writeRootAndEntry(kind: String, entryDefault: String) throws {
        try setAttribute("default", "entry", on: "/")
        try setAttribute("donut_file", kind, on: "/")
        try setAttribute("donut_format_version", donutFileFormatVersion, on: "/")
        try createGroup("/entry", nxClass: "NXentry")
        try setAttribute("default", entryDefault, on: "/entry")
    }

    /// `/entry/process` (NXprocess): program, version, date, method, command_line, model_id;
    /// `config` (NXnote: type "application/json", data); `inputs` (NXcollection of
    /// `input_<i>` NXnote groups holding path, dataset, checksum, and for a scan read by a
    /// model's training `@frames_source`, the frames actually read: `Provenance.Input`).
    func writeProcess(_ p: Provenance, at root: String = "/entry/process") throws {
        try createGroup(root, nxClass: "NXprocess")
        for (name, value) in [("program", p.program), ("version", p.version), ("date", p.date),
                              ("method", p.method), ("command_line", p.commandLine), ("model_id", p.modelID)] {
            try writeString("\(root)/\(name)", value)
        }
        try createGroup("\(root)/config", nxClass: "NXnote")
        try writeString("\(root)/config/type", "application/json")
        try writeString("\(root)/config/description", "full Donut configuration (snake_case keys, as in the YAML)")
        try writeString("\(root)/config/data", p.configJSON)
        try createGroup("\(root)/inputs", nxClass: "NXcollection")
        for (i, input) in p.inputs.enumerated() {
            let g = "\(root)/inputs/input_\(i)"
            try createGroup(g, nxClass: "NXnote")
            try writeString("\(g)/path", input.path)
            try writeString("\(g)/dataset", input.dataset)
            try writeString("\(g)/checksum", input.checksum)
            if !input.framesSource.isEmpty { try setAttribute("frames_source", input.framesSource, on: g) }
        }
    }

    /// The provenance recorded in `/entry/process`, or nil when the file has none.
    func readProcess(at root: String = "/entry/process") throws -> Provenance? {
        guard exists(root) else { return nil }
        func text(_ name: String) throws -> String {
            exists("\(root)/\(name)") ? try readString("\(root)/\(name)") : ""
        }
        var inputs: [Provenance.Input] = []
        var i = 0
        while exists("\(root)/inputs/input_\(i)") {
            let g = "\(root)/inputs/input_\(i)"
            inputs.append(.init(path: try readString("\(g)/path"), dataset: try readString("\(g)/dataset"),
                                checksum: try readString("\(g)/checksum"),
                                framesSource: attributeExists("frames_source", on: g) ? try readStringArrayAttribute("frames_source", on: g) : []))
            i += 1
        }
        var p = Provenance(version: try text("version"), date: try text("date"), method: try text("method"),
                           commandLine: try text("command_line"), configJSON: try text("config/data"),
                           inputs: inputs, modelID: try text("model_id"))
        let program = try text("program")
        if !program.isEmpty { p.program = program }
        return p
    }
}

/// Runs `body` on a fresh HDF5 file at `output.temporaryPath` and publishes it with
/// `output.commit()`; on any error closes what it can, removes the temporary file and
/// rethrows. Collective when `output.comm` is set.
func writeAtomically(_ output: AtomicOutput, _ body: (H5File) throws -> Void) throws {
    do {
        let file = try H5File.create(output.temporaryPath, comm: output.comm)
        do {
            try body(file)
            try file.close()
        } catch {
            output.releaseSpace()
            try? file.close()
            throw error
        }
        try output.commit()
    } catch var error as DonutIOError {
        output.discard()
        // Name the file the user asked for, not the temporary one.
        if error.file == output.temporaryPath { error.file = output.finalPath }
        throw error
    } catch {
        output.discard()
        throw error
    }
}

/// Where every Donut file (scan, library, result, model) records its config as JSON.
public let configDataset = "/entry/process/config/data"

/// Where a scan holds its frames unless told otherwise (NXdata default of NeXus files and
/// of `donut simulate scan`).
public let defaultFramesDataset = "/entry/data/data"
