import XCTest
import DonutCore
@testable import DonutIO

final class SweepDefinitionTests: XCTestCase {
    func write(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "sweep-\(UUID().uuidString).yaml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    /// The grid is the Cartesian product, last key fastest; each point's preset is the base
    /// with exactly the point's keys changed.
    func testPointsEnumerateTheProductInOrder() throws {
        let path = try write("""
        base: builtin
        grid:
          loss.physics: [1.0, 5.0, 10.0]
          network.encoder_channels: [[8, 16], [16, 32, 64]]
        """)
        let sweep = try SweepDefinition.load(path: path)
        XCTAssertNil(sweep.basePath)
        XCTAssertEqual(sweep.pointCount, 6)
        let base = TrainingConfig.donutPaper
        var seen: [(Double, [Int])] = []
        for i in 0..<6 {
            let p: TrainingConfig = try sweep.point(i, base: base)
            seen.append((p.loss.physics, p.network.encoderChannels))
            var expected = base
            expected.loss.physics = p.loss.physics; expected.network.encoderChannels = p.network.encoderChannels
            XCTAssertEqual(p, expected, "point \(i) changes only the swept keys")
        }
        XCTAssertEqual(seen.map(\.0), [1, 1, 5, 5, 10, 10])
        XCTAssertEqual(seen.map(\.1), [[8, 16], [16, 32, 64], [8, 16], [16, 32, 64], [8, 16], [16, 32, 64]])
    }

    /// The shipped example: its base resolves next to it and every point loads.
    func testShippedExamplePlans() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("configs/sweep-example.yaml").path
        for name in ["sweep-example.yaml", "sweep-random-example.yaml"] {
            let sweep = try SweepDefinition.load(path: URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(name).path)
            let base = try ConfigFile.load(TrainingConfig.self, path: try XCTUnwrap(sweep.basePath))
            XCTAssertEqual(base, .donutPaper)
            for i in 0..<sweep.pointCount { let _: TrainingConfig = try sweep.point(i, base: base) }
        }
    }

    func testBadKeysAndValuesNameTheFileAndKey() throws {
        func error(_ text: String) throws -> String {
            let path = try write(text)
            do {
                let sweep = try SweepDefinition.load(path: path)
                for i in 0..<sweep.pointCount { let _: TrainingConfig = try sweep.point(i, base: .donutPaper) }
                return "no error"
            } catch { return "\(error)" }
        }
        let misspelt = try error("base: builtin\ngrid:\n  loss.physcs: [1]\n")
        XCTAssert(misspelt.contains("grid.loss.physcs") && misspelt.contains("physics_loss"), misspelt)
        let wrongType = try error("base: builtin\ngrid:\n  schedule.batch_size: [16, \"x\"]\n")
        XCTAssert(wrongType.contains("point 1") && wrongType.contains("schedule.batch_size"), wrongType)
        let invalid = try error("base: builtin\ngrid:\n  loss.physics_loss: [mae, huber]\n")
        XCTAssert(invalid.contains("loss.physics_loss") && invalid.contains("huber"), invalid)
        let empty = try error("base: builtin\ngrid:\n  loss.physics: []\n")
        XCTAssert(empty.contains("non-empty list"), empty)
        let unknownTop = try error("base: builtin\ngrids: {}\n")
        XCTAssert(unknownTop.contains("grids"), unknownTop)
    }

    /// Random search: n points, each key inside its range (log-uniform: uniform in log, so
    /// about as many points per decade), integers and choices; point i depends on (seed, i)
    /// alone, so a longer search keeps the first points; points_per_task splits the tasks.
    func testRandomSearchDrawsInsideTheRangesReproducibly() throws {
        func definition(n: Int, seed: Int) throws -> SweepDefinition {
            try SweepDefinition.load(path: try write("""
            base: builtin
            random: {n: \(n), seed: \(seed)}
            points_per_task: 3
            ranges:
              loss.physics: {min: 0.01, max: 100, log: true}
              network.dropout: {min: 0.1, max: 0.3}
              schedule.batch_size: {min: 4, max: 6, integer: true}
              loss.physics_loss: {values: [mae, poisson]}
            """))
        }
        let sweep = try definition(n: 400, seed: 1)
        XCTAssertEqual(sweep.pointCount, 400)
        XCTAssertEqual(sweep.keys, ["loss.physics", "network.dropout", "schedule.batch_size", "loss.physics_loss"])
        XCTAssertEqual(sweep.taskCount, 134)
        XCTAssertEqual(sweep.points(ofTask: 0), 0..<3)
        XCTAssertEqual(sweep.points(ofTask: 133), 399..<400)
        var decades = [Int](repeating: 0, count: 4), batches: Set<Int> = [], losses: Set<String> = []
        for i in 0..<400 {
            let p: TrainingConfig = try sweep.point(i, base: .donutPaper)
            XCTAssert((0.01...100).contains(p.loss.physics), "\(p.loss.physics)")
            XCTAssert((0.1...0.3).contains(p.network.dropout), "\(p.network.dropout)")
            decades[min(3, Int(floor(log10(p.loss.physics) + 2)))] += 1
            batches.insert(p.schedule.batchSize); losses.insert(p.loss.physicsLoss)
        }
        XCTAssertEqual(batches, [4, 5, 6], "every integer of the range, ends included")
        XCTAssertEqual(losses, ["mae", "poisson"])
        for d in decades { XCTAssert((60...140).contains(d), "log-uniform: ~100 points per decade, got \(decades)") }
        let shorter = try definition(n: 5, seed: 1), other = try definition(n: 5, seed: 2)
        for i in 0..<5 {
            XCTAssertEqual(shorter.assignment(i).map(\.value), sweep.assignment(i).map(\.value), "point \(i) does not depend on n")
        }
        XCTAssertNotEqual(other.assignment(0).map(\.value), sweep.assignment(0).map(\.value), "another seed, other points")
    }

    func testRandomSearchErrorsNameTheKey() throws {
        func error(_ text: String) throws -> String {
            do { _ = try SweepDefinition.load(path: try write(text)); return "no error" } catch { return "\(error)" }
        }
        let both = try error("base: builtin\ngrid: {loss.physics: [1]}\nrandom: {n: 2, seed: 1}\nranges: {loss.physics: {min: 1, max: 2}}\n")
        XCTAssert(both.contains("either grid or random"), both)
        let logZero = try error("base: builtin\nrandom: {n: 2, seed: 1}\nranges:\n  loss.physics: {min: 0, max: 2, log: true}\n")
        XCTAssert(logZero.contains("ranges.loss.physics.min") && logZero.contains("min > 0"), logZero)
        let reversed = try error("base: builtin\nrandom: {n: 2, seed: 1}\nranges:\n  loss.physics: {min: 3, max: 2}\n")
        XCTAssert(reversed.contains("ranges.loss.physics") && reversed.contains("min < max"), reversed)
        let noN = try error("base: builtin\nrandom: {seed: 1}\nranges:\n  loss.physics: {min: 1, max: 2}\n")
        XCTAssert(noN.contains("random.n"), noN)
        let perTask = try error("base: builtin\ngrid: {loss.physics: [1]}\npoints_per_task: 0\n")
        XCTAssert(perTask.contains("points_per_task"), perTask)
    }
}
