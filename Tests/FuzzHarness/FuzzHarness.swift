import EngineCore
import Manifest
import Operators
import RowIO

/// One fuzz target per decoder of untrusted bytes. Each feeds the bytes through the real decoder and
/// accepts any `EngineError` as a correct answer: the property is "no crash, no hang, no unbounded
/// allocation". libFuzzer drives these through Tests/Fuzz (`make fuzz`); the unit tests replay the seed
/// corpus and every crash ever found (Fixtures/fuzz/<target>/).
public enum FuzzHarness {
    public static let targets = ["text", "npy", "libsvm", "zstd", "manifest", "checkpoint", "state"]

    /// Runs one input through one target. Returns whether the input was accepted — decoded to its end, parsed,
    /// or restored and finished — so replayed seeds can be checked to still mean what they were made to mean.
    @discardableResult
    public static func run(_ target: String, _ data: [UInt8]) -> Bool {
        switch target {
        case "text": return decode(Array(data.dropFirst()), config: textConfig(data.first ?? 0))
        case "npy": return decode(data, config: { var c = SourceConfig(); c.format = .npy; c.onBadRow = .skip; return c }())
        case "libsvm":
            var c = SourceConfig(); c.format = .libsvm; c.columns = 1 + Int(data.first ?? 0) % 16
            return decode(Array(data.dropFirst()), config: c)
        case "zstd":
            // The bytes behind a zstd magic, decoded as csv.
            return decode([0x28, 0xB5, 0x2F, 0xFD] + data, config: { var c = SourceConfig(); c.format = .csv; c.onBadRow = .skip; return c }())
        case "manifest":
            var p = ManifestParser(path: "fuzz.yaml", registry: .standard)
            return (try? p.parse(String(decoding: data, as: UTF8.self))) != nil
        case "checkpoint":
            return (try? Checkpoint.decode(data, location: "fuzz")) != nil
        case "state":
            // The same bytes as a state blob too (binary or base64 lines): decoding must fail cleanly, never trap.
            _ = try? StateBlob.decodeAll(data, location: "fuzz")
            guard let env = try? StateEnvelope.decode(data, location: "fuzz"), env.columns <= 4096 else { return false }
            let ctx = OperatorContext(shape: StreamShape(columns: env.columns, hasTarget: env.hasTarget), seed: 0, shard: 0, purpose: 0)
            var finished = false
            for d in OperatorRegistry.standard.descriptors where d.kind == env.kind {
                let params = ParamValues(d.parameters.map { p in (p.name, fuzzOverrides[d.kind]?[p.name] ?? fuzzValue(p)) })
                if var op = try? d.restore(env.payload, params, ctx, location: "fuzz"), (try? op.finish()) != nil { finished = true }
            }
            return finished
        default: preconditionFailure("unknown fuzz target \(target)")
        }
    }

    /// Parameters that make a state decodable where defaults cannot (dpp-sample needs a mode and its count;
    /// its seed state was written with these).
    static let fuzzOverrides: [String: [String: JSON]] = ["dpp-sample": ["mode": .string("repeated"), "repetitions": .int(2)]]

    /// A parameter's default, or for a required integer (truncated-svd's rank) the value 2, so states of
    /// operators with required parameters reach their decoders too.
    static func fuzzValue(_ p: ParameterSpec) -> JSON {
        if let v = p.defaultValue { return v }
        if p.required, case let .int(lo, hi) = p.kind { return .int(min(max(2, lo), hi)) }
        return .null
    }

    /// The first byte picks the source options, so one target covers csv and tsv, headers, targets,
    /// weights, column counts and every bad-row policy.
    static func textConfig(_ b: UInt8) -> SourceConfig {
        var c = SourceConfig()
        c.format = b & 1 == 0 ? .csv : .tsv
        c.header = [.auto, .yes, .no][Int(b >> 1) % 3]
        c.onBadRow = [.fail, .skip, .quarantine][Int(b >> 3) % 3]
        c.allowNonfinite = b & 0x20 != 0
        if b & 0x40 != 0 { c.target = .last }
        if b & 0x80 != 0 { c.columns = 1 + Int(b % 5) }
        c.batchRows = 1 + Int(b % 7)
        return c
    }

    /// Decodes line by line and in blocks on two parse threads (blocks of a 50th of the input, at least 7
    /// bytes per thread, so block edges fall everywhere): any difference in rows, positions, bad-row counts,
    /// quarantine lines or error is a crash, so the fuzzer searches for inputs where the two paths part.
    /// Returns whether the input decoded to its end without an error.
    static func decode(_ data: [UInt8], config: SourceConfig) -> Bool {
        let one = trace(data, config: config, threads: 0)
        let two = trace(data, config: config, threads: 2)
        precondition(one == two, "parallel text parsing differs from line by line")
        return one.error == nil && one.layoutFound
    }

    struct Trace: Equatable {
        var bits: [UInt64] = [], indices: [Int64] = [], counts: [Int] = []
        var skipped: Int64 = 0, quarantined: [String] = [], error: String?
        var layoutFound = false
    }

    final class Lines: @unchecked Sendable { var all: [String] = [] }

    static func trace(_ data: [UInt8], config: SourceConfig, threads: Int) -> Trace {
        var t = Trace()
        let lines = Lines()
        let bad = BadRowHandler(policy: config.onBadRow, quarantine: { line throws(EngineError) in lines.all.append(line) })
        defer { t.skipped = bad.skipped; t.quarantined = lines.all }
        let src: SourceReader
        do { src = try SourceReader(memory: RawFile.memory(data, name: "fuzz"), config: config, bad: bad) } catch {
            t.error = "\(error)"
            return t
        }
        src.parseThreads = threads
        src.parseBlockBytes = max(7, data.count / 50)
        guard let l = src.layout else { return t }
        t.layoutFound = true
        var batch = RowBatch(columns: l.features, capacity: RowBatch.capacity(batchRows: config.batchRows, columns: l.features),
                             hasTarget: l.hasTarget, hasWeight: l.hasWeight)
        var rows = 0
        while rows < 1_000_000 {
            batch.reset()
            let more: Bool
            do { more = try src.fill(&batch) } catch {
                t.error = "\(error)"
                return t
            }
            t.counts.append(batch.count)
            t.bits += batch.features.prefix(batch.count * l.features).map(\.bitPattern)
            if let y = batch.targets { t.bits += y.prefix(batch.count).map(\.bitPattern) }
            t.indices += batch.indices.prefix(batch.count)
            rows += batch.count
            if !more { break }
        }
        return t
    }
}
