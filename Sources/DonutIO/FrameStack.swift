import Foundation

// The frames of an HDF5 scan, as one stack whatever their storage:
//   - one dataset ((N, H, W) or (rows, cols, H, W)), the usual case; or
//   - numbered parts, as Dectris Eiger file writers (and many beamlines) leave them: the
//     master file has no frames dataset `…/data` but `…/data_000001`, `…/data_000002`, …,
//     each an external link to `<prefix>_data_00000k.h5:/entry/data/data` ((N_k, H, W),
//     uint32, bitshuffle-LZ4 chunks (1, H, W)) in the same folder. The frames are the
//     parts concatenated in number order.

/// One part of a scan whose frames are split over numbered datasets.
public struct ScanFramePart: Equatable, Sendable, CustomStringConvertible {
    /// The link in the master file ("/entry/data/data_000001").
    public var link: String
    /// The file holding the part as the link names it (nil: the master file itself).
    public var linkedFile: String?
    /// The file opened: the linked name found where HDF5 looks (`ExternalFileSearch`).
    public var file: String
    /// The dataset in `file`.
    public var dataset: String
    /// Frames in this part, and the index of its first frame in the scan (file order).
    public var frameCount: Int
    public var firstFrame: Int

    /// "/entry/data/data_000001 → x_data_000001.h5:/entry/data/data (100 frames)".
    public var description: String {
        "\(link) → " + (linkedFile.map { "\($0):\(dataset)" } ?? dataset) + " (\(frameCount) frames)"
    }
}

/// The frames of a scan file: one dataset, or numbered parts read as their concatenation
/// (`ScanFramePart`). Shape, element type, chunks and filters are checked for every part
/// when opened, so that a missing data file, a part of another shape or type, or a filter
/// without a decoder is refused before any computation. Reads are independent and hold at
/// most two parts open (each with a chunk cache of two chunks): memory does not grow with
/// the number of parts.
final class FrameStack {
    /// The scan file as the user named it.
    let path: String
    /// The dataset asked for, or "/entry/data/data_000001…data_000012" for parts.
    let name: String
    /// (N, H, W) or (rows, cols, H, W) for one dataset; (ΣN_k, H, W) for parts.
    let shape: [Int]
    let storedType: H5StoredType
    /// Chunks and filters (of the first part, which every part shares in type and frame shape).
    let chunkShape: [Int]?
    let filters: [H5Filter]
    /// Empty for one dataset.
    let parts: [ScanFramePart]
    /// Frames announced by a Dectris master (`detectorSpecific/nimages × ntrigger`), if any.
    let announcedFrames: Int?

    private var single: H5Dataset?
    /// Parts that live in the master file (hard links), open from the start.
    private var inMaster: [Int: H5Dataset] = [:]
    /// Parts in other files, most recently used last (at most two).
    private var opened: [(index: Int, file: H5File, dataset: H5Dataset)] = []

    /// Chunk cache for reading frames in order: room for two chunks, so consecutive frames
    /// never decode a chunk twice (4 MiB at least, 512 MiB at most).
    static func chunkCacheBytes(_ d: H5Dataset) -> Int? {
        guard let chunk = d.chunkShape else { return nil }
        let bytes = chunk.reduce(1, *) * d.storedType.bits / 8
        return min(max(2 * bytes, 4 << 20), 512 << 20)
    }

    /// Numbered parts `<dataset>_1…` of a dataset path that is absent: the links
    /// `<group>/<name>_<digits>` in number order, which must run 1, 2, … without a gap.
    /// Nil when there are none.
    static func partLinks(_ f: H5File, dataset: String) throws -> [String]? {
        guard let slash = dataset.lastIndex(of: "/") else { return nil }
        let group = String(dataset[..<slash]), base = String(dataset[dataset.index(after: slash)...])
        let prefix = base + "_"
        var numbered: [(Int, String)] = []
        for child in f.children(of: group.isEmpty ? "/" : group) where child.hasPrefix(prefix) {
            let digits = child.dropFirst(prefix.count)
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let k = Int(digits) else { continue }
            numbered.append((k, "\(group)/\(child)"))
        }
        guard !numbered.isEmpty else { return nil }
        numbered.sort { $0.0 < $1.0 }
        for (i, (k, p)) in numbered.enumerated() where k != i + 1 {
            let missing = i == 0 ? "1" : "\(numbered[i - 1].0 + 1)"
            throw DonutIOError.dataset(f.path, dataset, "is split into numbered parts, but part \(missing) is missing "
                                       + "(found \(numbered.map { $0.1 }.joined(separator: ", ")); next after the gap: \(p))")
        }
        return numbered.map { $0.1 }
    }

    /// Opens the frames `dataset` of `f`, or its numbered parts when it is absent; the
    /// error when neither exists lists datasets that look like frames.
    init(_ f: H5File, dataset: String) throws {
        path = f.path
        if f.objectKind(dataset) == .dataset {
            var d = try f.openDataset(dataset)
            guard d.isNumeric else { throw DonutIOError.dataset(f.path, dataset, "expected numeric frames, got \(d.typeDescription)") }
            if let bytes = Self.chunkCacheBytes(d) {
                try d.close()
                d = try f.openDataset(dataset, chunkCacheBytes: bytes)
            }
            try d.checkFiltersDecode()
            try Self.checkVirtualSources(d, master: f)
            single = d
            name = dataset; shape = d.shape; storedType = d.storedType; chunkShape = d.chunkShape; filters = d.filters
            parts = []; announcedFrames = nil
            return
        }
        guard !f.exists(dataset), let links = try Self.partLinks(f, dataset: dataset) else {
            let found = ScanReader.frameCandidates(f)
            throw DonutIOError.dataset(f.path, dataset, (f.exists(dataset) ? "is not a dataset" : "not found")
                + (found.isEmpty ? "" : " (datasets that look like frames: \(found.joined(separator: ", ")); pass one with --dataset)"))
        }
        var parts: [ScanFramePart] = []
        var first: (type: H5StoredType, frame: [Int], chunks: [Int]?, filters: [H5Filter], part: String)?
        var total = 0
        for (i, link) in links.enumerated() {
            let which = "part \(i + 1) of \(links.count) (link '\(link)')"
            let d: H5Dataset, file: String, linked: String?, object: String
            var partFile: H5File?
            switch f.link(link) {
            case .external(let target, let targetObject)?:
                linked = target; object = targetObject
                let search = ExternalFileSearch(target, linkedFrom: f.path)
                guard let found = search.found else {
                    throw DonutIOError(file: f.path, object: "link '\(link)'",
                                       "part \(i + 1) of \(links.count) points to the data file '\(target)' (dataset '\(targetObject)'), which "
                                       + "\(search.notFoundDescription); expected a file holding that dataset of "
                                       + (first.map { "(N, \($0.frame.map(String.init).joined(separator: ", "))) \($0.type) frames like part 1" } ?? "(N, H, W) frames")
                                       + ": the acquisition may have been aborted or the data file not copied with the master "
                                       + "(data files copied elsewhere: name their folder in \(ExternalFileSearch.Kind.externalLink.rawValue))")
                }
                file = found
                let pf = try H5File.open(found)
                partFile = pf
                guard pf.objectKind(targetObject) == .dataset else {
                    try? pf.close()
                    throw DonutIOError.dataset(found, targetObject, "not found: \(which) of '\(f.path)' points here")
                }
                d = try pf.openDataset(targetObject)
            case .hard?, .soft?:
                linked = nil; file = f.path; object = link
                guard f.objectKind(link) == .dataset else { throw DonutIOError.dataset(f.path, link, "\(which) is not a dataset") }
                d = try f.openDataset(link)
            case nil:
                throw DonutIOError.dataset(f.path, link, "\(which) cannot be read as a link")
            }
            func fail(_ message: String) -> DonutIOError {
                try? d.close(); try? partFile?.close()
                return .dataset(file, object, "\(which) of '\(f.path)': \(message)")
            }
            guard d.isNumeric else { throw fail("expected numeric frames, got \(d.typeDescription)") }
            guard d.shape.count == 3 else {
                throw fail("expected frames (N, H, W), got shape (\(d.shape.map(String.init).joined(separator: ", ")))")
            }
            let frame = Array(d.shape.dropFirst()), type = d.storedType
            if let p = first {
                guard frame == p.frame, type == p.type else {
                    throw fail("frames are \(type) \(frame.map(String.init).joined(separator: "×")), expected \(p.type) "
                               + "\(p.frame.map(String.init).joined(separator: "×")) like part 1 (\(p.part))")
                }
            }
            // Dectris data files say which images they hold (1-based, inclusive).
            if d.file.attributeExists("image_nr_low", on: object), d.file.attributeExists("image_nr_high", on: object),
               let low = try? d.file.readIntAttribute("image_nr_low", on: object),
               let high = try? d.file.readIntAttribute("image_nr_high", on: object),
               low != total + 1 || high - low + 1 != d.shape[0] {
                throw fail("holds \(d.shape[0]) frames, images \(total + 1)…\(total + d.shape[0]) of the scan after the parts before it, "
                           + "but announces images \(low)…\(high) (image_nr_low, image_nr_high): frames are missing in this part or before it")
            }
            let chunks = d.chunkShape, pipeline = d.filters, count = d.shape[0]
            if let bytes = Self.chunkCacheBytes(d), partFile == nil {
                // A part in the master stays open: give it the reading cache now.
                try d.close()
                let reopened = try f.openDataset(link, chunkCacheBytes: bytes)
                try reopened.checkFiltersDecode()
                inMaster[i] = reopened
            } else {
                do { try d.checkFiltersDecode() } catch let e as DonutIOError { throw fail(e.message) }
                if partFile == nil { inMaster[i] = d }
            }
            if first == nil { first = (type, frame, chunks, pipeline, (linked.map { "\($0):" } ?? "") + object) }
            parts.append(ScanFramePart(link: link, linkedFile: linked, file: file, dataset: object, frameCount: count, firstFrame: total))
            total += count
            if let pf = partFile { try d.close(); try pf.close() }
        }
        let p = first!
        self.parts = parts
        name = links.count == 1 ? links[0] : "\(links[0])…\(links.last!.split(separator: "/").last!)"
        shape = [total] + p.frame; storedType = p.type; chunkShape = p.chunks; filters = p.filters
        let ds = "/entry/instrument/detector/detectorSpecific"
        if f.objectKind("\(ds)/nimages") == .dataset, let n = try? f.readDataset("\(ds)/nimages", as: Int64.self).first {
            let t = f.objectKind("\(ds)/ntrigger") == .dataset ? (try? f.readDataset("\(ds)/ntrigger", as: Int64.self).first) ?? 1 : 1
            announcedFrames = Int(n * max(t, 1))
        } else {
            announcedFrames = nil
        }
    }

    /// A virtual dataset (how some beamlines and converters present a Dectris master's data
    /// files as one `/entry/data/data`) reads a missing source file as fill values — frames
    /// of zeros, computed on without a word: each source file must exist and hold its dataset.
    static func checkVirtualSources(_ d: H5Dataset, master f: H5File) throws {
        guard let sources = d.virtualSources else { return }
        var seen = Set<String>()
        for (k, (file, object)) in sources.enumerated() where file != "." && !file.contains("%") && seen.insert(file + "\u{0}" + object).inserted {
            let search = ExternalFileSearch(file, linkedFrom: f.path, kind: .virtualSource)
            let which = "virtual dataset: mapping \(k + 1) of \(sources.count) reads '\(object)' of the source file '\(file)'"
            guard let found = search.found else {
                throw DonutIOError.dataset(f.path, d.path, "\(which), which \(search.notFoundDescription): "
                                           + "its frames would read as fill values; copy the data files with the master "
                                           + "(or name their folder in \(ExternalFileSearch.Kind.virtualSource.rawValue))")
            }
            let sf = try H5File.open(found)
            defer { try? sf.close() }
            guard sf.objectKind(object) == .dataset else {
                throw DonutIOError.dataset(found, object, "not found: \(which) of '\(f.path)' (dataset '\(d.path)'); its frames would read as fill values")
            }
        }
    }

    /// "3 parts: 5 + 5 + 2 frames (the master announces 12)", for messages.
    var partsSummary: String {
        guard !parts.isEmpty else { return "" }
        let counts = parts.count <= 12 ? parts.map { String($0.frameCount) }.joined(separator: " + ")
            : "\(parts[0].frameCount) + … + \(parts.last!.frameCount)"
        return "\(parts.count) parts: \(counts) frames" + (announcedFrames.map { " (the master announces \($0))" } ?? "")
    }

    /// The dataset of part `i`, opening its file when needed (at most two part files open).
    private func partDataset(_ i: Int) throws -> H5Dataset {
        if let d = inMaster[i] { return d }
        if let k = opened.firstIndex(where: { $0.index == i }) {
            let o = opened.remove(at: k)
            opened.append(o)
            return o.dataset
        }
        if opened.count >= 2 {
            let old = opened.removeFirst()
            try old.dataset.close(); try old.file.close()
        }
        let part = parts[i]
        let f = try H5File.open(part.file)
        let probe = try f.openDataset(part.dataset)
        let bytes = Self.chunkCacheBytes(probe)
        try probe.close()
        let d = try f.openDataset(part.dataset, chunkCacheBytes: bytes)
        guard d.shape == [part.frameCount] + Array(shape.dropFirst()) else {
            try? d.close(); try? f.close()
            throw DonutIOError.dataset(part.file, part.dataset, "changed while the scan was read: shape \(d.shape), was (\(part.frameCount), …)")
        }
        opened.append((i, f, d))
        return d
    }

    /// Frames `range` (flat over the leading dimensions), each the trailing box
    /// `trailingStart`/`trailingCount` (nil: whole frames), as Double in C order.
    func read(range: Range<Int>, trailingStart: [Int]?, trailingCount: [Int]?) throws -> [Double] {
        if let d = single {
            return try d.read(as: Double.self, selection: FlatSelection(leadingRank: shape.count - 2, range: range,
                                                                         trailingStart: trailingStart, trailingCount: trailingCount))
        }
        guard range.lowerBound >= 0, range.upperBound <= shape[0] else {
            throw DonutIOError.dataset(path, name, "frames \(range) outside the scan's \(shape[0]) frames")
        }
        var out: [Double] = []
        for (i, part) in parts.enumerated() {
            let lo = max(range.lowerBound, part.firstFrame), hi = min(range.upperBound, part.firstFrame + part.frameCount)
            guard lo < hi else { continue }
            let d = try partDataset(i)
            let values = try d.read(as: Double.self, selection: FlatSelection(leadingRank: 1, range: (lo - part.firstFrame) ..< (hi - part.firstFrame),
                                                                              trailingStart: trailingStart, trailingCount: trailingCount))
            if out.isEmpty { out = values } else { out += values }
        }
        return out
    }

    /// Releases every dataset and part file (the master file is the caller's).
    func close() throws {
        try single?.close(); single = nil
        for d in inMaster.values { try d.close() }
        inMaster = [:]
        for o in opened { try o.dataset.close(); try o.file.close() }
        opened = []
    }
}

extension ScanReader {
    /// The files a scan's frames come from: the scan file and, for a Dectris master whose
    /// frames `dataset` is split into numbered external links, every data file (where the
    /// reader finds it, as HDF5 would; beside the master when it is missing), so that a rerun
    /// sees a replaced or completed data file as a changed input. Only the scan file when it
    /// cannot be opened as HDF5 here (the reader then says why).
    public static func frameFiles(path: String, dataset: String = defaultFramesDataset) -> [String] {
        guard !path.lowercased().hasSuffix(".npy"), let f = try? H5File.open(path) else { return [path] }
        defer { try? f.close() }
        guard f.objectKind(dataset) != .dataset, let links = (try? FrameStack.partLinks(f, dataset: dataset)) ?? nil else { return [path] }
        var files = [path]
        for link in links {
            guard case .external(let target, _)? = f.link(link) else { continue }
            // A missing data file counts where a Dectris writer leaves it, beside the master.
            let search = ExternalFileSearch(target, linkedFrom: path)
            let file = search.found ?? search.besideHolder
            if !files.contains(file) { files.append(file) }
        }
        return files
    }
}
