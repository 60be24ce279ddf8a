#if canImport(Glibc)
import Glibc
#endif

/// How the report spells numbers: four significant digits (integers in full up to 10⁹), ×10ⁿ outside
/// [10⁻³, 10⁹). A caption's number is wrapped in `<data value="…">` holding the exact text of the JSON file it
/// came from, so a reader (or a test) can check the rounded form against the source.
public enum Num {
    public static func show(_ v: Double) -> String {
        guard v.isFinite else { return v.isNaN ? "NaN" : (v > 0 ? "∞" : "−∞") }
        if v == 0 { return "0" }
        let a = abs(v)
        if v == v.rounded(), a < 1e9 { return String(Int64(v)) }
        if a >= 1e3 && a < 1e9 { return String(Int64(v.rounded())) }
        if a >= 1e-3 && a < 1e3 {
            let e = Int(log10(a).rounded(.down))
            return trimZeros(fixed(v, Swift.max(0, 3 - e)))
        }
        var e = Int(log10(a).rounded(.down))
        var m = v / pow(10, Double(e))
        // Rounding can carry the mantissa to 10.000.
        if abs((m * 1000).rounded() / 1000) >= 10 { e += 1; m /= 10 }
        return trimZeros(fixed(m, 3)) + "×10" + Plot.superscript(e)
    }

    /// Bytes as B, KiB, MiB, GiB.
    public static func bytes(_ v: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var x = v, u = 0
        while x >= 1024 && u < units.count - 1 { x /= 1024; u += 1 }
        return (u == 0 ? String(Int64(x)) : trimZeros(fixed(x, x < 10 ? 2 : 1))) + " " + units[u]
    }
}
