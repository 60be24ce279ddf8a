import EngineCore
import Foundation
@testable import RowIO
import TestSupport
import Testing

/// Everything a decode produces that could differ between thread counts.
struct DecodeTrace: Equatable {
    var features: [Double] = []   // bit-compared via Equatable on bit patterns below
    var bits: [UInt64] = []
    var targets: [UInt64] = []
    var weights: [UInt64] = []
    var indices: [Int64] = []
    var batchCounts: [Int] = []
    var positions: [Int64] = []
    var quarantine: [String] = []
    var byColumn: [Int: Int64] = [:]
    var skipped: Int64 = 0
    var error: String?
    static func == (a: DecodeTrace, b: DecodeTrace) -> Bool {
        a.bits == b.bits && a.targets == b.targets && a.weights == b.weights && a.indices == b.indices
            && a.batchCounts == b.batchCounts && a.positions == b.positions && a.quarantine == b.quarantine
            && a.byColumn == b.byColumn && a.skipped == b.skipped && a.error == b.error
    }
}

func trace(_ path: String, _ cfg: SourceConfig, threads: Int, blockBytes: Int, batchRows: Int = 5) -> DecodeTrace {
    var t = DecodeTrace()
    let lines = LockedLines()
    let bad = BadRowHandler(policy: cfg.onBadRow, quarantine: { line throws(EngineError) in lines.append(line) })
    do {
        let src = try SourceReader(path: path, config: cfg, bad: bad)
        src.parseThreads = threads
        src.parseBlockBytes = blockBytes
        guard let l = src.layout else { return t }
        var batch = RowBatch(columns: l.features, capacity: batchRows, hasTarget: l.hasTarget, hasWeight: l.hasWeight)
        while true {
            batch.reset()
            let more = try src.fill(&batch)
            t.batchCounts.append(batch.count)
            t.positions.append(src.rowsConsumed)
            t.bits += batch.features.prefix(batch.count * l.features).map(\.bitPattern)
            if let x = batch.targets { t.targets += x.prefix(batch.count).map(\.bitPattern) }
            if let x = batch.weights { t.weights += x.prefix(batch.count).map(\.bitPattern) }
            t.indices += batch.indices.prefix(batch.count)
            if !more { break }
        }
    } catch let e as EngineError { t.error = e.description } catch { t.error = "\(error)" }
    t.quarantine = lines.all
    t.byColumn = bad.byColumn
    t.skipped = bad.skipped
    return t
}

@Suite struct ParallelTextTests {
    let dir = temporaryDirectory("paralleltext")

    /// A CSV with every kind of record the decoder treats specially, seeded: good rows, bad values, non-finite
    /// cells, missing cells, ragged rows, negative weights, blank lines, CRLF endings, quoted numbers, a quoted
    /// text column holding delimiters and newlines (`quotes`), and no newline after the last record.
    func hostileCSV(rows: Int, seed: UInt64, quotes: Bool) -> String {
        var g = NumberStrings.Mix(state: seed)
        var s = "a,b,c,w,y\(quotes ? ",note" : "")\n"
        for i in 0..<rows {
            let kind = g.next() % 40
            let v = (0..<3).map { _ in NumberStrings.string(g.next() % 1000, seed: seed) }
            let numbers = v.map { $0.contains("e4") || $0.contains("e3") ? "1.5" : $0 }   // keep values finite mostly
            var fields = numbers + ["\(g.next() % 5)", "\(Double(i) * 0.25)"]
            switch kind {
            case 0: fields[1] = "x\(i)"
            case 1: fields[0] = "nan"
            case 2: fields[2] = ""
            case 3: fields.removeLast()
            case 4: fields[3] = "-1"
            case 5: fields[1] = "\"\(fields[1])\""
            case 6: fields[4] = "1e999"
            default: break
            }
            if quotes { fields.append(g.next() % 3 == 0 ? "\"multi\nline, \"\"quoted\"\"\r\ntext\"" : "plain \(i)") }
            if kind == 7 { s += "\n" }
            if kind == 8 { s += "  \r\n" }
            s += fields.joined(separator: ",") + (g.next() % 4 == 0 ? "\r\n" : "\n")
        }
        s += "1,2,3,1,4\(quotes ? ",\"end\"" : "")"   // no newline at the end
        return s
    }

    func config(_ policy: SourceConfig.BadRowPolicy) -> SourceConfig {
        var c = SourceConfig()
        c.target = .named(ColumnName("y", location: "test"))
        c.weight = .name(ColumnName("w", location: "test"))
        c.select = ["a", "b", "c"].map { .name(ColumnName($0, location: "test")) }   // the note column is only delimited
        c.onBadRow = policy
        c.header = .yes
        return c
    }

    /// Line by line vs blocks on 1, 2 and 3 threads, with blocks from a few bytes (edges inside every kind of record) to larger than
    /// the file: rows, positions, batch cuts, quarantine lines, per-column counts and errors must be identical.
    /// The reference is the one-thread decoder, whose behaviour the other RowIO tests pin down.
    @Test(arguments: [false, true])
    func sameAsOneThread(quotes: Bool) throws {
        let path = dir + "/hostile-\(quotes).csv"
        writeFile(path, hostileCSV(rows: 400, seed: quotes ? 5 : 6, quotes: quotes))
        for policy in [SourceConfig.BadRowPolicy.quarantine, .skip, .fail] {
            let cfg = config(policy)
            let one = trace(path, cfg, threads: 0, blockBytes: 1 << 20)   // line by line
            #expect(one.indices.count > 300 || policy == .fail, "the reference decoded \(one.indices.count) rows: \(one.error ?? "") \(one.quarantine.prefix(3))")
            if policy == .quarantine { #expect(one.quarantine.count > 20 && !one.byColumn.isEmpty) }
            if policy == .fail { #expect(one.error != nil) }
            for threads in [1, 2, 3] {
                for block in [1, 7, 64, 333, 4096, 1 << 20] {
                    let many = trace(path, cfg, threads: threads, blockBytes: block)
                    #expect(many == one, "threads \(threads), block \(block), \(policy): \(many.error ?? "") vs \(one.error ?? "")")
                }
            }
        }
    }

    /// A record longer than the limit is rejected at its own line whichever path reads it.
    @Test func tooLongRecordSameError() throws {
        let path = dir + "/long.csv"
        writeFile(path, "1,2\n3,4\n" + String(repeating: "5", count: (1 << 20) + 300) + ",6\n7,8\n")
        var cfg = SourceConfig(); cfg.header = .no
        let one = trace(path, cfg, threads: 0, blockBytes: 1 << 20)
        #expect(one.error?.contains("long.csv:3:1") == true && one.error?.contains("longer than") == true)
        for block in [16, 1 << 19, 1 << 21] {
            #expect(trace(path, cfg, threads: 2, blockBytes: block) == one)
        }
    }

    /// libsvm through the same blocks: good rows, every kind of bad token (index 0, out of range, not
    /// increasing, no colon, bad values, a bad label), comments, qid tokens, blank lines, CRLF, and no final
    /// newline. The reference is the line-by-line decoder.
    @Test func libsvmSameAsLineByLine() throws {
        var g = NumberStrings.Mix(state: 9)
        var text = "# a comment line\n"
        for i in 0..<500 {
            var idx = 0
            var tokens = ["\(Double(i % 7) - 3)"]
            if i % 11 == 0 { tokens.append("qid:\(i)") }
            for _ in 0..<Int(g.next() % 6) {
                idx += 1 + Int(g.next() % 4)
                tokens.append("\(idx):\(NumberStrings.string(g.next() % 100, seed: 3))")
            }
            switch g.next() % 30 {
            case 0: tokens.append("0:1")
            case 1: tokens.append("99:1")
            case 2: tokens.append("1:1")   // not increasing (unless first)
            case 3: tokens.append("5")
            case 4: tokens.append("\(idx + 1):abc")
            case 5: tokens[0] = "lbl"
            case 6: tokens.append("\(idx + 1):nan")
            case 7: text += "\n   \n"
            default: break
            }
            text += tokens.joined(separator: " ") + (g.next() % 5 == 0 ? " # note\r\n" : "\n")
        }
        text += "1 1:2 3:4"
        let path = dir + "/hostile.svm"
        writeFile(path, text)
        for policy in [SourceConfig.BadRowPolicy.quarantine, .fail] {
            var cfg = SourceConfig(); cfg.format = .libsvm; cfg.columns = 20; cfg.onBadRow = policy
            let one = trace(path, cfg, threads: 0, blockBytes: 1 << 20)
            if policy == .quarantine { #expect(one.indices.count > 300 && one.quarantine.count > 20, "\(one.error ?? "")") }
            if policy == .fail { #expect(one.error != nil) }
            for threads in [1, 2, 3] {
                for block in [1, 13, 256, 1 << 20] {
                    let many = trace(path, cfg, threads: threads, blockBytes: block)
                    #expect(many == one, "threads \(threads), block \(block), \(policy): \(many.error ?? "") vs \(one.error ?? "")")
                }
            }
        }
    }

    /// A truncated zstd stream read ahead by the block path: the same rows first, then the same error, as
    /// when one thread reads on demand (the read-ahead keeps the error for the block that needs the bytes).
    @Test func truncatedZstdSameRowsThenSameError() throws {
        var text = ""
        var g = NumberStrings.Mix(state: 3)
        for i in 0..<40_000 { text += "\(i),\(NumberStrings.string(g.next() % 500, seed: 4)),\(i % 7)\n" }
        let sink = try ByteSink(path: dir + "/z.csv.zst", zstd: true)
        try sink.write(text); try sink.close()
        let whole = try Data(contentsOf: URL(fileURLWithPath: dir + "/z.csv.zst"))
        try whole.prefix(whole.count * 2 / 3).write(to: URL(fileURLWithPath: dir + "/cut.csv.zst"))
        var cfg = SourceConfig(); cfg.header = .no; cfg.onBadRow = .skip
        let one = trace(dir + "/cut.csv.zst", cfg, threads: 0, blockBytes: 1 << 20, batchRows: 1000)
        #expect(one.error?.contains("truncated zstd") == true && one.indices.count > 10_000)
        for block in [4096, 1 << 16] {
            let two = trace(dir + "/cut.csv.zst", cfg, threads: 2, blockBytes: block, batchRows: 1000)
            #expect(two == one, "rows \(two.indices.count) vs \(one.indices.count), batches \(two.batchCounts.count) vs \(one.batchCounts.count), \(two.error ?? "") vs \(one.error ?? "")")
        }
    }
}
