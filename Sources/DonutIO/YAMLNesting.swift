import Foundation

/// The YAML parser (libyaml through Yams) recurses once per nesting level: a file of
/// 100 000 `[` or `- - - …` overflows the stack (a segfault, not an error). Donut's files
/// nest at most five levels deep, so text nested deeper than `maximumDepth` is refused
/// before the parser sees it.
enum YAMLNesting {
    static let maximumDepth = 64

    /// Throws a `ConfigFileError` naming `source` and the line where the nesting passes
    /// `maximumDepth`.
    static func check(_ text: String, source: String) throws {
        if let line = firstLineTooDeep(text) {
            throw ConfigFileError(file: source, key: "", "nested deeper than \(maximumDepth) levels at line \(line): refused before parsing (Donut's YAML files nest at most a few levels)")
        }
    }

    /// The 1-based line where an upper estimate of the depth first exceeds `limit`, or nil.
    ///
    /// depth = block levels (distinct indentations open above the line, plus one per compact
    /// `- ` / `? ` / `: ` indicator starting it) + open flow brackets `[ {` (outside quotes
    /// and comments). Overestimates rather than under: a refusal costs a legitimate file
    /// nothing at 64 levels.
    static func firstLineTooDeep(_ text: String, limit: Int = maximumDepth) -> Int? {
        var flow = 0
        var indents: [Int] = []
        var lineNumber = 0
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t")
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let c = Array(line)
            var i = 0
            while i < c.count, c[i] == space || c[i] == tab { i += 1 }
            if i == c.count || c[i] == UInt8(ascii: "#") || c[i] == UInt8(ascii: "\r") { continue }
            if flow == 0 {
                while let last = indents.last, last >= i { indents.removeLast() }
                indents.append(i)
            }
            var block = indents.count
            // Compact nested collections on one line: "- - - x", "- ? a", "? - x".
            while i < c.count, [UInt8(ascii: "-"), UInt8(ascii: "?"), UInt8(ascii: ":")].contains(c[i]),
                  i + 1 == c.count || c[i + 1] == space || c[i + 1] == tab {
                block += 1
                i += 1
                while i < c.count, c[i] == space || c[i] == tab { i += 1 }
            }
            if block + flow > limit { return lineNumber }
            var quote: UInt8? = nil
            var k = i
            while k < c.count {
                let ch = c[k]
                if let q = quote {
                    if ch == UInt8(ascii: "\\"), q == UInt8(ascii: "\"") { k += 2; continue }
                    if ch == q { quote = nil }
                    k += 1; continue
                }
                let afterSeparator = k == i || [space, tab, UInt8(ascii: "["), UInt8(ascii: "{"), UInt8(ascii: ","), UInt8(ascii: ":")].contains(c[k - 1])
                switch ch {
                case UInt8(ascii: "\""), UInt8(ascii: "'"):
                    if afterSeparator { quote = ch }
                case UInt8(ascii: "["), UInt8(ascii: "{"):
                    flow += 1
                    if block + flow > limit { return lineNumber }
                case UInt8(ascii: "]"), UInt8(ascii: "}"):
                    flow = max(0, flow - 1)
                case UInt8(ascii: "#"):
                    if k > 0, c[k - 1] == space || c[k - 1] == tab { k = c.count; continue }
                default:
                    break
                }
                k += 1
            }
        }
        return nil
    }
}
