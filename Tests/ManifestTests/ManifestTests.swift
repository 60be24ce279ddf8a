import EngineCore
import Manifest
import Operators
import TestSupport
import Testing

func parseError(_ yaml: String) -> EngineError? {
    var p = ManifestParser(path: "m.yaml", registry: .standard)
    do { _ = try p.parse(yaml); return nil } catch { return error }
}

@Suite struct ManifestTests {
    @Test func validManifestResolvesDefaultsAndOrder() throws {
        var p = ManifestParser(path: "m.yaml", registry: .standard)
        let spec = try p.parse("""
        version: 1
        source:
          format: csv
          target: last
          batch_rows: 100
        rowstore: { memory_mb: 8 }
        operators:
          - id: g
            op: gram
            params: { solve: ridge, lambda: 0.5 }
          - { id: m, op: moments }
        """)
        #expect(spec.operators.map(\.id) == ["g", "m"])
        #expect(spec.source.batchRows == 100 && spec.source.target == .last && spec.rowstoreMemoryMB == 8)
        #expect(spec.op("g")!.params.double("lambda") == 0.5 && spec.op("m")!.params.values.isEmpty)
        #expect(spec.describe().contains("└─ g (gram)"))
    }

    /// Each case: the YAML, the expected `line:column`, and a fragment of the message or hint.
    @Test(arguments: [
        ("version: 1\nsource: { fromat: csv }\noperators: [{ id: m, op: moments }]", "2:11", "did you mean 'format'"),
        ("version: 1\noperators: [{ id: m, op: moment }]", "2:26", "did you mean 'moments'"),
        ("version: 1\noperators: [{ id: m, op: gram, params: { lamda: 1 } }]", "2:42", "did you mean 'lambda'"),
        ("version: 1\noperators: [{ id: m, op: gram, params: { lambda: -1 } }]", "2:50", "out of range"),
        ("version: 1\noperators: [{ id: m, op: gram, params: { lambda: abc } }]", "2:50", "expected a number"),
        ("version: 1\noperators: [{ id: m, op: gram, params: { solve: rigde } }]", "2:49", "did you mean 'ridge'"),
        ("version: 1\noperators: [{ id: m, op: gram, params: { solve: ridge } }]", "2:40", "needs a target"),
        ("version: 1\noperators: [{ id: m, op: moments }, { id: m, op: gram }]", "2:43", "duplicate operator id"),
        ("version: 1\noperators: [{ id: rowstore, op: moments }]", "2:19", "reserved"),
        ("version: 1\noperators: [{ id: Bad, op: moments }]", "2:19", "not valid"),
        ("version: 1\noperators: [{ id: a, op: gram, input: b }, { id: b, op: gram, input: a }]", "2:39", "emits no rows"),
        ("version: 1\noperators: [{ id: a, op: gram, input: nope }]", "2:39", "not an operator id"),
        ("version: 2\noperators: [{ id: a, op: gram }]", "1:10", "unsupported manifest version"),
        ("version: 1\nsource: { batch_rows: '10' }\noperators: [{ id: a, op: gram }]", "2:23", "expected an integer"),
        ("version: 1\nsource: { batch_rows: 0 }\noperators: [{ id: a, op: gram }]", "2:23", "out of range"),
        ("version: 1\nsource: { format: f32 }\noperators: [{ id: a, op: gram }]", "2:9", "columns is required"),
        ("version: 1\noperators: []", "2:12", "empty"),
        ("operators: [{ id: a, op: gram }]", "1:1", "missing required key 'version'"),
        ("version: 1\noperators: [{ id: a, op: gram }\n", "3:1", "invalid YAML"),
        ("version: 1\nversion: 1\noperators: [{ id: a, op: gram }]", "", "duplicate"),
    ] as [(String, String, String)])
    func rejectsWithPlace(yaml: String, place: String, fragment: String) {
        let e = parseError(yaml)
        #expect(e?.status == .usage, "\(yaml)")
        if !place.isEmpty { #expect(e?.location == "m.yaml:" + place, "\(String(describing: e))") }
        #expect(e?.description.contains(fragment) == true, "\(String(describing: e))")
    }

    /// A billion-laughs manifest: aliases are shared at parse time; the walk stops at the node budget.
    @Test func anchorBombIsRejectedQuickly() {
        var yaml = "version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1..<12 { yaml += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        yaml += "operators: [{ id: a, op: gram }]\n"
        let e = parseError(yaml)
        #expect(e?.status == .usage)
    }

    @Test func cycleAmongSamplersIsNamed() {
        // Register a sampler kind so a cycle can be expressed at all.
        var reg = OperatorRegistry.standard
        reg.add(SamplerKind.self)
        var p = ManifestParser(path: "m.yaml", registry: reg)
        do {
            _ = try p.parse("version: 1\noperators: [{ id: a, op: sampler, input: b }, { id: b, op: sampler, input: a }]")
            Issue.record("cycle accepted")
        } catch {
            #expect(error.status == .usage && error.message.contains("cycle"))
        }
    }
}

/// A row-emitting kind for graph checks (never run).
enum SamplerKind: OperatorKind {
    static let info = OperatorInfo(kind: "sampler", summary: "", parameters: [], outputs: [], stateVersion: 1, emitsRows: true, examples: [])
    static func make(_ p: ParamValues, _ c: OperatorContext) throws(EngineError) -> any StreamOperator { try GramOperator.make(p, c) }
    static func restore(_ b: [UInt8], _ p: ParamValues, _ c: OperatorContext, location: String) throws(EngineError) -> any StreamOperator {
        try GramOperator.restore(b, p, c, location: location)
    }
}
