import XCTest
@testable import DonutCore

/// Streaming places chunk results into a rank's block: the pieces must rebuild the whole.
final class FrameResultsTests: XCTestCase {
    func block(_ range: Range<Int>, thickness: Bool, sigma: Bool) -> FrameResults {
        var r = FrameResults(frameRange: range)
        for (k, f) in range.enumerated() {
            r.strain[k] = Double(f) * 1e-4; r.tiltLRDeg[k] = Double(f) * 0.01; r.tiltUDDeg[k] = -Double(f) * 0.02
            r.valid[k] = f % 3 == 0 ? 0 : 1
        }
        if thickness { r.thicknessA = range.map { 100 + Double($0) } }
        r.residual = range.map { Double($0) / 7 }
        if sigma { r.sigmas["strain_sigma"] = range.map { Double($0) * 1e-6 } }
        return r
    }

    func testChunksPlacedInAnyOrderRebuildTheBlock() {
        let whole = block(10..<47, thickness: true, sigma: true)
        var rebuilt = FrameResults(frameRange: 10..<47)
        for chunk in [30..<47, 10..<20, 20..<30] { rebuilt.place(block(chunk, thickness: true, sigma: true)) }
        XCTAssertEqual(rebuilt, whole)
    }

    func testMapsMissingFromTheBlockAreCreatedWithNaNElsewhere() {
        var r = FrameResults(frameRange: 0..<6)
        r.place(block(2..<4, thickness: true, sigma: true))
        XCTAssertEqual(r.thicknessA?[2], 102); XCTAssertEqual(r.sigmas["strain_sigma"]?[3], 3e-6)
        XCTAssert(r.thicknessA![0].isNaN && r.thicknessA![5].isNaN && r.residual![4].isNaN)
        XCTAssertEqual(r.valid, [0, 0, 1, 0, 0, 0])
    }
}
