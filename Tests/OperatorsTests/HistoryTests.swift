import EngineCore
import Testing
@testable import Operators

/// BoundedHistory: bounded, position-based thinning, the last event always written, and its state exact.
@Suite struct HistoryTests {
    /// Events 0…n−1 with row [i, 2i]: the kept rows are exactly the multiples of the final stride, at most
    /// capacity of them, plus the last event — whatever n is.
    @Test(arguments: [1, 7, 8, 9, 16, 17, 100, 1000, 4097])
    func keepsMultiplesOfTheStrideAndTheLast(n: Int) throws {
        var h = BoundedHistory(width: 2, capacity: 8)
        for i in 0..<n { h.record([Double(i), Double(2 * i)]) }
        let a = try #require(h.array("x_history"))
        let rows = a.shape[0]
        guard case let .float64(v) = a.values else { Issue.record("not float64"); return }
        let firsts = (0..<rows).map { Int(v[2 * $0]) }
        #expect(rows <= 9 && h.keptRows <= 8, "\(rows) rows")
        let s = Int(h.stride)
        let want = Array(stride(from: 0, to: n, by: s)) + ((n - 1) % s == 0 ? [] : [n - 1])
        #expect(firsts == want, "n \(n), stride \(s)")
        #expect((0..<rows).allSatisfy { v[2 * $0 + 1] == 2 * v[2 * $0] })
        // The stride is the smallest power of two that fits: with half of it, more than `capacity` rows.
        if s > 1 { #expect((n + s / 2 - 1) / (s / 2) > 8) }
    }

    @Test func emptyWritesNothing() {
        #expect(BoundedHistory(width: 3).array("h") == nil)
    }

    /// Split anywhere and restored from its encoding, it continues as if never stopped; corrupt states fail.
    @Test func stateRoundTripsAndRejectsInconsistency() throws {
        var whole = BoundedHistory(width: 1, capacity: 4)
        for i in 0..<37 { whole.record([Double(i)]) }
        for cut in [0, 1, 5, 20, 36] {
            var a = BoundedHistory(width: 1, capacity: 4)
            for i in 0..<cut { a.record([Double(i)]) }
            var w = BinaryWriter()
            a.encode(&w)
            var b = BoundedHistory(width: 1, capacity: 4)
            var r = BinaryReader(w.bytes, location: "t")
            try b.decode(&r, what: "t")
            #expect(b == a && r.remaining == 0)
            for i in cut..<37 { b.record([Double(i)]) }
            #expect(b == whole, "cut at \(cut)")
        }
        // A state claiming more events than its rows allow is refused.
        var w = BinaryWriter()
        w.u64(1); w.i64(100); w.i64(1); w.f64s([1, 2]); w.f64s([2])
        var bad = BoundedHistory(width: 1, capacity: 4)
        var r = BinaryReader(w.bytes, location: "t")
        #expect(throws: EngineError.self) { try bad.decode(&r, what: "t") }
    }
}

extension HistoryTests {
    /// The closing row is written after the history when it differs from its last row, and only then.
    @Test func closingRowIsAppendedOnce() throws {
        var h = BoundedHistory(width: 2)
        #expect(h.array("x", closing: [5, 6])?.shape == [1, 2])
        h.record([1, 2])
        #expect(h.array("x", closing: [1, 2])?.shape == [1, 2])
        #expect(h.array("x", closing: [3, 4])?.shape == [2, 2])
        #expect(h.events == 1, "array(closing:) leaves the state alone")
    }
}
