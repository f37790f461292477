import ArgumentParser
import Foundation
import DonutBLAS
import DonutPhysics
import DonutNN
import DonutCore

/// `donut bench …`: speed figures as ratios to floors measured in the same run.
/// Release builds only (`swift run -c release donut bench …`); nothing here is a test.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure speed: forward model, library generation, correlation fit, smooth-vs-box agreement.",
        subcommands: [BenchForward.self, BenchLibrary.self, BenchFit.self, BenchSmoothVsBox.self, BenchTrain.self, BenchInfer.self, BenchRefine.self, BenchScaling.self])
}

/// Seconds of wall time taken by `body`, best of `repeats`.
func bestTime(repeats: Int = 3, _ body: () -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<repeats {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
    }
    return best
}

func machineSummary() -> String {
    let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
        .split(separator: "\n").first { $0.hasPrefix("model name") }
        .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
    return "\(cpu), \(ProcessInfo.processInfo.activeProcessorCount) cores, OpenBLAS \(OpenBLASCore.current) kernels, \(blasThreadCount) threads"
}

/// sgemm rate (GFLOP/s) of this machine on a square-ish product of the given size.
func sgemmRate(m: Int, n: Int, k: Int) -> Double {
    let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
    var c = [Float](repeating: 0, count: m * n)
    let t = bestTime {
        Float.gemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: k, beta: 0, c: &c, ldc: n)
    }
    return 2 * Double(m) * Double(n) * Double(k) / t / 1e9
}

/// The published preset with `steps` points per axis, its model, and the whole library in memory.
func presetLibrary(steps: Int, profile: Profile) -> (DonutConfig, LibraryGrid, ForwardModel<Float>, [Float]) {
    var config = DonutConfig.srio3LSAT002
    config.library = LibrarySteps(strain: steps, tiltLR: steps, tiltUD: steps, thickness: 1)
    let grid = LibraryGrid(config: config)
    let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: profile)
    var library = [Float](repeating: 0, count: grid.count * model.pixelCount)
    library.withUnsafeMutableBufferPointer { model.library(grid, entries: 0..<grid.count, into: $0) }
    return (config, grid, model, library)
}

struct BenchForward: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "forward", abstract: "Forward-model patterns/s (batched GEMM form).")
    @Option(help: "Patterns per batch.") var batch = 256
    func run() {
        let geometry = DiffractionGeometry(config: .srio3LSAT002)
        let n = geometry.frameSize, m = geometry.gridSize
        var rng = SplitMix64(seed: 1)
        let params = (0..<batch).map { _ in
            FrameParameters(strain: 0.01 * rng.uniform() - 0.005, tiltLRDeg: 0.1 * rng.uniform() - 0.05,
                            tiltUDDeg: 0.2 * rng.uniform() - 0.1, thicknessA: 117)
        }
        print("machine: \(machineSummary())")
        let flopsPerPattern = 2.0 * Double(n * m * m + n * m * n)
        let floor = sgemmRate(m: batch * n, n: m, k: m)
        print("sgemm rate on (\(batch * n)×\(m))·(\(m)×\(m)): \(String(format: "%.1f", floor)) GFLOP/s")
        for profile in Profile.allCases {
            let model = ForwardModel<Float>(geometry: geometry, profile: profile)
            var out = [Float](repeating: 0, count: batch * n * n)
            let t = bestTime { out.withUnsafeMutableBufferPointer { model.patterns(params, into: $0) } }
            let rate = Double(batch) / t
            print(String(format: "%@ model, Float, batch %d: %.0f patterns/s (%.2f ms/pattern), GEMM share of time at the sgemm rate: %.0f%%",
                         profile.rawValue, batch, rate, 1e3 / rate, 100 * flopsPerPattern * rate / (floor * 1e9)))
        }
        let smooth = ForwardModel<Float>(geometry: geometry, profile: .smooth)
        var pattern = [Float](repeating: 0, count: n * n), jac = [Float](repeating: 0, count: 4 * n * n)
        let tj = bestTime { for p in params.prefix(64) { smooth.jacobian(p, pattern: &pattern, jacobian: &jac) } }
        print(String(format: "smooth model pattern + 4-parameter Jacobian: %.0f frames/s", 64 / tj))
        // The physics head of training: normalised forward + backward to (ε, ω, χ, t), batched.
        let layer = PhysicsLayer<Float>(model: smooth, capacity: batch)
        var out = [Float](repeating: 0, count: batch * n * n), upstream = [Float](repeating: 1e-3, count: batch * n * n)
        var grads = [Double](repeating: 0, count: 4 * batch)
        let targets = [Double](repeating: 1000, count: batch)
        for i in stride(from: 0, to: upstream.count, by: 7) { upstream[i] = -2e-3 }
        let tf = bestTime { layer.forward(params, count: batch, targetSums: targets, out: &out) }
        let tb = bestTime { layer.backward(upstream: upstream, gradients: &grads) }
        print(String(format: "physics layer (training head), batch %d: forward %.0f frames/s, backward %.0f frames/s, both %.3f ms/frame",
                     batch, Double(batch) / tf, Double(batch) / tb, 1e3 * (tf + tb) / Double(batch)))
    }
}

struct BenchLibrary: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "library", abstract: "Time the published 41³ box-model library in memory (no file).")
    @Option(help: "Steps per axis.") var steps = 41
    func run() {
        var config = DonutConfig.srio3LSAT002
        config.library = LibrarySteps(strain: steps, tiltLR: steps, tiltUD: steps, thickness: 1)
        let grid = LibraryGrid(config: config)
        let model = ForwardModel<Float>(geometry: DiffractionGeometry(config: config), profile: .box)
        let n = model.frameSize, m = model.gridSize
        var out = [Float](repeating: 0, count: grid.count * n * n)
        print("machine: \(machineSummary())")
        let t = bestTime(repeats: 2) { out.withUnsafeMutableBufferPointer { model.library(grid, entries: 0..<grid.count, into: $0) } }
        let flops = Double(grid.count) * 2 * Double(n * m * n) + Double(steps * steps) * 2 * Double(m * m * n)
        let floor = sgemmRate(m: steps * n, n: n, k: m)
        print(String(format: "library %d entries (%d³): %.2f s, %.0f patterns/s, %.1f GFLOP/s of GEMM work; sgemm rate on its GEMM shape (%d×%d)·(%d×%d): %.1f GFLOP/s → GEMM floor %.2f s (ratio %.2f)",
                     grid.count, steps, t, Double(grid.count) / t, flops / t / 1e9, steps * n, m, m, n, floor, flops / (floor * 1e9),
                     t / (flops / (floor * 1e9))))
        print(String(format: "checksum (sum of all patterns): %.6e", out.reduce(0.0) { $0 + Double($1) }))
    }
}

struct BenchFit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fit", abstract: "Correlation fit ms/frame vs this machine's sgemm floor (2·4096·N_library FLOP per frame).",
        usage: "donut bench fit [<options>]")
    @Option(help: "Steps per library axis.") var steps = 41
    @Option(help: "Frames to fit.") var frames = 512
    @Option(help: "Frames per batch.") var batch = 256
    @Option(help: "Library entries per GEMM chunk.") var chunk = 2048
    func run() {
        let (config, grid, model, library) = presetLibrary(steps: steps, profile: .box)
        let np = model.pixelCount
        let fit = CorrelationFit(grid: grid, entries: 0..<grid.count, patterns: library, pixelCount: np, chunkEntries: chunk)
        let maps = Phantom.paper.maps(rows: 64, cols: 64, config: config, seed: 0)
        var scan = [Float](repeating: 0, count: frames * np)
        scan.withUnsafeMutableBufferPointer {
            ScanSimulation.frames(of: maps, range: 0..<frames, model: model, peakPhotons: 7, seed: 1, into: $0)
        }
        print("machine: \(machineSummary())")
        // Floor: the fit's GEMM alone, F (batch × 4096) · Lᵀ (4096 × N), same library, same frames.
        var c = [Float](repeating: 0, count: batch * grid.count)
        let tFloor = bestTime(repeats: 2) {
            var s = 0
            while s < frames {
                let b = min(batch, frames - s)
                scan.withUnsafeBufferPointer { f in
                    Float.gemm(transA: false, transB: true, m: b, n: grid.count, k: np, alpha: 1, a: f.baseAddress! + s * np, lda: np,
                               b: library, ldb: np, beta: 0, c: &c, ldc: grid.count)
                }
                s += b
            }
        }
        let run = CorrelationFitRun(frameCount: frames, batch: batch)
        var result = FrameResults(frameRange: 0..<0)
        let tFit = bestTime(repeats: 2) {
            result = run.run(fit: fit, keep: 0..<frames,
                             readFrames: { r in Array(scan[(r.lowerBound * np)..<(r.upperBound * np)]) }, allreduceSum: { _ in })
        }
        let flopsPerFrame = 2.0 * Double(np) * Double(grid.count)
        // A second, stricter floor: the same FLOPs at this machine's best sgemm rate (large square product).
        let peak = sgemmRate(m: 2048, n: 2048, k: 2048)
        let tPeak = flopsPerFrame * Double(frames) / (peak * 1e9)
        print(String(format: "fit: %.3f ms/frame (%.1f GFLOP/s effective), %d of %d frames valid",
                     1e3 * tFit / Double(frames), flopsPerFrame * Double(frames) / tFit / 1e9,
                     result.valid.reduce(0) { $0 + Int($1) }, frames))
        print(String(format: "  vs the fit's own GEMM as one call, F(%d×%d)·Lᵀ(%d×%d) at %.1f GFLOP/s: %.3f ms/frame → ratio %.2f (target ≤ 1.2)",
                     batch, np, np, grid.count, flopsPerFrame * Double(frames) / tFloor / 1e9, 1e3 * tFloor / Double(frames), tFit / tFloor))
        print(String(format: "  vs peak sgemm (2048³ at %.1f GFLOP/s): %.3f ms/frame → ratio %.2f",
                     peak, 1e3 * tPeak / Double(frames), tFit / tPeak))
    }
}

struct BenchSmoothVsBox: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smooth-vs-box",
        abstract: "Normalised correlation of the smooth model with the box model over a library, for several σ.")
    @Option(help: "Steps per library axis.") var steps = 21
    @Option(parsing: .upToNextOption, help: "σ values (Å⁻¹); default: the config's and neighbours.") var sigma: [Double] = []
    func run() {
        let (config, grid, box, reference) = presetLibrary(steps: steps, profile: .box)
        let np = box.pixelCount
        let sigmas = sigma.isEmpty ? [2e-4, 3e-4, config.model.smoothSigmaInvA, 4.5e-4, 5e-4, 6e-4] : sigma
        print("library \(steps)³ over the preset ranges; box half-width \(config.model.boxHalfWidthInvA) Å⁻¹")
        for s in sigmas {
            var c = config
            c.model.smoothSigmaInvA = s
            let smooth = ForwardModel<Float>(geometry: DiffractionGeometry(config: c), profile: .smooth)
            var out = [Float](repeating: 0, count: grid.count * np)
            out.withUnsafeMutableBufferPointer { smooth.library(grid, entries: 0..<grid.count, into: $0) }
            var corr = [Double](), totals = [Double]()
            for e in 0..<grid.count {
                var ab = 0.0, aa = 0.0, bb = 0.0, total = 0.0
                for i in (e * np)..<((e + 1) * np) {
                    let a = Double(reference[i]), b = Double(out[i])
                    ab += a * b; aa += a * a; bb += b * b; total += b
                }
                corr.append(ab / (aa * bb).squareRoot()); totals.append(total)
            }
            print(String(format: "σ = %.4e Å⁻¹: correlation mean %.5f, min %.5f; total intensity max/min %.2f",
                         s, corr.reduce(0, +) / Double(corr.count), corr.min()!, totals.max()! / totals.min()!))
        }
    }
}

struct BenchRefine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refine", abstract: "Per-frame physics refinement frames/s (Poisson LM, analytic Jacobian).",
        usage: "donut bench refine [<options>]",
        discussion: """
        Frames of the domains phantom at --peak photons under the smooth model, refined from starts \
        offset by (3e-4, 0.003°, −0.005°) from the truth, on one thread and on all BLAS threads (fixed \
        frame partition). Also times one pattern + Jacobian on the reference path (Double, per-element \
        exp/sin) and on the fast path refinement uses (Float, recurrences), in the same run.
        """)
    @Option(help: "Frames to refine.") var frames = 1024
    @Option(help: "Iteration cap (trial steps per frame).") var iterations = PhysicsRefinement.defaultMaxIterations
    @Option(help: "Peak photons per frame.") var peak = 7.0
    @Flag(help: "Also fit the thickness.") var thickness = false

    func run() {
        let config = DonutConfig.srio3LSAT002
        let geometry = DiffractionGeometry(config: config)
        let model = ForwardModel<Float>(geometry: geometry, profile: .smooth)
        let cols = max(1, frames / 8), count = 8 * cols, np = model.pixelCount
        let maps = Phantom.domains.maps(rows: 8, cols: cols, config: config, seed: 1)
        var scan = [Float](repeating: 0, count: count * np)
        scan.withUnsafeMutableBufferPointer { ScanSimulation.frames(of: maps, range: 0..<count, model: model, peakPhotons: peak, seed: 1, into: $0) }
        let starts = (0..<count).map { f -> FrameParameters in
            var s = maps.parameters(at: f)
            s.strain += 3e-4; s.tiltLRDeg += 0.003; s.tiltUDDeg -= 0.005
            return s
        }
        print("machine: \(machineSummary())")
        let reference = ForwardModel<Double>(geometry: geometry, profile: .smooth)
        var pd = [Double](repeating: 0, count: np), jd = [Double](repeating: 0, count: 4 * np)
        var pf = [Float](repeating: 0, count: np), jf = [Float](repeating: 0, count: 4 * np)
        let sample = Array(starts.prefix(32))
        let (tRef, tFast) = serialBLAS {
            (bestTime { for p in sample { reference.jacobian(p, pattern: &pd, jacobian: &jd) } } / Double(sample.count),
             bestTime { for p in sample { model.smoothPatternAndJacobian(p, pattern: &pf, jacobian: &jf, thickness: thickness) } } / Double(sample.count))
        }
        print(String(format: "pattern + Jacobian, one thread: reference (Double, exp/sin per element) %.0f µs, fast (Float, recurrences) %.0f µs: %.1f×",
                     1e6 * tRef, 1e6 * tFast, tRef / tFast))
        let refinement = PhysicsRefinement(config: config, fitThickness: thickness, maxIterations: iterations)
        let skip = [Bool](repeating: false, count: count)
        for threads in Array(Set([1, Parallel.threads])).sorted() {
            let helpers = (1..<threads).map { _ in refinement.copy() }
            var results: [PhysicsRefinement.Result?] = []
            var cpu = Double.infinity
            let t = bestTime(repeats: 2) {
                let c0 = CommunicationClock.processCPUSeconds()
                results = scan.withUnsafeBufferPointer { refinement.refine(frames: $0, from: starts, skip: skip, helpers: helpers) }
                cpu = min(cpu, CommunicationClock.processCPUSeconds() - c0)
            }
            let used = results.reduce(0) { $0 + ($1?.iterations ?? 0) }
            print(String(format: "physics refinement, %d thread(s): %.0f frames/s wall, %.0f frames per CPU-second, %.2f trial steps (pattern + Jacobian each, plus 1 at the start) per frame (cap %d), %d frames at %.0f peak photons; target ≥ 2,000 frames/s on 2 cores",
                         threads, Double(count) / t, Double(count) / cpu, Double(used) / Double(count), iterations, count, peak))
        }
    }
}
