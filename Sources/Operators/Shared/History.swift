import EngineCore

/// A bounded record of how an operator's estimate evolved (for `rowflow report`'s convergence plots), written
/// as `<name>_history.npy` (m × width, float64).
///
/// Guarantee: at most `capacity` + 1 rows whatever the stream length. Event i (the i-th call to `record`,
/// counted from 0) is kept iff i is a multiple of the current stride; when the kept rows exceed `capacity`
/// the stride doubles and every other kept row goes — so which events survive depends only on how many
/// events there were, never on batching or timing, and the history is part of its operator's checkpointed
/// state (a resumed run writes a byte-identical history). The latest event is always written last, so the
/// final point of a curve is the operator's final state (see `array(_:closing:)`).
/// Cost: O(width) per event, amortised; memory and state: ≤ (capacity + 1)·width doubles.
public struct BoundedHistory: Sendable, Equatable {
    public let width: Int
    public let capacity: Int
    public private(set) var events: Int64 = 0
    public private(set) var stride: Int64 = 1
    /// Kept rows, row-major; row r is event r·stride.
    public private(set) var values: [Double] = []
    /// The latest event's row (empty before the first).
    public private(set) var last: [Double] = []

    public static let defaultCapacity = 1024

    public init(width: Int, capacity: Int = BoundedHistory.defaultCapacity) {
        precondition(width > 0 && capacity >= 2)
        self.width = width
        self.capacity = capacity
    }

    public var keptRows: Int { values.count / width }

    public mutating func record(_ row: [Double]) {
        precondition(row.count == width)
        if events % stride == 0 {
            values += row
            if keptRows > capacity {
                var thinned: [Double] = []
                thinned.reserveCapacity(values.count / 2 + width)
                for r in Swift.stride(from: 0, to: keptRows, by: 2) { thinned += values[r * width..<(r + 1) * width] }
                values = thinned
                stride *= 2
            }
        }
        last = row
        events += 1
    }

    /// Forgets everything (e.g. after a merge, where one stream's history means nothing for the union).
    public mutating func clear() { self = BoundedHistory(width: width, capacity: capacity) }

    /// The kept rows plus the latest event when it was not kept, plus `closing` (the operator's final values,
    /// recorded only in the output so that `finish` leaves the state as it was) when it differs from that
    /// last row; nil when there is nothing to write.
    public func array(_ name: String, closing: [Double]? = nil) -> NamedArray? {
        var v = values
        if events > 0 && (events - 1) % stride != 0 { v += last }
        if let c = closing, c.count == width, v.count < width || Array(v.suffix(width)) != c { v += c }
        guard !v.isEmpty else { return nil }
        return NamedArray(name, shape: [v.count / width, width], float64: v)
    }

    public func encode(_ w: inout BinaryWriter) {
        w.u64(UInt64(width)); w.i64(events); w.i64(stride); w.f64s(values); w.f64s(last)
    }

    public mutating func decode(_ r: inout BinaryReader, what: String) throws(EngineError) {
        let wd = try r.u64(), ev = try r.i64(), st = try r.i64(), v = try r.f64s(), l = try r.f64s()
        // Kept events are 0, st, 2st, … < ev: exactly ⌈ev/st⌉ rows.
        guard wd == UInt64(width), ev >= 0, st >= 1, st <= 1 << 62, (st & (st - 1)) == 0,
              v.count % width == 0, v.count / width <= capacity,
              Int64(v.count / width) == (ev + st - 1) / st, l.count == (ev > 0 ? width : 0) else {
            throw .data(r.location, "\(what) history is inconsistent (width, stride or length)")
        }
        events = ev; stride = st; values = v; last = l
    }
}
