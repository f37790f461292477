import Foundation
import DonutCore

/// Checkpoints and model files (the same format): HDF5, written by one rank, atomically
/// (temporary name + rename), so a kill during the write leaves the previous file intact.
///
///     /entry/model            NXcollection, @method, @step, @epoch, @step_in_epoch
///         parameters          float32 (P)     every learnable tensor, flat
///         adam_m, adam_v      float32 (P)     AdamW first and second moments
///         buffers             float32 (B)     BatchNorm running mean/var, flat
///         layout              JSON: [{name, shape, group, offset}] for parameters and buffers
///         rng_state           uint64
///         loss_log            float64 (N, 6): step, epoch, train, validation, decoder MAE, physics MAE
///         training_config     JSON (TrainingConfig)
///         run                 JSON (TrainingRun): settings digest, input contents, finished
///                             (absent in files of older versions)
///     /entry/process          NXprocess with the instrument config (NXnote) — as every Donut file
public enum CheckpointFile {
    static let root = "/entry/model"
    /// The datasets that errors and provenance name (each named here once).
    public static let parametersDataset = "\(root)/parameters", layoutDataset = "\(root)/layout",
                      trainingConfigDataset = "\(root)/training_config"

    /// `run`: the run's record (`TrainingRun`), so a rerun can tell whether this file is its
    /// own finished model or resumable checkpoint.
    public static func write(_ c: ModelCheckpoint, path: String, provenance: Provenance, force: Bool,
                             run: TrainingRun? = nil) throws {
        // A model holding NaN/Inf is never written: a training that diverged stops with this
        // error and the previous checkpoint stays as it was.
        do { try checkValues(c, path: path) } catch var e as DonutIOError {
            e.message = "not written, the previous file (if any) is kept: " + e.message
            throw e
        }
        guard c.parameters.count == c.firstMoments.count, c.parameters.count == c.secondMoments.count else {
            throw DonutIOError(file: path, object: root, "parameters (\(c.parameters.count)) and AdamW moments (\(c.firstMoments.count), \(c.secondMoments.count)) differ in length")
        }
        let expected = 4 * (c.parameters.count * 3 + c.bufferValues.count) + 64 * c.lossLog.count
            + c.configJSON.utf8.count + c.trainingJSON.utf8.count + (64 << 10)
        let output = try AtomicOutput(path: path, force: force, expectedBytes: expected)
        try writeAtomically(output) { f in
            try f.writeRootAndEntry(kind: "model", entryDefault: "model")
            try f.createGroup(root, nxClass: "NXcollection")
            try f.setAttribute("method", c.method, on: root)
            try f.setAttribute("step", c.step, on: root)
            try f.setAttribute("epoch", c.epoch, on: root)
            try f.setAttribute("step_in_epoch", c.stepInEpoch, on: root)
            try f.writeDataset(parametersDataset, c.parameters, shape: [c.parameters.count], units: "")
            try f.writeDataset("\(root)/adam_m", c.firstMoments, shape: [c.firstMoments.count], units: "")
            try f.writeDataset("\(root)/adam_v", c.secondMoments, shape: [c.secondMoments.count], units: "")
            try f.writeDataset("\(root)/buffers", c.bufferValues, shape: [c.bufferValues.count], units: "")
            let layout = try JSONEncoder().encode(["parameters": c.tensors, "buffers": c.buffers])
            try f.writeString(layoutDataset, String(decoding: layout, as: UTF8.self))
            try f.writeDataset("\(root)/rng_state", c.rngState, shape: [c.rngState.count], units: "")
            let log = c.lossLog.flatMap { [Double($0.step), Double($0.epoch), $0.train, $0.validation, $0.decoderMAE, $0.physicsMAE] }
            try f.writeDataset("\(root)/loss_log", log, shape: [c.lossLog.count, 6], units: "")
            try f.writeString(trainingConfigDataset, c.trainingJSON)
            if let run {
                try f.writeString("\(root)/run", String(decoding: try JSONEncoder().encode(run), as: UTF8.self))
            }
            var p = provenance
            p.configJSON = c.configJSON
            try f.writeProcess(p)
        }
    }

    /// The run record of a model or checkpoint (`/entry/model/run`), nil when it has none.
    public static func readRun(path: String) throws -> TrainingRun? {
        let f = try H5File.open(path)
        defer { try? f.close() }
        guard f.exists("\(root)/run") else { return nil }
        let text = try f.readString("\(root)/run")
        do { return try JSONDecoder().decode(TrainingRun.self, from: Data(text.utf8)) } catch {
            throw DonutIOError.dataset(path, "\(root)/run", "unreadable run record: \(error)")
        }
    }

    public static func read(path: String) throws -> ModelCheckpoint {
        let f = try H5File.open(path)
        defer { try? f.close() }
        guard f.exists(root) else { throw DonutIOError.group(path, root, "not found: this is not a Donut model or checkpoint file") }
        func floats(_ name: String) throws -> [Float] { try f.readDataset("\(root)/\(name)", as: Float.self) }
        let layoutText = try f.readString(layoutDataset)
        let layout: [String: [TensorRecord]]
        do { layout = try JSONDecoder().decode([String: [TensorRecord]].self, from: Data(layoutText.utf8)) } catch {
            throw DonutIOError.dataset(path, layoutDataset, "unreadable tensor layout: \(error)")
        }
        let log = try f.readDataset("\(root)/loss_log", as: Double.self)
        guard log.count % 6 == 0 else { throw DonutIOError.dataset(path, "\(root)/loss_log", "expected (N, 6), got \(log.count) values") }
        let records = stride(from: 0, to: log.count, by: 6).map {
            LossRecord(step: Int(log[$0]), epoch: Int(log[$0 + 1]), train: log[$0 + 2], validation: log[$0 + 3],
                       decoderMAE: log[$0 + 4], physicsMAE: log[$0 + 5])
        }
        let c = ModelCheckpoint(
            method: try f.readStringAttribute("method", on: root),
            tensors: layout["parameters"] ?? [], parameters: try floats("parameters"),
            firstMoments: try floats("adam_m"), secondMoments: try floats("adam_v"),
            buffers: layout["buffers"] ?? [], bufferValues: try floats("buffers"),
            step: try f.readIntAttribute("step", on: root), epoch: try f.readIntAttribute("epoch", on: root),
            stepInEpoch: try f.readIntAttribute("step_in_epoch", on: root),
            rngState: try f.readDataset("\(root)/rng_state", as: UInt64.self),
            configJSON: try f.readProcess()?.configJSON ?? "",
            trainingJSON: try f.readString(trainingConfigDataset), lossLog: records)
        let expected = c.tensors.map(\.count).reduce(0, +)
        guard expected == c.parameters.count else {
            throw DonutIOError.dataset(path, parametersDataset, "holds \(c.parameters.count) values but the layout describes \(expected)")
        }
        guard c.buffers.map(\.count).reduce(0, +) == c.bufferValues.count else {
            throw DonutIOError.dataset(path, "\(root)/buffers", "holds \(c.bufferValues.count) values but the layout describes \(c.buffers.map(\.count).reduce(0, +))")
        }
        try checkValues(c, path: path)
        return c
    }

    /// Every weight, AdamW moment and BatchNorm statistic finite (variances and second
    /// moments ≥ 0): a model holding NaN would give NaN maps that look computed, and a
    /// resumed NaN checkpoint would train a NaN model. The error names the dataset, the
    /// tensor and the element.
    static func checkValues(_ c: ModelCheckpoint, path: String) throws {
        func check(_ values: [Float], _ dataset: String, _ records: [TensorRecord], nonNegative: (TensorRecord?) -> Bool) throws {
            for (i, v) in values.enumerated() where !v.isFinite || v < 0 {
                let record = records.first { i >= $0.offset && i < $0.offset + $0.count }
                let bad = !v.isFinite ? "\(v)" : (nonNegative(record) ? "negative (\(v))" : nil)
                guard let bad else { continue }
                let tensor = record.map { " (tensor '\($0.name)' element \(i - $0.offset))" } ?? ""
                throw DonutIOError.dataset(path, "\(root)/\(dataset)", "value \(i)\(tensor) is \(bad): the model is unusable (from a diverged training or a damaged file); use an earlier checkpoint")
            }
        }
        try check(c.parameters, "parameters", c.tensors) { _ in false }
        try check(c.bufferValues, "buffers", c.buffers) { $0?.name.hasSuffix("running_var") ?? false }
        try check(c.firstMoments, "adam_m", c.tensors) { _ in false }
        try check(c.secondMoments, "adam_v", c.tensors) { _ in true }
    }
}
