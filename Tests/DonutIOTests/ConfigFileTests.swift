import XCTest
import Foundation
@testable import DonutIO
import DonutPhysics
import DonutCore

/// The repository root, found from this file's location (Tests/DonutIOTests/…).
private let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

final class ConfigFileTests: XCTestCase {
    var presetPath: String { repoRoot.appendingPathComponent("configs/srio3-lsat-002.yaml").path }
    var demoPath: String { repoRoot.appendingPathComponent("configs/small-demo.yaml").path }

    /// The preset YAML with one line replaced (`old` must occur exactly once).
    func presetText(replacing old: String, with new: String) throws -> String {
        let text = try String(contentsOfFile: presetPath, encoding: .utf8)
        XCTAssertEqual(text.components(separatedBy: old).count, 2, "'\(old)' must occur once in the preset")
        return text.replacingOccurrences(of: old, with: new)
    }

    /// Parses `yaml` expecting a `ConfigFileError` whose key is `key` and whose description
    /// names the source, the key and every string in `mentions`.
    func expectError(_ yaml: String, key: String, mentions: [String] = [],
                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            let c = try ConfigFile.parse(yaml: yaml, source: "my.yaml")
            XCTFail("expected an error for key '\(key)', got a config: \(c)", file: file, line: line)
        } catch let e as ConfigFileError {
            let text = e.description
            XCTAssertEqual(e.file, "my.yaml", text, file: file, line: line)
            XCTAssertEqual(e.key, key, text, file: file, line: line)
            XCTAssertTrue(text.contains("'my.yaml'"), "file not named: \(text)", file: file, line: line)
            XCTAssertTrue(text.contains("'\(key)'"), "key not named: \(text)", file: file, line: line)
            for m in mentions {
                XCTAssertTrue(text.contains(m), "'\(m)' missing from: \(text)", file: file, line: line)
            }
        } catch {
            XCTFail("expected ConfigFileError, got \(type(of: error)): \(error)", file: file, line: line)
        }
    }

    // MARK: Presets

    func testPresetFileEqualsBuiltInPreset() throws {
        let c = try ConfigFile.load(path: presetPath)
        XCTAssertEqual(c, DonutConfig.srio3LSAT002)
        // σ is written with 17 significant digits, so it reads back bit-exactly.
        XCTAssertEqual(c.model.smoothSigmaInvA, ModelSettings.secondMomentSigma(halfWidth: 5e-4))
    }

    func testSmallDemoIsThePresetWithACoarseLibrary() throws {
        let c = try ConfigFile.load(path: demoPath)
        var expected = DonutConfig.srio3LSAT002
        expected.library = LibrarySteps(strain: 11, tiltLR: 11, tiltUD: 11, thickness: 1)
        XCTAssertEqual(c, expected)
    }

    // MARK: Round trips

    func testYAMLRoundTrip() throws {
        for c in [DonutConfig.srio3LSAT002, try ConfigFile.load(path: demoPath)] {
            let text = ConfigFile.yaml(c)
            XCTAssertEqual(try ConfigFile.parse(yaml: text, source: "roundtrip.yaml"), c, text)
        }
    }

    func testJSONRoundTripAndSortedKeys() throws {
        var c = DonutConfig.srio3LSAT002
        c.instrument.deltaThetaDeg = 0.0123456789012345   // many digits survive
        c.ranges.strain = [-1e-7, 3.3e-3]
        let text = ConfigFile.json(c)
        XCTAssertEqual(try ConfigFile.fromJSON(text, source: "result.h5:/entry/process/config"), c, text)
        // Sorted keys: top level alphabetical, and the file is pretty (one key per line).
        let top = ["instrument", "library", "model", "noise", "ranges", "sample", "zone_plate"]
        let offsets = top.map { text.range(of: "\"\($0)\"")!.lowerBound }
        XCTAssertEqual(offsets, offsets.sorted(), text)
        XCTAssertTrue(text.contains("\n"))
    }

    func testFromJSONChecksKeysToo() throws {
        let text = ConfigFile.json(.srio3LSAT002).replacingOccurrences(of: "\"peak_photons\"", with: "\"peak_photon\"")
        XCTAssertThrowsError(try ConfigFile.fromJSON(text, source: "x.json")) { e in
            XCTAssertEqual((e as? ConfigFileError)?.key, "noise.peak_photon", "\(e)")
        }
    }

    // MARK: Structure errors

    func testUnknownKeyIsNamedWithAllowedKeys() throws {
        let yaml = try presetText(replacing: "  energy_keV: 11.3", with: "  enrgy_keV: 11.3")
        expectError(yaml, key: "instrument.enrgy_keV",
                    mentions: ["unknown key", "energy_keV, detector_distance_m", "did you mean 'energy_keV'", "line 8"])
    }

    func testUnknownSectionIsNamed() throws {
        let yaml = try presetText(replacing: "noise:\n", with: "optimiser:\n  lr: 1.0e-3\nnoise:\n")
        expectError(yaml, key: "optimiser", mentions: ["unknown key", "instrument, zone_plate, sample, model, ranges, library, noise"])
    }

    func testUnknownNestedKeyIsNamed() throws {
        let yaml = try presetText(replacing: "    width: 128 ", with: "    widht: 128 ")
        expectError(yaml, key: "instrument.roi.widht", mentions: ["x, y, width, height"])
    }

    func testMissingKeyIsNamed() throws {
        let text = try String(contentsOfFile: presetPath, encoding: .utf8)
        let yaml = text.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("  detector_distance_m:") }.joined(separator: "\n")
        expectError(yaml, key: "instrument.detector_distance_m", mentions: ["missing", "a number"])
    }

    func testMissingSectionIsNamed() throws {
        let text = try String(contentsOfFile: presetPath, encoding: .utf8)
        let cut = text.components(separatedBy: "noise:")[0]
        expectError(cut, key: "noise", mentions: ["missing"])
    }

    func testDuplicateKeyIsAnError() throws {
        let yaml = try presetText(replacing: "  binning: 2 ", with: "  binning: 2\n  binning: 4 ")
        expectError(yaml, key: "instrument.binning", mentions: ["twice"])
    }

    // MARK: Type errors

    func testStringWhereNumberExpected() throws {
        let yaml = try presetText(replacing: "  detector_distance_m: 0.85", with: "  detector_distance_m: 85cm")
        expectError(yaml, key: "instrument.detector_distance_m", mentions: ["expected a number", "85cm"])
    }

    func testQuotedNumberIsAString() throws {
        let yaml = try presetText(replacing: "  energy_keV: 11.3", with: "  energy_keV: \"11.3\"")
        expectError(yaml, key: "instrument.energy_keV", mentions: ["expected a number", "string"])
    }

    func testFractionWhereIntegerExpected() throws {
        let yaml = try presetText(replacing: "  strain: 41 ", with: "  strain: 41.5 ")
        expectError(yaml, key: "library.strain", mentions: ["expected an integer", "41.5"])
    }

    func testEmptyValueIsNamed() throws {
        let yaml = try presetText(replacing: "  thickness_A: 117.0", with: "  thickness_A:")
        expectError(yaml, key: "sample.thickness_A", mentions: ["expected a number", "null"])
    }

    func testSectionThatIsNotAMapping() throws {
        let yaml = try presetText(replacing: "noise:\n  peak_photons: 7.0", with: "noise: 7.0\n#")
        expectError(yaml, key: "noise", mentions: ["expected a mapping", "peak_photons"])
    }

    func testListElementTypeIsNamedWithIndex() throws {
        let yaml = try presetText(replacing: "  strain: [-0.005, 0.005]", with: "  strain: [-0.005, big]")
        expectError(yaml, key: "ranges.strain[1]", mentions: ["expected a number", "big"])
    }

    func testNaNIsRejectedWithKey() throws {
        let yaml = try presetText(replacing: "  peak_photons: 7.0", with: "  peak_photons: .nan")
        expectError(yaml, key: "noise.peak_photons", mentions: ["finite"])
    }

    // MARK: Physical checks (validate()) with the file name

    func testNegativeDistance() throws {
        let yaml = try presetText(replacing: "  detector_distance_m: 0.85", with: "  detector_distance_m: -0.85")
        expectError(yaml, key: "instrument.detector_distance_m", mentions: ["positive", "-0.85"])
        // The exact format promised to users:
        XCTAssertThrowsError(try ConfigFile.parse(yaml: yaml, source: "my.yaml")) { e in
            XCTAssertEqual("\(e)", "config 'my.yaml', key 'instrument.detector_distance_m': must be a positive finite number (got -0.85)")
        }
    }

    func testInnerStopNotSmallerThanZonePlate() throws {
        let yaml = try presetText(replacing: "  central_stop_diameter_m: 77.0e-6", with: "  central_stop_diameter_m: 149.0e-6")
        expectError(yaml, key: "zone_plate.central_stop_diameter_m", mentions: ["smaller than zone_plate.diameter_m"])
    }

    func testBraggAngleUndefined() throws {
        // λl/2c ≥ 1 needs λ ≥ c = 4.013 Å for l = 2: E ≤ 12.398/4.013 = 3.09 keV.
        let yaml = try presetText(replacing: "  energy_keV: 11.3", with: "  energy_keV: 3.0")
        expectError(yaml, key: "instrument.energy_keV", mentions: ["Bragg angle undefined"])
    }

    func testRangeWithWrongCount() throws {
        let yaml = try presetText(replacing: "  tilt_ud_deg: [-0.1, 0.1]", with: "  tilt_ud_deg: [0.1]")
        expectError(yaml, key: "ranges.tilt_ud_deg", mentions: ["[min, max]"])
    }

    // MARK: File-level errors

    func testMissingFileIsNamed() {
        XCTAssertThrowsError(try ConfigFile.load(path: "/nonexistent/dir/none.yaml")) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("'/nonexistent/dir/none.yaml'"), text)
            XCTAssertTrue(text.contains("no such file"), text)
        }
    }

    func testDirectoryIsNotAConfig() {
        XCTAssertThrowsError(try ConfigFile.load(path: NSTemporaryDirectory())) { e in
            XCTAssertTrue("\(e)".contains("directory"), "\(e)")
        }
    }

    func testInvalidYAMLAndEmptyFile() {
        expectErrorWithoutKey("instrument: [1, 2\n", mentions: ["not valid YAML"])
        expectErrorWithoutKey("", mentions: ["empty", "instrument"])
        expectErrorWithoutKey("- 1\n- 2\n", mentions: ["expected a mapping"])
    }

    func expectErrorWithoutKey(_ yaml: String, mentions: [String], line: UInt = #line) {
        XCTAssertThrowsError(try ConfigFile.parse(yaml: yaml, source: "bad.yaml"), line: line) { e in
            guard let e = e as? ConfigFileError else { return XCTFail("\(e)", line: line) }
            XCTAssertEqual(e.key, "", e.description, line: line)
            XCTAssertTrue(e.description.hasPrefix("config 'bad.yaml': "), e.description, line: line)
            for m in mentions { XCTAssertTrue(e.description.contains(m), "'\(m)' missing from: \(e)", line: line) }
        }
    }

    func testLoadFromATemporaryFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("donut-config-\(getpid()).yaml")
        defer { try? FileManager.default.removeItem(at: url) }
        try ConfigFile.yaml(.srio3LSAT002).write(to: url, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ConfigFile.load(path: url.path), .srio3LSAT002)
    }

    /// The schema is recorded from the preset: Double and Int stay distinct (X0 is a number
    /// even though it holds an integral value), and every key appears in CodingKeys order.
    func testRecordedSchemaKeepsTypesAndOrder() {
        guard case .object(let top) = ConfigFile.schema else { return XCTFail("schema is not an object") }
        XCTAssertEqual(top.map(\.0), ["instrument", "zone_plate", "sample", "model", "ranges", "library", "noise"])
        guard case .object(let inst)? = top.first?.1 else { return XCTFail("instrument is not an object") }
        let types = Dictionary(uniqueKeysWithValues: inst.map { ($0.0, $0.1.typeName) })
        XCTAssertEqual(types["X0"], "a number")
        XCTAssertEqual(types["binning"], "an integer")
    }
}

/// The training preset goes through the same strict loader.
final class TrainingConfigFileTests: XCTestCase {
    static let preset = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("configs/train-donut.yaml").path

    func testPresetEqualsThePaperSettingsAndRoundTrips() throws {
        let c = try ConfigFile.load(TrainingConfig.self, path: Self.preset)
        XCTAssertEqual(c, TrainingConfig.donutPaper)
        XCTAssertEqual(try ConfigFile.parse(TrainingConfig.self, yaml: ConfigFile.yaml(of: c), source: "yaml"), c)
        XCTAssertEqual(try ConfigFile.parse(TrainingConfig.self, yaml: ConfigFile.json(of: c), source: "json"), c)
    }

    func testErrorsNameTheKey() throws {
        let text = try String(contentsOfFile: Self.preset, encoding: .utf8)
        func error(_ edited: String) -> String {
            do { _ = try ConfigFile.parse(TrainingConfig.self, yaml: edited, source: "t.yaml"); return "no error" } catch { return "\(error)" }
        }
        XCTAssert(error(text.replacingOccurrences(of: "lr_decoder", with: "lr_decodr")).contains("optimiser.lr_decodr"))
        XCTAssert(error(text.replacingOccurrences(of: "dropout: 0.0", with: "dropout: 1.5")).contains("network.dropout"))
        XCTAssert(error(text.replacingOccurrences(of: "batch_size: 16", with: "batch_size: 0")).contains("schedule.batch_size"))
        XCTAssert(error(text.replacingOccurrences(of: "[16, 32, 64, 64]", with: "[16, -2]")).contains("network.encoder_channels"))
        XCTAssert(error(text.replacingOccurrences(of: "  decoder: true", with: "  decoder: false")).contains("loss.decoder"))
        XCTAssert(error(text.replacingOccurrences(of: "physics_loss: mae", with: "physics_loss: l2")).contains("loss.physics_loss"))
        // Left out (presets and models from before the key): the paper's MAE.
        let withoutKey = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains("physics_loss:") }.joined(separator: "\n")
        XCTAssertEqual(try ConfigFile.parse(TrainingConfig.self, yaml: withoutKey, source: "t.yaml").loss.physicsLoss, "mae")
    }
}
