/// A JSON value as read back from run.json and summary.json; numbers keep their text, so the report can show
/// exactly what the file says next to its rounded form, and integers (seeds) are read without rounding.
public indirect enum JValue: Sendable {
    case null
    case bool(Bool)
    case number(Double, String)
    case string(String)
    case array([JValue])
    case object([(String, JValue)])

    public subscript(key: String) -> JValue? {
        if case let .object(p) = self { return p.first { $0.0 == key }?.1 }
        return nil
    }
    public var double: Double? { if case let .number(d, _) = self { return d }; return nil }
    public var text: String? { if case let .number(_, t) = self { return t }; return nil }
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var array: [JValue]? { if case let .array(a) = self { return a }; return nil }
    public var pairs: [(String, JValue)] { if case let .object(p) = self { return p }; return [] }
    /// The number as an integer, exactly, when its text is one (UInt64 values beyond Int64 as bit patterns).
    public var int64: Int64? {
        guard case let .number(_, t) = self else { return nil }
        return Int64(t) ?? UInt64(t).map { Int64(bitPattern: $0) }
    }
}

extension JValue: CustomStringConvertible {
    /// Compact JSON text, numbers as the file wrote them.
    public var description: String {
        switch self {
        case .null: return "null"
        case let .bool(b): return b ? "true" : "false"
        case let .number(_, t): return t
        case let .string(s): return JSON.string(s).encoded()
        case let .array(a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case let .object(p): return "{" + p.map { JSON.string($0.0).encoded() + ": " + $0.1.description }.joined(separator: ", ") + "}"
        }
    }
}

/// A small strict JSON reader (RFC 8259) for the files rowflow writes; bounded depth.
public struct JSONReader {
    let b: [UInt8]
    var i = 0
    let name: String

    public static func parse(_ bytes: [UInt8], name: String) throws(EngineError) -> JValue {
        var r = JSONReader(b: bytes, name: name)
        let v = try r.value(depth: 0)
        r.ws()
        guard r.i == r.b.count else { throw r.bad("trailing characters") }
        return v
    }

    func bad(_ what: String) -> EngineError { .data(name, "not valid JSON at byte \(i): \(what)") }

    mutating func ws() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }

    mutating func lit(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard i + u.count <= b.count, Array(b[i..<i + u.count]) == u else { return false }
        i += u.count
        return true
    }

    mutating func value(depth: Int) throws(EngineError) -> JValue {
        guard depth < 64 else { throw bad("nested too deeply") }
        ws()
        guard i < b.count else { throw bad("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"):
            i += 1
            var pairs: [(String, JValue)] = []
            ws()
            if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
            while true {
                ws()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw bad("expected a key") }
                let k = try str()
                ws()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw bad("expected ':'") }
                i += 1
                pairs.append((k, try value(depth: depth + 1)))
                ws()
                guard i < b.count else { throw bad("unexpected end") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
                throw bad("expected ',' or '}'")
            }
        case UInt8(ascii: "["):
            i += 1
            var items: [JValue] = []
            ws()
            if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                items.append(try value(depth: depth + 1))
                ws()
                guard i < b.count else { throw bad("unexpected end") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw bad("expected ',' or ']'")
            }
        case UInt8(ascii: "\""):
            return .string(try str())
        default:
            if lit("null") { return .null }
            if lit("true") { return .bool(true) }
            if lit("false") { return .bool(false) }
            let s = i
            while i < b.count, let c = Optional(b[i]), (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
                    || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") { i += 1 }
            let t = String(decoding: b[s..<i], as: UTF8.self)
            guard !t.isEmpty, let d = Double(t) else { throw bad("expected a value") }
            return .number(d, t)
        }
    }

    mutating func str() throws(EngineError) -> String {
        i += 1
        var out: [UInt8] = []
        while i < b.count {
            let c = b[i]
            i += 1
            if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
            if c == UInt8(ascii: "\\") {
                guard i < b.count else { break }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "u"):
                    guard i + 4 <= b.count, var u = UInt32(String(decoding: b[i..<i + 4], as: UTF8.self), radix: 16) else { throw bad("bad \\u escape") }
                    i += 4
                    // A surrogate pair spells one scalar.
                    if u >= 0xD800 && u < 0xDC00, i + 6 <= b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u"),
                       let lo = UInt32(String(decoding: b[i + 2..<i + 6], as: UTF8.self), radix: 16), lo >= 0xDC00 && lo < 0xE000 {
                        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00)
                        i += 6
                    }
                    out += Array(String(Unicode.Scalar(u).map(Character.init) ?? "\u{FFFD}").utf8)
                default: out.append(e)
                }
            } else {
                out.append(c)
            }
        }
        throw bad("unterminated string")
    }
}

/// run.json or a summary.json, parsed.
public struct JSONObject: Sendable {
    public let value: JValue

    public init(_ value: JValue) { self.value = value }

    public static func read(_ path: String) throws(EngineError) -> JSONObject {
        let v = try JSONReader.parse(try FileBytes.read(path, what: "JSON file"), name: path)
        guard case .object = v else { throw .data(path, "not a JSON object") }
        return JSONObject(v)
    }

    public func number(_ k: String) -> Double? { value[k]?.double }
    public func numberText(_ k: String) -> String? { value[k]?.text }
    public func string(_ k: String) -> String? { value[k]?.string }
    public func bool(_ k: String) -> Bool? { value[k]?.bool }
    public func strings(_ k: String) -> [String]? { value[k]?.array?.compactMap(\.string) }
    public var pairs: [(String, JValue)] { value.pairs }
    /// An integer field exactly (from its text; a seed above Int64.max reads as its bit pattern).
    public func int64(_ k: String) -> Int64? { value[k]?.int64 }
}
