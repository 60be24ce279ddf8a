/// The `source:` section of a manifest, validated (docs/manifest.md, docs/input.md).
public struct SourceConfig: Sendable, Equatable {
    /// Every value is a float32 as the input holds it (`format: f32`): operators may then accumulate in float32.
    /// Decided from the manifest alone, so a run, its resume and a merge of its shards agree.
    public var float32Values: Bool { format == .f32 }
    public enum Format: String, Sendable, CaseIterable { case auto, csv, tsv, f32, f64, npy, libsvm }
    public enum Target: Sendable, Equatable { case none, last, first, column(Int), named(ColumnName) }
    public enum Header: String, Sendable, CaseIterable { case auto, yes, no }
    public enum BadRowPolicy: String, Sendable, CaseIterable { case fail, skip, quarantine }

    public var format: Format = .auto
    /// Fields stored per row, target (and weight) included; libsvm: the feature count.
    public var columns: Int?
    public var target: Target = .none
    public var weight: ColumnRef?
    /// Feature columns to keep: 0-based indices into the feature vector (after target and weight columns are
    /// removed), or header names.
    public var select: [ColumnRef]?
    /// Names of the raw columns (target and weight included) for input without a header row (`source.names`).
    public var names: [String]?
    /// Features per row when `columns` is declared (for checking operators' column parameters before any data).
    public var declaredFeatures: Int?
    public var header: Header = .auto
    public var onBadRow: BadRowPolicy = .fail
    public var allowNonfinite = false
    public var shuffle = 0
    public var batchRows = 8192

    public init() {}

    public var hasTarget: Bool { target != .none || format == .libsvm }

    /// Whether any column is referred to by name.
    public var usesNames: Bool {
        if case .named = target { return true }
        if case .name? = weight { return true }
        return select?.contains { if case .name = $0 { return true } else { return false } } ?? false
    }
}

/// A column named in the manifest, with the manifest position that named it (for errors).
public struct ColumnName: Sendable, Equatable {
    public var name: String
    public var location: String
    public init(_ name: String, location: String) { self.name = name; self.location = location }
}

/// A column given by 0-based index or by header name.
public enum ColumnRef: Sendable, Equatable {
    case index(Int)
    case name(ColumnName)
}

/// Resolving names against a header: exit 65 (the data does not have the column the manifest names), with
/// the closest names as a hint.
public enum ColumnNames {
    /// The raw column a name refers to; `what` is the manifest key ("source.target").
    public static func resolve(_ n: ColumnName, in names: [String]?, what: String) throws(EngineError) -> Int {
        guard let names else {
            throw .data(n.location, "\(what): '\(n.name)' is a column name, but the input has no header row to find it in",
                        hint: "set source.header: yes (csv/tsv) or source.names, or give a 0-based column number")
        }
        let hits = names.indices.filter { names[$0] == n.name }
        if hits.count > 1 {
            throw .data(n.location, "\(what): the header names \(hits.count) columns '\(n.name)' (0-based \(hits.map(String.init).joined(separator: ", ")))",
                        hint: "refer to the column by its 0-based number")
        }
        guard let k = hits.first else {
            let close = closest(n.name, in: names)
            throw .data(n.location, "\(what): no column '\(n.name)' in the header (\(names.count) columns)",
                        hint: close.isEmpty ? "the header is: " + names.prefix(12).map { "'\($0)'" }.joined(separator: ", ") + (names.count > 12 ? ", …" : "")
                                            : "did you mean " + close.map { "'\($0)'" }.joined(separator: " or ") + "?")
        }
        return k
    }

    /// Up to three names closest to `word`: the same ignoring case, spaces and punctuation first, then by edit
    /// distance (at most a third of the word's length, and at least 2).
    public static func closest(_ word: String, in names: [String]) -> [String] {
        func fold(_ s: String) -> [Character] { Array(s.lowercased().filter { $0.isLetter || $0.isNumber }) }
        let w = fold(word)
        var scored: [(Int, String)] = []
        for n in Set(names) {
            let f = fold(n)
            let d = f == w ? 0 : editDistance(w, f)
            if d <= max(2, w.count / 3) { scored.append((d, n)) }
        }
        return scored.sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }.prefix(3).map(\.1)
    }

    /// Levenshtein distance (also behind the manifest's "did you mean").
    public static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0...b.count), cur = prev
        for i in 1...a.count {
            cur[0] = i
            for j in 1...b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&prev, &cur)
        }
        return prev[b.count]
    }
}

/// Which field of a raw row goes where: computed once the raw column count is known.
public struct RowLayout: Sendable, Equatable {
    public enum Role: Sendable, Equatable { case feature(Int), target, weight, drop }
    public let rawColumns: Int
    public let roles: [Role]
    public let features: Int
    public let hasTarget: Bool
    public let hasWeight: Bool
    /// True when every raw field is a feature in order (the fast path).
    public let isIdentity: Bool
    /// The features' names in order, when the input has them (header row or `source.names`).
    public let featureNames: [String]?
    /// Every raw column's name, when known.
    public let rawNames: [String]?

    /// " ('price')" for a raw column with a name, for messages; "" otherwise.
    public func label(_ raw: Int) -> String {
        guard let n = rawNames, raw < n.count else { return "" }
        return " ('\(n[raw])')"
    }
    /// True when the raw fields are the features in order followed by the target (the fast path with a target).
    public let isFeaturesThenTarget: Bool

    /// `names`: the raw columns' names (header or `source.names`), needed when the manifest names columns.
    public init(rawColumns c: Int, config: SourceConfig, names: [String]? = nil, location: String) throws(EngineError) {
        var roles = [Role](repeating: .drop, count: c)
        var targetCol: Int?
        switch config.target {
        case .none: targetCol = nil
        case .last: targetCol = c - 1
        case .first: targetCol = 0
        case let .column(k): targetCol = k
        case let .named(n): targetCol = try ColumnNames.resolve(n, in: names, what: "source.target")
        }
        if config.format == .libsvm { targetCol = nil }
        if let t = targetCol {
            guard t >= 0 && t < c else {
                throw .usage(location, "source.target is column \(t), but rows have \(c) fields (0-based: 0…\(c - 1))")
            }
            roles[t] = .target
        }
        if let wr = config.weight {
            let w: Int
            switch wr {
            case let .index(k): w = k
            case let .name(n): w = try ColumnNames.resolve(n, in: names, what: "source.weight")
            }
            guard w >= 0 && w < c else {
                throw .usage(location, "source.weight is column \(w), but rows have \(c) fields (0-based: 0…\(c - 1))")
            }
            guard w != targetCol else { throw .usage(location, "source.weight and source.target are the same column \(w)") }
            roles[w] = .weight
        }
        let featureRaw = (0..<c).filter { roles[$0] == .drop }
        var keep: [Int] = featureRaw
        if let sel = config.select {
            keep = []
            for ref in sel {
                switch ref {
                case let .index(s):
                    guard s >= 0 && s < featureRaw.count else {
                        throw .usage(location, "source.select names feature \(s), but rows have \(featureRaw.count) features (0-based: 0…\(featureRaw.count - 1))")
                    }
                    keep.append(featureRaw[s])
                case let .name(n):
                    let raw = try ColumnNames.resolve(n, in: names, what: "source.select")
                    guard roles[raw] == .drop else {
                        throw .data(n.location, "source.select: '\(n.name)' is the \(roles[raw] == .target ? "target" : "weight") column, not a feature")
                    }
                    keep.append(raw)
                }
            }
            if let dup = keep.indices.first(where: { keep.firstIndex(of: keep[$0])! != $0 }) {
                throw .usage(location, "source.select lists raw column \(keep[dup]) twice (by number and by name?)")
            }
        }
        for (j, raw) in keep.enumerated() { roles[raw] = .feature(j) }
        self.rawColumns = c
        self.roles = roles
        self.features = keep.count
        self.hasTarget = targetCol != nil || config.format == .libsvm
        self.hasWeight = config.weight != nil
        self.isIdentity = keep == Array(0..<c) && keep.count == c
        self.isFeaturesThenTarget = targetCol == c - 1 && config.weight == nil && keep == Array(0..<(c - 1))
        self.featureNames = names.map { n in keep.map { $0 < n.count ? n[$0] : "\($0)" } }
        self.rawNames = names
        guard features > 0 else { throw .usage(location, "no feature columns left after target, weight and select") }
    }
}
