import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where HDF5 finds the file an external link (or a virtual dataset's mapping) names.
/// Donut opens a Dectris master's data files itself, to check every part before reading and
/// to name a missing one, so it must look where HDF5 looks, in HDF5's order (1.10,
/// `H5F_prefix_open_file`; measured with h5dump 1.10.8):
///   1. an absolute name as it is; when that fails, its last component in the places below;
///   2. each prefix of `HDF5_EXT_PREFIX` (`HDF5_VDS_PREFIX` for virtual datasets), colon-separated;
///   3. the prefix property of the link access list (Donut never sets one);
///   4. the folder of the file holding the link;
///   5. the name as it is, relative to the working folder;
///   6. for a holding file reached through a symbolic link, the folder of its target.
/// HDF5 takes the first place that opens as an HDF5 file and moves on past a missing file or
/// one that is not HDF5; so does this search.
struct ExternalFileSearch {
    /// Which environment variable holds the prefixes HDF5 tries first.
    enum Kind: String {
        case externalLink = "HDF5_EXT_PREFIX"
        case virtualSource = "HDF5_VDS_PREFIX"
    }

    /// A path HDF5 tries, and why it tries it ("HDF5_EXT_PREFIX", "beside scan_master.h5", …).
    struct Place: Equatable {
        var path: String
        var reason: String
    }

    /// The file name as the link stores it.
    let name: String
    /// Every place HDF5 tries, in its order (each path once).
    let places: [Place]
    /// The first place holding an HDF5 file: the file HDF5 opens; nil when the link dangles.
    let found: String?
    /// The place beside the holding file, where a Dectris writer leaves its data files.
    let besideHolder: String

    /// Searches for `name`, linked from the file `holder` (as the user named it).
    init(_ name: String, linkedFrom holder: String, kind: Kind = .externalLink) {
        self.name = name
        let workingFolder = FileManager.default.currentDirectoryPath
        var places: [Place] = []
        func add(_ path: String, _ reason: String) {
            if !places.contains(where: { $0.path == path }) { places.append(Place(path: path, reason: reason)) }
        }
        var relative = name
        if name.hasPrefix("/") {
            add(name, "as named")
            relative = String(name[name.index(after: name.lastIndex(of: "/")!)...])
        }
        if let variable = getenv(kind.rawValue) {
            for prefix in String(cString: variable).split(separator: ":", omittingEmptySubsequences: true) {
                add(Self.joined(String(prefix), relative), kind.rawValue)
            }
        }
        // HDF5 makes the holder's folder absolute with the working folder at open; kept as
        // the user named it here (the same file while the working folder stays), so that the
        // paths recorded as a rerun's inputs do not change with this search.
        let holderName = (holder as NSString).lastPathComponent
        besideHolder = Self.joined(Self.folder(of: holder), relative)
        add(besideHolder, "beside \(holderName)")
        add(relative, "in the working folder \(workingFolder)")
        if (try? FileManager.default.destinationOfSymbolicLink(atPath: holder)) != nil, let real = realpath(holder, nil) {
            let target = String(cString: real)
            free(real)
            add(Self.joined(Self.folder(of: target), relative), "beside \(target), the target of the symbolic link \(holderName)")
        }
        self.places = places
        found = places.first { H5File.isHDF5File($0.path) }?.path
    }

    /// Why nothing was found, for "… points to 'x.h5', which " + this: "does not exist (HDF5
    /// looks, in order, at /d/x.h5 (HDF5_EXT_PREFIX), x.h5 (beside m.h5))", or, when some place
    /// holds something else, "is no HDF5 file where it exists (… x.h5 (beside m.h5; not an HDF5 file))".
    var notFoundDescription: String {
        var anyExists = false
        let listed = places.map { p in
            let what = FileKind.nonRegular(p.path).map { "; \($0)" }
                ?? (FileManager.default.fileExists(atPath: p.path) ? "; not an HDF5 file" : "")
            anyExists = anyExists || !what.isEmpty
            return "\(p.path) (\(p.reason)\(what))"
        }.joined(separator: ", ")
        return (anyExists ? "is no HDF5 file where it exists" : "does not exist") + " (HDF5 looks, in order, at \(listed))"
    }

    /// The path HDF5 builds from a prefix and a name (H5F__build_name: one "/" between).
    static func joined(_ prefix: String, _ name: String) -> String {
        prefix.isEmpty || prefix.hasSuffix("/") ? prefix + name : prefix + "/" + name
    }

    /// Everything up to the last "/" (H5_build_extpath): "/m/a.h5" → "/m/".
    static func folder(of path: String) -> String {
        path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
    }
}
