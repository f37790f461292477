import Foundation
import DonutPhysics
import DonutNN
import DonutCore
import DonutIO

/// A raw detector to simulate a scan on (`donut simulate scan --detector eiger`): the
/// frames as a beamline writes them, to test everything that reads them.
public struct RawDetectorRequest {
    /// Sensor size (raw pixels).
    public var height = 514, width = 1030
    /// Monitor spread: each frame's incident intensity is 1 + a·u, u uniform in [−1, 1].
    public var monitorAmplitude = 0.2
    /// Hot pixels (1e6 counts in every frame): three inside the ROI, the rest outside.
    public var hotPixels = 5
    /// Serpentine acquisition (every second row backwards), else raster.
    public var serpentine = true
    /// Scan step (µm) of the positioners samx, samy.
    public var stepUM = 0.1
    /// Chunk compression: bitshuffle-LZ4 (Eiger file writers), gzip, or none.
    public var compression: [H5Filter] = [.bitshuffleLZ4]
    /// Write the NeXus pixel_mask (off: the same file with its mask removed).
    public var writeMask = true

    public init() {}
}

/// Simulates a phantom scan onto a raw detector (rank 0 writes; all ranks learn the
/// outcome): the SAME photon draws as `donut simulate scan` of the same phantom and seed,
/// written as a detector would have recorded them, so the raw file and the clean scan are a
/// paired comparison (what the raw path costs, not a new noise realisation). For each model
/// bin with expected count λ (the config's peak photons) and clean count c ~ Poisson(λ):
///
///     monitor m ≤ 1:  c′ ~ Binomial(c, m)            (thinning)
///     monitor m > 1:  c′ = c + Poisson((m − 1)·λ)    (more photons)
///
/// both exactly Poisson(m·λ), then c′ is split over the b×b raw pixels of the bin inside the
/// config's `instrument.roi` by a uniform multinomial (sequential binomials), which is the
/// law of b² independent Poisson(m·λ/b²) pixels given their sum. With monitor 1 everywhere,
/// the binned ROI holds exactly the clean frames. Gap pixels hold 2³² − 1, hot pixels 1e6.
/// Without noise, each raw pixel holds round(m·λ/b²). Collective.
public func simulateRawScan(_ ctx: RunContext, _ request: ScanSimulationRequest, detector: RawDetectorRequest) throws {
    ctx.log(rawScanAnnouncement(request, detector: detector) + " → \(request.outPath)")
    try writeRawScan(ctx, request, detector: detector)
    ctx.log("wrote \(request.outPath)")
}

/// "simulate scan: phantom paper 4×5 on a 514×1030 Eiger-like detector, …", the start of the
/// log line of `simulateRawScan`, whose callers name the files written.
func rawScanAnnouncement(_ request: ScanSimulationRequest, detector: RawDetectorRequest) -> String {
    let roi = request.config.instrument.roi
    return "simulate scan: phantom \(request.phantom.rawValue) \(request.rows)×\(request.cols) on a \(detector.height)×\(detector.width) Eiger-like detector, "
        + "ROI x \(roi.x) y \(roi.y) \(roi.width)×\(roi.height), \(detector.serpentine ? "serpentine" : "raster"), monitor ±\(Int(100 * detector.monitorAmplitude)) %"
}

/// `simulateRawScan` without its log lines: the Dectris layout writes a hidden single file
/// first, whose name must not appear in the log. Collective.
func writeRawScan(_ ctx: RunContext, _ request: ScanSimulationRequest, detector: RawDetectorRequest) throws {
    let cfg = request.config, rows = request.rows, cols = request.cols, seed = request.seed, path = request.outPath
    let roi = cfg.instrument.roi, b = cfg.instrument.binning, n = cfg.model.frameSize
    var layout = RawDetectorLayout.eiger(height: detector.height, width: detector.width)
    var failure = ""
    if ctx.comm.isRoot {
        do {
            guard roi.width == n * b, roi.height == n * b, roi.x >= 0, roi.y >= 0,
                  roi.x <= detector.width - roi.width, roi.y <= detector.height - roi.height else {
                throw ConfigError(key: "instrument.roi", "the ROI x \(roi.x) y \(roi.y) \(roi.width)×\(roi.height) must be \(n * b)×\(n * b) "
                                  + "and lie on the \(detector.height)×\(detector.width) detector")
            }
            // Hot pixels: three inside the ROI (off the gaps), the rest spread over the sensor.
            let mask0 = layout.pixelMask
            var hot: [Int] = []
            for (fy, fx) in [(0.3, 0.35), (0.55, 0.6), (0.7, 0.25), (0.1, 0.9), (0.85, 0.05), (0.5, 0.95), (0.2, 0.15)] {
                guard hot.count < detector.hotPixels else { break }
                let inside = hot.count < 3
                let y = inside ? roi.y + Int(fy * Double(roi.height)) : Int(fy * Double(detector.height))
                let x = inside ? roi.x + Int(fx * Double(roi.width)) : Int(fx * Double(detector.width))
                if mask0[y * detector.width + x] == 0 { hot.append(y * detector.width + x) }
            }
            layout.hotPixels = hot
            let maps = request.phantom.maps(rows: rows, cols: cols, config: cfg, seed: seed)
            let forward = ForwardModel<Float>(geometry: DiffractionGeometry(config: cfg), profile: request.profile)
            let geometry = ScanGeometry(rows: rows, cols: cols, order: detector.serpentine ? .serpentine : .raster, source: .declared)
            // Per file frame k: monitor, positions (map pixel fileIndex(k): the map is an involution).
            let monitor = (0..<(rows * cols)).map { k -> Double in
                var rng = SplitMix64.seeded(seed ^ 0x6d6f_6e69_746f_72, stream: UInt64(k))
                return 1 + detector.monitorAmplitude * rng.uniform(-1, 1)
            }
            let x = (0..<(rows * cols)).map { Double(geometry.fileIndex($0) % cols) * detector.stepUM }
            let y = (0..<(rows * cols)).map { Double($0 / cols) * detector.stepUM }
            let sentinel = UInt32.max, h = detector.height, w = detector.width
            var isGap = [Bool](repeating: false, count: h * w)
            for (p, m) in layout.pixelMask.enumerated() where m & 1 != 0 { isGap[p] = true }
            let frames = { (r: Int) throws -> [UInt32] in
                // λ of this row's map frames, then each file frame of the row in acquisition order.
                // λ and the clean scan's counts (the same draws as `simulate scan`) of this row.
                var lambda = [Float](repeating: 0, count: cols * n * n), counts = lambda
                let rowRange = (r * cols)..<((r + 1) * cols)
                lambda.withUnsafeMutableBufferPointer {
                    ScanSimulation.frames(of: maps, range: rowRange, model: forward,
                                          peakPhotons: cfg.noise.peakPhotons, seed: seed, noise: false, into: $0)
                }
                if request.noise {
                    counts.withUnsafeMutableBufferPointer {
                        ScanSimulation.frames(of: maps, range: rowRange, model: forward,
                                              peakPhotons: cfg.noise.peakPhotons, seed: seed, noise: true, into: $0)
                    }
                }
                var out = [UInt32](repeating: 0, count: cols * h * w)
                for j in 0..<cols {
                    let k = r * cols + j, mapIndex = geometry.fileIndex(k), c = mapIndex - r * cols
                    // Monitor and split draws: a stream of their own per map frame, independent of the clean draws.
                    var rng = SplitMix64.seeded(seed ^ 0x7261_775f_7370_6c74, stream: UInt64(mapIndex))
                    let base = j * h * w, m = monitor[k]
                    for yy in 0..<n {
                        for xx in 0..<n {
                            let bin = (c * n + yy) * n + xx, l = Double(lambda[bin])
                            var remaining: Double
                            if request.noise {
                                let clean = Double(counts[bin])
                                remaining = m <= 1 ? rng.binomial(clean, m) : clean + rng.poisson((m - 1) * l)
                            } else {
                                remaining = 0
                            }
                            for i in 0..<b {
                                for jj in 0..<b {
                                    let value: Double
                                    if request.noise {
                                        let left = Double(b * b - (i * b + jj))  // raw pixels of the bin still to fill
                                        value = rng.binomial(remaining, 1 / left); remaining -= value
                                    } else {
                                        value = (l * m / Double(b * b)).rounded()
                                    }
                                    out[base + (roi.y + yy * b + i) * w + roi.x + xx * b + jj] = UInt32(value)
                                }
                            }
                        }
                    }
                    for p in 0..<(h * w) where isGap[p] { out[base + p] = sentinel }
                    for p in hot { out[base + p] = layout.hotValue }
                }
                return out
            }
            var used = cfg
            used.instrument.roi = roi
            let provenance = ctx.provenance(method: "simulate-scan-\(request.phantom.rawValue)-eiger", config: ConfigFile.json(used), inputs: [],
                                            modelID: "phantom:\(request.phantom.rawValue) seed:\(seed) model:\(request.profile.rawValue) detector:eiger")
            try RawDetectorFileWriter.write(path: path, layout: layout, rows: rows, cols: cols, frames: frames,
                                            positions: (x, y), monitor: monitor.map { $0 * 1e5 },
                                            groundTruth: ["strain": maps.strain, "tilt_lr": maps.tiltLRDeg, "tilt_ud": maps.tiltUDDeg,
                                                          "thickness": maps.thicknessA],
                                            provenance: provenance, compression: detector.compression, writeMask: detector.writeMask,
                                            force: request.force)
        } catch {
            failure = "\(error)"
        }
    }
    failure = ctx.comm.broadcast(failure)
    guard failure.isEmpty else { throw RankFailure(message: failure) }
}
