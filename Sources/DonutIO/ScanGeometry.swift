import DonutCore
import Foundation

// Scan geometry: where each frame of a file lies on the sample, and in which order the
// frames were taken. Maps are always written in raster order on the measured grid (row r,
// column c, x increasing with c as in the first row); files hold frames in the order they
// were acquired. A serpentine raster takes every second row backwards; reading it as a
// raster mirrors every second row of every map.

/// The order in which a scan's frames were acquired.
public enum ScanOrder: String, CaseIterable, Sendable, Codable {
    /// Row after row, every row in the same direction.
    case raster
    /// Row after row, every second row in the opposite direction ("snake").
    case serpentine
    /// Positions that form no regular grid (fly scans, spirals, jitter above a quarter
    /// step): maps are written per frame, with each frame's measured position.
    case scatter
}

/// How the order was established, recorded in the result file beside the order.
public enum ScanOrderSource: String, Sendable {
    case declared       // --scan-order / manifest key
    case positioners    // detected from per-frame positioner datasets
    case assumed        // nothing known: raster (the default)
}

/// The frames' arrangement: grid size, order, and per-map-pixel positions.
public struct ScanGeometry: Equatable, Sendable {
    public var rows: Int
    public var cols: Int
    public var order: ScanOrder
    public var source: ScanOrderSource
    /// Per-frame positions (µm) in map order (row·cols + col), when positioners were read.
    public var x: [Double]?
    public var y: [Double]?

    public init(rows: Int, cols: Int, order: ScanOrder, source: ScanOrderSource, x: [Double]? = nil, y: [Double]? = nil) {
        self.rows = rows; self.cols = cols; self.order = order; self.source = source; self.x = x; self.y = y
    }

    /// File frame index of map pixel `k` (row·cols + col).
    ///   raster: k;  serpentine: row·cols + (row odd ? cols − 1 − col : col);  scatter: k.
    public func fileIndex(_ k: Int) -> Int {
        guard order == .serpentine else { return k }
        let r = k / cols, c = k % cols
        return r % 2 == 1 ? r * cols + (cols - 1 - c) : k
    }

    /// Map index range `range` as runs of consecutive file frames: (first map index, first
    /// file index, count, step ±1). Serpentine rows read backwards are one run each.
    public func fileRuns(_ range: Range<Int>) -> [(map: Int, file: Int, count: Int, step: Int)] {
        var runs: [(map: Int, file: Int, count: Int, step: Int)] = []
        var k = range.lowerBound
        while k < range.upperBound {
            let f = fileIndex(k)
            var n = 1, step = 1
            if k + 1 < range.upperBound {
                step = fileIndex(k + 1) - f == -1 ? -1 : 1
                while k + n < range.upperBound, fileIndex(k + n) == f + step * n { n += 1 }
            }
            runs.append((k, f, n, step))
            k += n
        }
        return runs
    }

    /// The map layout: axes are the mean position of each grid row (y) and column (x) in µm
    /// when positions are known, else indices. Scatter scans are one row of N frames.
    public var layout: ScanLayout {
        guard let x, let y, order != .scatter else { return ScanLayout(rows: rows, cols: cols) }
        let ys = (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + y[r * cols + $1] } / Double(cols) }
        let xs = (0..<cols).map { c in (0..<rows).reduce(0.0) { $0 + x[$1 * cols + c] } / Double(rows) }
        return ScanLayout(rows: rows, cols: cols, y: ys, x: xs, axisUnits: "um")
    }

    /// Errors of geometry resolution (the caller names file and datasets).
    public struct Problem: Error, CustomStringConvertible { public var description: String }

    /// Resolves the geometry of `frameCount` frames from what is known, in this order of
    /// precedence: a declared order, positioners (µm, file order), a grid given by the data
    /// (4-D frames) or the user (`--scan-shape`). With none, a raster of the given grid.
    ///
    /// Detection from positioners (fast axis x, slow axis y): a new row starts where y moves
    /// by more than half its largest frame-to-frame step; rows must be of equal length; the
    /// direction of x in each row (sign of x_last − x_first) alternates → serpentine, is
    /// the same → raster. Frames off the grid by more than a quarter step (median spacing)
    /// in x or y, unequal rows or mixed directions → scatter.
    public static func resolve(frameCount n: Int, grid: (rows: Int, cols: Int)?, declared: ScanOrder?,
                               positions: (x: [Double], y: [Double])?) throws -> ScanGeometry {
        if let p = positions, p.x.count != n || p.y.count != n {
            throw Problem(description: "positioners have \(p.x.count) (x) and \(p.y.count) (y) values, the scan has \(n) frames")
        }
        if let g = grid, g.rows * g.cols != n {
            throw Problem(description: "scan shape \(g.rows)×\(g.cols) = \(g.rows * g.cols) frames, the dataset holds \(n)")
        }
        let detected = positions.map { detect(x: $0.x, y: $0.y) }
        var g = grid ?? detected.flatMap { $0.order == .scatter ? nil : ($0.rows, $0.cols) }
        if let d = detected, let gg = grid, d.order != .scatter, d.rows != gg.rows || d.cols != gg.cols {
            throw Problem(description: "positioners show \(d.rows) rows of \(d.cols) frames, the scan shape is \(gg.rows)×\(gg.cols)")
        }
        let order: ScanOrder, source: ScanOrderSource
        if let declared {
            if let d = detected, declared != .scatter, d.order != .scatter, d.order != declared {
                throw Problem(description: "scan order '\(declared.rawValue)' was declared but the positioners show a \(d.order.rawValue) scan")
            }
            order = declared; source = .declared
        } else if let d = detected {
            order = d.order; source = .positioners
        } else {
            order = .raster; source = .assumed
        }
        if order == .scatter { g = (1, n) }
        guard let grid = g else {
            throw Problem(description: "3-D frames (N, H, W) need the scan shape (rows, cols): give it (--scan-shape ROWSxCOLS, "
                          + "manifest key scan_shape) or positioner datasets (samx, samy) that show the grid")
        }
        var geometry = ScanGeometry(rows: grid.rows, cols: grid.cols, order: order, source: source)
        if let p = positions {
            let perm = (0..<n).map { geometry.fileIndex($0) }
            geometry.x = perm.map { p.x[$0] }
            geometry.y = perm.map { p.y[$0] }
        }
        return geometry
    }

    /// Rows, columns and order seen in positioners (file order).
    static func detect(x: [Double], y: [Double]) -> (rows: Int, cols: Int, order: ScanOrder) {
        let n = x.count
        guard n >= 2 else { return (1, n, .raster) }
        let dy = (1..<n).map { abs(y[$0] - y[$0 - 1]) }
        let threshold = 0.5 * (dy.max() ?? 0)
        var starts = [0]
        if threshold > 0 { for i in 1..<n where dy[i - 1] > threshold { starts.append(i) } }
        let rows = starts.count, cols = n / rows
        guard rows * cols == n, zip(starts, starts.dropFirst() + [n]).allSatisfy({ $1 - $0 == cols }) else {
            return (1, n, .scatter)
        }
        guard cols >= 2 else { return (rows, cols, .raster) }
        let directions = starts.map { x[$0 + cols - 1] - x[$0] > 0 }
        let order: ScanOrder
        if directions.allSatisfy({ $0 == directions[0] }) {
            order = .raster
        } else if rows >= 2, (1..<rows).allSatisfy({ directions[$0] != directions[$0 - 1] }) {
            order = .serpentine
        } else {
            return (1, n, .scatter)
        }
        // On a grid: each column's x and each row's y within a quarter of the median step.
        let g = ScanGeometry(rows: rows, cols: cols, order: order, source: .positioners)
        let xs = (0..<n).map { x[g.fileIndex($0)] }, ys = (0..<n).map { y[g.fileIndex($0)] }
        func median(_ v: [Double]) -> Double { let s = v.sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
        let colMean = (0..<cols).map { c in (0..<rows).reduce(0.0) { $0 + xs[$1 * cols + c] } / Double(rows) }
        let rowMean = (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + ys[r * cols + $1] } / Double(cols) }
        let xStep = median((1..<cols).map { abs(colMean[$0] - colMean[$0 - 1]) })
        let yStep = rows >= 2 ? median((1..<rows).map { abs(rowMean[$0] - rowMean[$0 - 1]) }) : .infinity
        for k in 0..<n {
            if abs(xs[k] - colMean[k % cols]) > 0.25 * xStep || abs(ys[k] - rowMean[k / cols]) > 0.25 * yStep {
                return (1, n, .scatter)
            }
        }
        return (rows, cols, order)
    }
}
