/// Why a measured frame cannot be analysed. A bad frame becomes a NaN pixel with
/// `valid = 0` in the maps; it never stops the run.
public enum FrameProblem: String, Sendable, CaseIterable {
    case nonFinite = "NaN or infinite counts"
    case negative = "negative counts"
    case empty = "no counts (all-zero frame)"

    /// The first problem of `frame`, or nil when it can be analysed.
    public static func inspect(_ frame: UnsafeBufferPointer<Float>) -> FrameProblem? {
        var total: Float = 0
        for v in frame {
            if !v.isFinite { return .nonFinite }
            if v < 0 { return .negative }
            total += v
        }
        return total > 0 ? nil : .empty
    }
}
