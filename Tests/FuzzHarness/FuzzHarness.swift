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

    static func decode(_ data: [UInt8], config: SourceConfig) -> Bool {
        let bad = BadRowHandler(policy: config.onBadRow, quarantine: { _ throws(EngineError) in })
        guard let src = try? SourceReader(memory: RawFile.memory(data, name: "fuzz"), config: config, bad: bad),
              let l = src.layout else { return false }
        var batch = RowBatch(columns: l.features, capacity: RowBatch.capacity(batchRows: config.batchRows, columns: l.features),
                             hasTarget: l.hasTarget, hasWeight: l.hasWeight)
        var rows = 0
        while rows < 1_000_000 {
            batch.reset()
            guard let more = try? src.fill(&batch) else { return false }
            rows += batch.count
            if !more { return true }
        }
        return true
    }
}
