#if canImport(Glibc)
import Glibc
#endif

/// Parses one decimal or scientific number from a byte range, exactly rounded.
///
/// Fast path (Clinger 1990): up to 19 significant digits whose integer value is ≤ 2⁵³ and a decimal exponent
/// within ±22 — then m·10^e is one correctly rounded float64 operation. Everything else goes to strtod.
/// Surrounding blanks and one pair of double quotes are accepted.
enum NumberParser {
    enum Result: Equatable {
        case value(Double)
        /// NaN, inf, NA or an empty field: bad unless non-finite values are allowed.
        case nonfinite(Double, String)
        /// Finite text whose value overflows float64 (1e999).
        case overflow
        case invalid
    }

    static let pow10: [Double] = (0...22).map { e in var v = 1.0; for _ in 0..<e { v *= 10 }; return v }

    @inline(__always)
    static func parse(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Result {
        var i = a, j = b
        while i < j && (p[i] == 0x20 || p[i] == 0x09) { i += 1 }
        while j > i && (p[j - 1] == 0x20 || p[j - 1] == 0x09 || p[j - 1] == 0x0D) { j -= 1 }
        if j - i >= 2 && p[i] == 0x22 && p[j - 1] == 0x22 {   // "quoted"
            i += 1; j -= 1
            while i < j && p[i] == 0x20 { i += 1 }
            while j > i && p[j - 1] == 0x20 { j -= 1 }
        }
        if i == j { return .nonfinite(.nan, "empty field") }
        let start = i
        var negative = false
        if p[i] == 0x2D { negative = true; i += 1 } else if p[i] == 0x2B { i += 1 }
        var mantissa: UInt64 = 0
        var digits = 0, exp10 = 0
        var sawDigit = false, exact = true
        while i < j, p[i] &- 0x30 < 10 {
            sawDigit = true
            if digits < 19 { mantissa = mantissa &* 10 &+ UInt64(p[i] &- 0x30); if mantissa != 0 { digits += 1 } }
            else { exp10 += 1; exact = false }
            i += 1
        }
        if i < j && p[i] == 0x2E {
            i += 1
            while i < j, p[i] &- 0x30 < 10 {
                sawDigit = true
                if digits < 19 { mantissa = mantissa &* 10 &+ UInt64(p[i] &- 0x30); exp10 -= 1; if mantissa != 0 { digits += 1 } }
                else { exact = false }
                i += 1
            }
        }
        if !sawDigit { return word(p, start, j) }
        if i < j && (p[i] == 0x65 || p[i] == 0x45) {
            i += 1
            var eneg = false
            if i < j && (p[i] == 0x2D || p[i] == 0x2B) { eneg = p[i] == 0x2D; i += 1 }
            guard i < j, p[i] &- 0x30 < 10 else { return .invalid }
            var e = 0
            while i < j, p[i] &- 0x30 < 10 { if e < 100_000 { e = e * 10 + Int(p[i] &- 0x30) }; i += 1 }
            exp10 += eneg ? -e : e
        }
        guard i == j else { return .invalid }
        if exact && mantissa <= (1 << 53) && exp10 >= -22 && exp10 <= 22 {
            var v = Double(mantissa)
            if exp10 < 0 { v /= pow10[-exp10] } else { v *= pow10[exp10] }
            return .value(negative ? -v : v)
        }
        return slow(p, start, j)
    }

    /// strtod on a NUL-terminated copy (the rare long or extreme-exponent number).
    static func slow(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Result {
        var tmp = [CChar](repeating: 0, count: b - a + 1)
        for k in 0..<(b - a) { tmp[k] = CChar(bitPattern: p[a + k]) }
        var endp: UnsafeMutablePointer<CChar>?
        errno = 0
        let v = tmp.withUnsafeBufferPointer { strtod($0.baseAddress!, &endp) }
        if v.isInfinite { return .overflow }
        return .value(v)   // underflow to 0 or a subnormal is a fine value
    }

    /// nan, inf, infinity, NA (any case, optional sign).
    static func word(_ p: UnsafePointer<UInt8>, _ a: Int, _ b: Int) -> Result {
        var s = ""
        for k in a..<b { s.unicodeScalars.append(Unicode.Scalar(p[k] | (p[k] >= 0x41 && p[k] <= 0x5A ? 0x20 : 0))) }
        switch s {
        case "nan", "+nan", "-nan", "na", "n/a", "null": return .nonfinite(.nan, "non-finite value '\(s)'")
        case "inf", "+inf", "infinity", "+infinity": return .nonfinite(.infinity, "non-finite value '\(s)'")
        case "-inf", "-infinity": return .nonfinite(-.infinity, "non-finite value '\(s)'")
        default: return .invalid
        }
    }
}
