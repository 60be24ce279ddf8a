import EngineCore
import LinearAlgebra

/// `truncated-svd` with `group: <column>` and `epsilon`: the error-constrained clustering of row groups of
/// Shamrai, "Concatenated Matrix SVD" (arXiv 2601.11626, §5, the clustering driven by the incremental
/// estimate with norm ordering). Rows carry an integer group id in a feature column (0-based, counted as the
/// operator receives its features: after `select`, target and weight); that column is not part of the matrix.
///
/// Stream: every group gets its own `TruncatedSVDOperator` (same rank, oversample, method and block size;
/// blocks cut at fixed positions within the group's own rows, so batch size never matters).
/// Finish (the paper's clustering with its "residual" ordering): groups are sorted by energy F²_g
/// (descending, ties by id); the heaviest unassigned group seeds a cluster; the other unassigned groups are
/// ordered by how much of their energy lies outside the seed's top-k subspace V (1 − tr(V E_g Vᵀ)/F²_g from
/// their sketches; the paper orders by the absolute residual norm — the relative one does not favour light
/// groups merely for being light) and tried in that order, each merged into the cluster's state (the
/// certified merge of `TruncatedSVDOperator`) and kept while the merged relative error bound
/// √(tail_energy_bound / F²) stays ≤ epsilon; the first failure closes the cluster (as in the paper).
///
/// Guarantee: every cluster of two or more groups has a rank-k relative error ‖A_c − (A_c)_k‖_F / ‖A_c‖_F ≤ its
/// reported bound ≤ epsilon — the paper's estimate is replaced by this operator's certified bound, so the
/// constraint is proven, not estimated. A group that cannot meet epsilon even alone stays a singleton cluster
/// (its bound is reported; `clusters_over_epsilon` counts them). Greedy: the number of clusters is not
/// minimal. Cost: the stream as for one operator; the clustering O(G·C) merges and bound evaluations (C
/// clusters). Memory: one operator per group, O(G·(k′ + 2·b)·d) incremental or O(G·d²) gram — bounded by the
/// number of groups (at most `maxGroups`), not by rows. Not compatible with `center` or `decay` (refused at
/// validation). Mergeable: per-group states merge by group id.
public struct GroupedTruncatedSVDOperator: MergeableOperator, Equatable {
    public static func == (a: GroupedTruncatedSVDOperator, b: GroupedTruncatedSVDOperator) -> Bool {
        a.config == b.config && a.columns == b.columns && a.encodeState() == b.encodeState()
    }

    public static let maxGroups = 100_000

    /// The per-group configuration (the matrix has columns − 1 columns).
    public let config: TruncatedSVDConfig
    /// Feature columns received, group column included.
    public let columns: Int
    public let groupColumn: Int
    public let epsilon: Double
    public private(set) var rows: Int64 = 0
    var weightSum = 0.0
    var groups: [Int64: TruncatedSVDOperator] = [:]

    public init(config: TruncatedSVDConfig, columns d: Int, groupColumn: Int, epsilon: Double) {
        precondition(d >= 2 && groupColumn >= 0 && groupColumn < d)
        self.config = config
        self.columns = d
        self.groupColumn = groupColumn
        self.epsilon = epsilon
    }

    public mutating func update(_ batch: RowBatch) throws(EngineError) {
        let d = columns, gc = groupColumn
        // Rows of this batch by group, in stream order.
        var order: [Int64] = []
        var members: [Int64: [Int]] = [:]
        for r in 0..<batch.count {
            let v = batch.features[r * d + gc]
            guard v.isFinite, v == v.rounded(), abs(v) < 0x1p53 else {
                throw .data("row \(batch.indices[r] + 1)", "group column \(gc) holds \(v), expected an integer group id")
            }
            let g = Int64(v)
            if members[g] == nil {
                guard groups[g] != nil || groups.count + order.count < GroupedTruncatedSVDOperator.maxGroups else {
                    throw .data("row \(batch.indices[r] + 1)", "more than \(GroupedTruncatedSVDOperator.maxGroups) groups",
                                hint: "group clustering keeps one sketch per group; use fewer, larger groups")
                }
                order.append(g)
                members[g] = []
            }
            members[g]!.append(r)
        }
        for g in order {
            let rs = members[g]!
            var sub = RowBatch(columns: d - 1, capacity: rs.count, hasTarget: false, hasWeight: batch.weights != nil)
            for r in rs {
                let s = sub.appendSlot(index: batch.indices[r])
                var t = 0
                for j in 0..<d where j != gc { sub.features[s * (d - 1) + t] = batch.features[r * d + j]; t += 1 }
                if batch.weights != nil { sub.weights![s] = batch.weight(r) }
                weightSum += batch.weight(r)
            }
            if groups[g] == nil { groups[g] = TruncatedSVDOperator(config: config, columns: d - 1) }
            try groups[g]!.update(sub)
        }
        rows += Int64(batch.count)
    }

    public mutating func merge(_ other: GroupedTruncatedSVDOperator) throws(EngineError) {
        guard other.columns == columns, other.config == config, other.groupColumn == groupColumn, other.epsilon == epsilon else {
            throw .usage("merge", "grouped truncated-svd states differ in shape or parameters")
        }
        for g in other.groups.keys.sorted() {
            if groups[g] == nil { groups[g] = other.groups[g]! } else { try groups[g]!.merge(other.groups[g]!) }
        }
        guard groups.count <= GroupedTruncatedSVDOperator.maxGroups else {
            throw .data("merge", "more than \(GroupedTruncatedSVDOperator.maxGroups) groups")
        }
        rows += other.rows
        weightSum += other.weightSum
    }

    /// One cluster: its groups (ids), its merged state and results.
    public struct Cluster: Sendable {
        public var groups: [Int64]
        public var result: TruncatedSVDOperator.Result
    }

    /// The greedy clustering (see the type's documentation) and the whole stream's factors.
    public func clusters() throws(EngineError) -> (clusters: [Cluster], whole: TruncatedSVDOperator.Result?) {
        let ids = groups.keys.sorted()
        var energy: [Int64: Double] = [:]
        for g in ids { energy[g] = try groups[g]!.result().frobeniusSq }
        var available = ids.sorted { energy[$0]! != energy[$1]! ? energy[$0]! > energy[$1]! : $0 < $1 }
        var out: [Cluster] = []
        while let seed = available.first {
            var acc = groups[seed]!
            var members = [seed]
            var accResult = try acc.result()
            var outside: [Int64: Double] = [:]
            for c in available.dropFirst() {
                let f = energy[c]!
                outside[c] = f > 0 ? 1 - (try groups[c]!.energy(in: accResult.rightVectors, rows: config.rank)) / f : 0
            }
            let candidates = available.dropFirst().sorted { outside[$0]! != outside[$1]! ? outside[$0]! < outside[$1]! : $0 < $1 }
            for c in candidates {
                var trial = acc
                try trial.merge(groups[c]!)
                let r = try trial.result()
                if r.relativeErrorBound <= epsilon {
                    acc = trial
                    accResult = r
                    members.append(c)
                } else {
                    break
                }
            }
            out.append(Cluster(groups: members, result: accResult))
            let taken = Set(members)
            available.removeAll { taken.contains($0) }
        }
        var whole: TruncatedSVDOperator?
        for g in ids {
            if whole == nil { whole = groups[g]! } else { try whole!.merge(groups[g]!) }
        }
        return (out, try whole?.result())
    }

    func emptyResult() throws(EngineError) -> TruncatedSVDOperator.Result {
        try TruncatedSVDOperator(config: config, columns: columns - 1).result()
    }

    public func currentSummary() -> [(String, JSON)] {
        [("rows", .int(rows)), ("weight_sum", .double(weightSum)), ("groups", .int(Int64(groups.count)))]
    }

    public mutating func finish() throws(EngineError) -> OperatorOutput {
        let (cl, wholeResult) = try clusters()
        let whole: TruncatedSVDOperator.Result
        if let w = wholeResult { whole = w } else { whole = try emptyResult() }
        let k = config.rank, d = columns - 1, c = cl.count
        let ids = groups.keys.sorted()
        var label: [Int64: Int64] = [:]
        for (i, cluster) in cl.enumerated() { for g in cluster.groups { label[g] = Int64(i) } }
        var sv: [Double] = [], rv: [Double] = [], rel: [Double] = [], tail: [Double] = [], frob: [Double] = []
        var over = 0
        for cluster in cl {
            sv += cluster.result.singularValues
            rv += cluster.result.rightVectors
            rel.append(cluster.result.relativeErrorBound)
            tail.append(cluster.result.tailBound)
            frob.append(cluster.result.frobeniusSq)
            if cluster.result.relativeErrorBound > epsilon { over += 1 }
        }
        let arrays = [
            NamedArray("singular_values", shape: [k], float64: whole.singularValues),
            NamedArray("right_vectors", shape: [k, d], float64: whole.rightVectors),
            NamedArray("groups", shape: [ids.count], int64: ids),
            NamedArray("labels", shape: [ids.count], int64: ids.map { label[$0]! }),
            NamedArray("cluster_singular_values", shape: [c, k], float64: sv),
            // (C·k) × d: cluster c's components are rows c·k ..< (c+1)·k (2-D so every .npy reader takes it;
            // numpy: .reshape(C, k, d)).
            NamedArray("cluster_right_vectors", shape: [c * k, d], float64: rv),
            NamedArray("cluster_relative_error_bound", shape: [c], float64: rel),
            NamedArray("cluster_tail_energy_bound", shape: [c], float64: tail),
            NamedArray("cluster_frobenius_norm_sq", shape: [c], float64: frob),
        ]
        let summary: [(String, JSON)] = [
            ("rows", .int(rows)), ("weight_sum", .double(weightSum)),
            ("rank", .int(Int64(k))), ("numerical_rank", .int(Int64(whole.numericalRank))),
            ("frobenius_norm_sq", .double(whole.frobeniusSq)), ("tail_energy_bound", .double(whole.tailBound)),
            ("relative_error_bound", .double(whole.relativeErrorBound)), ("method", .string(config.method.rawValue)),
            ("weyl_tail_bound", .double(whole.weylTailBound)), ("rounding_margin", .double(whole.roundingMargin)),
            ("dropped_energy", .double(whole.droppedEnergy)),
            ("oversample", .int(Int64(config.oversample))), ("block_rows", .int(Int64(config.blockRows))),
            ("columns", .int(Int64(d))), ("center", .bool(false)),
            ("group_column", .int(Int64(groupColumn))), ("epsilon", .double(epsilon)),
            ("groups", .int(Int64(ids.count))), ("clusters", .int(Int64(c))), ("clusters_over_epsilon", .int(Int64(over))),
            ("max_cluster_relative_error_bound", .double(rel.max() ?? 0)),
        ]
        return OperatorOutput(arrays: arrays, summary: summary)
    }
}

// MARK: state

/// State payload (truncated-svd's version 2, with `group`):
///
/// ```
/// offset  size   field
///      0     8   columns d, group column included (u64)   8  8  group column (u64)   16  8  epsilon (f64)
///     24     8   rows (i64)                              32  8  weight sum (f64)
///     40     8   groups g (u64)
///      …         g times, by increasing id: group id (i64), then that group's TruncatedSVDOperator payload
///                (u64 length + bytes; d − 1 columns)
/// ```
/// Integers and floats little-endian; `[f64]` is a u64 count then the values (`BinaryWriter.f64s`). Restoring
/// checks every count and length against the parameters, so a damaged payload is an error, never a trap.
extension GroupedTruncatedSVDOperator {
    public func encodeState() -> [UInt8] {
        var w = BinaryWriter()
        w.u64(UInt64(columns)); w.u64(UInt64(groupColumn)); w.f64(epsilon)
        w.i64(rows); w.f64(weightSum)
        let ids = groups.keys.sorted()
        w.u64(UInt64(ids.count))
        for g in ids { w.i64(g); w.blob(groups[g]!.encodeState()) }
        return w.bytes
    }

    /// The group column a state was made with (its second field).
    public static func groupColumn(inState state: [UInt8], location: String) throws(EngineError) -> Int {
        var r = BinaryReader(state, location: location)
        _ = try r.u64()
        guard let gc = Int(exactly: try r.u64()) else { throw .data(location, "grouped truncated-svd state has no valid group column") }
        return gc
    }

    public init(config: TruncatedSVDConfig, columns d: Int, groupColumn: Int, epsilon: Double, state: [UInt8], location: String) throws(EngineError) {
        self.init(config: config, columns: d, groupColumn: groupColumn, epsilon: epsilon)
        var r = BinaryReader(state, location: location)
        let c = Int(exactly: try r.u64()) ?? -1, gc = Int(exactly: try r.u64()) ?? -1, eps = try r.f64()
        guard c == d, gc == groupColumn, eps == epsilon else {
            throw .data(location, "grouped truncated-svd state has \(c) columns, group column \(gc), epsilon \(eps); expected \(d), \(groupColumn), \(epsilon)")
        }
        rows = try r.i64(); weightSum = try r.f64()
        let n = try r.count(elementSize: 16)
        guard rows >= 0, weightSum.isFinite, weightSum >= 0, n <= GroupedTruncatedSVDOperator.maxGroups else {
            throw .data(location, "grouped truncated-svd state is inconsistent")
        }
        var last: Int64?
        for _ in 0..<n {
            let g = try r.i64()
            guard last == nil || g > last! else { throw .data(location, "grouped truncated-svd state: group ids out of order") }
            last = g
            groups[g] = try TruncatedSVDOperator(config: config, columns: d - 1, state: try r.blob(), location: "\(location): group \(g)")
        }
        guard r.remaining == 0 else { throw .data(location, "grouped truncated-svd state has \(r.remaining) trailing bytes") }
    }
}
