#if canImport(Glibc)
import Glibc
#endif
import Foundation
import RowIO

/// Decimal strings that stress float parsing, and a comparison of `NumberParser` with glibc's strtod (correctly
/// rounded) on them. Shared by the unit suite (a reduced count) and `rowflow-numcheck` (10⁷, `make test`).
public enum NumberStrings {
    /// The `i`-th string of the sequence for `seed`: each index is one of ten families, cycled.
    public static func string(_ i: UInt64, seed: UInt64) -> String {
        var g = Mix(state: seed &* 0x9E37_79B9_7F4A_7C15 ^ i &* 0xD1B5_4A32_D192_ED03)
        switch i % 10 {
        case 0: return format("%.17g", randomFinite(&g))
        case 1: return "\(randomFinite(&g))"   // shortest round-trip form
        case 2: return format("%.\(1 + g.next() % 20)g", randomFinite(&g))
        case 3, 4: return halfway(&g)
        case 5: return longDigits(&g)
        case 6: return decorated(&g)
        case 7:   // subnormals and the edge of underflow
            let x = Double(bitPattern: g.next() % (1 << 52) >> (g.next() % 52))
            return g.next() % 2 == 0 ? format("%.\(1 + g.next() % 25)e", x) : "\(x)"
        case 8:   // huge and tiny exponents, overflow and underflow
            let digits = randomDigits(&g, count: 1 + Int(g.next() % 25))
            let e = Int(g.next() % 800) - 400
            return (g.next() % 2 == 0 ? "-" : "") + digits + "e\(e)"
        default:   // integers around 2^53 and 2^64
            let base: UInt64 = g.next() % 2 == 0 ? 1 << 53 : UInt64.max - 4096
            return "\(base &+ g.next() % 4096)" + (g.next() % 3 == 0 ? ".0" : "") + (g.next() % 4 == 0 ? "e-\(g.next() % 30)" : "")
        }
    }

    /// Counts disagreements with strtod over `count` strings (their first few are returned for the message).
    public static func check(count: UInt64, seed: UInt64, from start: UInt64 = 0) -> (failures: Int, examples: [String]) {
        var failures = 0
        var examples: [String] = []
        for i in start..<(start + count) {
            let s = string(i, seed: seed)
            let expected = strtod(s, nil)
            let bytes = Array(s.utf8)
            let got = bytes.withUnsafeBufferPointer { NumberParser.parse($0.baseAddress!, 0, $0.count) }
            let ok: Bool
            switch got {
            case let .value(v): ok = expected.isFinite && v.bitPattern == expected.bitPattern
            case .overflow: ok = expected.isInfinite
            default: ok = false
            }
            if !ok {
                failures += 1
                if examples.count < 10 { examples.append("\(s): strtod \(expected), parsed \(got)") }
            }
        }
        return (failures, examples)
    }

    public struct Mix {
        var state: UInt64
        public init(state: UInt64) { self.state = state }
        public mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func format(_ f: String, _ x: Double) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        _ = withVaList([x]) { vsnprintf(&buf, 64, f, $0) }
        return String(cString: buf)
    }

    static func randomFinite(_ g: inout Mix) -> Double {
        while true {
            let x = Double(bitPattern: g.next())
            if x.isFinite { return x }
        }
    }

    static func randomDigits(_ g: inout Mix, count: Int) -> String {
        var s = ""
        for _ in 0..<count { s.unicodeScalars.append(Unicode.Scalar(UInt8(0x30 + g.next() % 10))) }
        return s
    }

    /// 19 to 60 digits with a point somewhere and an exponent: the truncated-mantissa path (w and w+1).
    static func longDigits(_ g: inout Mix) -> String {
        let n = 19 + Int(g.next() % 42)
        var d = randomDigits(&g, count: n)
        if g.next() % 2 == 0 { d.insert(".", at: d.index(d.startIndex, offsetBy: Int(g.next() % UInt64(n)))) }
        return d + "e\(Int(g.next() % 660) - 340)"
    }

    /// Signs, leading and trailing zeros, a bare point, exponent spellings.
    static func decorated(_ g: inout Mix) -> String {
        let x = abs(randomFinite(&g))
        let digits = format("%.\(1 + g.next() % 17)e", x)   // d.ddde±XX
        let parts = digits.split(separator: "e")
        var mant = String(parts[0]), e = Int(parts[1])!
        if g.next() % 3 == 0, mant.count >= 4, let dot = mant.firstIndex(of: ".") {   // 1.234e5 → 12.34e4
            mant.remove(at: dot)
            mant.insert(".", at: mant.index(mant.startIndex, offsetBy: 2))
            e -= 1
        } else if g.next() % 4 == 0 {   // 1.234e5 → .1234e6
            mant = "." + mant.replacingOccurrences(of: ".", with: "")
            e += 1
        }
        let zeros = String(repeating: "0", count: Int(g.next() % 5))
        let sign = ["", "+", "-"][Int(g.next() % 3)]
        let eLetter = g.next() % 2 == 0 ? "e" : "E"
        let eSign = e < 0 ? "-" : (g.next() % 2 == 0 ? "+" : "")
        return sign + zeros + mant + (g.next() % 2 == 0 ? "000" : "") + eLetter + eSign + zeros + "\(abs(e))"
    }

    /// The exact decimal expansion of the midpoint between a random double and the next one up (ties to even
    /// decide), or that expansion cut short (just below the midpoint) or nudged above it.
    static func halfway(_ g: inout Mix) -> String {
        var x = abs(randomFinite(&g))
        if g.next() % 8 == 0 { x = Double(bitPattern: g.next() % (1 << 52)) }   // subnormal midpoints
        if x == .greatestFiniteMagnitude { x = x.nextDown }
        // x = m · 2^e, the midpoint is (2m + 1) · 2^(e - 1).
        let bits = x.bitPattern
        let biased = Int(bits >> 52)
        var m = bits & ((1 << 52) - 1)
        var e: Int
        if biased == 0 { e = -1074 } else { m |= 1 << 52; e = biased - 1075 }
        let odd = 2 * m + 1
        e -= 1
        // Decimal digits of odd · 2^e: for e < 0, odd · 5^-e · 10^e.
        var limbs: [UInt64] = [odd % 1_000_000_000, odd / 1_000_000_000 % 1_000_000_000, odd / 1_000_000_000_000_000_000]
        func multiply(_ k: UInt64) {
            var carry: UInt64 = 0
            for j in 0..<limbs.count {
                let v = limbs[j] * k + carry
                limbs[j] = v % 1_000_000_000
                carry = v / 1_000_000_000
            }
            while carry > 0 { limbs.append(carry % 1_000_000_000); carry /= 1_000_000_000 }
        }
        var decExp = 0
        if e < 0 { for _ in 0..<(-e) { multiply(5) }; decExp = e } else { for _ in 0..<e { multiply(2) } }
        while limbs.count > 1 && limbs.last == 0 { limbs.removeLast() }
        var digits = String(limbs.last!)
        for limb in limbs.dropLast().reversed() {
            let t = String(limb)
            digits += String(repeating: "0", count: 9 - t.count) + t
        }
        switch g.next() % 4 {
        case 0: break   // exact: ties to even
        case 1:   // cut after 17...40 digits: just below the midpoint (or equal when the rest was zeros)
            let keep = 17 + Int(g.next() % 24)
            if digits.count > keep { decExp += digits.count - keep; digits = String(digits.prefix(keep)) }
        case 2: digits += "000000000000000000001"; decExp -= 21   // just above
        default:   // just above, written with a point
            digits += "1"; decExp -= 1
            let n = digits.count
            return String(digits.prefix(1)) + "." + String(digits.dropFirst()) + "e\(decExp + n - 1)"
        }
        return digits + "e\(decExp)"
    }
}
