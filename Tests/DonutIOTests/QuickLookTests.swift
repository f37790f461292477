import XCTest
import Foundation
@testable import DonutIO

final class QuickLookTests: XCTestCase {
    /// Reads the PNG at `path` with libpng's reader and returns the RGB of each (x, y)
    /// asked for, plus the size.
    func decode(_ path: String, pixels: [(Int, Int)]) throws -> (width: Int, height: Int, rgb: [[Int]]) {
        let d = PNGTestSupport.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
        return (d.width, d.height, pixels.map { (x, y) in (0..<3).map { Int(d.rgb[3 * (y * d.width + x) + $0]) } })
    }

    func rgb(_ c: (UInt8, UInt8, UInt8)) -> [Int] { [Int(c.0), Int(c.1), Int(c.2)] }

    func testConstantMapDecodesToMiddleViridisAndInvalidToGrey() throws {
        let (rows, cols) = (4, 5)
        var map = [Double](repeating: 0.3, count: rows * cols)
        map[7] = .nan                         // row 1, col 2
        var valid = [UInt8](repeating: 1, count: rows * cols)
        valid[19] = 0                         // row 3, col 4
        let path = PNGTestSupport.temporaryPath("constant.png")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try QuickLook.write(path: path, map: map, rows: rows, cols: cols, title: "strain", units: "", valid: valid)

        let L = QuickLook.layout(rows: rows, cols: cols, titleChars: 6, unitsChars: 0, labelChars: 5)
        func centre(_ r: Int, _ c: Int) -> (Int, Int) { (L.mapX + c * L.scale + L.scale / 2, L.mapY + r * L.scale + L.scale / 2) }
        let decoded = try decode(path, pixels: [centre(0, 0), centre(1, 2), centre(3, 4), (0, 0)])
        XCTAssertGreaterThanOrEqual(max(decoded.width, decoded.height), 256)
        XCTAssertEqual(decoded.rgb[0], rgb(QuickLook.viridis(0.5)), "flat map → middle colour")
        XCTAssertEqual(decoded.rgb[0], [33, 145, 140])
        XCTAssertEqual(decoded.rgb[1], [128, 128, 128], "NaN → grey")
        XCTAssertEqual(decoded.rgb[2], [128, 128, 128], "valid = 0 → grey")
        XCTAssertEqual(decoded.rgb[3], [255, 255, 255], "background")
    }

    func testPixelsMapThroughRobustLimits() {
        // 0…98 plus one hot pixel in a 10 × 10 map: limits are v[1] = 1 and v[98] = 98, so
        // the hot pixel is clipped to the top colour and 0 to the bottom one.
        let (rows, cols) = (10, 10)
        var map = (0..<100).map(Double.init)
        map[99] = 1e9
        let (lo, hi) = QuickLook.limits(of: map)!
        XCTAssertEqual(lo, 1); XCTAssertEqual(hi, 98)
        let image = QuickLook.render(map: map, rows: rows, cols: cols, title: "t", units: "u", valid: nil)
        // The map's position does not depend on the label widths.
        let L = QuickLook.layout(rows: rows, cols: cols, titleChars: 1, unitsChars: 3, labelChars: 0)
        func at(_ r: Int, _ c: Int) -> [Int] { rgb(image.pixel(x: L.mapX + c * L.scale, y: L.mapY + r * L.scale)) }
        XCTAssertEqual(at(0, 0), rgb(QuickLook.viridis(0)))
        XCTAssertEqual(at(9, 9), rgb(QuickLook.viridis(1)))
        XCTAssertEqual(at(5, 0), rgb(QuickLook.viridis((50 - lo) / (hi - lo))))
        XCTAssertEqual(QuickLook.limits(of: [3, -2, 7]).map { [$0.0, $0.1] }, [-2, 7], "small maps: min / max")
        XCTAssertNil(QuickLook.limits(of: []))
    }

    func testImageIsAtLeast256AndScalesByAnInteger() {
        for (rows, cols) in [(1, 1), (7, 3), (64, 64), (100, 300), (512, 20)] {
            let L = QuickLook.layout(rows: rows, cols: cols, titleChars: 10, unitsChars: 5, labelChars: 8)
            XCTAssertGreaterThanOrEqual(max(L.mapW, L.mapH), 256, "\(rows)×\(cols)")
            XCTAssertEqual(L.mapW, cols * L.scale); XCTAssertEqual(L.mapH, rows * L.scale)
            XCTAssertLessThan(max(rows, cols) * (L.scale - 1), 256, "scale \(L.scale) larger than needed for \(rows)×\(cols)")
        }
    }

    func testTickLabels() {
        XCTAssertEqual(QuickLook.tickLabels(lo: -5e-4, hi: 5e-4), ["5.0e-04", "0.0e+00", "-5.0e-04"])
        XCTAssertEqual(QuickLook.tickLabels(lo: -0.05, hi: 0.05), ["0.050", "0.000", "-0.050"])
        XCTAssertEqual(QuickLook.tickLabels(lo: -0.1, hi: 0.1), ["0.100", "0.000", "-0.100"])
        XCTAssertEqual(QuickLook.tickLabels(lo: 80, hi: 160), ["160.0", "120.0", "80.0"])
        XCTAssertEqual(QuickLook.tickLabels(lo: 0.0021, hi: 0.0023), ["2.30e-03", "2.20e-03", "2.10e-03"])
        XCTAssertEqual(QuickLook.tickLabels(lo: 0, hi: 0), ["0", "0", "0"])
    }

    func testViridisEndsAndMonotoneLuminance() {
        XCTAssertEqual(rgb(QuickLook.viridis(0)), [68, 1, 84])
        XCTAssertEqual(rgb(QuickLook.viridis(1)), [253, 231, 37])
        XCTAssertEqual(rgb(QuickLook.viridis(-3)), [68, 1, 84])
        XCTAssertEqual(rgb(QuickLook.viridis(7)), [253, 231, 37])
        var last = -1.0
        for k in 0...100 {
            let c = QuickLook.viridis(Double(k) / 100)
            let y = 0.2126 * Double(c.0) + 0.7152 * Double(c.1) + 0.0722 * Double(c.2)
            XCTAssertGreaterThan(y, last, "luminance must rise (t = \(Double(k) / 100))")
            last = y
        }
    }

    func testFontCoversTitlesLabelsAndUnits() {
        let unknown = Font.glyph("?")
        let needed = "0123456789.-+e°ÅµεωχσABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_[]()/:%=, "
        for ch in needed { XCTAssertNotEqual(Font.glyph(ch), unknown, "no glyph for '\(ch)'") }
        XCTAssertEqual(Font.glyph("☃"), unknown)
        // Glyphs are distinct where confusion would mislead (digits vs letters).
        for (a, b) in [("0", "O"), ("1", "l"), ("5", "S"), ("8", "B"), ("-", "_")] {
            XCTAssertNotEqual(Font.glyph(Character(a)), Font.glyph(Character(b)), "\(a) vs \(b)")
        }
    }

    func testWriteReplacesAtomicallyAndNamesThePathOnError() throws {
        let path = PNGTestSupport.temporaryPath("atomic.png")
        defer { try? FileManager.default.removeItem(atPath: path) }
        try QuickLook.write(path: path, map: [1, 2, 3, 4], rows: 2, cols: 2, title: "a", units: "deg")
        try QuickLook.write(path: path, map: [4, 3, 2, 1], rows: 2, cols: 2, title: "b", units: "deg")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(Array(bytes), QuickLook.png(map: [4, 3, 2, 1], rows: 2, cols: 2, title: "b", units: "deg"))
        let dir = (path as NSString).deletingLastPathComponent
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".partial") && $0.contains("atomic.png") }
        XCTAssertEqual(leftovers, [])

        let bad = "/nonexistent-dir-\(getpid())/map.png"
        XCTAssertThrowsError(try QuickLook.write(path: bad, map: [1], rows: 1, cols: 1, title: "x", units: "")) { e in
            XCTAssertTrue("\(e)".contains(bad), "\(e)")
        }
    }

    func testAllInvalidMapStillRenders() throws {
        let png = QuickLook.png(map: [.nan, .infinity, 1, 2], rows: 2, cols: 2, title: "empty", units: "Å",
                                valid: [1, 1, 0, 0])
        XCTAssertEqual(Array(png.suffix(4)), [0xAE, 0x42, 0x60, 0x82])
        let rgb = PNGTestSupport.decode(png).rgb
        XCTAssertTrue(stride(from: 0, to: rgb.count, by: 3).contains { rgb[$0..<($0 + 3)].allSatisfy { $0 == 128 } }, "the invalid pixels are drawn grey")
    }

    // MARK: Signed maps, axes

    func testSignedMapDivergesFromWhiteAtZeroWithSymmetricLimits() {
        // Values −1 … 3 (asymmetric) in a 5 × 5 map: limits ±3 (max |p1|, |p99| of ≤ 50 pixels
        // = min / max), so 0 is the white centre, 3 the darkest red, −1 a light blue, −3 unused.
        let (rows, cols) = (5, 5)
        let map = (0..<25).map { -1 + 4 * Double($0) / 24 }            // map[6] = 0
        let image = QuickLook.render(map: map, rows: rows, cols: cols, title: "strain", units: "",
                                     valid: nil, style: .init(signed: true))
        let labels = QuickLook.tickLabels(lo: -3, hi: 3)
        XCTAssertEqual(Double(labels[1]), 0, "middle tick is 0 (\(labels))")
        let L = QuickLook.layout(rows: rows, cols: cols, titleChars: 6, unitsChars: 0, labelChars: labels.map(\.count).max()!)
        func at(_ i: Int) -> [Int] { rgb(image.pixel(x: L.mapX + (i % cols) * L.scale, y: L.mapY + (i / cols) * L.scale)) }
        XCTAssertEqual(at(6), [247, 247, 247], "0 → white")
        XCTAssertEqual(at(24), [103, 0, 31], "+3 → darkest red")
        XCTAssertEqual(at(0), rgb(QuickLook.diverging(1.0 / 3)), "−1 → a third of the way from blue to red")
        let (r, _, b) = image.pixel(x: L.mapX, y: L.mapY)
        XCTAssertGreaterThan(b, r, "negative values are blue")
        // The same map unsigned keeps viridis from its own min to max.
        let plain = QuickLook.render(map: map, rows: rows, cols: cols, title: "strain", units: "", valid: nil)
        XCTAssertEqual(rgb(plain.pixel(x: L.mapX, y: L.mapY)), rgb(QuickLook.viridis(0)))
        // Explicit limits win (shared limits across compared files).
        let shared = QuickLook.render(map: map, rows: rows, cols: cols, title: "strain", units: "", valid: nil,
                                      style: .init(signed: true, limits: (-6, 6)))
        let Ls = QuickLook.layout(rows: rows, cols: cols, titleChars: 6, unitsChars: 0,
                                  labelChars: QuickLook.tickLabels(lo: -6, hi: 6).map(\.count).max()!)
        XCTAssertEqual(rgb(shared.pixel(x: Ls.mapX + 4 * Ls.scale, y: Ls.mapY + 4 * Ls.scale)), rgb(QuickLook.diverging(0.75)), "+3 of ±6")
    }

    func testDivergingEndsCentreAndLuminance() {
        XCTAssertEqual(rgb(QuickLook.diverging(0)), [5, 48, 97])
        XCTAssertEqual(rgb(QuickLook.diverging(0.5)), [247, 247, 247])
        XCTAssertEqual(rgb(QuickLook.diverging(1)), [103, 0, 31])
        func luminance(_ t: Double) -> Double {
            let c = QuickLook.diverging(t); return 0.2126 * Double(c.0) + 0.7152 * Double(c.1) + 0.0722 * Double(c.2)
        }
        for k in 0..<50 {   // brightest at 0, darker towards both ends: |value| reads as depth of colour
            XCTAssertLessThan(luminance(Double(k) / 100), luminance(Double(k + 1) / 100), "t = \(Double(k) / 100)")
            XCTAssertLessThan(luminance(1 - Double(k) / 100), luminance(1 - Double(k + 1) / 100), "t = \(1 - Double(k) / 100)")
        }
    }

    func testAxesInMicronsMoveTheMapAndLabelTheCorners() throws {
        XCTAssertNil(QuickLook.Axes(scanX: [0, 1], y: [0, 1], units: ""), "indices: no physical axes")
        XCTAssertNil(QuickLook.Axes(scanX: [0, .nan], y: [0, 1], units: "um"))
        let axes = try XCTUnwrap(QuickLook.Axes(scanX: [10, 10.5, 11], y: [-2, -1.5], units: "um"))
        XCTAssertEqual(axes.xLabel, "x [µm]")
        let map: [Double] = [1, 2, 3, 4, 5, 6]
        let with = QuickLook.render(map: map, rows: 2, cols: 3, title: "t", units: "u", valid: nil, style: .init(axes: axes))
        let without = QuickLook.render(map: map, rows: 2, cols: 3, title: "t", units: "u", valid: nil)
        XCTAssertGreaterThan(with.width, without.width)
        XCTAssertGreaterThan(with.height, without.height)
        XCTAssertEqual(QuickLook.axisLabel(-1.5), "-1.5")
        XCTAssertEqual(QuickLook.axisLabel(10.5), "10.5")
        // The map sits right of the widest y label ("y [µm]" = 6 characters) and renders the same pixels.
        let labels = QuickLook.tickLabels(lo: 1.0, hi: 6.0)   // ≤ 50 pixels: min / max
        let L = QuickLook.layout(rows: 2, cols: 3, titleChars: 1, unitsChars: 3, labelChars: labels.map(\.count).max()!,
                                 yTickChars: 6, xAxis: true)
        let L0 = QuickLook.layout(rows: 2, cols: 3, titleChars: 1, unitsChars: 3, labelChars: labels.map(\.count).max()!)
        XCTAssertEqual(L.mapX, L0.mapX + 6 * QuickLook.charW + 8)
        for i in 0..<6 {
            let x = (i % 3) * L.scale, y = (i / 3) * L.scale
            XCTAssertEqual(rgb(with.pixel(x: L.mapX + x, y: L.mapY + y)), rgb(without.pixel(x: L0.mapX + x, y: L0.mapY + y)))
        }
        // Tick marks under the first and last columns' centres.
        XCTAssertEqual(rgb(with.pixel(x: L.mapX + L.scale / 2, y: L.mapY + L.mapH + 2)), [0, 0, 0])
        XCTAssertEqual(rgb(with.pixel(x: L.mapX + 2 * L.scale + L.scale / 2, y: L.mapY + L.mapH + 2)), [0, 0, 0])
    }
}
