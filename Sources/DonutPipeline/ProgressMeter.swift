import Foundation

/// ProgressMeter of one long phase (library entries, fitted frames, training steps, scans), the
/// one progress reporter of every pipeline. Rank 0 prints on stderr; other ranks print
/// nothing. Three modes:
///
/// - `.bar` (stderr is a terminal, isatty(2)): one line redrawn in place at most 10× a second,
///   `fit frames [#######.........]  45%  1843/4096  310/s  ETA 7 s  <detail>`;
/// - `.lines` (a file or pipe: Slurm logs): a plain line each time another 10 % is done or
///   30 s have passed since the last line, and at the end;
/// - `.off` (`--quiet`).
///
/// Counts are global: a rank that works on its own share reports `share` items of a global
/// `total` and the display scales its count by total/share (ranks get equal shares ±1), so
/// the lines are the same on every rank count. ETA = elapsed · (total − done) / (done − already).
public final class ProgressMeter {
    public enum Mode: Sendable { case bar, lines, off }

    public let what: String
    public let total: Int
    let share: Int
    /// Items done before this process started (a resumed run): not counted in rate and ETA.
    let already: Int
    let mode: Mode
    let unit: String
    let write: (String) -> Void
    let now: () -> Date
    let started: Date
    /// Seconds since the command started, for the time stamp of plain lines.
    let commandStart: Date
    private var lastPrint: Date
    private var lastDecile = 0
    private var finished = false
    private(set) var lastDone = 0

    /// Console state shared by the bar and `RunContext.log`: a log line first clears a bar
    /// drawn in place (and the next update redraws it).
    nonisolated(unsafe) static var barOnScreen = false

    init(what: String, total: Int, share: Int? = nil, already: Int = 0, unit: String, mode: Mode, commandStart: Date,
         now: @escaping () -> Date = Date.init, write: @escaping (String) -> Void = ProgressMeter.standardError) {
        self.what = what; self.total = max(total, 0); self.share = max(share ?? total, 1); self.unit = unit
        self.already = already; lastDone = already
        self.mode = mode; self.now = now; self.write = write; self.commandStart = commandStart
        started = now(); lastPrint = started
    }

    /// The mode for this process: off when `quiet` or not rank 0, a bar on a terminal, else lines.
    static func mode(quiet: Bool, isRoot: Bool) -> Mode {
        if quiet || !isRoot { return .off }
        return isatty(2) != 0 ? .bar : .lines
    }

    static func standardError(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }

    /// `done` of this rank's `share` items are finished; `detail` (loss, epoch …) is shown
    /// after the count. Cheap when nothing is printed: call it as often as convenient.
    public func update(_ done: Int, detail: @autoclosure () -> String = "") {
        guard mode != .off, !finished else { return }
        lastDone = done
        let t = now()
        let global = displayed(done)
        let complete = global >= total
        switch mode {
        case .off: return
        case .bar:
            guard complete || t.timeIntervalSince(lastPrint) >= 0.1 || !ProgressMeter.barOnScreen else { return }
            lastPrint = t
            write("\r\u{1B}[K" + barLine(global, at: t, detail: detail()) + (complete ? "\n" : ""))
            ProgressMeter.barOnScreen = !complete
        case .lines:
            let decile = total > 0 ? Int(10 * Double(global) / Double(total)) : 10
            guard complete || decile > lastDecile || t.timeIntervalSince(lastPrint) >= 30 else { return }
            lastDecile = decile; lastPrint = t
            write(String(format: "[%7.2fs] ", t.timeIntervalSince(commandStart)) + plainLine(global, at: t, detail: detail()) + "\n")
        }
        if complete { finished = true }
    }

    /// Ends the phase where it is (a stop signal, an early exit): the last state on its own line.
    public func finish(detail: @autoclosure () -> String = "") {
        guard mode != .off, !finished else { return }
        finished = true
        let t = now(), global = displayed(lastDone)
        switch mode {
        case .bar: write("\r\u{1B}[K" + barLine(global, at: t, detail: detail()) + "\n"); ProgressMeter.barOnScreen = false
        case .lines: write(String(format: "[%7.2fs] ", t.timeIntervalSince(commandStart)) + plainLine(global, at: t, detail: detail()) + "\n")
        case .off: break
        }
    }

    /// This rank's count as a global one: done · total / share, exact at 0 and at the end.
    func displayed(_ done: Int) -> Int {
        share == total ? done : (done >= share ? total : Int((Double(done) * Double(total) / Double(share)).rounded()))
    }

    /// Seconds left at the average rate so far (items done by this process); nil before the first.
    func eta(_ done: Int, at t: Date) -> Double? {
        guard done > already else { return nil }
        return t.timeIntervalSince(started) * Double(total - done) / Double(done - already)
    }

    func rateText(_ done: Int, at t: Date) -> String {
        let seconds = t.timeIntervalSince(started)
        guard seconds > 0, done > already else { return "" }
        let rate = Double(done - already) / seconds
        return rate >= 10 ? String(format: "%.0f %@/s", rate, unit) : String(format: "%.2g %@/s", rate, unit)
    }

    static func duration(_ s: Double) -> String {
        if s < 60 { return String(format: "%.0f s", s) }
        if s < 3600 { return String(format: "%d min %02d s", Int(s) / 60, Int(s) % 60) }
        return String(format: "%d h %02d min", Int(s) / 3600, Int(s) % 3600 / 60)
    }

    func percent(_ done: Int) -> Int { total > 0 ? Int(100 * Double(done) / Double(total)) : 100 }

    func tail(_ done: Int, at t: Date, detail: String) -> String {
        var parts = [rateText(done, at: t)]
        if done >= total { parts.append("in " + ProgressMeter.duration(t.timeIntervalSince(started))) }
        else if let e = eta(done, at: t) { parts.append("ETA " + ProgressMeter.duration(e)) }
        if !detail.isEmpty { parts.append(detail) }
        return parts.filter { !$0.isEmpty }.joined(separator: "  ")
    }

    /// `fit frames: 1843/4096 (45%)  310 frames/s  ETA 7 s  detail`
    func plainLine(_ done: Int, at t: Date, detail: String) -> String {
        "\(what): \(done)/\(total) (\(percent(done))%)  " + tail(done, at: t, detail: detail)
    }

    /// `fit frames [#########...........]  45%  1843/4096  310 frames/s  ETA 7 s  detail`
    func barLine(_ done: Int, at t: Date, detail: String) -> String {
        let width = 24
        let filled = total > 0 ? min(width, width * done / total) : width
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        return "\(what) [\(bar)] \(String(format: "%3d", percent(done)))%  \(done)/\(total)  " + tail(done, at: t, detail: detail)
    }
}
