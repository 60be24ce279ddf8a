import EngineCore
import Foundation

/// The checkpoint files of one output directory: `<out>/checkpoints/ckpt-<sequence>.bin`, each written to a
/// temporary name, fsynced, renamed and the directory fsynced; the newest `keep` are kept.
final class CheckpointStore: @unchecked Sendable {
    let dir: String
    let keep: Int
    let manifestDigest: [UInt8]

    init(dir: String, keep: Int, manifestSHA256 hex: String) {
        self.dir = dir
        self.keep = keep
        var raw: [UInt8] = []
        var it = Array(hex.utf8).makeIterator()
        while let a = it.next(), let b = it.next() { raw.append(UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) ?? 0) }
        manifestDigest = raw
    }

    /// Existing checkpoint files, oldest first (by sequence number).
    func files() -> [(seq: Int, path: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.compactMap { n -> (Int, String)? in
            guard n.hasPrefix("ckpt-"), n.hasSuffix(".bin"), let s = Int(n.dropFirst(5).dropLast(4)) else { return nil }
            return (s, dir + "/" + n)
        }.sorted { $0.0 < $1.0 }
    }

    func write(_ c: Checkpoint) throws(EngineError) {
        try FileBytes.makeDirectory(dir)
        let seq = (files().last?.seq ?? 0) + 1
        let name = "ckpt-" + String(repeating: "0", count: max(0, 10 - String(seq).count)) + String(seq) + ".bin"
        try FileBytes.writeAtomically(c.encoded(), to: dir + "/" + name, sync: true)
        for old in files().dropLast(keep) { try? FileManager.default.removeItem(atPath: old.path) }
    }

    /// A fresh (non-resume) run starts with no checkpoints of an earlier run.
    func removeAll() {
        for f in files() { try? FileManager.default.removeItem(atPath: f.path) }
    }

    /// The newest checkpoint that decodes and belongs to this manifest; each rejected one is reported through
    /// `warn`. nil when there is none at all; exit 64 when the only ones are another manifest's, 65 when every
    /// one is corrupt.
    func newestUsable(warn: (String) -> Void) throws(EngineError) -> Checkpoint? {
        let all = files()
        guard !all.isEmpty else { return nil }
        var corrupt = 0, foreign = 0
        for f in all.reversed() {
            let c: Checkpoint
            do {
                c = try Checkpoint.decode(try FileBytes.read(f.path, what: "checkpoint"), location: f.path)
            } catch {
                corrupt += 1
                warn("\(error.location): \(error.message); trying the previous checkpoint")
                continue
            }
            guard c.manifestSHA256 == manifestDigest else {
                foreign += 1
                warn("\(f.path): checkpoint was written by a different manifest; trying the previous checkpoint")
                continue
            }
            return c
        }
        if corrupt == 0 {
            throw .usage(dir, "resume refused: the \(foreign) checkpoint(s) here were written by a different manifest",
                         hint: "resume with the manifest the run started with, or start without --resume")
        }
        throw .data(dir, "no usable checkpoint: \(corrupt) corrupt\(foreign > 0 ? ", \(foreign) from another manifest" : "")",
                    hint: "start without --resume")
    }
}
