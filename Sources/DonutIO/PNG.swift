/// A dependency-free PNG encoder for 8-bit RGB images: the quick-look maps.
///
/// Layout of a file (PNG spec, ISO/IEC 15948): the 8-byte signature, then chunks
/// `length (4, big-endian) | type (4) | data | CRC-32 of type+data (4)`: IHDR, one IDAT
/// holding a zlib stream (RFC 1950) of the scanlines (each prefixed by filter byte 0),
/// IEND. The zlib stream is deflate (RFC 1951) with either stored blocks (the reference,
/// trivially correct) or one fixed-Huffman block with greedy LZ77 matching (the default;
/// quick-looks are blocks of flat colour and shrink ~50×). Both are checked against
/// Python's zlib in the tests.
public enum PNG {
    /// How the deflate stream inside the zlib container is built.
    public enum Deflate: Sendable {
        /// Uncompressed stored blocks (≤ 65535 bytes each): the reference.
        case stored
        /// One fixed-Huffman block with greedy hash-chain LZ77 (window 32 KiB).
        case fixedHuffman
    }

    /// PNG bytes of an 8-bit RGB image; `rgb` is row-major, 3 bytes per pixel, top row first.
    public static func encodeRGB(width: Int, height: Int, rgb: [UInt8], deflate: Deflate = .fixedHuffman) -> [UInt8] {
        precondition(width > 0 && height > 0, "PNG needs a positive size (got \(width)×\(height))")
        precondition(rgb.count == width * height * 3, "rgb holds \(rgb.count) bytes, expected \(width * height * 3)")
        var raw = [UInt8]()
        raw.reserveCapacity(height * (1 + 3 * width))
        for y in 0..<height {
            raw.append(0)   // filter type 0 (None)
            raw.append(contentsOf: rgb[(y * 3 * width)..<((y + 1) * 3 * width)])
        }
        var ihdr = [UInt8]()
        appendBE(&ihdr, UInt32(width)); appendBE(&ihdr, UInt32(height))
        ihdr += [8, 2, 0, 0, 0]   // bit depth 8, colour type 2 (RGB), deflate, filter 0, no interlace
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        appendChunk(&out, "IHDR", ihdr)
        appendChunk(&out, "IDAT", zlib(raw, deflate: deflate))
        appendChunk(&out, "IEND", [])
        return out
    }

    /// A zlib stream (RFC 1950): header 78 01, deflate data, Adler-32 of `data` (big-endian).
    public static func zlib(_ data: [UInt8], deflate: Deflate = .fixedHuffman) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]   // CM 8 (deflate), 32 KiB window; (0x7801 % 31 == 0)
        switch deflate {
        case .stored: out += deflateStored(data)
        case .fixedHuffman: out += deflateFixed(data)
        }
        appendBE(&out, adler32(data))
        return out
    }

    // MARK: Checksums

    /// CRC-32 as PNG and zlib's `crc32` use it (reflected polynomial 0xEDB88320, initial and
    /// final XOR 0xFFFFFFFF). CRC-32("123456789") = 0xCBF43926.
    public static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// Adler-32 (RFC 1950): two sums modulo 65521. Adler-32("Wikipedia") = 0x11E60398.
    public static func adler32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var a: UInt32 = 1, b: UInt32 = 0
        var pending = 0
        for x in bytes {
            a += UInt32(x); b += a
            pending += 1
            if pending == 5552 { a %= 65521; b %= 65521; pending = 0 }   // 5552: largest run without UInt32 overflow
        }
        return ((b % 65521) << 16) | (a % 65521)
    }

    // MARK: Deflate

    /// Stored blocks: byte-aligned header (BFINAL, BTYPE 00), LEN, NLEN, then the bytes.
    static func deflateStored(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        var start = 0
        repeat {
            let n = min(65535, data.count - start)
            let final = start + n == data.count
            out.append(final ? 1 : 0)
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[start..<(start + n)]
            start += n
        } while start < data.count
        return out
    }

    /// One fixed-Huffman block (BTYPE 01) with greedy LZ77: at each position the longest
    /// match among the last 32 positions with the same 3-byte hash, inside the 32 KiB window.
    static func deflateFixed(_ d: [UInt8]) -> [UInt8] {
        var w = BitWriter()
        w.write(1, 1); w.write(1, 2)   // BFINAL = 1, BTYPE = 01 (fixed Huffman)
        let n = d.count
        let hashSize = 1 << 15
        var head = [Int](repeating: -1, count: hashSize)
        var prev = [Int](repeating: -1, count: n)
        func hash(_ i: Int) -> Int {
            ((Int(d[i]) << 10) ^ (Int(d[i + 1]) << 5) ^ Int(d[i + 2])) & (hashSize - 1)
        }
        func insert(_ i: Int) {
            guard i + 2 < n else { return }
            let h = hash(i); prev[i] = head[h]; head[h] = i
        }
        var i = 0
        while i < n {
            var bestLen = 0, bestDist = 0
            if i + 2 < n {
                let maxLen = min(258, n - i)
                var j = head[hash(i)], depth = 0
                while j >= 0, i - j <= 32768, depth < 32 {
                    var l = 0
                    while l < maxLen, d[j + l] == d[i + l] { l += 1 }
                    if l > bestLen { bestLen = l; bestDist = i - j; if l == maxLen { break } }
                    j = prev[j]; depth += 1
                }
            }
            if bestLen >= 3 {
                w.writeLength(bestLen); w.writeDistance(bestDist)
                for k in i..<(i + bestLen) { insert(k) }
                i += bestLen
            } else {
                w.writeLiteral(Int(d[i]))
                insert(i)
                i += 1
            }
        }
        w.writeLiteral(256)   // end of block
        w.flush()
        return w.out
    }

    /// Deflate's bit order: values LSB-first, Huffman codes MSB-first.
    struct BitWriter {
        var out = [UInt8]()
        private var acc: UInt32 = 0
        private var bits = 0

        mutating func write(_ value: Int, _ count: Int) {
            acc |= UInt32(value) << UInt32(bits)
            bits += count
            while bits >= 8 { out.append(UInt8(acc & 0xFF)); acc >>= 8; bits -= 8 }
        }
        mutating func writeCode(_ code: Int, _ length: Int) {
            var r = 0
            for k in 0..<length where code & (1 << k) != 0 { r |= 1 << (length - 1 - k) }
            write(r, length)
        }
        /// Fixed literal/length code (RFC 1951 §3.2.6).
        mutating func writeLiteral(_ sym: Int) {
            switch sym {
            case 0...143: writeCode(0x30 + sym, 8)
            case 144...255: writeCode(0x190 + sym - 144, 9)
            case 256...279: writeCode(sym - 256, 7)
            default: writeCode(0xC0 + sym - 280, 8)
            }
        }
        mutating func writeLength(_ len: Int) {
            var k = lengthBase.count - 1
            while lengthBase[k] > len { k -= 1 }
            writeLiteral(257 + k)
            write(len - lengthBase[k], lengthExtra[k])
        }
        mutating func writeDistance(_ dist: Int) {
            var k = distBase.count - 1
            while distBase[k] > dist { k -= 1 }
            writeCode(k, 5)
            write(dist - distBase[k], distExtra[k])
        }
        mutating func flush() {
            if bits > 0 { out.append(UInt8(acc & 0xFF)); acc = 0; bits = 0 }
        }
    }

    private static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                     35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    private static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                      3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    private static let distBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
                                   257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
                                   8193, 12289, 16385, 24577]
    private static let distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                    7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]

    // MARK: Chunks

    private static func appendBE(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    private static func appendChunk(_ out: inout [UInt8], _ type: String, _ data: [UInt8]) {
        let typeBytes = Array(type.utf8)
        appendBE(&out, UInt32(data.count))
        out += typeBytes
        out += data
        appendBE(&out, crc32(typeBytes + data))
    }
}
