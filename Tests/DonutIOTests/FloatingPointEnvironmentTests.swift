import XCTest
import Foundation
@testable import DonutIO

/// Debian 12's bitshuffle plugin (libh5bshuf.so) is built with -ffast-math: loading it turns on
/// flush-to-zero and denormals-are-zero in the loading thread (MXCSR 0x1f80 → 0x9fc0). Donut's
/// HDF5 calls restore the thread's floating-point environment, so reading a bitshuffle-LZ4 file
/// leaves arithmetic exact down to the denormals.
final class FloatingPointEnvironmentTests: XCTestCase {
    /// The smallest Float denormal converted to Double: 0 under denormals-are-zero. Built from a
    /// runtime value so the compiler cannot fold it.
    private func denormalSurvives() -> Bool {
        let bits = UInt32(ProcessInfo.processInfo.processIdentifier > 0 ? 1 : 1)
        return Double(Float(bitPattern: bits)) > 0
    }

    func testBitshuffleFilesLeaveDenormalsAlone() throws {
        XCTAssertTrue(denormalSurvives(), "denormals already flushed before this test (an earlier load of a fast-math plugin)")
        guard H5Plugins.canDecode(Int(H5Filter.bitshuffleLZ4.id)) else {
            throw XCTSkip("no bitshuffle plugin (scripts/setup installs Debian's bitshuffle)")
        }
        XCTAssertTrue(denormalSurvives(), "after probing the bitshuffle filter")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("donut-fenv-\(UUID().uuidString).h5").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let f = try H5File.create(path)
        let d = try f.createDataset("/data", type: .uint32, shape: [2, 8, 8], chunks: [1, 8, 8], filters: [.bitshuffleLZ4])
        let values = (0..<128).map { UInt32($0 * 3) }
        try values.withUnsafeBufferPointer { try d.write($0) }
        try d.close(); try f.close()
        XCTAssertTrue(denormalSurvives(), "after writing a bitshuffle-LZ4 dataset")
        let back = try H5File.open(path).readDataset("/data", as: UInt32.self)
        XCTAssertEqual(back, values)
        XCTAssertTrue(denormalSurvives(), "after reading a bitshuffle-LZ4 dataset")
    }
}
