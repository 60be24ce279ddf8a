/// A block of rows in the engine's one layout: features row-major float64 (`count × columns`), plus an
/// optional target and weight per row and each row's 0-based position in its source stream.
///
/// Batches are cut at fixed row counts (`batch_rows`) by the decoder, never by timing, and are recycled
/// between the decode and compute threads, so the buffers are allocated once per run, not per row.
public struct RowBatch: Sendable {
    /// Features per row (after `select`, target and weight columns removed).
    public let columns: Int
    public let capacity: Int
    public private(set) var count: Int
    public var features: [Double]
    /// Present when the source has a target column.
    public var targets: [Double]?
    /// Present when rows carry multiplicities (source `weight`, or rows emitted by a sampler).
    public var weights: [Double]?
    /// 0-based source positions (skipped rows keep theirs, so these need not be consecutive).
    public var indices: [Int64]
    /// The shard each row came from, when rows of several shards are pooled (merged samples).
    public var shards: [Int64]?
    /// Raw float32 rows not yet converted into `features` (rows `stagedStart..<count`). A decoder's fast path
    /// for float32 input fills this and leaves the conversion to `materialize()`, which the engine calls on
    /// the compute thread: the decode thread then only decompresses, the slower of the two stages.
    public private(set) var staged: [Float]?
    public private(set) var stagedStart = 0
    /// For messages about staged rows: the input's name and the source position of its first row.
    public var stagedSource = ""
    public var stagedRowBase: Int64 = 0

    /// Where the source stood right after this batch was filled. The decoder runs ahead of the operators,
    /// so a checkpoint must take these from the last batch fed, not from the live source.
    public var position = SourcePosition()

    public init(columns: Int, capacity: Int, hasTarget: Bool, hasWeight: Bool) {
        self.columns = columns
        self.capacity = capacity
        self.count = 0
        self.features = [Double](repeating: 0, count: columns * capacity)
        self.targets = hasTarget ? [Double](repeating: 0, count: capacity) : nil
        self.weights = hasWeight ? [Double](repeating: 0, count: capacity) : nil
        self.indices = [Int64](repeating: 0, count: capacity)
    }

    /// Feature bytes one batch may hold: `batch_rows` is lowered (never raised) for very wide rows so that a
    /// batch stays within this, e.g. 8192 rows only up to 512 columns. A function of the column count only,
    /// so it never changes a result.
    public static let maxFeatureBytes = 32 << 20

    /// The batch capacity the engine uses for `batchRows` requested rows of `columns` features.
    public static func capacity(batchRows: Int, columns: Int) -> Int {
        max(1, min(batchRows, maxFeatureBytes / (8 * max(1, columns))))
    }

    public var isFull: Bool { count == capacity }
    public var isEmpty: Bool { count == 0 }

    /// Empties the batch for reuse; buffers keep their capacity.
    public mutating func reset() { count = 0; stagedStart = 0; mixed = false; featuresUnfilled = false }

    /// Some row of this batch did not come through the staging area.
    private var mixed = false

    /// The batch's rows as the float32 values they were read as (`features`, when filled, holds the same
    /// values widened exactly), with the floats between row starts — or nil unless every row was staged and
    /// then converted or checked. For operators that compute in float32: reading these skips narrowing
    /// `features` again and gives the same bits.
    public func withFloat32Rows<R>(_ body: (UnsafePointer<Float>, _ stride: Int) throws(EngineError) -> R) throws(EngineError) -> R? {
        guard let st = staged, !mixed, count > 0, stagedStart == count else { return nil }
        var result: Result<R, EngineError>!
        st.withUnsafeBufferPointer { p in result = Result { () throws(EngineError) -> R in try body(p.baseAddress!, stagedStride) } }
        return try result.get()
    }

    /// Staged rows carry the target after the features (raw rows `features…, target`).
    public private(set) var stagedTarget = false
    /// Floats per staged row.
    var stagedStride: Int { columns + (stagedTarget ? 1 : 0) }

    /// Gives the batch a float32 staging area (see `staged`); `withTarget`: each staged row ends with the
    /// target, which `materialize()` moves to `targets`.
    public mutating func enableStaging(withTarget: Bool = false) {
        precondition(!withTarget || targets != nil, "a staged target needs a batch with targets")
        stagedTarget = withTarget
        if staged == nil { staged = [Float](repeating: 0, count: stagedStride * capacity) }
    }

    /// Rows staged but not yet converted.
    public var stagedRows: Int { staged == nil ? 0 : count - stagedStart }

    /// Gives `body` the staging area from row `row` on (pointer, bytes of room) to write float32 rows into;
    /// `commitStaged` then appends them.
    public mutating func withStaging<R>(fromRow row: Int, _ body: (UnsafeMutableRawPointer, Int) throws(EngineError) -> R) throws(EngineError) -> R {
        let stride = stagedStride, room = (capacity - row) * stride * 4
        var result: Result<R, EngineError>!
        staged!.withUnsafeMutableBytes { p in
            result = Result { () throws(EngineError) -> R in try body(p.baseAddress! + row * stride * 4, room) }
        }
        return try result.get()
    }

    /// Appends `n` staged rows (written by `withStaging`) with consecutive source positions.
    public mutating func commitStaged(_ n: Int, firstIndex: Int64) {
        precondition(staged != nil && count + n <= capacity)
        if stagedRows == 0 { stagedStart = count }
        if stagedStart != 0 { mixed = true }
        for k in 0..<n { indices[count + k] = firstIndex + Int64(k) }
        count += n
    }

    /// `features` was left unfilled (`checkStaged()`): the rows are only in the staging area.
    public private(set) var featuresUnfilled = false

    /// Feature `j` of row `r`, from wherever the batch holds it.
    @inline(__always)
    public func feature(_ r: Int, _ j: Int) -> Double {
        featuresUnfilled ? Double(staged![r * stagedStride + j]) : features[r * columns + j]
    }

    /// `materialize()` for readers of `withFloat32Rows` only: the same check for non-finite values, with the
    /// same error, and the targets widened, but `features` left unfilled (`featuresUnfilled`).
    public mutating func checkStaged() throws(EngineError) {
        guard let st = staged, count > stagedStart else { stagedStart = count; return }
        // Only a batch staged whole can leave `features` unfilled; any other is converted as usual.
        guard stagedStart == 0, !mixed else { try materialize(); return }
        let stride = stagedStride, n = count * stride
        var bad = false
        st.withUnsafeBufferPointer { s in
            let sp = s.baseAddress!
            var probe = SIMD16<Float>(repeating: 0), j = 0
            while j + 16 <= n {
                probe += UnsafeRawPointer(sp + j).loadUnaligned(as: SIMD16<Float>.self) * 0
                j += 16
            }
            var tail: Float = 0
            while j < n { tail += sp[j] * 0; j += 1 }
            bad = (probe.sum() + tail).isNaN
        }
        if bad {
            try materialize()   // finds the first bad row and raises its error
            return
        }
        if stagedTarget {
            let d = columns
            targets!.withUnsafeMutableBufferPointer { t in
                st.withUnsafeBufferPointer { s in for r in 0..<count { t[r] = Double(s[r * stride + d]) } }
            }
        }
        stagedStart = count
        featuresUnfilled = true
    }

    /// Converts staged rows into `features`; a non-finite value is an error naming its row (the fast path is
    /// only taken when non-finite values are not allowed and bad rows fail the run).
    public mutating func materialize() throws(EngineError) {
        guard let st = staged, count > stagedStart else { stagedStart = count; return }
        let d = columns, stride = stagedStride, from = stagedStart, to = count
        var bad: Int?
        features.withUnsafeMutableBufferPointer { f in
            st.withUnsafeBufferPointer { s in
                let sp = s.baseAddress!, fp = f.baseAddress!
                for r in from..<to {
                    // v·0 is NaN iff v is not finite; eight lanes keep the check off one long add chain.
                    var probe = SIMD8<Double>(repeating: 0)
                    let src = sp + r * stride, dst = fp + r * d
                    var j = 0
                    while j + 8 <= d {
                        let v = SIMD8<Double>(UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<Float>.self))
                        UnsafeMutableRawPointer(dst + j).storeBytes(of: v, as: SIMD8<Double>.self)
                        probe += v * 0
                        j += 8
                    }
                    var tail: Double = 0
                    while j < d {
                        let v = Double(src[j])
                        dst[j] = v
                        tail += v * 0
                        j += 1
                    }
                    if (probe.sum() + tail).isNaN && bad == nil { bad = r }
                }
            }
        }
        if stagedTarget {
            targets!.withUnsafeMutableBufferPointer { t in
                st.withUnsafeBufferPointer { s in
                    for r in from..<to {
                        let v = Double(s[r * stride + d])
                        t[r] = v
                        if !v.isFinite && (bad == nil || r < bad!) { bad = r }
                    }
                }
            }
        }
        stagedStart = count
        if let r = bad {
            let raw = (0..<stride).map { Double(st[r * stride + $0]) }
            let j = raw.firstIndex { !$0.isFinite }!
            throw .data("\(stagedSource): row \(indices[r] - stagedRowBase + 1)", "non-finite value \(raw[j]) in column \(j + 1)",
                        hint: "set source.allow_nonfinite: true, or on_bad_row: skip")
        }
    }

    /// Claims the next row slot and returns its index; the caller fills `features[r*columns ..]` etc.
    @inline(__always)
    public mutating func appendSlot(index: Int64) -> Int {
        precondition(count < capacity)
        mixed = true
        let r = count
        indices[r] = index
        count += 1
        return r
    }

    /// Drops the most recently claimed slot (a row rejected after it was partly parsed).
    @inline(__always)
    public mutating func dropLast() { if count > 0 { count -= 1 } }

    /// Removes the given slots (ascending), moving later rows down.
    public mutating func removeRows(_ slots: [Int]) {
        guard !slots.isEmpty else { return }
        mixed = true
        var dst = slots[0], k = 0
        for src in slots[0]..<count {
            if k < slots.count && slots[k] == src { k += 1; continue }
            for j in 0..<columns { features[dst * columns + j] = features[src * columns + j] }
            if targets != nil { targets![dst] = targets![src] }
            if weights != nil { weights![dst] = weights![src] }
            if shards != nil { shards![dst] = shards![src] }
            indices[dst] = indices[src]
            dst += 1
        }
        count = dst
    }

    @inline(__always)
    public func weight(_ r: Int) -> Double { weights?[r] ?? 1 }

    /// Σ weights of the rows present.
    public var weightSum: Double {
        guard let w = weights else { return Double(count) }
        var s = 0.0
        for r in 0..<count { s += w[r] }
        return s
    }

    /// Appends one row copied from another batch.
    public mutating func append(from other: RowBatch, row r: Int) {
        precondition(other.columns == columns)
        let s = appendSlot(index: other.indices[r])
        for j in 0..<columns { features[s * columns + j] = other.feature(r, j) }
        if targets != nil { targets![s] = other.targets?[r] ?? 0 }
        if weights != nil { weights![s] = other.weight(r) }
        if shards != nil || other.shards != nil {
            if shards == nil { shards = [Int64](repeating: 0, count: capacity) }
            shards![s] = other.shards?[r] ?? 0
        }
    }
}

extension RowBatch {
    /// A copy of rows [start, start + n) as a batch of capacity n (used to cut a batch at an emit boundary).
    public func slice(_ start: Int, _ n: Int) -> RowBatch {
        var b = RowBatch(columns: columns, capacity: max(1, n), hasTarget: targets != nil, hasWeight: weights != nil)
        if shards != nil { b.shards = [Int64](repeating: 0, count: max(1, n)) }
        for r in start..<start + n { b.append(from: self, row: r) }
        return b
    }
}

/// The source's counters as of the end of one batch.
public struct SourcePosition: Sendable, Equatable {
    /// Rows consumed from the input, good and bad (the next row's 0-based position).
    public var rowsConsumed: Int64 = 0
    public var rowsSkipped: Int64 = 0
    public var rowsQuarantined: Int64 = 0
    public var quarantineBytes: UInt64 = 0
    public var bytesIn: Int64 = 0
    public init() {}
}
