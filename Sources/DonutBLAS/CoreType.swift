import Foundation
import CBLAS

/// OpenBLAS kernel selection.
///
/// Debian 12's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not recognise recent Xeons (e.g. the
/// Sapphire Rapids of our CI machines, reported as "Intel(R) Xeon(R) Processor") and falls
/// back to its generic "Prescott" SSE3 kernels: sgemm runs at ~39 GFLOP/s instead of
/// ~260 on two cores (measured with `donut bench forward`). The kernel is chosen when the
/// library loads, from `OPENBLAS_CORETYPE`, so the fix has to happen before the process
/// starts: `donut` re-executes itself once with the core type the CPU's flags support.
public enum OpenBLASCore {
    /// The kernel family OpenBLAS chose ("Prescott", "Haswell", "SkylakeX", …).
    public static var current: String {
        openblas_get_corename().map { String(cString: $0) } ?? "unknown"
    }

    /// The best core type this CPU supports, from /proc/cpuinfo flags (nil if unknown).
    public static func supportedByCPU(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> String? {
        guard let flagsLine = cpuinfo?.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }

    /// Core type to re-execute with, or nil when the current choice is fine: OpenBLAS fell
    /// back to a generic core although the CPU supports a better one, and the user did not
    /// set `OPENBLAS_CORETYPE` themselves.
    public static func betterCoreType(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        guard environment["OPENBLAS_CORETYPE"] == nil else { return nil }
        let generic: Set<String> = ["Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom", "Katmai", "Coppermine", "Northwood", "unknown"]
        guard generic.contains(current), let best = supportedByCPU() else { return nil }
        return best
    }

    /// Re-executes this program with `OPENBLAS_CORETYPE` set when `betterCoreType()` says
    /// so. Call first thing in `main`, before MPI or threads start. Returns if nothing to do
    /// or if exec fails (the run continues on the slow kernels).
    public static func reexecWithBetterCoreIfNeeded() {
        guard let core = betterCoreType() else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        let args = CommandLine.arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cArgs.append(nil)
        execv("/proc/self/exe", &cArgs)
        // exec failed: carry on with whatever OpenBLAS chose.
        unsetenv("OPENBLAS_CORETYPE")
    }
}
