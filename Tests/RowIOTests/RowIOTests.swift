import EngineCore
import Foundation
@testable import RowIO
import TestSupport
import Testing

/// Decodes a whole input with the given source config into (features, targets, indices).
func decodeAll(_ path: String, _ cfg: SourceConfig, batchRows: Int = 7, bad: BadRowHandler = BadRowHandler(policy: .fail))
    throws -> (rows: [[Double]], targets: [Double], indices: [Int64]) {
    let src = try SourceReader(path: path, config: cfg, bad: bad)
    guard let l = src.layout else { return ([], [], []) }
    var batch = RowBatch(columns: l.features, capacity: batchRows, hasTarget: l.hasTarget, hasWeight: l.hasWeight)
    var rows: [[Double]] = [], targets: [Double] = [], indices: [Int64] = []
    while true {
        batch.reset()
        let more = try src.fill(&batch)
        for r in 0..<batch.count {
            rows.append(Array(batch.features[r * l.features..<(r + 1) * l.features]))
            if let t = batch.targets { targets.append(t[r]) }
            indices.append(batch.indices[r])
        }
        if !more { break }
    }
    return (rows, targets, indices)
}

func errorOf(_ body: () throws -> Void) -> EngineError? {
    do { try body(); return nil } catch let e as EngineError { return e } catch { return nil }
}

@Suite struct NumberParserTests {
    func parse(_ s: String) -> NumberParser.Result {
        let b = Array(s.utf8)
        return b.withUnsafeBufferPointer { NumberParser.parse($0.baseAddress!, 0, b.count) }
    }

    /// The fast path and the strtod fallback must both be exactly rounded: compare with Swift's own parser
    /// (correctly rounded) on 20,000 seeded numbers of every shape.
    @Test func matchesCorrectRounding() {
        let r = CounterRandom(seed: 11, shard: 0, purpose: 1)
        for i in 0..<20_000 {
            let mant = r.uniform(index: UInt64(i)) * pow(10, Double(Int(r.uniform(index: UInt64(i), lane: 1) * 40) - 20))
            let forms = [String(mant), String(-mant), String(format: "%.6e", mant), String(format: "%.17g", mant), String(format: "%.3f", mant)]
            for f in forms {
                guard case let .value(v) = parse(f) else { Issue.record("did not parse \(f)"); continue }
                #expect(v == Double(f)!, "\(f)")
            }
        }
    }

    @Test func formsAndWords() {
        #expect(parse(" 1.5 ") == .value(1.5))
        #expect(parse("\"2.25\"") == .value(2.25))
        #expect(parse("1e3") == .value(1000))
        #expect(parse(".5") == .value(0.5))
        #expect(parse("1e999") == .overflow)
        #expect(parse("1e-999") == .value(0))
        #expect(parse("abc") == .invalid)
        #expect(parse("1.2.3") == .invalid)
        #expect(parse("1e") == .invalid)
        if case .nonfinite = parse("NaN") {} else { Issue.record("NaN") }
        if case .nonfinite = parse("-inf") {} else { Issue.record("-inf") }
        if case .nonfinite = parse("NA") {} else { Issue.record("NA") }
        if case .nonfinite = parse("") {} else { Issue.record("empty") }
    }
}

@Suite struct TextInputTests {
    let dir = temporaryDirectory("rowio")

    @Test func crlfBomQuotesAndHeaderMatchPlain() throws {
        writeFile(dir + "/plain.csv", "1,2,3\n4,5,6\n7,8,9\n")
        writeBytes(dir + "/fancy.csv", [0xEF, 0xBB, 0xBF] + Array("a,b,c\r\n\"1\",2,3\r\n4, 5 ,\"6\"\r\n\r\n7,8,9".utf8))
        var cfg = SourceConfig(); cfg.target = .last
        let a = try decodeAll(dir + "/plain.csv", cfg), b = try decodeAll(dir + "/fancy.csv", cfg)
        #expect(a.rows == b.rows && a.targets == b.targets && a.rows == [[1, 2], [4, 5], [7, 8]] && a.targets == [3, 6, 9])
    }

    @Test func tsvSniffedAndSelect() throws {
        writeFile(dir + "/x.tsv", "1\t2\t3\t4\n5\t6\t7\t8\n")
        var cfg = SourceConfig(); cfg.target = .first; cfg.select = [.index(2), .index(0)]
        let a = try decodeAll(dir + "/x.tsv", cfg)
        #expect(a.rows == [[4, 2], [8, 6]] && a.targets == [1, 5])
    }

    @Test func badValueNamesLineAndColumn() {
        writeFile(dir + "/bad.csv", "1,2,3\n4,5,6\n7,zz,9\n")
        let e = errorOf { _ = try decodeAll(dir + "/bad.csv", SourceConfig()) }
        #expect(e?.status == .dataError && e?.location == dir + "/bad.csv:3:3")
        #expect(e?.message.contains("'zz'") == true)
    }

    @Test func raggedRowAndWrongColumns() {
        writeFile(dir + "/rag.csv", "1,2,3\n4,5\n")
        #expect(errorOf { _ = try decodeAll(dir + "/rag.csv", SourceConfig()) }?.location == dir + "/rag.csv:2:1")
        var cfg = SourceConfig(); cfg.columns = 4
        let e = errorOf { _ = try decodeAll(dir + "/rag.csv", cfg) }
        #expect(e?.status == .dataError && e?.message.contains("expected 4 fields") == true)
    }

    @Test func skipAndQuarantineKeepPositions() throws {
        writeFile(dir + "/mixed.csv", "1,2\n3,x\n5,6\n7\n9,10\n")
        let skip = BadRowHandler(policy: .skip)
        let a = try decodeAll(dir + "/mixed.csv", { var c = SourceConfig(); c.onBadRow = .skip; return c }(), bad: skip)
        #expect(a.rows == [[1, 2], [5, 6], [9, 10]] && a.indices == [0, 2, 4] && skip.skipped == 2)
        let lines = LockedLines()
        let q = BadRowHandler(policy: .quarantine, quarantine: { line throws(EngineError) in lines.append(line) })
        _ = try decodeAll(dir + "/mixed.csv", { var c = SourceConfig(); c.onBadRow = .quarantine; return c }(), bad: q)
        #expect(q.quarantined == 2 && lines.all.count == 2 && lines.all[0].hasPrefix("row 2\t") && lines.all[0].contains("3,x"))
    }

    @Test func nonfiniteAllowedOrNot() throws {
        writeFile(dir + "/nf.csv", "1,nan\n2,inf\n")
        #expect(errorOf { _ = try decodeAll(dir + "/nf.csv", SourceConfig()) }?.location == dir + "/nf.csv:1:3")
        var cfg = SourceConfig(); cfg.allowNonfinite = true
        let a = try decodeAll(dir + "/nf.csv", cfg)
        #expect(a.rows[0][1].isNaN && a.rows[1][1] == .infinity)
    }

    @Test func utf16Rejected() {
        writeBytes(dir + "/u16.csv", [0xFF, 0xFE] + Array("1,2\n".utf8).flatMap { [$0, 0] })
        let e = errorOf { _ = try decodeAll(dir + "/u16.csv", SourceConfig()) }
        #expect(e?.status == .dataError && e?.message.contains("UTF-16") == true)
    }

    @Test func overlongLineRejectedWithBoundedMemory() {
        writeBytes(dir + "/long.csv", [UInt8](repeating: 0x31, count: 3 << 20))
        let e = errorOf { _ = try decodeAll(dir + "/long.csv", SourceConfig()) }
        #expect(e?.status == .dataError && e?.message.contains("longer than") == true)
    }

    @Test func batchSizeDoesNotChangeRows() throws {
        var text = ""
        for i in 0..<1000 { text += "\(i),\(Double(i) * 0.25),\(-i)\n" }
        writeFile(dir + "/many.csv", text)
        let ref = try decodeAll(dir + "/many.csv", SourceConfig(), batchRows: 1000)
        for b in [1, 2, 7, 64] { #expect(try decodeAll(dir + "/many.csv", SourceConfig(), batchRows: b).rows == ref.rows) }
    }
}

final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

@Suite struct BinaryInputTests {
    let dir = temporaryDirectory("bin")

    func f32Bytes(_ v: [Float]) -> [UInt8] { v.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Array($0) } } }

    @Test func f32RowsAndTruncation() throws {
        writeBytes(dir + "/a.f32", f32Bytes([1, 2, 3, 4, 5, 6]))
        var cfg = SourceConfig(); cfg.format = .f32; cfg.columns = 3
        #expect(try decodeAll(dir + "/a.f32", cfg).rows == [[1, 2, 3], [4, 5, 6]])
        writeBytes(dir + "/b.f32", f32Bytes([1, 2, 3, 4]))
        let e = errorOf { _ = try decodeAll(dir + "/b.f32", cfg) }
        #expect(e?.status == .dataError && e?.location == dir + "/b.f32: byte 12")
        writeBytes(dir + "/c.f32", f32Bytes([1, .nan, 3]))
        #expect(errorOf { _ = try decodeAll(dir + "/c.f32", cfg) }?.location == dir + "/c.f32: row 1")
    }

    @Test func npyRoundTripAndHeaderErrors() throws {
        let arr = NamedArray("x", shape: [3, 2], float64: [1, 2, 3, 4, 5, 6])
        let bytes = NpyWriter.encode(arr)
        #expect((bytes.count - 6 * 8) % 64 == 0)
        writeBytes(dir + "/x.npy", bytes)
        #expect(try decodeAll(dir + "/x.npy", SourceConfig()).rows == [[1, 2], [3, 4], [5, 6]])
        #expect(try NpyReader.read(dir + "/x.npy").values == [1, 2, 3, 4, 5, 6])
        func header(_ dict: String) -> [UInt8] {
            var d = dict
            while (10 + d.utf8.count + 1) % 64 != 0 { d += " " }
            d += "\n"
            return [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(d.utf8.count), 0] + Array(d.utf8)
        }
        let cases: [(String, String)] = [
            ("{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }", "big-endian"),
            ("{'descr': '<f8', 'fortran_order': True, 'shape': (1, 2), }", "Fortran"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999, 99999), }", "large"),
            ("{'descr': '<c16', 'fortran_order': False, 'shape': (1, 2), }", "unsupported npy dtype"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (5, 2), }", "promises"),
        ]
        for (i, (dict, expected)) in cases.enumerated() {
            writeBytes(dir + "/h\(i).npy", header(dict) + [UInt8](repeating: 0, count: 16))
            let e = errorOf { _ = try decodeAll(dir + "/h\(i).npy", SourceConfig()) }
            #expect(e?.status == .dataError && e?.description.contains(expected) == true, "\(dict): \(String(describing: e))")
        }
    }

    /// Float64 and float32 rows laid out as the features in order, then perhaps the target, are converted by
    /// a vectorised loop; the rows, targets, indices and errors must be what the per-value path gives. The
    /// reference is the values written (exact: every value is representable in both widths) and the same
    /// data with the target moved first, which takes the per-value path.
    @Test func contiguousRowsMatchThePerValuePath() throws {
        let n = 1000, c = 4
        func value(_ i: Int, _ j: Int) -> Double { Double(i) * 0.5 - Double(j) * 3 }
        let last = (0..<n).flatMap { i in (0..<c).map { value(i, $0) } }
        let first = (0..<n).flatMap { i in [value(i, c - 1)] + (0..<(c - 1)).map { value(i, $0) } }
        let rows = (0..<n).map { i in (0..<(c - 1)).map { value(i, $0) } }, targets = (0..<n).map { value($0, c - 1) }
        for wide in [true, false] {
            func write(_ name: String, _ v: [Double]) -> String {
                let path = dir + "/" + name + (wide ? ".npy" : ".f32")
                writeBytes(path, wide ? NpyWriter.encode(NamedArray("x", shape: [n, c], float64: v)) : f32Bytes(v.map(Float.init)))
                return path
            }
            var cfg = SourceConfig(); cfg.format = wide ? .npy : .f32; cfg.columns = wide ? nil : c
            cfg.target = .last
            for b in [1, 7, 4096] {
                let a = try decodeAll(write("last", last), cfg, batchRows: b)
                #expect(a.rows == rows && a.targets == targets && a.indices == (0..<n).map(Int64.init), "wide \(wide) batch \(b)")
            }
            var firstCfg = cfg; firstCfg.target = .first
            let f = try decodeAll(write("first", first), firstCfg)
            #expect(f.rows == rows && f.targets == targets)
            var identity = cfg; identity.target = .none
            #expect(try decodeAll(write("all", last), identity).rows == (0..<n).map { i in (0..<c).map { value(i, $0) } })

            // A non-finite feature, then a non-finite target: the row and the column named as the per-value path
            // names them; skipped rows keep the others' indices; allow_nonfinite lets them through.
            var bad = last
            bad[2 * c + 1] = .nan
            bad[5 * c + (c - 1)] = .infinity
            let path = write("bad", bad)
            let e = errorOf { _ = try decodeAll(path, cfg) }
            #expect(e?.location == path + ": row 3" && e?.message == "non-finite value nan in column 2", "\(String(describing: e))")
            var badFirst = first
            badFirst[2 * c + 2] = .nan
            let pf = write("badfirst", badFirst)
            #expect(errorOf { _ = try decodeAll(pf, firstCfg) }?.message == "non-finite value nan in column 3")
            var skip = cfg; skip.onBadRow = .skip
            let s = try decodeAll(path, skip, bad: BadRowHandler(policy: .skip))
            #expect(s.indices == (0..<Int64(n)).filter { $0 != 2 && $0 != 5 } && s.rows.count == n - 2)
            var allow = cfg; allow.allowNonfinite = true
            let al = try decodeAll(path, allow)
            #expect(al.rows[2][1].isNaN && al.targets[5] == .infinity && al.rows.count == n)
        }
    }

    @Test func libsvmParsesAndRejectsBadIndices() throws {
        writeFile(dir + "/a.svm", "1 1:0.5 3:2\n-1 2:1 # comment\n0 qid:3 1:1\n")
        var cfg = SourceConfig(); cfg.format = .libsvm; cfg.columns = 3
        let a = try decodeAll(dir + "/a.svm", cfg)
        #expect(a.rows == [[0.5, 0, 2], [0, 1, 0], [1, 0, 0]] && a.targets == [1, -1, 0])
        writeFile(dir + "/b.svm", "1 0:1\n")
        #expect(errorOf { _ = try decodeAll(dir + "/b.svm", cfg) }?.location == dir + "/b.svm:1:3")
        writeFile(dir + "/c.svm", "1 4:1\n")
        #expect(errorOf { _ = try decodeAll(dir + "/c.svm", cfg) }?.message.contains("out of range") == true)
    }

    @Test func zstdStreamsMultiFrameAndDetectsTruncation() throws {
        var text = ""
        for i in 0..<5000 { text += "\(i),\(i % 7)\n" }
        let sink = try ByteSink(path: dir + "/a.csv.zst", zstd: true)
        try sink.write(text); try sink.close()
        let plain = dir + "/a.csv"
        writeFile(plain, text)
        #expect(try decodeAll(dir + "/a.csv.zst", SourceConfig()).rows == decodeAll(plain, SourceConfig()).rows)
        // Two frames back to back decode as one stream.
        let one = try Data(contentsOf: URL(fileURLWithPath: dir + "/a.csv.zst"))
        try (one + one).write(to: URL(fileURLWithPath: dir + "/two.zst"))
        #expect(try decodeAll(dir + "/two.zst", SourceConfig()).rows.count == 10000)
        try one.prefix(one.count / 2).write(to: URL(fileURLWithPath: dir + "/cut.zst"))
        let e = errorOf { _ = try decodeAll(dir + "/cut.zst", SourceConfig()) }
        #expect(e?.status == .dataError && e?.message.contains("truncated zstd") == true)
    }

    /// The zstd header's content size gives the row count only when its frame is the whole file: two frames
    /// back to back (`cat a.zst b.zst`) must not pass for the first one's rows.
    @Test func zstdContentSizeTrustedOnlyForOneFrame() throws {
        let rows = f32Bytes((0..<600).map { Float($0) })   // 200 rows × 3
        let one = subprocessZstd(rows)
        writeBytes(dir + "/one.f32.zst", one)
        writeBytes(dir + "/two.f32.zst", one + one)
        var cfg = SourceConfig(); cfg.format = .f32; cfg.columns = 3
        #expect(try SourceReader(path: dir + "/one.f32.zst", config: cfg, bad: BadRowHandler(policy: .fail)).rowsKnown == 200)
        #expect(try SourceReader(path: dir + "/two.f32.zst", config: cfg, bad: BadRowHandler(policy: .fail)).rowsKnown == nil)
        #expect(try decodeAll(dir + "/two.f32.zst", cfg).rows.count == 400)
    }

    /// A single zstd frame that declares its content size (what `zstd` writes for a file).
    func subprocessZstd(_ bytes: [UInt8]) -> [UInt8] {
        let tmp = dir + "/raw-\(bytes.count)"
        writeBytes(tmp, bytes)
        #expect(runProcess("/usr/bin/env", ["zstd", "-q", "-f", tmp, "-o", tmp + ".zst"]).status == 0)
        return [UInt8](FileManager.default.contents(atPath: tmp + ".zst")!)
    }

    @Test func shardDirectoryInNameOrderSkippingHidden() throws {
        let d = dir + "/shards"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        writeFile(d + "/part-1.csv", "3,3\n4,4\n")
        writeFile(d + "/part-0.csv", "1,1\n2,2\n")
        writeFile(d + "/_SUCCESS", "")
        writeFile(d + "/.part-0.csv.crc", "garbage")
        let a = try decodeAll(d, SourceConfig())
        #expect(a.rows == [[1, 1], [2, 2], [3, 3], [4, 4]] && a.indices == [0, 1, 2, 3])
    }
}

/// The float32 staging path (decode thread decompresses straight into the batch, `materialize()` converts
/// later) gives exactly the rows, indices and errors of the converting path.
@Suite struct StagedFloat32Tests {
    let dir = temporaryDirectory("staged")

    func decodeStaged(_ path: String, _ cfg: SourceConfig, batchRows: Int) throws -> (rows: [[Double]], targets: [Double], indices: [Int64]) {
        let src = try SourceReader(path: path, config: cfg, bad: BadRowHandler(policy: .fail))
        let l = src.layout!
        #expect(src.stagesFloat32)
        #expect(src.stagesTarget == l.hasTarget)
        var batch = RowBatch(columns: l.features, capacity: batchRows, hasTarget: l.hasTarget, hasWeight: false)
        batch.enableStaging(withTarget: src.stagesTarget)
        var rows: [[Double]] = [], targets: [Double] = [], indices: [Int64] = []
        while true {
            batch.reset()
            let more = try src.fill(&batch, deferConversion: true)
            try batch.materialize()
            for r in 0..<batch.count {
                rows.append(Array(batch.features[r * l.features..<(r + 1) * l.features])); indices.append(batch.indices[r])
                if let t = batch.targets { targets.append(t[r]) }
            }
            if !more { break }
        }
        return (rows, targets, indices)
    }

    /// `target: last`: staged rows carry the target, which materialize() moves to `targets`; same rows,
    /// targets and indices as the converting path, and a non-finite target is the same error.
    @Test func targetLastStaged() throws {
        let n = 20_000, c = 5
        let values = (0..<(n * c)).map { Float(cos(Double($0)) * 10) }
        let bytes = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        let sink = try ByteSink(path: dir + "/t.f32.zst", zstd: true)
        try sink.write(bytes); try sink.close()
        var cfg = SourceConfig(); cfg.format = .f32; cfg.columns = c; cfg.target = .last
        let ref = try decodeAll(dir + "/t.f32.zst", cfg, batchRows: 4096)
        #expect(ref.targets.count == n && ref.rows[0].count == c - 1)
        for b in [1, 13, 8192] {
            let s = try decodeStaged(dir + "/t.f32.zst", cfg, batchRows: b)
            #expect(s.rows == ref.rows && s.targets == ref.targets && s.indices == ref.indices, "batch \(b)")
        }
        let f = { (v: [Float]) in v.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Array($0) } } }
        var cfg2 = SourceConfig(); cfg2.format = .f32; cfg2.columns = 2; cfg2.target = .last
        writeBytes(dir + "/tnan.f32", f([1, 2, 3, 4, 5, .infinity]))
        let e = errorOf { _ = try decodeStaged(dir + "/tnan.f32", cfg2, batchRows: 8) }
        let r = errorOf { _ = try decodeAll(dir + "/tnan.f32", cfg2) }
        #expect(e?.location == dir + "/tnan.f32: row 3" && e?.message == r?.message, "\(String(describing: e)) vs \(String(describing: r))")
    }

    /// 3 columns (12-byte records never align with zstd's 128 KiB output), plain and zstd, many batch sizes.
    @Test func sameRowsAsConvertingPath() throws {
        let n = 50_000, c = 3
        let values = (0..<(n * c)).map { Float(sin(Double($0)) * 100) }
        let bytes = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        writeBytes(dir + "/x.f32", bytes)
        let sink = try ByteSink(path: dir + "/x.f32.zst", zstd: true)
        try sink.write(bytes); try sink.close()
        var cfg = SourceConfig(); cfg.format = .f32; cfg.columns = c
        let ref = try decodeAll(dir + "/x.f32", cfg, batchRows: 4096)
        for path in ["/x.f32", "/x.f32.zst"] {
            for b in [1, 7, 1000, 8192, 60_000] {
                let s = try decodeStaged(dir + path, cfg, batchRows: b)
                #expect(s.rows == ref.rows && s.indices == ref.indices, "\(path) batch \(b)")
            }
        }
    }

    @Test func errorsMatch() throws {
        var cfg = SourceConfig(); cfg.format = .f32; cfg.columns = 2
        let f = { (v: [Float]) in v.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Array($0) } } }
        writeBytes(dir + "/nan.f32", f([1, 2, 3, .nan, 5, 6]))
        let e = errorOf { _ = try decodeStaged(dir + "/nan.f32", cfg, batchRows: 2) }
        #expect(e?.location == dir + "/nan.f32: row 2" && e?.message.contains("non-finite") == true)
        writeBytes(dir + "/cut.f32", f([1, 2, 3]))
        let t = errorOf { _ = try decodeStaged(dir + "/cut.f32", cfg, batchRows: 8) }
        #expect(t?.location == dir + "/cut.f32: byte 8" && t?.message.contains("truncated row 2") == true, "\(String(describing: t))")
        // npy <f4: the header's row count is enforced on this path too.
        let header = NpyWriter.header(descr: "<f4", shape: [2, 2])
        writeBytes(dir + "/more.npy", header + f([1, 2, 3, 4, 5, 6]))
        var npy = SourceConfig(); npy.format = .npy
        #expect(errorOf { _ = try decodeStaged(dir + "/more.npy", npy, batchRows: 8) }?.message.contains("continues past") == true)
        writeBytes(dir + "/ok.npy", header + f([1, 2, 3, 4]))
        #expect(try decodeStaged(dir + "/ok.npy", npy, batchRows: 1).rows == [[1, 2], [3, 4]])
    }
}
