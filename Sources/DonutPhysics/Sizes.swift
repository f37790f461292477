import Foundation

/// Sizes computed from numbers a user supplies (config steps, file shapes, `--rows`,
/// `--batch`): multiplied with overflow detection and compared with the machine's memory
/// before anything is allocated, so a hostile number is an error naming it — never an
/// arithmetic-overflow trap, a failed allocation or a process killed by the kernel.
public enum Sizes {
    /// a₁·a₂·…, or nil when it overflows `Int` or a factor is negative.
    public static func product(_ factors: [Int]) -> Int? {
        var p = 1
        for f in factors {
            guard f >= 0 else { return nil }
            let (r, overflow) = p.multipliedReportingOverflow(by: f)
            guard !overflow else { return nil }
            p = r
        }
        return p
    }

    /// The machine's physical memory (bytes).
    public static var physicalMemory: Int { Int(clamping: ProcessInfo.processInfo.physicalMemory) }

    /// "3.2 GiB", "512 MiB", "12 KiB".
    public static func describe(bytes: Int) -> String {
        let b = Double(bytes)
        if b >= Double(1 << 30) { return String(format: "%.1f GiB", b / Double(1 << 30)) }
        if b >= Double(1 << 20) { return String(format: "%.0f MiB", b / Double(1 << 20)) }
        return String(format: "%.0f KiB", b / 1024)
    }

    /// Why `factors` (name, value) × `bytesPerElement` bytes cannot be held in memory, or nil.
    /// `what` says what would be allocated ("the library patterns"). The limit is the
    /// physical memory (a larger allocation would swap or be killed).
    public static func memoryProblem(_ what: String, factors: [(String, Int)], bytesPerElement: Int,
                                     limit: Int = physicalMemory) -> String? {
        let spelled = factors.map { "\($0.1) \($0.0)" }.joined(separator: " × ") + " × \(bytesPerElement) bytes"
        if let bad = factors.first(where: { $0.1 < 0 }) { return "\(bad.0) must not be negative (got \(bad.1))" }
        guard let count = product(factors.map(\.1)), let bytes = product([count, bytesPerElement]) else {
            return "\(what) would need \(spelled), which overflows a 64-bit size"
        }
        guard bytes <= limit else {
            return "\(what) would need \(spelled) = \(describe(bytes: bytes)), more than this machine's memory (\(describe(bytes: limit)))"
        }
        return nil
    }
}
