import XCTest
import DonutIO
@testable import DonutPipeline

final class DonutExitCodeTests: XCTestCase {
    /// The table of slurm/README.md, and which errors are the input's fault.
    func testCodesAndTheirErrors() {
        XCTAssertEqual(DonutExitCode.allCases.map(\.rawValue), [0, 1, 2, 3, 75])
        XCTAssertEqual(DonutExitCode(for: DonutIOError(file: "x.h5", "does not exist")), .badInput)
        XCTAssertEqual(DonutExitCode(for: PipelineError("no config")), .badInput)
        XCTAssertEqual(DonutExitCode(for: RankFailure(message: "m", code: .badInput)), .badInput)
        XCTAssertEqual(DonutExitCode(for: RankFailure(message: "m")), .internalError)
        struct Unexpected: Error {}
        XCTAssertEqual(DonutExitCode(for: Unexpected()), .internalError)
    }
}
