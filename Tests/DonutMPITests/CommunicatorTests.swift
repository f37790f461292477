import XCTest
import DonutMPI

/// Runs in one process: MPI starts as a singleton (size 1), so the collectives are checked
/// for their single-rank behaviour here; `mpirun -np 2` runs come through the CLI tests.
final class CommunicatorTests: XCTestCase {
    func testShardRangeTilesAndBalances() {
        for count in [0, 1, 2, 5, 10, 17, 64] {
            for parts in 1...9 {
                let ranges = (0..<parts).map { shardRange(count: count, parts: parts, index: $0) }
                var next = 0
                for (i, r) in ranges.enumerated() {
                    XCTAssertEqual(r.lowerBound, next, "count \(count) parts \(parts) part \(i): \(ranges)")
                    // The first count % parts parts are one longer.
                    XCTAssertEqual(r.count, count / parts + (i < count % parts ? 1 : 0),
                                   "count \(count) parts \(parts) part \(i): \(ranges)")
                    next = r.upperBound
                }
                XCTAssertEqual(next, count, "count \(count) parts \(parts): \(ranges)")
            }
        }
        XCTAssertEqual(shardRange(count: 10, parts: 3, index: 0), 0..<4)
        XCTAssertEqual(shardRange(count: 10, parts: 3, index: 1), 4..<7)
        XCTAssertEqual(shardRange(count: 10, parts: 3, index: 2), 7..<10)
    }

    func testSingletonWorld() {
        let world = Communicator.world
        XCTAssertEqual(world.size, 1)
        XCTAssertEqual(world.rank, 0)
        XCTAssertTrue(world.isRoot)
        world.barrier()
        // Bit-exact: a one-rank sum is the value itself.
        var d: [Double] = [1.5, -2, .pi]
        world.allreduceSum(&d)
        XCTAssertEqual(d, [1.5, -2, .pi])
        var f: [Float] = [0.25, 3]
        world.allreduceSum(&f)
        XCTAssertEqual(f, [0.25, 3])
        var u: [UInt64] = [.max, 7]
        world.allreduceSum(&u)
        XCTAssertEqual(u, [.max, 7])
        XCTAssertEqual(world.allreduceMax(2.5), 2.5)
        XCTAssertEqual(world.allreduceMin(-1), -1)
        XCTAssertTrue(world.allEqual(0xDEAD_BEEF))
        var m: [UInt64] = [3, .max]
        world.allreduceMax(&m)
        XCTAssertEqual(m, [3, .max])
        var g: [Float] = [1, 2, 3, 4, 5]
        g.withUnsafeMutableBufferPointer { world.allreduceSum($0.baseAddress!, count: 5, bucketBytes: 8) }
        XCTAssertEqual(g, [1, 2, 3, 4, 5])
        XCTAssertTrue(world.allAgree(true))
        XCTAssertFalse(world.allAgree(false))
        XCTAssertEqual(world.broadcast("grüße"), "grüße")
        XCTAssertEqual(world.broadcast([UInt8]([1, 2, 3])), [1, 2, 3])
        XCTAssertEqual(world.broadcast([1.0, 2.0]), [1.0, 2.0])
        XCTAssertEqual(world.broadcast([Float(1), 2]), [1, 2])
        XCTAssertEqual(world.gather([1, 2, 3]), [[1, 2, 3]])
        XCTAssertEqual(world.gather([]), [[]])
        // One rank is always all ranks: the failure handshake completes at once.
        XCTAssertTrue(world.duplicate().barrier(within: 0))
    }

    func testSlurmCheck() {
        XCTAssertNil(slurmWorldSizeMismatch(worldSize: 4, environment: [:]))
        XCTAssertNil(slurmWorldSizeMismatch(worldSize: 4, environment: ["SLURM_NTASKS": "4"]))
        let message = slurmWorldSizeMismatch(worldSize: 1, environment: ["SLURM_NTASKS": "4"])
        XCTAssertNotNil(message)
        XCTAssertTrue(message?.contains("SLURM_NTASKS is 4") ?? false, message ?? "nil")
        XCTAssertNotNil(slurmWorldSizeMismatch(worldSize: 1, environment: ["SLURM_NTASKS": "x"]))
    }
}
