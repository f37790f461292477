import XCTest
import DonutPhysics
import DonutCore
import DonutIO
@testable import DonutPipeline

/// `simulateRawScan` writes the photon draws of the clean scan of the same phantom and seed
/// (a paired comparison: the raw path is measured, not a new noise realisation).
final class RawSimulationTests: XCTestCase {
    /// The small preset with its ROI at (16, 24) of a 300×300 sensor: the chip gaps at rows and
    /// columns 256–257 miss it.
    private func config() -> DonutConfig {
        var c = smallConfig()
        c.instrument.roi = DetectorROI(x: 16, y: 24, width: 128, height: 128)
        return c
    }

    private func simulate(_ dir: URL, _ name: String, noise: Bool = true, raw: RawDetectorRequest?) throws -> String {
        var s = ScanSimulationRequest(config: config(), outPath: dir.appendingPathComponent(name).path)
        s.phantom = .domains; s.rows = 3; s.cols = 4; s.seed = 11; s.noise = noise
        if let raw { try simulateRawScan(context, s, detector: raw) } else { try simulateScan(context, s) }
        return s.outPath
    }

    private func detector(monitor: Double, serpentine: Bool) -> RawDetectorRequest {
        var d = RawDetectorRequest()
        d.height = 300; d.width = 300; d.hotPixels = 0; d.monitorAmplitude = monitor; d.serpentine = serpentine
        return d
    }

    private func frames(_ path: String) throws -> FrameBlock {
        let reader = try ScanReader(path: path, config: config())
        return try reader.readBlock(0..<(reader.layout.rows * reader.layout.cols))
    }

    /// Monitor 1 and raster order: the binned ROI of the raw file holds exactly the clean
    /// scan's counts, every pixel measured (a lost, moved or doubled photon would show).
    func testRawFileHoldsTheCleanScansPhotons() throws {
        let dir = try scratchFolder(self)
        let clean = try frames(try simulate(dir, "clean.h5", raw: nil))
        let raw = try frames(try simulate(dir, "raw.h5", raw: detector(monitor: 0, serpentine: false)))
        XCTAssertEqual(raw.counts, clean.counts)
        XCTAssertTrue(raw.weights.map { $0.allSatisfy { $0 == 1 } } ?? true, "no pixel of the ROI is masked")
        XCTAssertGreaterThan(clean.counts.reduce(0, +), 1000, "enough photons for the comparison to mean something")
    }

    /// A ±20 % monitor and serpentine order: each frame's binned counts are the clean counts
    /// thinned (monitor below 1: never more photons in any pixel) or added to (above 1: never
    /// fewer), and the photons of each frame total m·Σλ within Poisson noise.
    func testMonitorThinsOrAddsToTheCleanDraws() throws {
        let dir = try scratchFolder(self)
        let clean = try frames(try simulate(dir, "clean.h5", raw: nil))
        let lambda = try frames(try simulate(dir, "lambda.h5", noise: false, raw: nil))
        let path = try simulate(dir, "raw.h5", raw: detector(monitor: 0.2, serpentine: true))
        let reader = try ScanReader(path: path, config: config())
        let raw = try reader.readBlock(0..<12)
        // The monitor as written (1e5 per unit incident intensity), in map order by way of the
        // reader's relative monitor: m = relative · reference / 1e5.
        let median = try XCTUnwrap(reader.monitorReference)
        let relative = try XCTUnwrap(raw.monitor)
        let np = raw.pixelCount
        var below = 0, above = 0, unpaired = 0, chi2 = 0.0
        for f in 0..<raw.count {
            let m = relative[f] * median / 1e5
            XCTAssert(abs(m - 1) <= 0.2 + 1e-9, "monitor \(m) outside ±20 %")
            var total = 0.0, expected = 0.0
            for i in 0..<np {
                let r = raw.counts[f * np + i], c = clean.counts[f * np + i]
                if m <= 1 ? r > c : r < c { unpaired += 1 }
                total += Double(r); expected += m * Double(lambda.counts[f * np + i])
            }
            if m < 1 { below += 1 } else { above += 1 }
            chi2 += (total - expected) * (total - expected) / expected
        }
        XCTAssertEqual(unpaired, 0, "pixels with more photons than the clean frame under a monitor below 1, or fewer above 1")
        XCTAssertGreaterThan(below, 0); XCTAssertGreaterThan(above, 0)
        // Σ over frames of (N − E)²/E is χ² with `count` degrees of freedom for Poisson totals:
        // mean 12, P(> 40) < 1e-4.
        XCTAssertLessThan(chi2, 40, "frame totals are not Poisson(m·Σλ)")
    }
}
