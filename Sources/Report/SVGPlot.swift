#if canImport(Glibc)
import Glibc
#endif

/// A small SVG plotting kernel for the report: line, step, scatter (optionally sized) and bar/histogram
/// series on linear or log axes, with "nice" ticks, axis labels, a legend and reference lines.
///
/// Output is a self-contained `<svg>` element (well-formed XML, no scripts, no external references). Axes,
/// ticks and text use `currentColor`, so the page's CSS decides light, dark and print colours; series use the
/// CSS variables `--c0` … `--c5` (the page defines them as the Okabe–Ito palette) and, so that greyscale
/// print still separates them, distinct markers and dash patterns.
/// Limits: at most a few thousand points per series is sensible (every point is an element); non-finite
/// values and, on a log axis, values ≤ 0 are dropped (the caller says so in the caption when it matters).
public struct Plot: Sendable {
    public enum Scale: Sendable { case linear, log }

    public struct Axis: Sendable {
        public var label: String
        public var scale: Scale
        /// Forced limits (otherwise from the data, widened to tick values).
        public var min: Double?
        public var max: Double?
        /// Ticks only at integers (counts, ranks).
        public var integer: Bool
        /// Category names at x = 1, 2, … (bar charts); replaces numeric tick labels.
        public var categories: [String]?
        public init(_ label: String, scale: Scale = .linear, min: Double? = nil, max: Double? = nil, integer: Bool = false,
                    categories: [String]? = nil) {
            self.label = label; self.scale = scale; self.min = min; self.max = max; self.integer = integer
            self.categories = categories
        }
    }

    public enum Marker: Sendable { case none, circle, square, triangle, diamond, cross }

    public struct Series: Sendable {
        public enum Kind: Sendable {
            case line, step, scatter
            /// Many small equal dots as one path (round caps on zero-length segments): ~15 bytes a point.
            case dots
            /// Bars from edges[i] to edges[i+1] with height ys[i] (histograms).
            case histogram(edges: [Double])
            /// Bars centred at xs[i], `width` wide (in x units).
            case bars(width: Double)
        }
        public var name: String
        public var kind: Kind
        public var xs: [Double]
        public var ys: [Double]
        /// Per-point marker areas relative to the median (scatter); nil = equal.
        public var sizes: [Double]?
        public var color: Int
        public var dashed: Bool
        public var marker: Marker
        public var opacity: Double
        public init(_ name: String, kind: Kind = .line, xs: [Double], ys: [Double], sizes: [Double]? = nil, color: Int,
                    dashed: Bool = false, marker: Marker = .none, opacity: Double = 1) {
            self.name = name; self.kind = kind; self.xs = xs; self.ys = ys; self.sizes = sizes; self.color = color
            self.dashed = dashed; self.marker = marker; self.opacity = opacity
        }
    }

    /// A horizontal reference line across the plot (a bound, a tolerance, a final value).
    public struct Reference: Sendable {
        public var y: Double
        public var name: String
        public var color: Int?   // nil: currentColor
        public init(y: Double, name: String, color: Int? = nil) { self.y = y; self.name = name; self.color = color }
    }

    public var title: String
    public var x: Axis
    public var y: Axis
    public var series: [Series] = []
    public var references: [Reference] = []
    public var width = 680.0
    public var height = 340.0

    public init(title: String, x: Axis, y: Axis) { self.title = title; self.x = x; self.y = y }

    // MARK: rendering

    /// The `<svg>` element; `id` must be unique in the page (it prefixes internal ids).
    public func svg(id: String) -> String {
        let legendItems = series.filter { !$0.name.isEmpty }.map { ($0.name, Optional($0)) }
            + references.filter { !$0.name.isEmpty }.map { ($0.name, Optional<Series>.none) }
        let legendRows = Plot.legendLayout(legendItems.map(\.0), width: width - 90).rows
        let top = 10.0 + Double(legendRows) * 18
        let left = 74.0, right = 18.0, bottom = 50.0
        let pw = width - left - right, ph = height - top - bottom

        let (xd, xt) = domainAndTicks(axis: x, values: allX(), headroom: false)
        let (yd, yt) = domainAndTicks(axis: y, values: allY(), headroom: true)
        func sx(_ v: Double) -> Double { left + pw * Plot.unit(v, xd, x.scale) }
        func sy(_ v: Double) -> Double { top + ph * (1 - Plot.unit(v, yd, y.scale)) }

        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" aria-labelledby=\"\(id)-t\" class=\"plot\" font-size=\"12\">"
        s += "<title id=\"\(id)-t\">\(escapeXML(title))</title>"
        s += "<defs><clipPath id=\"\(id)-clip\"><rect x=\"\(f(left - 7))\" y=\"\(f(top - 7))\" width=\"\(f(pw + 14))\" height=\"\(f(ph + 14))\"/></clipPath></defs>"
        // Grid and ticks.
        s += "<g class=\"grid\" stroke=\"currentColor\" stroke-opacity=\"0.14\" stroke-width=\"1\">"
        for t in yt.major { s += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(sy(t)))\" y2=\"\(f(sy(t)))\"/>" }
        if x.categories == nil { for t in xt.major { s += "<line y1=\"\(f(top))\" y2=\"\(f(top + ph))\" x1=\"\(f(sx(t)))\" x2=\"\(f(sx(t)))\"/>" } }
        s += "</g>"
        s += "<g class=\"axes\" stroke=\"currentColor\" fill=\"none\" stroke-width=\"1\">"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\"/>"
        for t in yt.major { s += "<line x1=\"\(f(left - 5))\" x2=\"\(f(left))\" y1=\"\(f(sy(t)))\" y2=\"\(f(sy(t)))\"/>" }
        for t in yt.minor { s += "<line x1=\"\(f(left - 3))\" x2=\"\(f(left))\" y1=\"\(f(sy(t)))\" y2=\"\(f(sy(t)))\"/>" }
        for t in xt.major { s += "<line y1=\"\(f(top + ph))\" y2=\"\(f(top + ph + 5))\" x1=\"\(f(sx(t)))\" x2=\"\(f(sx(t)))\"/>" }
        for t in xt.minor { s += "<line y1=\"\(f(top + ph))\" y2=\"\(f(top + ph + 3))\" x1=\"\(f(sx(t)))\" x2=\"\(f(sx(t)))\"/>" }
        s += "</g>"
        s += "<g class=\"ticklabels\" fill=\"currentColor\">"
        // Y labels: skip one that would touch the one below it (dense 1…9 multiples on a short log axis).
        var lastY = Double.infinity
        for (t, l) in zip(yt.major, yt.labels) {
            if lastY - sy(t) < 19 { continue }
            lastY = sy(t)
            s += "<text x=\"\(f(left - 8))\" y=\"\(f(sy(t) + 4))\" text-anchor=\"end\">\(escapeXML(Plot.minus(l)))</text>"
        }
        // X labels: drop any that would overlap its left neighbour (long category names, dense decades).
        var lastRight = -Double.infinity
        for (t, l) in zip(xt.major, xt.labels) {
            let w = Plot.textWidth(l), cx = sx(t)
            if cx - w / 2 < lastRight + 6 { continue }
            s += "<text x=\"\(f(cx))\" y=\"\(f(top + ph + 19))\" text-anchor=\"middle\">\(escapeXML(Plot.minus(l)))</text>"
            lastRight = cx + w / 2
        }
        s += "</g>"
        s += "<text class=\"axislabel\" fill=\"currentColor\" x=\"\(f(left + pw / 2))\" y=\"\(f(height - 8))\" text-anchor=\"middle\">\(escapeXML(x.label))</text>"
        s += "<text class=\"axislabel\" fill=\"currentColor\" transform=\"translate(16 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\">\(escapeXML(y.label))</text>"

        // Data.
        s += "<g clip-path=\"url(#\(id)-clip)\">"
        for se in series { s += render(se, sx: sx, sy: sy, baseline: sy(yd.lo)) }
        for r in references where r.y.isFinite && (y.scale == .linear || r.y > 0) {
            let col = r.color.map { "var(--c\($0 % 6))" } ?? "currentColor"
            s += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(sy(r.y)))\" y2=\"\(f(sy(r.y)))\" style=\"stroke:\(col)\" stroke-width=\"1.5\" stroke-dasharray=\"2 4\"/>"
        }
        s += "</g>"

        // Legend, above the plot area.
        let layout = Plot.legendLayout(legendItems.map(\.0), width: width - 90)
        s += "<g class=\"legend\" fill=\"currentColor\">"
        for (i, item) in legendItems.enumerated() {
            let (row, xoff) = layout.positions[i]
            let lx = left + xoff, ly = 12 + Double(row) * 18
            if let se = item.1 {
                s += legendSwatch(se, x: lx, y: ly)
            } else if let r = references.first(where: { $0.name == item.0 }) {
                let col = r.color.map { "var(--c\($0 % 6))" } ?? "currentColor"
                s += "<line x1=\"\(f(lx))\" x2=\"\(f(lx + 22))\" y1=\"\(f(ly))\" y2=\"\(f(ly))\" style=\"stroke:\(col)\" stroke-width=\"1.5\" stroke-dasharray=\"2 4\"/>"
            }
            s += "<text x=\"\(f(lx + 28))\" y=\"\(f(ly + 4))\">\(escapeXML(item.0))</text>"
        }
        s += "</g></svg>"
        return s
    }

    func allX() -> [Double] {
        var v: [Double] = []
        for se in series {
            switch se.kind {
            case let .histogram(edges): v += edges
            case let .bars(w): v += se.xs.map { $0 - w / 2 } + se.xs.map { $0 + w / 2 }
            default: v += se.xs
            }
        }
        return v
    }

    func allY() -> [Double] {
        var v: [Double] = []
        for se in series {
            v += se.ys
            switch se.kind {
            case .histogram, .bars: if y.scale == .linear { v.append(0) }
            default: break
            }
        }
        return v + references.map(\.y)
    }

    struct Ticks { var major: [Double]; var labels: [String]; var minor: [Double] }
    struct Domain { var lo: Double; var hi: Double }

    /// `headroom` (the vertical axis): a little room above the data, so a maximum on a tick is not drawn on
    /// the frame; the horizontal axis ends at the tick at or after the data.
    func domainAndTicks(axis: Axis, values: [Double], headroom: Bool = true) -> (Domain, Ticks) {
        let ok = values.filter { $0.isFinite && (axis.scale == .linear || $0 > 0) }
        var lo = axis.min ?? ok.min() ?? (axis.scale == .log ? 1 : 0)
        var hi = axis.max ?? ok.max() ?? (axis.scale == .log ? 10 : 1)
        if let c = axis.categories {
            let d = Domain(lo: axis.min ?? 0.4, hi: axis.max ?? Double(c.count) + 0.6)
            return (d, Ticks(major: (1...max(1, c.count)).map(Double.init), labels: c, minor: []))
        }
        switch axis.scale {
        case .linear:
            if hi <= lo { let p = Swift.max(1, abs(lo)) * 0.5; lo -= p; hi += p }
            var step = Plot.niceStep((hi - lo) / 5)
            if axis.integer { step = Swift.max(1, step.rounded()) }
            if axis.min == nil { lo = (lo / step).rounded(.down) * step }
            // 3 % headroom first, so a maximum that falls on a tick is not drawn on the frame.
            if axis.max == nil { hi = ((hi + (headroom ? 0.03 : 0) * (hi - lo)) / step).rounded(.up) * step }
            var major: [Double] = []
            var t = (lo / step).rounded(.up) * step
            while t <= hi + step * 1e-9 { major.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
            return (Domain(lo: lo, hi: hi), Ticks(major: major, labels: major.map { Plot.linearLabel($0, step: step) }, minor: []))
        case .log:
            var a = log10(lo), b = log10(hi)
            if b - a < 1e-9 { a -= 0.5; b += 0.5 }
            // The data's range plus 4 % on each side (not whole decades: a 385 maximum would waste 0.4 of one).
            let pad = Swift.max(0.04 * (b - a), 0.04)
            if axis.min == nil { a -= pad; lo = pow(10, a) }
            if axis.max == nil { b += pad; hi = pow(10, b) }
            let ea = Int(a.rounded(.down)), eb = Int(b.rounded(.up))
            let decades = Swift.max(1, eb - ea)
            var major: [Double] = [], minor: [Double] = []
            let every = (decades + 6) / 7
            for e in ea...eb {
                let base = pow(10, Double(e))
                if e % every == 0, base >= lo * (1 - 1e-12), base <= hi * (1 + 1e-12) { major.append(base) }
                if decades <= 8 {
                    let span = log10(hi) - log10(lo)
                    for m in 2...9 {
                        let v = Double(m) * base
                        guard v >= lo, v <= hi else { continue }
                        // Few decades shown: label 2 and 5 too (under 1.2 decades every multiple), or there
                        // would be one or two labels at most.
                        if span < 1.2 || (decades <= 2 && (m == 2 || m == 5)) { major.append(v) } else { minor.append(v) }
                    }
                }
            }
            major.sort()
            // Plain numbers only when every label is short in plain form; otherwise 10ⁿ throughout, never mixed.
            let plain = major.allSatisfy { $0 >= 0.01 * (1 - 1e-9) && $0 <= 1000 * (1 + 1e-9) }
            return (Domain(lo: lo, hi: hi), Ticks(major: major, labels: major.map { Plot.logLabel($0, plain: plain) }, minor: minor))
        }
    }

    static func unit(_ v: Double, _ d: Domain, _ s: Scale) -> Double {
        switch s {
        case .linear: return d.hi > d.lo ? (v - d.lo) / (d.hi - d.lo) : 0.5
        case .log: return (log10(v) - log10(d.lo)) / (log10(d.hi) - log10(d.lo))
        }
    }

    /// 1, 2 or 5 × 10ᵏ at or above `raw`.
    static func niceStep(_ raw: Double) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let e = pow(10, (log10(raw)).rounded(.down))
        let m = raw / e
        return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * e
    }

    static func linearLabel(_ v: Double, step: Double) -> String {
        if v == 0 { return "0" }
        let mag = Swift.max(abs(v), step)
        if mag >= 1e5 || mag < 1e-3 {
            // Mantissa × 10ⁿ with as many digits as the step needs.
            let e = Int(log10(abs(v)).rounded(.down))
            let m = v / pow(10, Double(e))
            let digits = Swift.max(0, Swift.min(4, e - Int(log10(step).rounded(.down))))
            return trimZeros(fixed(m, digits)) + "×10" + superscript(e)
        }
        let decimals = Swift.max(0, -Int(log10(step).rounded(.down)))
        return fixed(v, decimals)
    }

    static func logLabel(_ v: Double, plain: Bool) -> String {
        let e = log10(v)
        let ei = Int(e.rounded())
        if abs(e - Double(ei)) < 1e-9 {
            if plain { return ei < 0 ? fixed(v, -ei) : String(Int(v.rounded())) }
            return "10" + superscript(ei)
        }
        // 2·10ᵏ, 5·10ᵏ
        let k = Int(e.rounded(.down))
        let m = Int((v / pow(10, Double(k))).rounded())
        if plain { return k < 0 ? fixed(v, -k) : String(Int(v.rounded())) }
        return "\(m)×10" + superscript(k)
    }

    /// A leading hyphen-minus as the typographic minus sign (tick labels only; captions stay machine-readable).
    static func minus(_ s: String) -> String { s.hasPrefix("-") ? "−" + s.dropFirst() : s }

    static func superscript(_ n: Int) -> String {
        let map: [Character: String] = ["0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶", "7": "⁷",
                                        "8": "⁸", "9": "⁹", "-": "⁻"]
        return String(n).map { map[$0] ?? String($0) }.joined()
    }

    /// Estimated width of a label at 12 px (the SVG has no text metrics; ~0.6 em per glyph is generous).
    static func textWidth(_ s: String) -> Double { Double(s.count) * 7 }

    /// Legend entries left to right, wrapping at `width`: (row, x offset) per entry and the row count.
    static func legendLayout(_ names: [String], width: Double) -> (positions: [(Int, Double)], rows: Int) {
        var pos: [(Int, Double)] = []
        var row = 0, x = 0.0
        for n in names {
            let w = 28 + textWidth(n) + 18
            if x > 0 && x + w > width { row += 1; x = 0 }
            pos.append((row, x))
            x += w
        }
        return (pos, names.isEmpty ? 0 : row + 1)
    }

    func style(_ se: Series) -> String { "var(--c\(se.color % 6))" }

    func render(_ se: Series, sx: (Double) -> Double, sy: (Double) -> Double, baseline: Double) -> String {
        let col = style(se)
        let logX = x.scale == .log, logY = y.scale == .log
        func okX(_ v: Double) -> Bool { v.isFinite && (!logX || v > 0) }
        func okY(_ v: Double) -> Bool { v.isFinite && (!logY || v > 0) }
        var s = "<g class=\"series\" opacity=\"\(f(se.opacity))\">"
        switch se.kind {
        case .line, .step:
            var d = ""
            var prev: (Double, Double)?
            for (xv, yv) in zip(se.xs, se.ys) {
                guard okX(xv), okY(yv) else { prev = nil; continue }
                let px = sx(xv), py = sy(yv)
                if let p = prev {
                    if case .step = se.kind { d += "L\(f(px)) \(f(p.1))" }
                    d += "L\(f(px)) \(f(py))"
                } else {
                    d += "M\(f(px)) \(f(py))"
                }
                prev = (px, py)
            }
            if !d.isEmpty {
                s += "<path d=\"\(d)\" fill=\"none\" style=\"stroke:\(col)\" stroke-width=\"2\" stroke-linejoin=\"round\"\(se.dashed ? " stroke-dasharray=\"7 4\"" : "")/>"
            }
            if se.marker != .none {
                for (xv, yv) in zip(se.xs, se.ys) where okX(xv) && okY(yv) { s += markerPath(se.marker, sx(xv), sy(yv), 3.5, col) }
            }
        case .scatter:
            let sizes = se.sizes
            var median = 1.0
            if let z = sizes?.filter({ $0 > 0 && $0.isFinite }).sorted(), !z.isEmpty { median = z[z.count / 2] }
            for (i, (xv, yv)) in zip(se.xs, se.ys).enumerated() where okX(xv) && okY(yv) {
                var r = 3.5
                // Marker area ∝ size: radius ∝ √(size/median), clamped to stay readable.
                if let z = sizes, i < z.count, z[i] > 0, z[i].isFinite { r = Swift.min(14, Swift.max(2, 3.5 * (z[i] / median).squareRoot())) }
                s += markerPath(se.marker == .none ? .circle : se.marker, sx(xv), sy(yv), r, col)
            }
        case .dots:
            var d = ""
            for (xv, yv) in zip(se.xs, se.ys) where okX(xv) && okY(yv) { d += "M\(f(sx(xv))) \(f(sy(yv)))h0" }
            if !d.isEmpty { s += "<path d=\"\(d)\" fill=\"none\" style=\"stroke:\(col)\" stroke-width=\"4\" stroke-linecap=\"round\"/>" }
        case let .histogram(edges):
            for i in 0..<Swift.min(se.ys.count, edges.count - 1) where okX(edges[i]) && okX(edges[i + 1]) && okY(se.ys[i]) {
                let x0 = sx(edges[i]), x1 = sx(edges[i + 1]), top = sy(se.ys[i])
                s += "<rect x=\"\(f(x0 + 0.5))\" y=\"\(f(top))\" width=\"\(f(Swift.max(0.5, x1 - x0 - 1)))\" height=\"\(f(Swift.max(0, baseline - top)))\" style=\"fill:\(col)\" fill-opacity=\"0.8\"/>"
            }
        case let .bars(w):
            for (xv, yv) in zip(se.xs, se.ys) where okY(yv) {
                let x0 = sx(xv - w / 2), x1 = sx(xv + w / 2), top = sy(yv)
                s += "<rect x=\"\(f(x0))\" y=\"\(f(top))\" width=\"\(f(x1 - x0))\" height=\"\(f(Swift.max(0, baseline - top)))\" style=\"fill:\(col)\" fill-opacity=\"0.8\"/>"
            }
        }
        return s + "</g>"
    }

    func legendSwatch(_ se: Series, x lx: Double, y ly: Double) -> String {
        let col = style(se)
        switch se.kind {
        case .line, .step:
            var s = "<line x1=\"\(f(lx))\" x2=\"\(f(lx + 22))\" y1=\"\(f(ly))\" y2=\"\(f(ly))\" style=\"stroke:\(col)\" stroke-width=\"2\"\(se.dashed ? " stroke-dasharray=\"7 4\"" : "")/>"
            if se.marker != .none { s += markerPath(se.marker, lx + 11, ly, 3.5, col) }
            return s
        case .scatter:
            return markerPath(se.marker == .none ? .circle : se.marker, lx + 11, ly, 4, col)
        case .dots:
            return "<path d=\"M\(f(lx + 11)) \(f(ly))h0\" style=\"stroke:\(col)\" stroke-width=\"4\" stroke-linecap=\"round\"/>"
        case .histogram, .bars:
            return "<rect x=\"\(f(lx + 4))\" y=\"\(f(ly - 6))\" width=\"14\" height=\"12\" style=\"fill:\(col)\" fill-opacity=\"0.8\"/>"
        }
    }

    func markerPath(_ m: Marker, _ cx: Double, _ cy: Double, _ r: Double, _ col: String) -> String {
        let paint = "style=\"fill:\(col);stroke:\(col)\" fill-opacity=\"0.55\" stroke-width=\"1.2\""
        switch m {
        case .none: return ""
        case .circle: return "<circle cx=\"\(f(cx))\" cy=\"\(f(cy))\" r=\"\(f(r))\" \(paint)/>"
        case .square: return "<rect x=\"\(f(cx - r))\" y=\"\(f(cy - r))\" width=\"\(f(2 * r))\" height=\"\(f(2 * r))\" \(paint)/>"
        case .triangle:
            return "<path d=\"M\(f(cx)) \(f(cy - r * 1.2))L\(f(cx + r * 1.1)) \(f(cy + r * 0.8))L\(f(cx - r * 1.1)) \(f(cy + r * 0.8))Z\" \(paint)/>"
        case .diamond:
            return "<path d=\"M\(f(cx)) \(f(cy - r * 1.3))L\(f(cx + r)) \(f(cy))L\(f(cx)) \(f(cy + r * 1.3))L\(f(cx - r)) \(f(cy))Z\" \(paint)/>"
        case .cross:
            return "<path d=\"M\(f(cx - r)) \(f(cy - r))L\(f(cx + r)) \(f(cy + r))M\(f(cx - r)) \(f(cy + r))L\(f(cx + r)) \(f(cy - r))\" style=\"stroke:\(col)\" stroke-width=\"2\" fill=\"none\"/>"
        }
    }
}

/// Coordinates with two decimals: enough for a 680-unit viewBox, and short.
func f(_ v: Double) -> String {
    guard v.isFinite else { return "0" }
    let r = (v * 100).rounded() / 100
    if r == r.rounded() { return String(Int(r)) }
    return trimZeros(fixed(r, 2))
}

func fixed(_ v: Double, _ decimals: Int) -> String {
    let p = pow(10, Double(decimals))
    let r = (abs(v) * p).rounded()
    let neg = v < 0 && r != 0
    var ip = (r / p).rounded(.down)
    var frac = Int((r - ip * p).rounded())
    if frac >= Int(p) { ip += 1; frac -= Int(p) }
    var s = (neg ? "-" : "") + String(format0(ip))
    if decimals > 0 {
        let fs = String(frac)
        s += "." + String(repeating: "0", count: Swift.max(0, decimals - fs.count)) + fs
    }
    return s
}

private func format0(_ v: Double) -> String {
    if v < 9e15 { return String(Int64(v)) }
    return "\(v)"
}

func trimZeros(_ s: String) -> String {
    guard s.contains(".") else { return s }
    var t = s
    while t.hasSuffix("0") { t.removeLast() }
    if t.hasSuffix(".") { t.removeLast() }
    return t
}

/// Text for XML/HTML content and attribute values.
public func escapeXML(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.count)
    for c in s.unicodeScalars {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}
