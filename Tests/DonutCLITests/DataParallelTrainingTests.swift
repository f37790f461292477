import XCTest
import DonutPhysics
import DonutCore
import DonutIO

/// `mpirun -np 2 donut train …` against one rank with the doubled batch: the same global
/// batches, the same loss curve and weights; identical replicas; signals, resume and a dying
/// rank. 16×16 frames and a tiny network, as in TrainInferTests.
final class DataParallelTrainingTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = try scratchFolder(self)
        let config = try writeTinyConfig(in: dir)
        assertSucceeded(try donut(["simulate", "scan", "--config", config, "--phantom", "domains", "--rows", "5", "--cols", "8",
                                   "--peak", "40", "--out", "scan.h5"], in: dir), "scan")
        assertSucceeded(try donut(["simulate", "library", "--config", config, "--out", "lib.h5"], in: dir), "library")
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// A training preset with per-rank batch `batch`.
    func preset(_ name: String, batch: Int, epochs: Int, validation: Double = 0.1, checkpointEvery: Int = 1000,
                dropout: Double = 0.2) throws -> String {
        try writeTinyTrainingPreset(in: dir, name: name, batch: batch, epochs: epochs, validation: validation,
                                    checkpointEvery: checkpointEvery, seed: 7, dropout: dropout)
    }

    /// max |a − b| over max |a|, per tensor (the worst tensor).
    func relativeDifference(_ a: ModelCheckpoint, _ b: ModelCheckpoint) -> Double {
        var worst = 0.0
        for (i, t) in a.tensors.enumerated() {
            let end = i + 1 < a.tensors.count ? a.tensors[i + 1].offset : a.parameters.count
            var diff = 0.0, scale = 0.0
            for k in t.offset..<end {
                diff = max(diff, abs(Double(a.parameters[k]) - Double(b.parameters[k])))
                scale = max(scale, abs(Double(a.parameters[k])))
            }
            worst = max(worst, diff / max(scale, 1e-30))
        }
        return worst
    }

    /// np 2 × batch b ≡ np 1 × batch 2b after ≥ 100 steps (DONUT with measured and simulated
    /// frames, with dropout and without — the fused `BatchNormReLUPool` encoder path — and
    /// supervised NanobeamNN), with synchronised BatchNorm, the replica check on and the
    /// gradient allreduce in several buckets.
    func testTwoRanksMatchOneRankWithTheDoubledBatch() throws {
        // 36 training frames, 2 measured per global batch: 18 steps per epoch. 27 library
        // entries for supervised training, 4 per global batch: 6 steps per epoch.
        let donutArgs = ["--scan", "scan.h5", "--library", "lib.h5", "--mix", "0.5"]
        for (name, args, epochs, validation, dropout) in [("donut", donutArgs, 6, 0.1, 0.2),
                                                          ("donut-fused", donutArgs, 6, 0.1, 0.0),
                                                          ("supervised", ["--supervised", "--library", "lib.h5"], 17, 0.25, 0.2)] {
            let one = try preset("\(name)-one.yaml", batch: 4, epochs: epochs, validation: validation, dropout: dropout)
            let two = try preset("\(name)-two.yaml", batch: 2, epochs: epochs, validation: validation, dropout: dropout)
            assertSucceeded(try donut(["train"] + args + ["--training", one, "--out", "\(name)-one.h5"], in: dir), "\(name) np 1")
            // Buckets of 4 KB: the ~9 KB gradient buffer goes in three allreduces.
            let r = try donut(["train"] + args + ["--training", two, "--out", "\(name)-two.h5", "--sync-batchnorm", "--check-replicas",
                                                  "--bucket-bytes", "4096"], ranks: 2, in: dir)
            assertSucceeded(r, "\(name) np 2")
            let a = try CheckpointFile.read(path: path("\(name)-one.h5")), b = try CheckpointFile.read(path: path("\(name)-two.h5"))
            XCTAssertGreaterThanOrEqual(a.step, 100, "\(name): at least 100 steps")
            XCTAssertEqual(a.step, b.step, "\(name): same number of global steps")
            XCTAssertEqual(a.lossLog.map(\.step), b.lossLog.map(\.step))
            for (x, y) in zip(a.lossLog, b.lossLog) {
                XCTAssertEqual(x.train, y.train, accuracy: 1e-5 * abs(x.train), "\(name): training loss at step \(x.step)")
                if !x.validation.isNaN {
                    XCTAssertEqual(x.validation, y.validation, accuracy: 1e-5 * abs(x.validation), "\(name): validation loss at step \(x.step)")
                }
            }
            XCTAssert(a.lossLog.contains { !$0.validation.isNaN }, "\(name): validation evaluated")
            let rel = relativeDifference(a, b)
            XCTAssertLessThanOrEqual(rel, 1e-5, "\(name): final weights np 1 vs np 2 (worst tensor, relative)")
            print("\(name): \(a.step) steps, final weights differ by \(rel) relative (worst tensor)")
            for (k, (x, y)) in zip(a.bufferValues, b.bufferValues).enumerated() {
                XCTAssertEqual(Double(x), Double(y), accuracy: 1e-5 * max(abs(Double(x)), 1e-3), "\(name): BatchNorm statistic \(k)")
            }
        }
    }

    /// SIGUSR1 to mpirun (Slurm's warning before a time limit or requeue; mpirun forwards it):
    /// every rank finishes the step, rank 0 writes the checkpoint, exit code 75; `--resume` on
    /// two ranks ends with exactly the weights of the uninterrupted two-rank run. Per-rank
    /// BatchNorm (the default) with the replica check.
    func testSignalCheckpointAndResumeUnderMPI() throws {
        let t = try preset("long.yaml", batch: 2, epochs: 20, checkpointEvery: 5)
        let args = ["train", "--scan", "scan.h5", "--training", t, "--check-replicas"]
        assertSucceeded(try donut(args + ["--out", "full.h5"], ranks: 2, in: dir), "uninterrupted np 2")
        let process = donutProcess(args + ["--out", "part.h5", "--checkpoint", "ck.h5"], ranks: 2, in: dir)
        let err = Pipe()
        process.standardError = err; process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: path("ck.h5")) && process.isRunning && Date() < deadline { usleep(2_000) }
        XCTAssert(process.isRunning, "training ended before the first checkpoint; make it longer")
        kill(process.processIdentifier, SIGUSR1)
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 75, "documented exit code after a signal:\n\(text)")
        XCTAssert(text.contains("stopped by signal"), text)
        let stopped = try CheckpointFile.read(path: path("ck.h5"))
        XCTAssertLessThan(stopped.step, 20 * 9, "stopped early (step \(stopped.step))")
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("part.h5")), "no final model after a signal")
        assertSucceeded(try donut(args + ["--out", "part.h5", "--checkpoint", "ck.h5", "--resume", "ck.h5"], ranks: 2, in: dir), "resume np 2")
        let full = try CheckpointFile.read(path: path("full.h5")), resumed = try CheckpointFile.read(path: path("part.h5"))
        XCTAssertEqual(resumed.step, full.step)
        XCTAssert(zip(resumed.parameters, full.parameters).allSatisfy { $0.bitPattern == $1.bitPattern },
                  "resumed weights equal the uninterrupted run's")
        XCTAssertEqual(resumed.bufferValues, full.bufferValues)
    }

    /// A rank that dies mid-training ends the whole job with a message, well before the timeout.
    func testADyingRankAbortsTheJob() throws {
        let t = try preset("long.yaml", batch: 2, epochs: 60)
        let start = Date()
        let r = try donut(["train", "--scan", "scan.h5", "--training", t, "--out", "m.h5", "--fail-rank", "1:3"], ranks: 2, in: dir, timeout: 90)
        XCTAssertLessThan(Date().timeIntervalSince(start), 60, "the job ended by itself, not by the test's timeout")
        assertFailed(r, naming: ["rank 1 exits abruptly during step 3 (--fail-rank"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("m.h5")))
    }

    /// Under Slurm, a world that does not match SLURM_NTASKS (srun without PMI: N singletons)
    /// is refused before any work.
    func testSlurmTaskCountMismatchIsRefused() throws {
        let t = try preset("t.yaml", batch: 2, epochs: 1)
        assertFailed(try donut(["train", "--scan", "scan.h5", "--training", t, "--out", "m.h5"], in: dir, environment: ["SLURM_NTASKS": "2"]),
                     naming: ["MPI world size is 1", "SLURM_NTASKS is 2"])
    }

    /// `donut infer` on 1 and 2 ranks, with MC-dropout sigmas and a batch (3) that does not
    /// divide the ranks' shards, so the two runs batch the frames differently: every map,
    /// the sigmas included, agrees to 1e-6 (one collective NeXus file per run).
    func testInferMapsIncludingSigmasDoNotDependOnTheRankCount() throws {
        let t = try preset("t.yaml", batch: 4, epochs: 2)
        assertSucceeded(try donut(["train", "--scan", "scan.h5", "--training", t, "--out", "model.h5"], in: dir), "train")
        let common = ["infer", "--model", "model.h5", "--scan", "scan.h5", "--mc-samples", "5", "--batch", "3"]
        assertSucceeded(try donut(common + ["--out", "one.h5"], in: dir), "infer np 1")
        assertSucceeded(try donut(common + ["--out", "two.h5"], ranks: 2, in: dir), "infer np 2")
        let one = try ResultMapsReader.read(path: path("one.h5")).results, two = try ResultMapsReader.read(path: path("two.h5")).results
        XCTAssertEqual(one.valid, two.valid)
        var maps: [(String, [Double], [Double])] = [("strain", one.strain, two.strain), ("tilt_lr", one.tiltLRDeg, two.tiltLRDeg),
                                                    ("tilt_ud", one.tiltUDDeg, two.tiltUDDeg), ("residual", one.residual!, two.residual!)]
        for name in ["strain_sigma", "tilt_lr_sigma", "tilt_ud_sigma"] { maps.append((name, one.sigmas[name]!, two.sigmas[name]!)) }
        for (name, a, b) in maps {
            XCTAssertEqual(a.count, 40, name)
            let scale = a.map { abs($0) }.max()!
            XCTAssertGreaterThan(scale, 0, name)
            for i in a.indices { XCTAssertEqual(a[i], b[i], accuracy: 1e-6 * scale, "\(name) at frame \(i): np 1 vs np 2") }
        }
    }
}
