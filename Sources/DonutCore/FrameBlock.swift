/// A block of consecutive frames of a scan, as every method (correlation fit, network,
/// training losses, physics refinement, goodness of fit) consumes them: photon counts at
/// the model's frame size, which of those pixels were measured, and how bright the beam
/// was for each frame.
///
/// Why weights rather than zeros: a masked pixel (a detector gap, a dead or hot pixel, the
/// dtype's saturation sentinel 2ⁿ − 1, a NeXus `pixel_mask` entry) carries no information,
/// while a zero count is a measurement. Methods leave pixels of weight 0 out of their sums
/// (correlations, losses, likelihoods, deviances) instead of fitting a zero there. A binned
/// model pixel is excluded when any detector pixel of its bin is.
///
/// Why counts are not divided by the monitor here: Poisson statistics hold for the counts
/// as measured. A method that wants frames on a common intensity scale (the network's
/// input, the correlation fit) divides by `monitor`; the physics refinement scales its
/// model by it instead.
public struct FrameBlock: Sendable {
    /// Flat index (row·cols + col, raster order of the output maps) of the first frame.
    public var first: Int
    /// Number of frames in the block.
    public var count: Int
    /// Pixels per frame (frameSize²).
    public var pixelCount: Int
    /// Photon counts as measured, count × pixelCount, row-major; excluded pixels hold 0.
    public var counts: [Float]
    /// 1 = measured, 0 = excluded, count × pixelCount; nil when every pixel of every frame
    /// was measured.
    public var weights: [Float]?
    /// Incident intensity of each frame relative to the scan's reference level (1 = the
    /// reference, e.g. the monitor's median); nil when no monitor is known (all 1).
    public var monitor: [Double]?

    public init(first: Int, count: Int, pixelCount: Int, counts: [Float], weights: [Float]? = nil, monitor: [Double]? = nil) {
        precondition(counts.count == count * pixelCount, "counts hold \(counts.count) values for \(count) frames of \(pixelCount) pixels")
        precondition(weights.map { $0.count == counts.count } ?? true, "weights and counts differ in size")
        precondition(monitor.map { $0.count == count } ?? true, "monitor has a value per frame")
        self.first = first; self.count = count; self.pixelCount = pixelCount
        self.counts = counts; self.weights = weights; self.monitor = monitor
    }

    /// Frames `first ..< first + count` of the scan.
    public var range: Range<Int> { first..<(first + count) }
}
