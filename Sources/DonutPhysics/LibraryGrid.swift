import Foundation

/// One point in parameter space, in the units users read on the maps.
public struct FrameParameters: Equatable, Sendable {
    /// Out-of-plane lattice strain ε = Δc/c (dimensionless).
    public var strain: Double
    /// In-plane tilt ω (deg).
    public var tiltLRDeg: Double
    /// Out-of-plane tilt χ (deg).
    public var tiltUDDeg: Double
    /// Film thickness t (Å).
    public var thicknessA: Double
    public init(strain: Double, tiltLRDeg: Double, tiltUDDeg: Double, thicknessA: Double) {
        self.strain = strain; self.tiltLRDeg = tiltLRDeg; self.tiltUDDeg = tiltUDDeg
        self.thicknessA = thicknessA
    }
}

/// `numpy.linspace(a, b, n)`: n points from a to b, both ends included (n = 1 gives [a]).
public func linspace(_ a: Double, _ b: Double, _ n: Int) -> [Double] {
    guard n > 1 else { return [a] }
    let step = (b - a) / Double(n - 1)
    return (0..<n).map { $0 == n - 1 ? b : a + Double($0) * step }
}

/// The simulated library's parameter axes. Entries are stored with flat index
/// `((iε·nω + iω)·nχ + iχ)·nt + it`, i.e. shape (nε, nω, nχ[, nt]) in C order, the
/// layout of `/entry/library/patterns` (nε, nω, nχ[, nt], H, W).
public struct LibraryGrid: Equatable, Sendable {
    public var strain: [Double]
    public var tiltLRDeg: [Double]
    public var tiltUDDeg: [Double]
    /// Thickness axis (Å); one value (the sample thickness) when there is no thickness axis.
    public var thicknessA: [Double]
    /// True when thickness is a library axis (a 4th dimension in the file).
    public var hasThicknessAxis: Bool

    public init(strain: [Double], tiltLRDeg: [Double], tiltUDDeg: [Double], thicknessA: [Double],
                hasThicknessAxis: Bool) {
        self.strain = strain; self.tiltLRDeg = tiltLRDeg; self.tiltUDDeg = tiltUDDeg
        self.thicknessA = thicknessA; self.hasThicknessAxis = hasThicknessAxis
    }

    /// linspace over `config.ranges` with `config.library` steps; a thickness axis only
    /// when `library.thickness > 1`.
    public init(config: DonutConfig) {
        let r = config.ranges, s = config.library
        strain = linspace(r.strain[0], r.strain[1], s.strain)
        tiltLRDeg = linspace(r.tiltLRDeg[0], r.tiltLRDeg[1], s.tiltLR)
        tiltUDDeg = linspace(r.tiltUDDeg[0], r.tiltUDDeg[1], s.tiltUD)
        hasThicknessAxis = s.thickness > 1
        thicknessA = hasThicknessAxis ? linspace(r.thicknessA[0], r.thicknessA[1], s.thickness)
                                      : [config.sample.thicknessA]
    }

    /// Axis lengths as stored: [nε, nω, nχ] or [nε, nω, nχ, nt].
    public var shape: [Int] {
        hasThicknessAxis ? [strain.count, tiltLRDeg.count, tiltUDDeg.count, thicknessA.count]
                         : [strain.count, tiltLRDeg.count, tiltUDDeg.count]
    }
    /// Number of library entries.
    public var count: Int { strain.count * tiltLRDeg.count * tiltUDDeg.count * thicknessA.count }

    /// Axis indices (iε, iω, iχ, it) of a flat entry index.
    public func indices(of flat: Int) -> (strain: Int, tiltLR: Int, tiltUD: Int, thickness: Int) {
        let nt = thicknessA.count, nc = tiltUDDeg.count, nw = tiltLRDeg.count
        return (flat / (nt * nc * nw), (flat / (nt * nc)) % nw, (flat / nt) % nc, flat % nt)
    }

    public func parameters(at flat: Int) -> FrameParameters {
        let i = indices(of: flat)
        return FrameParameters(strain: strain[i.strain], tiltLRDeg: tiltLRDeg[i.tiltLR],
                               tiltUDDeg: tiltUDDeg[i.tiltUD], thicknessA: thicknessA[i.thickness])
    }
}
