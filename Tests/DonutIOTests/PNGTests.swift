import XCTest
import Foundation
@testable import DonutIO

/// Helpers shared by the PNG and quick-look tests (a namespace, so other test files in
/// this target can define their own helpers without clashing).
enum PNGTestSupport {
    /// Runs `python3 -c script args…` and returns stdout; throws XCTSkip when python3 or its
    /// zlib module is missing (the decode checks then cannot run, and say so).
    static func runPython(_ script: String, _ args: [String] = []) throws -> String {
        func run(_ arguments: [String]) throws -> (Int32, String, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3"] + arguments
            let out = Pipe(), err = Pipe()
            p.standardOutput = out; p.standardError = err
            try p.run()
            let o = out.fileHandleForReading.readDataToEndOfFile()
            let e = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
        }
        guard let (status, _, _) = try? run(["-c", "import zlib"]), status == 0 else {
            throw XCTSkip("python3 with zlib not available; independent decode not checked")
        }
        let (code, out, err) = try run(["-c", script] + args)
        guard code == 0 else {
            XCTFail("python3 failed (\(code)): \(err)")
            return ""
        }
        return out
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("donut-\(getpid())-\(name)").path
    }
}

final class PNGTests: XCTestCase {
    // MARK: Checksums on known vectors

    func testCRC32KnownVectors() {
        XCTAssertEqual(PNG.crc32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(PNG.crc32([UInt8]()), 0)
        XCTAssertEqual(PNG.crc32(Array("IEND".utf8)), 0xAE42_6082)   // the CRC every PNG ends with
        XCTAssertEqual(PNG.crc32(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
    }

    func testAdler32KnownVectors() {
        XCTAssertEqual(PNG.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
        XCTAssertEqual(PNG.adler32([UInt8]()), 1)
        // Long runs of 0xFF exercise the deferred modulo; the reference reduces every byte.
        for n in [5551, 5552, 5553, 100_000] {
            let data = [UInt8](repeating: 0xFF, count: n)
            var a: UInt32 = 1, b: UInt32 = 0
            for x in data { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
            XCTAssertEqual(PNG.adler32(data), (b << 16) | a, "n = \(n)")
        }
    }

    // MARK: Structure

    /// Bit-by-bit CRC-32, independent of the table-driven one under test.
    func bitwiseCRC32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ ((c & 1) * 0xEDB8_8320) }
        }
        return ~c
    }

    struct Chunk { var type: String; var data: [UInt8] }

    /// Splits a PNG into chunks, checking the signature, every length and every CRC.
    func chunks(_ png: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> [Chunk] {
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "signature", file: file, line: line)
        func be32(_ k: Int) -> UInt32 { png[k..<(k + 4)].reduce(0) { ($0 << 8) | UInt32($1) } }
        var out: [Chunk] = [], k = 8
        while k + 12 <= png.count {
            let n = Int(be32(k))
            guard k + 12 + n <= png.count else { XCTFail("chunk at \(k) overruns the file", file: file, line: line); break }
            let typeAndData = Array(png[(k + 4)..<(k + 8 + n)])
            let type = String(decoding: typeAndData.prefix(4), as: UTF8.self)
            XCTAssertEqual(be32(k + 8 + n), bitwiseCRC32(typeAndData), "CRC of \(type) at \(k)", file: file, line: line)
            out.append(Chunk(type: type, data: Array(typeAndData.dropFirst(4))))
            k += 12 + n
        }
        XCTAssertEqual(k, png.count, "trailing bytes after the last chunk", file: file, line: line)
        return out
    }

    func testPNGStructure() {
        let (w, h) = (5, 3)   // odd, non-square
        let rgb = (0..<(w * h * 3)).map { UInt8($0 & 0xFF) }
        for mode in [PNG.Deflate.stored, .fixedHuffman] {
            let png = PNG.encodeRGB(width: w, height: h, rgb: rgb, deflate: mode)
            let c = chunks(png)
            XCTAssertEqual(c.map(\.type), ["IHDR", "IDAT", "IEND"])
            XCTAssertEqual(c[0].data, [0, 0, 0, 5, 0, 0, 0, 3, 8, 2, 0, 0, 0])
            XCTAssertEqual(c[2].data, [])
            XCTAssertEqual(Array(png.suffix(4)), [0xAE, 0x42, 0x60, 0x82], "IEND CRC")
            // zlib header check bits and the Adler-32 trailer of the filtered scanlines.
            let z = c[1].data
            XCTAssertEqual((Int(z[0]) * 256 + Int(z[1])) % 31, 0)
            var raw = [UInt8]()
            for y in 0..<h { raw.append(0); raw += rgb[(y * w * 3)..<((y + 1) * w * 3)] }
            let trailer = z.suffix(4).reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }
            XCTAssertEqual(trailer, PNG.adler32(raw))
        }
    }

    // MARK: Deflate against an independent decoder (Python's zlib)

    func testDeflateDecodesWithPythonZlib() throws {
        var rng = SystemRandomNumberGenerator()
        let random = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let cases: [(String, [UInt8])] = [
            ("empty", []),
            ("one byte", [42]),
            ("two bytes", [1, 2]),
            ("text", Array("abcabcabcabcabd hello hello hello".utf8)),
            ("random 100k", random),
            ("long run", [UInt8](repeating: 7, count: 70_000)),                 // > 65535: two stored blocks
            ("period 3", (0..<20_000).map { UInt8([10, 20, 30][$0 % 3]) }),    // matches at distance 3
            ("far repeat", Array(random.prefix(40_000)) + Array(random.prefix(40_000))),   // beyond the window
            ("near window", Array(random.prefix(32_768)) + Array(random.prefix(1000))),   // distance exactly 32768
        ]
        let dir = PNGTestSupport.temporaryPath("deflate")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var files: [String] = []
        for (i, (_, data)) in cases.enumerated() {
            for (m, mode) in [PNG.Deflate.stored, .fixedHuffman].enumerated() {
                let path = "\(dir)/\(i)-\(m)"
                XCTAssertTrue(FileManager.default.createFile(atPath: path + ".raw", contents: Data(data)))
                XCTAssertTrue(FileManager.default.createFile(atPath: path + ".z", contents: Data(PNG.zlib(data, deflate: mode))))
                files.append(path)
            }
        }
        let script = """
        import sys, zlib
        for p in sys.argv[1:]:
            raw = open(p + ".raw", "rb").read()
            try:
                ok = zlib.decompress(open(p + ".z", "rb").read()) == raw
            except Exception as e:
                ok = "error: %s" % e
            print(p, ok)
        """
        let out = try PNGTestSupport.runPython(script, files)
        let lines = out.split(separator: "\n")
        XCTAssertEqual(lines.count, files.count, out)
        for (k, l) in lines.enumerated() {
            XCTAssertTrue(l.hasSuffix(" True"), "case '\(cases[k / 2].0)', \(k % 2 == 0 ? "stored" : "fixed Huffman"): \(l)")
        }
    }

    func testFixedHuffmanCompressesFlatImages() {
        let (w, h) = (300, 300)
        let rgb = [UInt8](repeating: 0, count: w * h * 3).enumerated().map { UInt8(($0.offset / (3 * 30)) % 2 * 200) }
        let stored = PNG.encodeRGB(width: w, height: h, rgb: rgb, deflate: .stored).count
        let fixed = PNG.encodeRGB(width: w, height: h, rgb: rgb, deflate: .fixedHuffman).count
        XCTAssertLessThan(fixed * 20, stored, "stored \(stored) bytes, fixed Huffman \(fixed) bytes")
    }
}
