import CPNG

/// 8-bit RGB PNG files (the quick-look maps), encoded by libpng's simplified API
/// (`png_image_write_to_memory`): signature, IHDR, an sRGB chunk, zlib-compressed IDAT
/// chunks, IEND, with libpng's adaptive row filters and zlib's default compression.
public enum PNG {
    /// PNG bytes of an 8-bit RGB image; `rgb` is row-major, 3 bytes per pixel, top row first.
    /// The sizes are checked first; libpng then fails only when memory runs out, which stops the
    /// program with libpng's message (as any Swift allocation failure does).
    public static func encodeRGB(width: Int, height: Int, rgb: [UInt8]) -> [UInt8] {
        encodeRGB(width: width, height: height, rgb: rgb, firstGuess: nil)
    }

    /// `firstGuess` (bytes) overrides the first output buffer size, for the tests of the retry.
    static func encodeRGB(width: Int, height: Int, rgb: [UInt8], firstGuess: Int?) -> [UInt8] {
        precondition(width > 0 && height > 0, "PNG needs a positive size (got \(width)×\(height))")
        precondition(width <= Int(Int32.max / 3) && height <= Int(Int32.max), "PNG size \(width)×\(height) exceeds libpng's 32-bit row stride")
        precondition(rgb.count == width * height * 3, "rgb holds \(rgb.count) bytes, expected \(width * height * 3)")
        var image = png_image()
        image.version = png_uint_32(PNG_IMAGE_VERSION)
        image.width = png_uint_32(width)
        image.height = png_uint_32(height)
        image.format = png_uint_32(PNG_FORMAT_RGB)
        // A first guess that holds even incompressible data (scanlines + filter bytes + a few
        // hundred bytes of chunks); libpng reports the size it needs when the guess is short.
        var capacity = firstGuess ?? height * (1 + 3 * width) + height * (1 + 3 * width) / 128 + 1024
        for _ in 0..<2 {
            var out = [UInt8](repeating: 0, count: capacity)
            var size = png_alloc_size_t(capacity)
            let ok = out.withUnsafeMutableBytes { o in
                rgb.withUnsafeBytes { i in
                    png_image_write_to_memory(&image, o.baseAddress, &size, 0, i.baseAddress, png_int_32(3 * width), nil)
                }
            }
            if ok != 0 {
                out.removeLast(out.count - Int(size))
                return out
            }
            guard Int(size) > capacity else { break }   // a real error, not a short buffer
            capacity = Int(size)
            png_image_free(&image)
            image.warning_or_error = 0
        }
        let message = withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        png_image_free(&image)
        fatalError("PNG encoding of a \(width)×\(height) image failed: libpng: \(message)")
    }
}
