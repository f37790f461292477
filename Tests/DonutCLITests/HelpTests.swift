import XCTest
import Foundation

/// Every command's help reads well at 80 columns and in a wide terminal: no line longer
/// than the terminal, paragraphs wrapped once (by argument-parser, never by hand), and
/// test-only options out of sight.
final class HelpTests: XCTestCase {
    /// `donut <path> --help` at `columns` columns.
    func help(_ path: [String], columns: Int) throws -> String {
        let dir = FileManager.default.temporaryDirectory
        let r = try donut(path + ["--help"], in: dir, environment: ["COLUMNS": "\(columns)"])
        XCTAssertEqual(r.status, 0, r.all)
        return r.stdout
    }

    /// Every command path, found through the SUBCOMMANDS sections (entries indented by two).
    func commandPaths() throws -> [[String]] {
        var paths: [[String]] = [[]], queue: [[String]] = [[]]
        while let path = queue.popLast() {
            let text = try help(path, columns: 200)
            guard let start = text.range(of: "SUBCOMMANDS:\n") else { continue }
            for line in text[start.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
                if line.isEmpty { break }
                guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first,
                      name != "See" else { continue }
                paths.append(path + [String(name)]); queue.append(path + [String(name)])
            }
        }
        return paths
    }

    /// A paragraph wrapped once by a greedy wrapper at `width` never breaks a line where the
    /// next line's first word would still have fitted (argument-parser leaves the last column
    /// free). A hand-wrapped paragraph wrapped again
    /// leaves such breaks (a short fragment alone on a line, or lines far below the width).
    static func earlyBreaks(_ text: String, width: Int) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var found: [String] = []
        var inSubcommands = false
        for (a, b) in zip(lines, lines.dropFirst()) {
            if a.hasPrefix("SUBCOMMANDS:") { inSubcommands = true }
            if a.isEmpty { inSubcommands = false }
            let indent = { (s: String) in s.prefix { $0 == " " }.count }
            guard !inSubcommands, !a.trimmingCharacters(in: .whitespaces).isEmpty,
                  !b.trimmingCharacters(in: .whitespaces).isEmpty, indent(a) == indent(b) else { continue }
            let next = b.dropFirst(indent(b))
            guard !next.hasPrefix("-"), !a.hasSuffix(":"), let word = next.split(separator: " ").first else { continue }
            if a.count + 1 + word.count < width { found.append("\(a)⏎\(b)") }
        }
        return found
    }

    func testHelpFitsTheTerminalAndParagraphsAreWrappedOnce() throws {
        let paths = try commandPaths()
        XCTAssertGreaterThanOrEqual(paths.count, 15, "commands found: \(paths)")
        for path in paths {
            for width in [80, 200] {
                let text = try help(path, columns: width)
                let name = "donut \(path.joined(separator: " ")) --help at \(width) columns"
                for line in text.split(separator: "\n") where line.count > width {
                    XCTFail("\(name): line of \(line.count) characters: \(line)")
                }
                for pair in Self.earlyBreaks(text, width: width) { XCTFail("\(name): early break \(pair)") }
            }
        }
    }

    /// The check itself: a hand-wrapped paragraph rewrapped at 80 columns is caught.
    func testEarlyBreaksAreCaught() {
        let rewrapped = "DONUT trains on the scan's own frames (no labels), on simulated library frames,\nor on both\n(--library with --mix F: a fraction F of every batch is Poisson-noised library"
        XCTAssertEqual(Self.earlyBreaks(rewrapped, width: 80).count, 1)
        XCTAssertEqual(Self.earlyBreaks("a full line of text that reaches the end\nnext", width: 45).count, 0)
    }

    func testTestOnlyOptionsAreHidden() throws {
        let train = try help(["train"], columns: 80)
        for hidden in ["--fail-rank", "--check-replicas"] { XCTAssertFalse(train.contains(hidden), "\(hidden) shows:\n\(train)") }
        for shown in ["--sync-batchnorm", "--resume", "--scan"] { XCTAssert(train.contains(shown), "\(shown) missing:\n\(train)") }
        let all = try donut(["train", "--help-hidden"], in: FileManager.default.temporaryDirectory)
        XCTAssert(all.stdout.contains("--check-replicas"), "the debug option still exists:\n\(all.stdout)")
    }
}
