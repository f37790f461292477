import Foundation
import DonutPhysics
import DonutBLAS

/// Maps the network's latent z ∈ (−a, a), a = 1.7159 (the scaled tanh's range), to physical
/// parameters inside the configured ranges, and back:
///
///     ε, ω, χ:  θ = mid + half·z/a                      (linear over the range)
///     t:        t = exp(log t₀ + (z/a + 1)/2·log(t₁/t₀))  (log scale: thickness is positive and
///                                                         its effect on the fringes ∝ 1/t)
///
/// With thickness not predicted, t is the sample's nominal thickness.
public struct LatentMapping: Sendable, Equatable {
    public static let amplitude = 1.7159
    public let strain: (mid: Double, half: Double)
    public let tiltLR: (mid: Double, half: Double)
    public let tiltUD: (mid: Double, half: Double)
    public let logThickness: (low: Double, span: Double)
    public let nominalThickness: Double
    public let predictsThickness: Bool

    public init(config: DonutConfig, predictThickness: Bool) {
        let r = config.ranges
        func centre(_ range: [Double]) -> (Double, Double) { ((range[0] + range[1]) / 2, (range[1] - range[0]) / 2) }
        strain = centre(r.strain); tiltLR = centre(r.tiltLRDeg); tiltUD = centre(r.tiltUDDeg)
        logThickness = (log(r.thicknessA[0]), log(r.thicknessA[1] / r.thicknessA[0]))
        nominalThickness = config.sample.thicknessA
        predictsThickness = predictThickness
    }

    public var latentCount: Int { predictsThickness ? 4 : 3 }

    public static func == (a: LatentMapping, b: LatentMapping) -> Bool {
        a.strain == b.strain && a.tiltLR == b.tiltLR && a.tiltUD == b.tiltUD && a.logThickness == b.logThickness
            && a.nominalThickness == b.nominalThickness && a.predictsThickness == b.predictsThickness
    }

    /// Physical parameters of latent `z` (latentCount values).
    @inline(__always)
    public func parameters<T: GEMMScalar>(_ z: UnsafePointer<T>) -> FrameParameters {
        let inv = 1 / Self.amplitude
        let t = predictsThickness ? exp(logThickness.low + (Double(z[3]) * inv + 1) / 2 * logThickness.span) : nominalThickness
        return FrameParameters(strain: strain.mid + strain.half * Double(z[0]) * inv,
                               tiltLRDeg: tiltLR.mid + tiltLR.half * Double(z[1]) * inv,
                               tiltUDDeg: tiltUD.mid + tiltUD.half * Double(z[2]) * inv, thicknessA: t)
    }

    /// ∂L/∂z from ∂L/∂θ (ε, ω, χ, t), added into `dz` (latentCount values).
    @inline(__always)
    public func addLatentGradient<T: GEMMScalar>(_ dTheta: UnsafePointer<Double>, parameters p: FrameParameters, into dz: UnsafeMutablePointer<T>) {
        let a = Self.amplitude
        dz[0] += T(dTheta[0] * strain.half / a)
        dz[1] += T(dTheta[1] * tiltLR.half / a)
        dz[2] += T(dTheta[2] * tiltUD.half / a)
        if predictsThickness { dz[3] += T(dTheta[3] * p.thicknessA * logThickness.span / (2 * a)) }
    }

    /// The latent that maps to `p` (clamped just inside the open range), e.g. for labels.
    public func latent(of p: FrameParameters) -> [Double] {
        let a = Self.amplitude, edge = 0.999_999
        func clamp(_ u: Double) -> Double { min(max(u, -edge), edge) * a }
        var z = [clamp((p.strain - strain.mid) / strain.half), clamp((p.tiltLRDeg - tiltLR.mid) / tiltLR.half),
                 clamp((p.tiltUDDeg - tiltUD.mid) / tiltUD.half)]
        if predictsThickness { z.append(clamp(2 * (log(p.thicknessA) - logThickness.low) / logThickness.span - 1)) }
        return z
    }
}
