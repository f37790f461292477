import Foundation

/// A quick-look that could not be written; names the file.
public struct QuickLookError: Error, Equatable, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public var description: String { "quick-look '\(path)': \(message)" }
}

/// PNG quick-looks of result maps: the map, a title, a colour bar with max / mid / min tick
/// labels and the units, and — when the scan positions are known — physical axes.
///
/// - Unsigned maps (σ, thickness, residual, counts) use viridis. **Signed** maps (strain,
///   tilts, errors: `Style.signed`) use a diverging blue–white–red map (ColorBrewer RdBu)
///   with symmetric limits ±m, so 0 is white and the middle tick label is 0.
/// - Colour limits are **robust**: the 1st and 99th percentiles (nearest order statistics,
///   see `limits(of:)`) of the finite, valid pixels, so one hot pixel does not flatten the
///   map; values outside are clipped to the end colours; signed maps take m = max(|p1|, |p99|).
///   `Style.limits` overrides them (shared limits when comparing maps). The tick labels show
///   the limits. A flat map (all equal) is drawn in the middle colour with one label.
/// - NaN, ±inf and pixels with `valid[i] == 0` are mid grey (128, 128, 128), which is in
///   neither colour map.
/// - Row 0 of the map is the top row of the image; each map pixel becomes an s × s block
///   with s the smallest integer making the longer side ≥ 256 px (s ≥ 1).
/// - `Style.axes`: the first and last x positions under the map's first and last columns,
///   the first and last y positions beside its first and last rows, and the axis names.
public enum QuickLook {
    /// Physical axes of a map: positions of its columns (x) and rows (y, top to bottom) and
    /// the axis names with units, e.g. "x [µm]".
    public struct Axes: Sendable {
        public var x: [Double], y: [Double]
        public var xLabel: String, yLabel: String
        public init(x: [Double], y: [Double], xLabel: String, yLabel: String) {
            self.x = x; self.y = y; self.xLabel = xLabel; self.yLabel = yLabel
        }
        /// Axes of a scan in its units ("um" → "µm"), nil when the positions are unknown
        /// (units "" = indices) or not finite.
        public init?(scanX x: [Double], y: [Double], units: String) {
            guard !units.isEmpty, !x.isEmpty, !y.isEmpty, (x + y).allSatisfy(\.isFinite) else { return nil }
            let u = units == "um" ? "µm" : units
            self.init(x: x, y: y, xLabel: "x [\(u)]", yLabel: "y [\(u)]")
        }
    }

    /// How a map is drawn.
    public struct Style: Sendable {
        /// Diverging colour map centred on 0 with symmetric limits (strain, tilts, errors).
        public var signed = false
        /// Colour limits (lo, hi) instead of the robust ones.
        public var limits: (Double, Double)?
        public var axes: Axes?
        /// Mark the line y = x (parity plots; needs `axes`).
        public var diagonal = false
        public init(signed: Bool = false, limits: (Double, Double)? = nil, axes: Axes? = nil, diagonal: Bool = false) {
            self.signed = signed; self.limits = limits; self.axes = axes; self.diagonal = diagonal
        }
    }

    /// Renders a (rows × cols) map, row-major, to PNG bytes.
    public static func png(map: [Double], rows: Int, cols: Int, title: String, units: String,
                           valid: [UInt8]? = nil, style: Style = Style()) -> [UInt8] {
        let image = render(map: map, rows: rows, cols: cols, title: title, units: units, valid: valid, style: style)
        return PNG.encodeRGB(width: image.width, height: image.height, rgb: image.rgb)
    }

    /// Writes `png(...)` to `path` atomically: a temporary file in the same directory, then
    /// rename(2), so readers never see half a file. Replaces an existing file: quick-looks
    /// are derived from the result file, whose caller decides about `--force`.
    public static func write(path: String, map: [Double], rows: Int, cols: Int, title: String,
                             units: String, valid: [UInt8]? = nil, style: Style = Style()) throws {
        let bytes = png(map: map, rows: rows, cols: cols, title: title, units: units, valid: valid, style: style)
        let tmp = path + ".\(getpid()).partial"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(bytes)) else {
            let dir = (path as NSString).deletingLastPathComponent
            throw QuickLookError(path: path, message: "cannot create a file in '\(dir.isEmpty ? "." : dir)' (missing directory or no permission)")
        }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw QuickLookError(path: path, message: "cannot rename the temporary file into place (\(reason))")
        }
    }

    // MARK: - Rendering

    /// Where things are on the canvas (pixels; origin top left).
    struct Layout {
        var scale: Int          // map pixel → scale × scale block
        var mapX: Int, mapY: Int, mapW: Int, mapH: Int
        var barX: Int, barY: Int, barW: Int, barH: Int
        var width: Int, height: Int
    }

    static let fontScale = 2
    static let margin = 12
    static var charW: Int { 6 * fontScale }   // 5 columns + 1 spacing
    static var charH: Int { 7 * fontScale }
    static var lineH: Int { charH + 4 }
    static let background: (UInt8, UInt8, UInt8) = (255, 255, 255)
    static let ink: (UInt8, UInt8, UInt8) = (0, 0, 0)
    static let invalidGrey: (UInt8, UInt8, UInt8) = (128, 128, 128)

    /// `yTickChars` > 0 leaves room left of the map for the y tick labels; `xAxis` adds two
    /// lines under it (x tick labels, axis names).
    static func layout(rows: Int, cols: Int, titleChars: Int, unitsChars: Int, labelChars: Int,
                       yTickChars: Int = 0, xAxis: Bool = false) -> Layout {
        let scale = max(1, (256 + max(rows, cols) - 1) / max(rows, cols))
        let mapX = margin + (yTickChars > 0 ? yTickChars * charW + 8 : 0), mapY = margin + lineH + 8
        let mapW = cols * scale, mapH = rows * scale
        let barX = mapX + mapW + 20, barW = 20
        let barY = mapY + lineH + 8                         // the units line sits above the bar
        let barH = max(mapH - (barY - mapY), 128)
        let right = max(barX + barW + 4 + 4 + labelChars * charW, barX + unitsChars * charW,
                        margin + titleChars * charW)
        let bottom = max(mapY + mapH + (xAxis ? 6 + 2 * lineH : 0), barY + barH + charH / 2 + 2)
        return Layout(scale: scale, mapX: mapX, mapY: mapY, mapW: mapW, mapH: mapH,
                      barX: barX, barY: barY, barW: barW, barH: barH,
                      width: right + margin, height: bottom + margin)
    }

    struct Image {
        var width: Int, height: Int
        var rgb: [UInt8]
        init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8)) {
            self.width = width; self.height = height
            rgb = [UInt8](repeating: 0, count: width * height * 3)
            fillRect(x: 0, y: 0, w: width, h: height, fill)
        }
        mutating func fillRect(x: Int, y: Int, w: Int, h: Int, _ c: (UInt8, UInt8, UInt8)) {
            let x0 = max(0, x), x1 = min(width, x + w), y0 = max(0, y), y1 = min(height, y + h)
            guard x0 < x1, y0 < y1 else { return }
            for yy in y0..<y1 {
                for xx in x0..<x1 {
                    let k = 3 * (yy * width + xx)
                    rgb[k] = c.0; rgb[k + 1] = c.1; rgb[k + 2] = c.2
                }
            }
        }
        func pixel(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
            let k = 3 * (y * width + x)
            return (rgb[k], rgb[k + 1], rgb[k + 2])
        }
        /// Draws `text` with its top-left corner at (x, y) in the built-in font.
        mutating func text(_ text: String, x: Int, y: Int, _ c: (UInt8, UInt8, UInt8)) {
            let s = QuickLook.fontScale
            for (i, ch) in text.enumerated() {
                let rows = Font.glyph(ch)
                for (r, row) in rows.enumerated() {
                    for col in 0..<5 where row & (0x10 >> col) != 0 {
                        fillRect(x: x + i * 6 * s + col * s, y: y + r * s, w: s, h: s, c)
                    }
                }
            }
        }
    }

    static func render(map: [Double], rows: Int, cols: Int, title: String, units: String,
                       valid: [UInt8]?, style: Style = Style()) -> Image {
        precondition(rows > 0 && cols > 0, "map must have at least one pixel (got \(rows)×\(cols))")
        precondition(map.count == rows * cols, "map holds \(map.count) values, expected rows × cols = \(rows * cols)")
        precondition(valid == nil || valid!.count == map.count, "valid holds \(valid!.count) flags, expected \(map.count)")
        if let a = style.axes {
            precondition(a.x.count == cols && a.y.count == rows, "axes hold \(a.x.count) x and \(a.y.count) y positions for a \(rows)×\(cols) map")
        }
        func ok(_ i: Int) -> Bool { map[i].isFinite && (valid?[i] ?? 1) != 0 }

        var lim = style.limits ?? limits(of: (0..<map.count).filter(ok).map { map[$0] })
        if style.signed, let (lo, hi) = lim {
            let m = max(abs(lo), abs(hi))
            lim = (-m, m)
        }
        let colourMap: (Double) -> (UInt8, UInt8, UInt8) = style.signed ? diverging : viridis
        let labels: [String?]   // top, middle, bottom
        if case let (lo, hi)? = lim {
            labels = lo < hi ? tickLabels(lo: lo, hi: hi) : [nil, tickLabels(lo: lo, hi: hi)[1], nil]
        } else {
            labels = [nil, "no data", nil]
        }
        let unitsText = units.isEmpty ? "" : "[\(units)]"
        let labelChars = labels.map { $0?.count ?? 0 }.max() ?? 0
        let yTicks = style.axes.map { [axisLabel($0.y[0]), axisLabel($0.y[rows - 1]), $0.yLabel] } ?? []
        let L = layout(rows: rows, cols: cols, titleChars: title.count, unitsChars: unitsText.count,
                       labelChars: labelChars, yTickChars: yTicks.map(\.count).max() ?? 0, xAxis: style.axes != nil)
        var img = Image(width: L.width, height: L.height, fill: background)

        img.text(title, x: margin, y: margin, ink)
        for r in 0..<rows {
            for c in 0..<cols {
                let i = r * cols + c
                let colour: (UInt8, UInt8, UInt8)
                if ok(i), case let (lo, hi)? = lim {
                    colour = colourMap(hi > lo ? (map[i] - lo) / (hi - lo) : 0.5)
                } else {
                    colour = invalidGrey
                }
                img.fillRect(x: L.mapX + c * L.scale, y: L.mapY + r * L.scale, w: L.scale, h: L.scale, colour)
            }
        }
        // Colour bar: top = max, bottom = min, with a one-pixel frame and tick marks.
        img.fillRect(x: L.barX - 1, y: L.barY - 1, w: L.barW + 2, h: L.barH + 2, ink)
        for r in 0..<L.barH {
            let t = 1 - Double(r) / Double(max(L.barH - 1, 1))
            img.fillRect(x: L.barX, y: L.barY + r, w: L.barW, h: 1, lim == nil ? invalidGrey : colourMap(t))
        }
        img.text(unitsText, x: L.barX, y: L.mapY, ink)
        let tickY = [L.barY, L.barY + (L.barH - 1) / 2, L.barY + L.barH - 1]
        for (label, y) in zip(labels, tickY) {
            guard let label else { continue }
            img.fillRect(x: L.barX + L.barW + 1, y: y, w: 4, h: 1, ink)
            img.text(label, x: L.barX + L.barW + 8, y: y - charH / 2, ink)
        }
        if let a = style.axes { drawAxes(a, yTicks: yTicks, rows: rows, cols: cols, diagonal: style.diagonal, layout: L, into: &img) }
        return img
    }

    /// Tick marks and labels at the centres of the first and last columns (x, under the map)
    /// and rows (y, left of it), the axis names centred; the line y = x when asked.
    static func drawAxes(_ a: Axes, yTicks: [String], rows: Int, cols: Int, diagonal: Bool, layout L: Layout,
                         into img: inout Image) {
        let s = L.scale, below = L.mapY + L.mapH
        let x0 = L.mapX + s / 2, x1 = L.mapX + (cols - 1) * s + s / 2
        let first = axisLabel(a.x[0]), last = axisLabel(a.x[cols - 1])
        img.fillRect(x: x0, y: below, w: 1, h: 5, ink)
        img.fillRect(x: x1, y: below, w: 1, h: 5, ink)
        img.text(first, x: max(0, x0 - first.count * charW / 2), y: below + 6, ink)
        img.text(last, x: min(img.width - last.count * charW, x1 - last.count * charW / 2), y: below + 6, ink)
        img.text(a.xLabel, x: L.mapX + L.mapW / 2 - a.xLabel.count * charW / 2, y: below + 6 + lineH, ink)
        let y0 = L.mapY + s / 2, y1 = L.mapY + (rows - 1) * s + s / 2
        img.fillRect(x: L.mapX - 5, y: y0, w: 5, h: 1, ink)
        img.fillRect(x: L.mapX - 5, y: y1, w: 5, h: 1, ink)
        img.text(yTicks[0], x: L.mapX - 7 - yTicks[0].count * charW, y: y0 - charH / 2, ink)
        img.text(yTicks[1], x: L.mapX - 7 - yTicks[1].count * charW, y: y1 - charH / 2, ink)
        img.text(yTicks[2], x: L.mapX - 7 - yTicks[2].count * charW, y: L.mapY + L.mapH / 2 - charH / 2, ink)
        if diagonal, cols > 1, rows > 1 {
            // y = x: in each column, the row whose position is nearest x (within half a row step).
            let step = abs(a.y[rows - 1] - a.y[0]) / Double(rows - 1)
            for c in 0..<cols {
                guard let r = (0..<rows).min(by: { abs(a.y[$0] - a.x[c]) < abs(a.y[$1] - a.x[c]) }),
                      abs(a.y[r] - a.x[c]) <= step / 2 else { continue }
                img.fillRect(x: L.mapX + c * s + s / 2 - 1, y: L.mapY + r * s + s / 2 - 1, w: 2, h: 2, ink)
            }
        }
    }

    /// An axis tick label: up to 4 significant digits, no trailing zeros ("12.5", "-0.004", "1e+03").
    static func axisLabel(_ v: Double) -> String {
        clean(String(format: "%.4g", v))
    }

    /// 1st and 99th percentiles as the nearest order statistics, v[round(0.01(n−1))] and
    /// v[round(0.99(n−1))]: always actual data values, never pulled towards an outlier by
    /// interpolation; maps under ~50 pixels get plain min / max. nil when empty.
    static func limits(of values: [Double]) -> (Double, Double)? {
        guard !values.isEmpty else { return nil }
        let v = values.sorted()
        let n = Double(v.count - 1)
        return (v[Int((0.01 * n).rounded())], v[Int((0.99 * n).rounded())])
    }

    /// Labels for hi, mid, lo. Fixed notation with enough decimals to tell the three apart
    /// when the largest magnitude is in [0.01, 10⁴) (`0.050`, `160.0`), else scientific
    /// with 1–6 mantissa decimals, enough to resolve the step between labels (`-5.0e-04`).
    static func tickLabels(lo: Double, hi: Double) -> [String] {
        let values = [hi, (lo + hi) / 2, lo]
        let m = max(abs(lo), abs(hi))
        let span = hi - lo
        if m == 0 { return ["0", "0", "0"] }
        if m >= 0.01, m < 1e4 {
            let decimals = span > 0 ? min(6, max(0, 2 - Int(floor(log10(span))))) : 3
            return values.map { clean(String(format: "%.\(decimals)f", $0)) }
        }
        let digits = span > 0 ? min(6, max(1, Int(ceil(log10(m / (span / 2)) - 1e-9)))) : 3   // resolve the label step span/2
        return values.map { clean(String(format: "%.\(digits)e", $0)) }
    }

    /// "-0.000" → "0.000": a negative zero from rounding reads as a sign error.
    private static func clean(_ s: String) -> String {
        if s.hasPrefix("-"), !s.dropFirst().contains(where: { "123456789".contains($0) }) { return String(s.dropFirst()) }
        return s
    }

    /// Viridis (matplotlib's default colour map, van der Walt & Smith), sampled at 11 equally
    /// spaced points and linearly interpolated; t is clamped to [0, 1].
    static func viridis(_ t: Double) -> (UInt8, UInt8, UInt8) {
        interpolate(viridisStops, t)
    }

    /// Blue–white–red diverging map (ColorBrewer RdBu, reversed: matplotlib's "RdBu_r"), 11
    /// stops linearly interpolated; diverging(0.5) is the near-white centre; t clamped to [0, 1].
    static func diverging(_ t: Double) -> (UInt8, UInt8, UInt8) {
        interpolate(divergingStops, t)
    }

    static func interpolate(_ stops: [(Int, Int, Int)], _ t: Double) -> (UInt8, UInt8, UInt8) {
        let x = min(max(t.isNaN ? 0 : t, 0), 1) * Double(stops.count - 1)
        let k = min(Int(x), stops.count - 2), f = x - Double(k)
        let a = stops[k], b = stops[k + 1]
        func mix(_ p: Int, _ q: Int) -> UInt8 { UInt8((Double(p) + f * Double(q - p)).rounded()) }
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }

    /// RdBu_r: #053061 (most negative) … #f7f7f7 (0) … #67001f (most positive).
    static let divergingStops: [(Int, Int, Int)] = [
        (5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240),
        (247, 247, 247), (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43),
        (103, 0, 31),
    ]

    /// viridis(0), viridis(0.1), …, viridis(1) as 8-bit RGB (#440154 … #fde725).
    static let viridisStops: [(Int, Int, Int)] = [
        (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142),
        (33, 145, 140), (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38),
        (253, 231, 37),
    ]
}

/// A 5 × 7 bitmap font: digits, letters, the punctuation of numbers and units, a few Greek
/// letters. Unknown characters draw as `?`.
enum Font {
    /// Seven rows, each the low 5 bits (bit 4 = leftmost column).
    static func glyph(_ c: Character) -> [UInt8] {
        glyphs[c] ?? glyphs["?"]!
    }

    private static let glyphs: [Character: [UInt8]] = {
        var g: [Character: [UInt8]] = [:]
        for (chars, pattern) in table {
            let rows = pattern.split(separator: " ").map { row in
                row.reduce(UInt8(0)) { ($0 << 1) | ($1 == "#" ? 1 : 0) }
            }
            precondition(rows.count == 7, "glyph \(chars) needs 7 rows")
            for c in chars { g[c] = rows }
        }
        return g
    }()

    /// Characters → ". # # # ." rows, top to bottom.
    private static let table: [(String, String)] = [
        (" ", "..... ..... ..... ..... ..... ..... ....."),
        ("0", ".###. #...# #..## #.#.# ##..# #...# .###."),
        ("1", "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."),
        ("2", ".###. #...# ....# ...#. ..#.. .#... #####"),
        ("3", "##### ...#. ..#.. ...#. ....# #...# .###."),
        ("4", "...#. ..##. .#.#. #..#. ##### ...#. ...#."),
        ("5", "##### #.... ####. ....# ....# #...# .###."),
        ("6", "..##. .#... #.... ####. #...# #...# .###."),
        ("7", "##### ....# ...#. ..#.. .#... .#... .#..."),
        ("8", ".###. #...# #...# .###. #...# #...# .###."),
        ("9", ".###. #...# #...# .#### ....# ...#. .##.."),
        ("A", ".###. #...# #...# ##### #...# #...# #...#"),
        ("B", "####. #...# #...# ####. #...# #...# ####."),
        ("C", ".###. #...# #.... #.... #.... #...# .###."),
        ("D", "###.. #..#. #...# #...# #...# #..#. ###.."),
        ("E", "##### #.... #.... ####. #.... #.... #####"),
        ("F", "##### #.... #.... ####. #.... #.... #...."),
        ("G", ".###. #...# #.... #.### #...# #...# .####"),
        ("H", "#...# #...# #...# ##### #...# #...# #...#"),
        ("I", ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
        ("J", "..### ...#. ...#. ...#. ...#. #..#. .##.."),
        ("K", "#...# #..#. #.#.. ##... #.#.. #..#. #...#"),
        ("L", "#.... #.... #.... #.... #.... #.... #####"),
        ("M", "#...# ##.## #.#.# #.#.# #...# #...# #...#"),
        ("N", "#...# #...# ##..# #.#.# #..## #...# #...#"),
        ("O", ".###. #...# #...# #...# #...# #...# .###."),
        ("P", "####. #...# #...# ####. #.... #.... #...."),
        ("Q", ".###. #...# #...# #...# #.#.# #..#. .##.#"),
        ("R", "####. #...# #...# ####. #.#.. #..#. #...#"),
        ("S", ".#### #.... #.... .###. ....# ....# ####."),
        ("T", "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
        ("U", "#...# #...# #...# #...# #...# #...# .###."),
        ("V", "#...# #...# #...# #...# #...# .#.#. ..#.."),
        ("W", "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."),
        ("X", "#...# #...# .#.#. ..#.. .#.#. #...# #...#"),
        ("Y", "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."),
        ("Z", "##### ....# ...#. ..#.. .#... #.... #####"),
        ("a", "..... ..... .###. ....# .#### #...# .####"),
        ("b", "#.... #.... #.##. ##..# #...# #...# ####."),
        ("c", "..... ..... .###. #.... #.... #...# .###."),
        ("d", "....# ....# .##.# #..## #...# #...# .####"),
        ("e", "..... ..... .###. #...# ##### #.... .###."),
        ("f", "..##. .#..# .#... ###.. .#... .#... .#..."),
        ("g", "..... ..... .#### #...# .#### ....# .###."),
        ("h", "#.... #.... #.##. ##..# #...# #...# #...#"),
        ("i", "..#.. ..... .##.. ..#.. ..#.. ..#.. .###."),
        ("j", "...#. ..... ..##. ...#. ...#. #..#. .##.."),
        ("k", "#.... #.... #..#. #.#.. ##... #.#.. #..#."),
        ("l", ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
        ("m", "..... ..... ##.#. #.#.# #.#.# #...# #...#"),
        ("n", "..... ..... #.##. ##..# #...# #...# #...#"),
        ("o", "..... ..... .###. #...# #...# #...# .###."),
        ("p", "..... ..... ####. #...# ####. #.... #...."),
        ("q", "..... ..... .##.# #..## .#### ....# ....#"),
        ("r", "..... ..... #.##. ##..# #.... #.... #...."),
        ("s", "..... ..... .###. #.... .###. ....# ####."),
        ("t", ".#... .#... ###.. .#... .#... .#..# ..##."),
        ("u", "..... ..... #...# #...# #...# #..## .##.#"),
        ("v", "..... ..... #...# #...# #...# .#.#. ..#.."),
        ("w", "..... ..... #...# #...# #.#.# #.#.# .#.#."),
        ("x", "..... ..... #...# .#.#. ..#.. .#.#. #...#"),
        ("y", "..... ..... #...# #...# .#### ....# .###."),
        ("z", "..... ..... ##### ...#. ..#.. .#... #####"),
        (".", "..... ..... ..... ..... ..... .##.. .##.."),
        (",", "..... ..... ..... ..... .##.. ..#.. .#..."),
        ("-−", "..... ..... ..... ##### ..... ..... ....."),
        ("+", "..... ..#.. ..#.. ##### ..#.. ..#.. ....."),
        ("_", "..... ..... ..... ..... ..... ..... #####"),
        ("(", "...#. ..#.. .#... .#... .#... ..#.. ...#."),
        (")", ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."),
        ("[", ".###. .#... .#... .#... .#... .#... .###."),
        ("]", ".###. ...#. ...#. ...#. ...#. ...#. .###."),
        ("/", "..... ....# ...#. ..#.. .#... #.... ....."),
        (":", "..... .##.. .##.. ..... .##.. .##.. ....."),
        ("%", "##... ##..# ...#. ..#.. .#... #..## ...##"),
        ("=", "..... ..... ##### ..... ##### ..... ....."),
        ("'", "..#.. ..#.. ..... ..... ..... ..... ....."),
        ("|", "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
        ("*", "..... ..#.. #.#.# .###. #.#.# ..#.. ....."),
        ("^", "..#.. .#.#. #...# ..... ..... ..... ....."),
        ("?", ".###. #...# ....# ...#. ..#.. ..... ..#.."),
        ("°", ".##.. #..#. #..#. .##.. ..... ..... ....."),
        ("±", "..#.. ..#.. ##### ..#.. ..#.. ..... #####"),
        ("×", "..... #...# .#.#. ..#.. .#.#. #...# ....."),
        ("µμ", "..... ..... #...# #...# #..## ###.# #...."),
        ("Å", "..#.. ..... .###. #...# ##### #...# #...#"),
        ("ε", "..... ..... .###. #.... .##.. #.... .###."),
        ("ω", "..... ..... .#.#. #...# #.#.# #.#.# .#.#."),
        ("χ", "..... ..... #...# .#..# ..##. .#..# #...#"),
        ("σ", "..... ..... .#### #..#. #...# #...# .###."),
        ("θ", ".###. #...# #...# ##### #...# #...# .###."),
        ("⁻", "..... ###.. ..... ..... ..... ..... ....."),
        ("¹", ".#... ##... .#... ###.. ..... ..... ....."),
        ("²", "##... ..#.. .#... ###.. ..... ..... ....."),
    ]
}
