import XCTest
import DonutNN
import DonutCore
import DonutIO

final class CheckpointFileTests: XCTestCase {
    func sample(step: Int) -> ModelCheckpoint {
        var rng = SplitMix64(seed: UInt64(step))
        let p = (0..<37).map { _ in Float(rng.uniform() - 0.5) }
        return ModelCheckpoint(
            method: "donut",
            tensors: [TensorRecord(name: "enc.conv0.weight", shape: [2, 1, 3, 3], group: "encoder", offset: 0),
                      TensorRecord(name: "head.weight", shape: [3, 6], group: "physics", offset: 18),
                      TensorRecord(name: "head.bias", shape: [1], group: "physics", offset: 36)],
            parameters: p, firstMoments: p.map { $0 * 0.1 }, secondMoments: p.map { $0 * $0 },
            buffers: [TensorRecord(name: "enc.bn0.running_mean", shape: [2], group: "buffer", offset: 0)],
            bufferValues: [0.25, -1], step: step, epoch: 3, stepInEpoch: 7, rngState: [rng.state, 42],
            configJSON: "{\"a\": 1}", trainingJSON: "{\"b\": 2}",
            lossLog: [LossRecord(step: 10, epoch: 0, train: 0.5, validation: .nan, decoderMAE: 0.1, physicsMAE: 0.08)])
    }

    func provenance() -> Provenance {
        Provenance(version: "t", date: "t", method: "train", commandLine: "donut train", configJSON: "", inputs: [], modelID: "")
    }

    /// Every field comes back; floats bit for bit (a checkpoint must resume exactly).
    func testRoundTrip() throws {
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("ck.h5").path
        let c = sample(step: 120)
        try CheckpointFile.write(c, path: path, provenance: provenance(), force: false)
        let back = try CheckpointFile.read(path: path)
        assertBitsEqual(back.parameters, c.parameters, "parameters")
        assertBitsEqual(back.secondMoments, c.secondMoments, "adam_v")
        XCTAssertEqual(back.tensors, c.tensors)
        XCTAssertEqual(back.buffers, c.buffers)
        XCTAssertEqual(back.rngState, c.rngState)
        XCTAssertEqual([back.step, back.epoch, back.stepInEpoch], [120, 3, 7])
        XCTAssertEqual(back.configJSON, c.configJSON)
        XCTAssertEqual(back.trainingJSON, c.trainingJSON)
        XCTAssertEqual(back.lossLog.count, 1)
        XCTAssertEqual(back.lossLog[0].physicsMAE, 0.08)
        XCTAssert(back.lossLog[0].validation.isNaN)
    }

    /// Overwriting needs force (a new checkpoint replaces the last one atomically); a
    /// writer that dies leaves only a hidden partial file and the previous checkpoint intact.
    func testReplaceIsAtomicAndNeedsForce() throws {
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("ck.h5").path
        try CheckpointFile.write(sample(step: 1), path: path, provenance: provenance(), force: false)
        assertThrows(try CheckpointFile.write(self.sample(step: 2), path: path, provenance: self.provenance(), force: false),
                     containing: ["ck.h5", "--force"])
        // A crash mid-write: the temporary file exists, the final one is the old checkpoint.
        try Data(repeating: 0x55, count: 1000).write(to: dir.appendingPathComponent(".ck.h5.partial-999"))
        XCTAssertEqual(try CheckpointFile.read(path: path).step, 1)
        try CheckpointFile.write(sample(step: 2), path: path, provenance: provenance(), force: true)
        XCTAssertEqual(try CheckpointFile.read(path: path).step, 2)
    }

    func testNotACheckpoint() throws {
        let dir = makeScratchFolder(self)
        let path = dir.appendingPathComponent("scan.h5").path
        try ScanWriter.write(path: path, frames: [Float](repeating: 1, count: 4 * 16), layout: ScanLayout(rows: 2, cols: 2),
                             frameSize: 4, provenance: provenance())
        assertThrows(try CheckpointFile.read(path: path), containing: ["scan.h5", "/entry/model"])
    }
}
