import Foundation
import DonutPhysics
import DonutNN

/// Ground-truth parameter maps of a simulated scan, row-major (rows × cols).
public struct PhantomMaps: Equatable, Sendable {
    public var rows: Int
    public var cols: Int
    /// Strain ε (dimensionless).
    public var strain: [Double]
    /// In-plane tilt ω (deg).
    public var tiltLRDeg: [Double]
    /// Out-of-plane tilt χ (deg).
    public var tiltUDDeg: [Double]
    /// Thickness t (Å).
    public var thicknessA: [Double]

    public func parameters(at i: Int) -> FrameParameters {
        FrameParameters(strain: strain[i], tiltLRDeg: tiltLRDeg[i], tiltUDDeg: tiltUDDeg[i], thicknessA: thicknessA[i])
    }
    public var count: Int { rows * cols }
}

/// Built-in phantoms for simulated scans.
public enum Phantom: String, CaseIterable, Sendable {
    /// The published 64×64 phantom (DONUT paper): a diagonal strain wave and tilt steps
    /// blurred by logistic edges of width 0.07.
    case paper
    /// Sharp tilt domains (Voronoi cells, each with its own ω and χ) over a smooth strain
    /// field: tests that walls stay sharp and that tilt does not leak into strain.
    case domains
    /// A thickness gradient across the scan with a gentle strain and tilt background.
    case thickness

    /// Ground truth for a rows × cols scan. `paper` is defined on 64×64 but is evaluated on
    /// any size with the same coordinates (linspace over the same intervals).
    public func maps(rows: Int, cols: Int, config: DonutConfig, seed: UInt64) -> PhantomMaps {
        switch self {
        case .paper: return Self.paperMaps(rows: rows, cols: cols, thicknessA: config.sample.thicknessA)
        case .domains: return Self.domainMaps(rows: rows, cols: cols, config: config, seed: seed)
        case .thickness: return Self.thicknessMaps(rows: rows, cols: cols, config: config)
        }
    }

    /// S(A, X, Y, θ) = A / (1 + exp(−(X cos θ − Y sin θ)/0.07)), θ in degrees.
    static func step(_ a: Double, _ x: Double, _ y: Double, _ thetaDeg: Double) -> Double {
        let th = thetaDeg * .pi / 180
        return a / (1 + exp(-(x * cos(th) - y * sin(th)) / 0.07))
    }

    static func paperMaps(rows: Int, cols: Int, thicknessA: Double) -> PhantomMaps {
        let x = linspace(-1, 1, cols), y = linspace(-1, 1, rows)
        let x1 = linspace(-3, -1, cols), x2 = linspace(-1.5, 0.5, cols), x3 = linspace(1, 3, cols)
        let y12 = linspace(-1, 1, rows), y3 = linspace(1, -1, rows)
        var m = PhantomMaps(rows: rows, cols: cols, strain: [], tiltLRDeg: [], tiltUDDeg: [],
                            thicknessA: .init(repeating: thicknessA, count: rows * cols))
        for r in 0..<rows {
            for c in 0..<cols {
                m.strain.append(5e-4 * sin(2 * .pi * (x[c] + y[r]) / 0.4))
                func tilt(_ a: Double, _ offset: Double) -> Double {
                    step(a, x1[c], y12[r], 60) - step(a, x2[c], y12[r], 60) - step(a, x3[c], y3[r], 120) + offset
                }
                m.tiltLRDeg.append(tilt(0.01, 0.005))
                m.tiltUDDeg.append(tilt(0.015, 0.0075))
            }
        }
        return m
    }

    /// Voronoi tilt domains (one per ~150 pixels, at least 4) with ω, χ drawn uniformly in
    /// 70 % of the configured ranges; strain = a sum of three random plane waves with total
    /// amplitude 60 % of the strain range's half-width, centred in the range.
    static func domainMaps(rows: Int, cols: Int, config: DonutConfig, seed: UInt64) -> PhantomMaps {
        var rng = SplitMix64.seeded(seed, stream: 0xD0_4A1E)
        let r = config.ranges
        func inner(_ range: [Double], _ f: Double) -> Double {
            let mid = (range[0] + range[1]) / 2, half = (range[1] - range[0]) / 2
            return mid + f * half * (2 * rng.uniform() - 1)
        }
        let domains = max(4, rows * cols / 150)
        let centres = (0..<domains).map { _ in (rng.uniform() * Double(rows), rng.uniform() * Double(cols)) }
        let omega = (0..<domains).map { _ in inner(r.tiltLRDeg, 0.7) }
        let chi = (0..<domains).map { _ in inner(r.tiltUDDeg, 0.7) }
        let strainMid = (r.strain[0] + r.strain[1]) / 2, strainHalf = (r.strain[1] - r.strain[0]) / 2
        let waves = (0..<3).map { _ in
            (kx: (rng.uniform() * 2 - 1) * 2 * .pi / Double(max(cols, 8)) * 2,
             ky: (rng.uniform() * 2 - 1) * 2 * .pi / Double(max(rows, 8)) * 2,
             phase: rng.uniform() * 2 * .pi)
        }
        var m = PhantomMaps(rows: rows, cols: cols, strain: [], tiltLRDeg: [], tiltUDDeg: [],
                            thicknessA: .init(repeating: config.sample.thicknessA, count: rows * cols))
        for i in 0..<rows {
            for j in 0..<cols {
                var best = 0, bestD = Double.infinity
                for (d, c) in centres.enumerated() {
                    let dd = (Double(i) + 0.5 - c.0) * (Double(i) + 0.5 - c.0) + (Double(j) + 0.5 - c.1) * (Double(j) + 0.5 - c.1)
                    if dd < bestD { bestD = dd; best = d }
                }
                m.tiltLRDeg.append(omega[best]); m.tiltUDDeg.append(chi[best])
                let s = waves.map { sin($0.kx * Double(j) + $0.ky * Double(i) + $0.phase) }.reduce(0, +) / 3
                m.strain.append(strainMid + 0.6 * strainHalf * s)
            }
        }
        return m
    }

    /// Thickness from 10 % to 90 % of the configured thickness range, linear along x;
    /// strain a gentle ramp along y; tilts a smooth bump.
    static func thicknessMaps(rows: Int, cols: Int, config: DonutConfig) -> PhantomMaps {
        let r = config.ranges
        let x = linspace(0, 1, cols), y = linspace(0, 1, rows)
        var m = PhantomMaps(rows: rows, cols: cols, strain: [], tiltLRDeg: [], tiltUDDeg: [], thicknessA: [])
        let t0 = r.thicknessA[0] + 0.1 * (r.thicknessA[1] - r.thicknessA[0])
        let t1 = r.thicknessA[0] + 0.9 * (r.thicknessA[1] - r.thicknessA[0])
        for i in 0..<rows {
            for j in 0..<cols {
                m.thicknessA.append(t0 + (t1 - t0) * x[j])
                m.strain.append(r.strain[0] + (r.strain[1] - r.strain[0]) * (0.35 + 0.3 * y[i]))
                let bump = exp(-((x[j] - 0.5) * (x[j] - 0.5) + (y[i] - 0.5) * (y[i] - 0.5)) / 0.08)
                m.tiltLRDeg.append(r.tiltLRDeg[0] + (r.tiltLRDeg[1] - r.tiltLRDeg[0]) * (0.4 + 0.2 * bump))
                m.tiltUDDeg.append(r.tiltUDDeg[0] + (r.tiltUDDeg[1] - r.tiltUDDeg[0]) * (0.6 - 0.2 * bump))
            }
        }
        return m
    }
}
