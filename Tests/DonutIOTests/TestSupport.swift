import Foundation
import XCTest

/// A fresh empty folder under the system temp dir, removed when the test ends.
func makeScratchFolder(_ test: XCTestCase, file: StaticString = #filePath, line: UInt = #line) -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("donut-io-tests-\(UUID().uuidString)")
    XCTAssertNoThrow(try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true), file: file, line: line)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// Asserts that `body` throws an error whose description contains every fragment.
func assertThrows<T>(_ body: @autoclosure () throws -> T, containing fragments: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(fragments), got none", file: file, line: line)
    } catch {
        let text = "\(error)"
        for f in fragments where !text.contains(f) {
            XCTFail("error '\(text)' does not contain '\(f)'", file: file, line: line)
        }
    }
}

/// Float arrays equal bit for bit (NaN payloads included): file round trips must not
/// change a single bit, so exact equality is the right test here, not a tolerance.
func assertBitsEqual(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(what): count", file: file, line: line)
    if let i = a.indices.first(where: { $0 < b.count && a[$0].bitPattern != b[$0].bitPattern }) {
        XCTFail("\(what): element \(i) differs: wrote \(a[i]) read \(b[i])", file: file, line: line)
    }
}
func assertBitsEqual(_ a: [Double], _ b: [Double], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "\(what): count", file: file, line: line)
    if let i = a.indices.first(where: { $0 < b.count && a[$0].bitPattern != b[$0].bitPattern }) {
        XCTFail("\(what): element \(i) differs: wrote \(a[i]) read \(b[i])", file: file, line: line)
    }
}
