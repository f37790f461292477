import XCTest
import DonutBLAS
import DonutNN

final class BatchNormTests: XCTestCase {
    /// Batch 1 and 3, channels 1 and 3, odd sizes, and 3 values per channel (1×1 images).
    static let shapes = imageShapes + [(3, 2, 1, 1)]

    /// Training mode: the finite differences go through the batch mean and variance (every x
    /// moves μ and σ²), so this checks the full formula, for x, γ and β.
    func testTrainingBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 20)
        for (b, c, h, w) in Self.shapes {
            let n = b * c * h * w
            let x = Buffer(randomValues(n, &rng, -1, 2)), g = Buffer(randomValues(n, &rng))
            let gamma = Buffer(randomValues(c, &rng, 0.5, 1.5)), beta = Buffer(randomValues(c, &rng))
            let y = Buffer<Double>(repeating: 0, count: n)
            let mean = Buffer<Double>(repeating: 0, count: c), invStd = Buffer<Double>(repeating: 0, count: c)
            let runMean = Buffer<Double>(repeating: 0, count: c), runVar = Buffer<Double>(repeating: 1, count: c)
            let loss = {
                BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: invStd.pointer,
                                            runningMean: runMean.pointer, runningVar: runVar.pointer,
                                            input: x.const, gamma: gamma.const, beta: beta.const,
                                            batch: b, channels: c, height: h, width: w)
                return dot(g.const, y.const, n)
            }
            _ = loss()
            let dx = Buffer<Double>(repeating: 7, count: n)
            let dGamma = Buffer<Double>(repeating: 0.5, count: c), dBeta = Buffer<Double>(repeating: 0.5, count: c)
            BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: g.const,
                                         input: x.const, gamma: gamma.const, mean: mean.const, invStd: invStd.const,
                                         batch: b, channels: c, height: h, width: w)
            checkAgainstCentralDifferences("batchnorm training (\(b), \(c), \(h), \(w))", [
                FDVariable("input", x, dx.array),
                FDVariable("gamma", gamma, dGamma.array.map { $0 - 0.5 }),
                FDVariable("beta", beta, dBeta.array.map { $0 - 0.5 }),
            ], loss: loss)
        }
    }

    /// Eval mode: running statistics are constants.
    func testEvalBackwardMatchesCentralDifferences() {
        var rng = SplitMix64(seed: 21)
        for (b, c, h, w) in Self.shapes {
            let n = b * c * h * w
            let x = Buffer(randomValues(n, &rng, -1, 2)), g = Buffer(randomValues(n, &rng))
            let gamma = Buffer(randomValues(c, &rng, 0.5, 1.5)), beta = Buffer(randomValues(c, &rng))
            let runMean = Buffer(randomValues(c, &rng)), runVar = Buffer(randomValues(c, &rng, 0.3, 2))
            let y = Buffer<Double>(repeating: 0, count: n)
            let loss = {
                BatchNorm2d.forwardEval(output: y.pointer, input: x.const, gamma: gamma.const, beta: beta.const,
                                        runningMean: runMean.const, runningVar: runVar.const,
                                        batch: b, channels: c, height: h, width: w)
                return dot(g.const, y.const, n)
            }
            let dx = Buffer<Double>(repeating: 7, count: n)
            let dGamma = Buffer<Double>(repeating: 0.5, count: c), dBeta = Buffer<Double>(repeating: 0.5, count: c)
            BatchNorm2d.backwardEval(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: g.const,
                                     input: x.const, gamma: gamma.const, runningMean: runMean.const, runningVar: runVar.const,
                                     batch: b, channels: c, height: h, width: w)
            checkAgainstCentralDifferences("batchnorm eval (\(b), \(c), \(h), \(w))", [
                FDVariable("input", x, dx.array),
                FDVariable("gamma", gamma, dGamma.array.map { $0 - 0.5 }),
                FDVariable("beta", beta, dBeta.array.map { $0 - 0.5 }),
            ], loss: loss)
        }
    }

    /// Two training steps on (N 2, C 2, H 1, W 2) from running mean 0, var 1 (PyTorch's start),
    /// momentum 0.1, the running variance fed with the unbiased variance (M = 4, divisor 3).
    /// Step 1: channel 0 = {1, 2, 3, 4}: μ 2.5, Σ(x − μ)² = 5; channel 1 = {0, 0, 2, −2}: μ 0, Σ = 8.
    /// Step 2: channel 0 = {2, 4, 6, 8}: μ 5, Σ = 20; channel 1 = {1, 1, 1, 5}: μ 2, Σ = 12.
    func testRunningStatisticsAfterTwoStepsByHand() {
        runRunningStatistics(Double.self, tolerance: 1e-14)
        runRunningStatistics(Float.self, tolerance: 1e-6)
    }

    private func runRunningStatistics<T: GEMMScalar>(_: T.Type, tolerance: Double) {
        // (n, c, w) order: n0c0, n0c1, n1c0, n1c1
        let step1: [T] = [1, 2, 0, 0, 3, 4, 2, -2]
        let step2: [T] = [2, 4, 1, 1, 6, 8, 1, 5]
        let gamma = Buffer<T>([1, 1]), beta = Buffer<T>([0, 0])
        let runMean = Buffer<T>([0, 0]), runVar = Buffer<T>([1, 1])
        let mean = Buffer<T>(repeating: 0, count: 2), invStd = Buffer<T>(repeating: 0, count: 2)
        let y = Buffer<T>(repeating: 0, count: 8)
        for step in [step1, step2] {
            let x = Buffer(step)
            BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: invStd.pointer,
                                        runningMean: runMean.pointer, runningVar: runVar.pointer,
                                        input: x.const, gamma: gamma.const, beta: beta.const,
                                        batch: 2, channels: 2, height: 1, width: 2)
            keepAlive(x)
        }
        let expectedMean = [0.9 * (0.9 * 0 + 0.1 * 2.5) + 0.1 * 5,
                            0.9 * (0.9 * 0 + 0.1 * 0) + 0.1 * 2]
        let expectedVar = [0.9 * (0.9 * 1 + 0.1 * 5.0 / 3) + 0.1 * 20.0 / 3,
                           0.9 * (0.9 * 1 + 0.1 * 8.0 / 3) + 0.1 * 12.0 / 3]
        XCTAssertEqual(expectedMean[0], 0.725, accuracy: 1e-15)   // the hand arithmetic, spelled out
        XCTAssertEqual(expectedVar[0], 1.626_666_666_666_666_7, accuracy: 1e-15)
        XCTAssertEqual(expectedVar[1], 1.45, accuracy: 1e-15)
        assertClose(runMean.array, expectedMean, atol: tolerance, rtol: tolerance, "running mean \(T.self)")
        assertClose(runVar.array, expectedVar, atol: tolerance, rtol: tolerance, "running var \(T.self)")
        // Normalisation uses the biased variance: channel 1 of step 2 has σ² = 12/4 = 3.
        let expectedY1 = [1.0, 1, 1, 5].map { ($0 - 2) / (3 + 1e-5).squareRoot() }
        assertClose([y[2], y[3], y[6], y[7]], expectedY1, atol: tolerance, rtol: tolerance, "normalised output \(T.self)")
        assertClose(mean.array, [5, 2], atol: tolerance, rtol: tolerance, "cached mean")
        assertClose(invStd.array, [1 / (5 + 1e-5).squareRoot(), 1 / (3 + 1e-5).squareRoot()], atol: tolerance, rtol: tolerance, "cached 1/σ")
    }

    /// Eval mode by hand: y = γ(x − m)/√(v + ε) + β.
    func testEvalForwardByHand() {
        let x = Buffer<Double>([1, 3, -1, 0]), y = Buffer<Double>(repeating: .nan, count: 4)
        let gamma = Buffer<Double>([2, 0.5]), beta = Buffer<Double>([0.1, -1])
        let rm = Buffer<Double>([1, -2]), rv = Buffer<Double>([4, 0.25])
        BatchNorm2d.forwardEval(output: y.pointer, input: x.const, gamma: gamma.const, beta: beta.const,
                                runningMean: rm.const, runningVar: rv.const, batch: 1, channels: 2, height: 1, width: 2)
        let e0 = 1 / (4 + 1e-5).squareRoot(), e1 = 1 / (0.25 + 1e-5).squareRoot()
        assertClose(y.array, [0.1, 2 * 2 * e0 + 0.1, 0.5 * 1 * e1 - 1, 0.5 * 2 * e1 - 1], atol: 1e-15, rtol: 1e-14, "batchnorm eval")
    }

    /// Synchronised BatchNorm: two replicas holding rows 0..<2 and 2..<4 of a batch of 4,
    /// their statistics summed by a reducer, reproduce the one-batch forward (outputs, cached
    /// statistics, running statistics) and backward (dx rows; dγ, dβ as the replicas' shares
    /// summed), with and without the fused ReLU. The one-batch path is the one checked against
    /// central differences above.
    func testSynchronisedReplicasReproduceTheWholeBatch() {
        var rng = SplitMix64(seed: 23)
        let (b, c, h, w) = (4, 3, 5, 3), plane = 5 * 3
        for relu in [false, true] {
            let n = b * c * plane
            let x = Buffer(randomValues(n, &rng, -1, 2)), g = Buffer(randomValues(n, &rng))
            let gamma = Buffer(randomValues(c, &rng, 0.5, 1.5)), beta = Buffer(randomValues(c, &rng))
            @Sendable func run(rows: Range<Int>, reduce: BatchNorm2d.Reducer?) -> Replica {
                let count = rows.count * c * plane, first = rows.lowerBound * c * plane
                let xi = Buffer(Array(x.array[first ..< first + count])), gi = Buffer(Array(g.array[first ..< first + count]))
                let y = Buffer<Double>(repeating: 0, count: count)
                let mean = Buffer<Double>(repeating: 0, count: c), invStd = Buffer<Double>(repeating: 0, count: c)
                let runMean = Buffer<Double>(repeating: 0.2, count: c), runVar = Buffer<Double>(repeating: 1, count: c)
                BatchNorm2d.forwardTraining(output: y.pointer, mean: mean.pointer, invStd: invStd.pointer, runningMean: runMean.pointer,
                                            runningVar: runVar.pointer, input: xi.const, gamma: gamma.const, beta: beta.const,
                                            batch: rows.count, channels: c, height: h, width: w, relu: relu, synchronise: reduce)
                let dx = Buffer<Double>(repeating: 7, count: count)
                let dGamma = Buffer<Double>(repeating: 0, count: c), dBeta = Buffer<Double>(repeating: 0, count: c)
                BatchNorm2d.backwardTraining(dInput: dx.pointer, dGamma: dGamma.pointer, dBeta: dBeta.pointer, dOutput: gi.const,
                                             input: xi.const, gamma: gamma.const, mean: mean.const, invStd: invStd.const,
                                             batch: rows.count, channels: c, height: h, width: w,
                                             reluOutput: relu ? y.const : nil, synchronise: reduce)
                return (y.array, mean.array, invStd.array, runMean.array + runVar.array, dx.array, dGamma.array, dBeta.array)
            }
            let whole = run(rows: 0..<4, reduce: nil)
            // Two replicas on two threads; the reducer sums their buffers in rank order (a barrier).
            let replicas = TwoReplicas()
            let group = DispatchGroup()
            for rank in 0..<2 {
                group.enter()
                Thread { replicas.set(rank, run(rows: (2 * rank)..<(2 * rank + 2), reduce: replicas.reducer(rank))); group.leave() }.start()
            }
            group.wait()
            let parts = replicas.parts
            let a = parts[0]!, bb = parts[1]!
            func close(_ u: [Double], _ v: [Double], _ what: String) {
                XCTAssertEqual(u.count, v.count, what)
                for (i, (p, q)) in zip(u, v).enumerated() { XCTAssertEqual(p, q, accuracy: 1e-12 * max(1, abs(p)), "\(what) [\(i)] relu \(relu)") }
            }
            close(a.y + bb.y, whole.y, "output")
            close(a.mean, whole.mean, "mean"); close(bb.invStd, whole.invStd, "1/σ")
            close(a.running, whole.running, "running statistics"); close(bb.running, whole.running, "running statistics (replica 1)")
            close(a.dx + bb.dx, whole.dx, "dx")
            close(zip(a.dGamma, bb.dGamma).map { $0 + $1 }, whole.dGamma, "dγ")
            close(zip(a.dBeta, bb.dBeta).map { $0 + $1 }, whole.dBeta, "dβ")
        }
    }
}

/// One replica's BatchNorm results: output, cached statistics, running statistics, gradients.
typealias Replica = (y: [Double], mean: [Double], invStd: [Double], running: [Double], dx: [Double], dGamma: [Double], dBeta: [Double])

/// Two replicas on threads: a reducer that sums both deposits in rank order, and their results.
final class TwoReplicas: @unchecked Sendable {
    private let condition = NSCondition()
    private var deposits: [[Double]?] = [nil, nil], round = 0, summed: [Double] = []
    private(set) var parts: [Replica?] = [nil, nil]

    func set(_ rank: Int, _ r: Replica) { condition.lock(); parts[rank] = r; condition.unlock() }

    func reducer(_ rank: Int) -> BatchNorm2d.Reducer {
        BatchNorm2d.Reducer { p, count in
            self.condition.lock(); defer { self.condition.unlock() }
            let mine = self.round
            self.deposits[rank] = Array(UnsafeBufferPointer(start: p, count: count))
            if let a = self.deposits[0], let b = self.deposits[1] {
                self.summed = zip(a, b).map { $0 + $1 }; self.deposits = [nil, nil]; self.round += 1; self.condition.broadcast()
            } else {
                while self.round == mine { self.condition.wait() }
            }
            for i in 0..<count { p[i] = self.summed[i] }
        }
    }
}

/// Results of the two replica threads of `TwoReplicas.run`, in rank order.
final class ReplicaResults<R>: @unchecked Sendable {
    let body: (Int, BatchNorm2d.Reducer) -> R
    var results: [R?] = [nil, nil]
    let lock = NSLock()
    init(_ body: @escaping (Int, BatchNorm2d.Reducer) -> R) { self.body = body }
}

extension TwoReplicas {
    /// body(rank, reducer) for ranks 0 and 1 on two threads at once (each synchronised reduction
    /// waits for the other replica), results in rank order.
    static func run<R>(_ body: @escaping (Int, BatchNorm2d.Reducer) -> R) -> (R, R) {
        let replicas = TwoReplicas(), box = ReplicaResults(body), group = DispatchGroup()
        for rank in 0..<2 {
            group.enter()
            Thread {
                let r = box.body(rank, replicas.reducer(rank))
                box.lock.lock(); box.results[rank] = r; box.lock.unlock()
                group.leave()
            }.start()
        }
        group.wait()
        return (box.results[0]!, box.results[1]!)
    }
}
