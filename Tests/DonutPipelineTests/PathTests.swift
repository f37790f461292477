import XCTest
@testable import DonutPipeline
import DonutIO

final class PathSuffixTests: XCTestCase {
    /// Only a trailing suffix goes: a folder named like a file keeps its name.
    func testOnlyTheTrailingSuffixIsRemoved() {
        XCTAssertEqual(removingSuffix(".h5", from: "runs.h5.d/model.h5"), "runs.h5.d/model")
        XCTAssertEqual(removingSuffix(".h5", from: "model"), "model")
        XCTAssertEqual(TrainRequest.defaultCheckpointPath(out: "a.h5x/m.h5"), "a.h5x/m.checkpoint.h5")
        XCTAssertEqual(TrainRequest.lossLogPath(out: "a.h5x/m.h5"), "a.h5x/m.loss.csv")
        XCTAssertEqual(RefineRequest.defaultMapsFolder(out: "x.h5/r.h5"), "x.h5/r_maps")
        XCTAssertEqual(SweepPointMetrics.path(forModel: "runs.h5.d/model.h5"), "runs.h5.d/model.metrics.json")
        XCTAssertEqual(SweepPointMetrics.path(forModel: "runs.h5.d/model"), "runs.h5.d/model.metrics.json")
    }
}
