/// The `source:` section of a manifest, validated (DESIGN.md §2–3).
public struct SourceConfig: Sendable, Equatable {
    public enum Format: String, Sendable, CaseIterable { case auto, csv, tsv, f32, f64, npy, libsvm }
    public enum Target: Sendable, Equatable { case none, last, first, column(Int) }
    public enum Header: String, Sendable, CaseIterable { case auto, yes, no }
    public enum BadRowPolicy: String, Sendable, CaseIterable { case fail, skip, quarantine }

    public var format: Format = .auto
    /// Fields stored per row, target (and weight) included; libsvm: the feature count.
    public var columns: Int?
    public var target: Target = .none
    public var weight: Int?
    /// 0-based indices into the feature vector (after target and weight columns are removed).
    public var select: [Int]?
    public var header: Header = .auto
    public var onBadRow: BadRowPolicy = .fail
    public var allowNonfinite = false
    public var shuffle = 0
    public var batchRows = 8192

    public init() {}

    public var hasTarget: Bool { target != .none || format == .libsvm }
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
    /// True when the raw fields are the features in order followed by the target (the fast path with a target).
    public var isFeaturesThenTarget: Bool {
        hasTarget && !hasWeight && rawColumns == features + 1 && roles[rawColumns - 1] == .target
            && (0..<features).allSatisfy { roles[$0] == .feature($0) }
    }

    public init(rawColumns c: Int, config: SourceConfig, where location: String) throws(EngineError) {
        var roles = [Role](repeating: .drop, count: c)
        var targetCol: Int?
        switch config.target {
        case .none: targetCol = nil
        case .last: targetCol = c - 1
        case .first: targetCol = 0
        case let .column(k): targetCol = k
        }
        if config.format == .libsvm { targetCol = nil }
        if let t = targetCol {
            guard t >= 0 && t < c else {
                throw .usage(location, "source.target is column \(t), but rows have \(c) fields (0-based: 0…\(c - 1))")
            }
            roles[t] = .target
        }
        if let w = config.weight {
            guard w >= 0 && w < c else {
                throw .usage(location, "source.weight is column \(w), but rows have \(c) fields (0-based: 0…\(c - 1))")
            }
            guard w != targetCol else { throw .usage(location, "source.weight and source.target are the same column \(w)") }
            roles[w] = .weight
        }
        let featureRaw = (0..<c).filter { roles[$0] == .drop }
        var keep: [Int] = featureRaw
        if let sel = config.select {
            for s in sel where s < 0 || s >= featureRaw.count {
                throw .usage(location, "source.select names feature \(s), but rows have \(featureRaw.count) features (0-based: 0…\(featureRaw.count - 1))")
            }
            keep = sel.map { featureRaw[$0] }
        }
        for (j, raw) in keep.enumerated() { roles[raw] = .feature(j) }
        self.rawColumns = c
        self.roles = roles
        self.features = keep.count
        self.hasTarget = targetCol != nil || config.format == .libsvm
        self.hasWeight = config.weight != nil
        self.isIdentity = keep == Array(0..<c) && keep.count == c
        guard features > 0 else { throw .usage(location, "no feature columns left after target, weight and select") }
    }
}
