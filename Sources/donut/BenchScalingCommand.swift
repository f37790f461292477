import ArgumentParser
import Foundation
import DonutNN
import DonutPhysics
import DonutCore
import DonutMPI
import DonutPipeline

/// `donut bench scaling`: the real data-parallel training step on the ranks it is launched
/// with (`mpirun -np N`, `OPENBLAS_NUM_THREADS=1`), and a model of larger jobs from it.
struct BenchScaling: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scaling",
        abstract: "Data-parallel training: samples/s on the launched ranks, allreduce share and bytes per step, efficiency model at 8/64/512 ranks.",
        usage: "donut bench scaling [<options>]   (under mpirun -np N)",
        discussion: """
        Run it once per rank count and compare; scripts/bench-scaling does np 1 and 2:
          OPENBLAS_NUM_THREADS=1 mpirun -np 2 .build/release/donut bench scaling
        The model: a step is compute T_c (measured on this rank) plus a ring allreduce of the \
        S-byte buffer, 2(n − 1)/n·S/B + 2(n − 1)·α, plus (synchronised BatchNorm) 3 small \
        allreduces per BatchNorm layer at 2·log₂(n)·α each; no overlap of communication with \
        compute (as implemented). T_c is this run's CPU time per step outside reductions (the \
        wall time on cores nobody else uses). Efficiency = T_c / step time. See docs/scaling.md.
        """)
    @Option(help: "Frames per step on each rank.") var batch = 16
    @Option(help: "Steps to time.") var steps = 30
    @Flag(help: "Synchronised BatchNorm (statistics over all ranks).") var syncBatchnorm = false
    @Option(help: "Fabric bandwidth for the model, Gb/s.") var fabricGbps = 100.0
    @Option(help: "Per-message latency for the model, µs.") var latencyUs = 2.0

    func run() throws {
        try RunContext.run { ctx in
            let comm = ctx.comm
            let config = DonutConfig.srio3LSAT002
            var training = TrainingConfig.donutPaper
            training.schedule.batchSize = batch; training.schedule.validationFraction = 0; training.schedule.epochs = 1_000_000
            let frames = 256 * comm.size
            let net = try DonutNetwork<Float>(settings: training.network, optimiser: training.optimiser, config: config, seed: 0)
            let parallel = comm.size == 1 ? DataParallel.single : DataParallel(
                rank: comm.rank, size: comm.size, sumFloats: { comm.allreduceSum($0, count: $1) },
                sumDoubles: { comm.allreduceSum(UnsafeMutableBufferPointer(start: $0, count: $1)) },
                allEqual: { comm.allEqual($0) }, synchronisedBatchNorm: syncBatchnorm, checkReplicas: false)
            let trainer = try Trainer(network: net, training: training, mode: .donut,
                                      data: TrainingData(measured: benchFrames(config, count: frames), measuredCount: frames, library: nil,
                                                         simulatedFraction: 0, peakPhotons: 7),
                                      parallel: parallel)
            let order = Array(0..<frames)
            for _ in 0..<3 { try trainer.trainStep(order: order) }   // warm-up
            comm.barrier()
            let c0 = trainer.clock.seconds, b0 = trainer.clock.bytes, r0 = trainer.clock.cpuSeconds
            let t0 = DispatchTime.now().uptimeNanoseconds, cpu0 = CommunicationClock.processCPUSeconds()
            for _ in 0..<steps { try trainer.trainStep(order: order) }
            let cpu = (CommunicationClock.processCPUSeconds() - cpu0) / Double(steps)
            let computeCPU = cpu - (trainer.clock.cpuSeconds - r0) / Double(steps)
            comm.barrier()
            let wall = comm.allreduceMax(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) / Double(steps)
            let inReduce = (trainer.clock.seconds - c0) / Double(steps)
            var shares = [inReduce, cpu, computeCPU]
            comm.allreduceSum(&shares)
            let meanReduce = shares[0] / Double(comm.size), meanCPU = shares[1] / Double(comm.size)
            let meanComputeCPU = shares[2] / Double(comm.size)
            let bytes = Double(trainer.clock.bytes - b0) / Double(steps)
            // The step's reduction buffer whatever the rank count: gradients, loss terms and stop
            // flag, and (per-rank BatchNorm) the running statistics.
            let gradientBytes = Double(4 * (trainer.network.store.count + (syncBatchnorm ? 0 : trainer.network.buffers.count) + 4))
            // The allreduce alone (ranks aligned by a barrier): transfer cost without waiting for a slower rank.
            var buffer = [Float](repeating: 1, count: Int(gradientBytes) / 4)
            var isolated = 0.0
            if comm.size > 1 {
                let reps = 50
                for k in 0..<(reps + 5) {
                    comm.barrier()
                    let s0 = DispatchTime.now().uptimeNanoseconds
                    buffer.withUnsafeMutableBufferPointer { comm.allreduceSum($0.baseAddress!, count: $0.count) }
                    if k >= 5 { isolated += Double(DispatchTime.now().uptimeNanoseconds - s0) * 1e-9 }
                }
                isolated = comm.allreduceMax(isolated / Double(reps))
            }
            guard comm.isRoot else { return }
            let samples = Double(comm.size * batch) / wall
            // The model's compute time: CPU time outside reductions (equals the wall time on
            // unshared cores; on a shared machine the wall time also counts other processes).
            let compute = meanComputeCPU
            print("machine: \(machineSummary())")
            print(String(format: "ranks %d, batch %d per rank (global %d), %@ BatchNorm, %d parameters",
                         comm.size, batch, comm.size * batch, syncBatchnorm ? "synchronised" : "per-rank", trainer.network.store.count))
            print(String(format: "samples/s %.1f (%.1f per rank), step %.2f ms", samples, samples / Double(comm.size), 1e3 * wall))
            // On a shared machine the wall time includes time other processes held the cores.
            print(String(format: "CPU per step per rank %.2f ms = %.0f%% of the wall time (< 100%%: the rank waited for a core or a message)",
                         1e3 * meanCPU, 100 * meanCPU / wall))
            print(String(format: "compute CPU per step per rank %.2f ms (outside reductions): %.1f samples per CPU-second per rank",
                         1e3 * meanComputeCPU, Double(batch) / meanComputeCPU))
            print(String(format: "allreduce share of a step %.1f%% (%.3f ms in reductions, incl. waiting for the slower rank); bytes per step %.0f (reduction buffer %.0f)",
                         100 * meanReduce / wall, 1e3 * meanReduce, bytes, gradientBytes))
            if comm.size > 1 {
                print(String(format: "isolated allreduce of %.0f bytes: %.1f µs (%.2f GB/s algorithm bandwidth, shared memory)",
                             gradientBytes, 1e6 * isolated, gradientBytes / isolated / 1e9))
            }
            // Model of larger jobs from this rank's compute time and the buffer size.
            let bandwidth = fabricGbps * 1e9 / 8, alpha = latencyUs * 1e-6
            let batchNormLayers = training.network.encoderChannels.count + max(training.network.encoderChannels.count - 1, 0)
            print(String(format: "model (%.0f Gb/s, α = %.1f µs, compute %.2f ms/step at batch %d, S = %.0f bytes, no overlap):",
                         fabricGbps, latencyUs, 1e3 * compute, batch, gradientBytes))
            for n in [8, 64, 512] {
                let nd = Double(n)
                var comm = 2 * (nd - 1) / nd * gradientBytes / bandwidth + 2 * (nd - 1) * alpha
                if syncBatchnorm { comm += Double(3 * batchNormLayers) * 2 * log2(nd) * alpha }
                print(String(format: "  %4d ranks: allreduce %.3f ms, efficiency %.1f%%, %.0f samples/s",
                             n, 1e3 * comm, 100 * compute / (compute + comm), nd * Double(batch) / (compute + comm)))
            }
        }
    }
}

