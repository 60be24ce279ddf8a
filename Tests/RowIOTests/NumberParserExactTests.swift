import Foundation
@testable import RowIO
import TestSupport
import Testing

/// Non-negative integers as little-endian 32-bit limbs: just enough exact arithmetic to re-derive the powers
/// of five from first principles, independently of the Python generator.
struct BigNat: Equatable, Comparable {
    var limbs: [UInt32]
    init(_ v: UInt64) { limbs = [UInt32(truncatingIfNeeded: v), UInt32(truncatingIfNeeded: v >> 32)]; trim() }
    init(hi: UInt64, lo: UInt64) { limbs = BigNat(lo).padded(2).limbs + BigNat(hi).padded(2).limbs; trim() }
    private init(limbs: [UInt32]) { self.limbs = limbs; trim() }
    mutating func trim() { while limbs.count > 1 && limbs.last == 0 { limbs.removeLast() }; if limbs.isEmpty { limbs = [0] } }
    func padded(_ n: Int) -> BigNat { var c = self; while c.limbs.count < n { c.limbs.append(0) }; return c }
    var bitLength: Int { (limbs.count - 1) * 32 + (32 - limbs.last!.leadingZeroBitCount) }
    static func * (a: BigNat, b: BigNat) -> BigNat {
        var r = [UInt32](repeating: 0, count: a.limbs.count + b.limbs.count)
        for i in 0..<a.limbs.count {
            var carry: UInt64 = 0
            for j in 0..<b.limbs.count {
                let t = UInt64(a.limbs[i]) * UInt64(b.limbs[j]) + UInt64(r[i + j]) + carry
                r[i + j] = UInt32(truncatingIfNeeded: t)
                carry = t >> 32
            }
            var k = i + b.limbs.count
            while carry > 0 { let t = UInt64(r[k]) + carry; r[k] = UInt32(truncatingIfNeeded: t); carry = t >> 32; k += 1 }
        }
        return BigNat(limbs: r)
    }
    static func + (a: BigNat, b: BigNat) -> BigNat {
        var r = [UInt32](repeating: 0, count: max(a.limbs.count, b.limbs.count) + 1)
        var carry: UInt64 = 0
        for i in 0..<r.count {
            let t = UInt64(i < a.limbs.count ? a.limbs[i] : 0) + UInt64(i < b.limbs.count ? b.limbs[i] : 0) + carry
            r[i] = UInt32(truncatingIfNeeded: t); carry = t >> 32
        }
        return BigNat(limbs: r)
    }
    static func << (a: BigNat, s: Int) -> BigNat {
        var r = [UInt32](repeating: 0, count: a.limbs.count + s / 32 + 1)
        for i in 0..<a.limbs.count {
            let v = UInt64(a.limbs[i]) << UInt64(s % 32)
            r[i + s / 32] |= UInt32(truncatingIfNeeded: v)
            r[i + s / 32 + 1] |= UInt32(truncatingIfNeeded: v >> 32)
        }
        return BigNat(limbs: r)
    }
    static func >> (a: BigNat, s: Int) -> BigNat {
        var r = [UInt32](repeating: 0, count: max(1, a.limbs.count - s / 32))
        for i in 0..<r.count {
            let lo = i + s / 32 < a.limbs.count ? UInt64(a.limbs[i + s / 32]) : 0
            let hi = i + s / 32 + 1 < a.limbs.count ? UInt64(a.limbs[i + s / 32 + 1]) : 0
            r[i] = UInt32(truncatingIfNeeded: (hi << 32 | lo) >> UInt64(s % 32))
        }
        return BigNat(limbs: r)
    }
    static func < (a: BigNat, b: BigNat) -> Bool {
        if a.limbs.count != b.limbs.count { return a.limbs.count < b.limbs.count }
        for i in stride(from: a.limbs.count - 1, through: 0, by: -1) where a.limbs[i] != b.limbs[i] { return a.limbs[i] < b.limbs[i] }
        return false
    }
}

@Suite struct NumberParserExactTests {
    /// Every entry of the generated table, re-derived: for q ≥ 0 the top 128 bits of 5^q (exact powers, cut);
    /// for q < 0 the T in [2^127, 2^128) with T·5^-q ≤ 2^b < (T+1)·5^-q, i.e. floor(2^b / 5^-q).
    @Test func powersOfFiveTableIsExact() {
        let table = NumberParser.pow5Table
        #expect(table.count == 2 * (NumberParser.pow5MaxExponent - NumberParser.pow5MinExponent + 1))
        var up = BigNat(1)   // 5^q for q = 0, 1, ...
        var down = BigNat(1)   // 5^-q for q = 0, -1, ...
        var bad: [Int] = []
        for q in 0...NumberParser.pow5MaxExponent {
            let i = 2 * (q - NumberParser.pow5MinExponent)
            let t = BigNat(hi: table[i], lo: table[i + 1])
            let l = up.bitLength
            let expected = l <= 128 ? up << (128 - l) : up >> (l - 128)
            if t != expected { bad.append(q) }
            up = up * BigNat(5)
        }
        let low = BigNat(1) << 127, high = BigNat(1) << 128
        for m in 1...(-NumberParser.pow5MinExponent) {
            down = down * BigNat(5)
            let q = -m
            let i = 2 * (q - NumberParser.pow5MinExponent)
            let t = BigNat(hi: table[i], lo: table[i + 1])
            let p = t * down
            let power = BigNat(1) << p.bitLength   // the one power of two in (T·d, 2·T·d]: 2^b ≥ T·d as T·d is no power of 2
            if t < low || !(t < high) || !(power < p + down) { bad.append(q) }
        }
        #expect(bad.isEmpty, "wrong table entries for q in \(bad.prefix(10))")
    }

    /// The parser against strtod (glibc: correctly rounded) on 50,000 strings of every family (random doubles,
    /// exact and near midpoints, 19–60 digits, decorations, subnormals, extreme exponents, integers near 2^53
    /// and 2^64). Exact equality of bits: correct rounding has one answer. `rowflow-numcheck` runs 10⁷.
    @Test func agreesWithStrtod() {
        let r = NumberStrings.check(count: 50_000, seed: 7)
        #expect(r.failures == 0, "\(r.examples)")
    }

    /// Hand-picked hard cases: halfway points (ties to even), the 19-digit boundary, the smallest subnormal and
    /// its half, the largest double and its overflow threshold.
    @Test func knownHardCases() {
        let cases = [
            "9007199254740993", "9007199254740993.0000000000000001", "9007199254740992.9999999999999999",
            "2.2250738585072011e-308", "2.2250738585072014e-308", "4.9406564584124654e-324", "2.4703282292062327e-324",
            "2.4703282292062328e-324", "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
            "179769313486231580793728971405301e276", "0.1", "1.00000005960464477550", "7.3177701707893310e+15",
            "12345678901234567890", "1234567890123456789012345678901234567890e-20", "1e-342", "1e-343", "9e-324", "1e308", "1e309",
            "-0", "-0e10", "0.000000000000000000000000000000000000000000001e45", "4503599627370496.5", "4503599627370497.5",
        ]
        for s in cases {
            let b = Array(s.utf8)
            let got = b.withUnsafeBufferPointer { NumberParser.parse($0.baseAddress!, 0, $0.count) }
            let want = strtod(s, nil)
            if want.isInfinite { #expect(got == .overflow, "\(s)") } else if case let .value(v) = got {
                #expect(v.bitPattern == want.bitPattern, "\(s): \(v) vs \(want)")
            } else { Issue.record("\(s): \(got)") }
        }
    }
}
