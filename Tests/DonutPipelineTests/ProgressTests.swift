import XCTest
import Foundation
@testable import DonutPipeline

/// ProgressMeter, the one progress reporter: when lines appear (every 10 % or 30 s), what they say (global
/// counts, rate, ETA), the bar's redraws, quiet, resumed runs.
final class ProgressTests: XCTestCase {
    /// A ProgressMeter on a fake clock that advances `secondsPerCall` at every `now()` call
    /// after `start`, writing into `out`.
    final class Recorder {
        var t = Date(timeIntervalSince1970: 1000)
        var out: [String] = []
        func progress(_ mode: ProgressMeter.Mode, total: Int, share: Int? = nil, already: Int = 0) -> ProgressMeter {
            ProgressMeter(what: "fit frames", total: total, share: share, already: already, unit: "frames", mode: mode,
                     commandStart: t, now: { [unowned self] in self.t }, write: { [unowned self] in self.out.append($0) })
        }
    }

    func testPlainLinesEveryTenthWithRateAndETA() {
        let rec = Recorder()
        let p = rec.progress(.lines, total: 1000)
        for done in 1...1000 { rec.t += 0.01; p.update(done) }          // 10 s for 1000 frames
        XCTAssertEqual(rec.out.count, 10, rec.out.joined())
        XCTAssert(rec.out[0].contains("fit frames: 100/1000 (10%)"), rec.out[0])
        XCTAssert(rec.out[0].contains("100 frames/s"), rec.out[0])
        XCTAssert(rec.out[0].contains("ETA 9 s"), "1 s for 100, 900 to go: \(rec.out[0])")
        XCTAssert(rec.out[9].contains("1000/1000 (100%)") && rec.out[9].contains("in 10 s"), rec.out[9])
        XCTAssert(rec.out.allSatisfy { $0.hasSuffix("\n") && !$0.contains("\r") }, "plain lines for logs")
        p.update(1000); p.finish()
        XCTAssertEqual(rec.out.count, 10, "nothing after the end")
    }

    func testSlowWorkPrintsAtLeastEveryThirtySeconds() {
        let rec = Recorder()
        let p = rec.progress(.lines, total: 100)
        for done in 1...100 { rec.t += 20; p.update(done) }             // 2000 s, 200 s per 10 %
        // Lines at each 30 s mark crossed (every second update, 40 s apart) and at the deciles.
        XCTAssertGreaterThanOrEqual(rec.out.count, 50)
        XCTAssert(rec.out.last!.contains("100/100 (100%)"))
        XCTAssert(rec.out[0].contains("2/100 (2%)") && rec.out[0].contains("ETA 32 min 40 s"), "40 s for 2, 98 to go: \(rec.out[0])")
    }

    func testShareIsShownAsTheGlobalCount() {
        // Rank 0 of 2: 2048 of 4096 frames; halfway through its share is halfway overall.
        let rec = Recorder()
        let p = rec.progress(.lines, total: 4096, share: 2048)
        for done in stride(from: 256, through: 2048, by: 256) { rec.t += 1; p.update(done) }
        XCTAssert(rec.out.contains { $0.contains("2048/4096 (50%)") }, rec.out.joined())
        XCTAssert(rec.out.last!.contains("4096/4096 (100%)"), rec.out.last!)
        XCTAssertFalse(rec.out.contains { $0.contains("/2048") }, "never the rank's own count")
        // The same lines as one rank doing all 4096 at the same pace.
        let one = Recorder()
        let q = one.progress(.lines, total: 4096)
        for done in stride(from: 512, through: 4096, by: 512) { one.t += 1; q.update(done) }
        XCTAssertEqual(rec.out, one.out)
    }

    func testBarRedrawsInPlaceAtMostTenTimesASecond() {
        let rec = Recorder()
        let p = rec.progress(.bar, total: 1000)
        for done in 1...1000 { rec.t += 0.0005; p.update(done, detail: "loss 0.5") }   // 0.5 s
        XCTAssertLessThanOrEqual(rec.out.count, 7, "throttled: \(rec.out.count) redraws")
        XCTAssert(rec.out.allSatisfy { $0.hasPrefix("\r\u{1B}[K") })
        XCTAssert(rec.out.last!.contains("[########################] 100%") && rec.out.last!.hasSuffix("\n"), rec.out.last!)
        XCTAssert(rec.out.last!.contains("loss 0.5"))
        XCTAssertFalse(ProgressMeter.barOnScreen, "the finished bar left its line")
    }

    func testQuietPrintsNothingAndOtherRanksAreQuiet() {
        let rec = Recorder()
        let p = rec.progress(.off, total: 10)
        for done in 1...10 { rec.t += 100; p.update(done) }
        p.finish()
        XCTAssertEqual(rec.out, [])
        XCTAssertEqual(ProgressMeter.mode(quiet: true, isRoot: true), .off)
        XCTAssertEqual(ProgressMeter.mode(quiet: false, isRoot: false), .off)
    }

    func testResumedRunCountsOnlyItsOwnStepsForRateAndETA() {
        let rec = Recorder()
        let p = rec.progress(.lines, total: 1000, already: 500)
        rec.t += 10; p.update(600)                                       // 100 steps in 10 s
        XCTAssert(rec.out[0].contains("600/1000 (60%)") && rec.out[0].contains("10 frames/s") && rec.out[0].contains("ETA 40 s"), rec.out[0])
        rec.t += 5; p.finish(detail: "stopped")
        XCTAssert(rec.out.last!.contains("600/1000") && rec.out.last!.contains("stopped"), rec.out.last!)
    }
}
