import Foundation
import XCTest
import DonutPhysics

/// `Tests/Fixtures/reference`: golden patterns of the published code (see Tests/Fixtures/README.md).
let referenceFolder = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures/reference")

/// Reads a little-endian float64 C-order .npy (v1) — just enough for the golden file,
/// kept independent of DonutIO's reader so the physics check does not trust the IO code.
func readFloat64NPY(_ url: URL) throws -> (shape: [Int], values: [Double]) {
    let data = try Data(contentsOf: url)
    let headerLength = Int(data[8]) | Int(data[9]) << 8
    let header = String(decoding: data[10..<(10 + headerLength)], as: UTF8.self)
    guard header.contains("'descr': '<f8'"), header.contains("'fortran_order': False") else {
        throw NSError(domain: "npy", code: 1, userInfo: [NSLocalizedDescriptionKey: "unexpected header \(header)"])
    }
    let shapeText = header.components(separatedBy: "'shape': (")[1].components(separatedBy: ")")[0]
    let shape = shapeText.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    let body = data[(10 + headerLength)...]
    let values = body.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
    return (shape, values)
}

struct GoldenCase { let params: FrameParameters }

func goldenParameters() throws -> [FrameParameters] {
    let json = try JSONSerialization.jsonObject(with: Data(contentsOf: referenceFolder.appendingPathComponent("box_patterns.json"))) as! [String: Any]
    return (json["params"] as! [[String: Double]]).map {
        FrameParameters(strain: $0["strain"]!, tiltLRDeg: $0["tilt_lr_deg"]!, tiltUDDeg: $0["tilt_ud_deg"]!,
                        thicknessA: $0["thickness_A"]!)
    }
}

/// Deterministic generator for test inputs (SplitMix64).
struct TestRNG {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform(_ a: Double, _ b: Double) -> Double {
        a + (b - a) * Double(next() >> 11) / Double(1 << 53)
    }
}

/// Element-wise |got − want| ≤ abs + rel·|want|; on failure reports the worst element,
/// its index, both values and the tolerance (never the whole array).
func assertClose<T: BinaryFloatingPoint>(_ got: [T], _ want: [T], rel: Double, abs absTol: Double,
                                         _ context: @autoclosure () -> String,
                                         file: StaticString = #filePath, line: UInt = #line) {
    guard got.count == want.count else {
        XCTFail("\(context()): \(got.count) values, expected \(want.count)", file: file, line: line); return
    }
    var worstExcess = 0.0, worst = -1
    for i in 0..<got.count {
        let g = Double(got[i]), w = Double(want[i])
        let excess = Swift.abs(g - w) - (absTol + rel * Swift.abs(w))
        if excess > worstExcess || (g.isNaN != w.isNaN) { worstExcess = max(excess, 1); worst = i }
    }
    if worst >= 0 {
        XCTFail("\(context()): element \(worst) got \(got[worst]) expected \(want[worst]), tolerance \(absTol) + \(rel)·|expected|",
                file: file, line: line)
    }
}
