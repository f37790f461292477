import XCTest
import Foundation
import CPNG
@testable import DonutIO

/// Helpers shared by the PNG and quick-look tests (a namespace, so other test files in
/// this target can define their own helpers without clashing).
enum PNGTestSupport {
    /// Decodes PNG bytes with libpng's reader (`png_image_begin_read_from_memory`, asked
    /// for 8-bit RGB): width, height and row-major RGB bytes, top row first. The reader
    /// checks the signature, every chunk CRC, the zlib stream and its Adler-32.
    static func decode(_ png: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> (width: Int, height: Int, rgb: [UInt8]) {
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        defer { png_image_free(&image) }
        func message() -> String { withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) } }
        guard png.withUnsafeBytes({ png_image_begin_read_from_memory(&image, $0.baseAddress, $0.count) }) != 0 else {
            XCTFail("libpng cannot read the header: \(message())", file: file, line: line)
            return (0, 0, [])
        }
        image.format = png_uint_32(PNG_FORMAT_RGB)
        let (w, h) = (Int(image.width), Int(image.height))
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        guard rgb.withUnsafeMutableBytes({ png_image_finish_read(&image, nil, $0.baseAddress, png_int_32(3 * w), nil) }) != 0 else {
            XCTFail("libpng cannot decode the image: \(message())", file: file, line: line)
            return (0, 0, [])
        }
        return (w, h, rgb)
    }

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("donut-\(getpid())-\(name)").path
    }
}

final class PNGTests: XCTestCase {
    /// Bit-by-bit CRC-32 (reflected polynomial 0xEDB88320, PNG spec annex D), written here
    /// independently of libpng to check the chunks it writes.
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

    func testCRC32ReferenceOnKnownVectors() {
        // The test's own CRC, so that the structure test below checks something.
        XCTAssertEqual(bitwiseCRC32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(bitwiseCRC32(Array("IEND".utf8)), 0xAE42_6082)
        XCTAssertEqual(bitwiseCRC32(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
    }

    func testPNGStructure() throws {
        let (w, h) = (5, 3)   // odd, non-square
        let rgb = (0..<(w * h * 3)).map { UInt8($0 & 0xFF) }
        let png = PNG.encodeRGB(width: w, height: h, rgb: rgb)
        let c = chunks(png)
        XCTAssertEqual(c.first?.type, "IHDR")
        // width 5, height 3, bit depth 8, colour type 2 (RGB), deflate, filter 0, no interlace.
        XCTAssertEqual(c.first?.data, [0, 0, 0, 5, 0, 0, 0, 3, 8, 2, 0, 0, 0])
        XCTAssertEqual(c.last?.type, "IEND")
        XCTAssertEqual(c.last?.data, [])
        // IDAT chunks are consecutive (PNG spec 5.6) and hold a zlib stream: check bits, CM 8.
        let idat = c.enumerated().filter { $0.element.type == "IDAT" }.map(\.offset)
        XCTAssertFalse(idat.isEmpty)
        XCTAssertEqual(idat, Array(idat[0]...(idat.last ?? 0)))
        let z = c[idat[0]].data
        XCTAssertEqual((Int(z[0]) * 256 + Int(z[1])) % 31, 0)
        XCTAssertEqual(z[0] & 0x0F, 8)
    }

    /// What goes in comes out, for sizes with and without row padding and for data zlib
    /// cannot shrink.
    func testRoundTripThroughLibpngReader() throws {
        var rng = SystemRandomNumberGenerator()
        for (w, h) in [(1, 1), (5, 3), (2, 7), (257, 2), (300, 300)] {
            let rgb = (0..<(w * h * 3)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let decoded = PNGTestSupport.decode(PNG.encodeRGB(width: w, height: h, rgb: rgb))
            XCTAssertEqual(decoded.width, w)
            XCTAssertEqual(decoded.height, h)
            XCTAssertTrue(decoded.rgb == rgb, "\(w)×\(h): pixels differ after the round trip")
        }
    }

    /// Channel and row order: pixel (x, y) is at byte 3(y·w + x), red first.
    func testPixelOrder() throws {
        let (w, h) = (3, 2)
        var rgb = [UInt8](repeating: 0, count: w * h * 3)
        rgb[3 * (1 * w + 2) + 0] = 200   // (x 2, y 1) red
        rgb[3 * (0 * w + 1) + 2] = 100   // (x 1, y 0) blue
        let d = PNGTestSupport.decode(PNG.encodeRGB(width: w, height: h, rgb: rgb))
        XCTAssertEqual(d.rgb.enumerated().filter { $0.element != 0 }.map { [$0.offset, Int($0.element)] }, [[5, 100], [15, 200]])
    }

    /// libpng says how much room it needs when the first buffer is short; the retry gives
    /// the same bytes as a first guess that fits.
    func testShortFirstBufferIsRetried() throws {
        let (w, h) = (40, 30)
        let rgb = (0..<(w * h * 3)).map { UInt8(($0 * 7919) % 251) }
        let normal = PNG.encodeRGB(width: w, height: h, rgb: rgb)
        let retried = PNG.encodeRGB(width: w, height: h, rgb: rgb, firstGuess: 16)
        XCTAssertEqual(retried, normal)
        XCTAssertEqual(PNGTestSupport.decode(retried).rgb, rgb)
    }

    func testFlatImagesCompress() throws {
        let (w, h) = (300, 300)
        let rgb = (0..<(w * h * 3)).map { UInt8(($0 / (3 * 30)) % 2 * 200) }   // 30-pixel stripes
        let png = PNG.encodeRGB(width: w, height: h, rgb: rgb)
        XCTAssertLessThan(png.count * 20, rgb.count, "\(rgb.count) bytes of pixels, \(png.count) bytes of PNG")
        XCTAssertEqual(PNGTestSupport.decode(png).rgb, rgb)
    }
}
