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
        let sweep = try SweepDefinition.load(path: path)
        let base = try ConfigFile.load(TrainingConfig.self, path: try XCTUnwrap(sweep.basePath))
        XCTAssertEqual(base, .donutPaper)
        for i in 0..<sweep.pointCount { let _: TrainingConfig = try sweep.point(i, base: base) }
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
}
