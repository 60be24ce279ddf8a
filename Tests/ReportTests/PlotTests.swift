import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import Report

/// The plotting kernel and the number formatting on their own; the page is tested end to end in
/// ReportPageTests.
@Suite struct PlotTests {
    @Test func numbersShowFourSignificantDigits() {
        #expect(Num.show(0.20093912198132208) == "0.2009")
        #expect(Num.show(3000) == "3000")
        #expect(Num.show(1759980) == "1759980")
        #expect(Num.show(54108.618655204475) == "54109")
        #expect(Num.show(8.693194871947711e-07) == "8.693×10⁻⁷")
        #expect(Num.show(9.99996e-5) == "1×10⁻⁴")      // the mantissa's rounding carries into the exponent
        #expect(Num.show(-2.5) == "-2.5")
        #expect(Num.show(0) == "0")
        #expect(Num.show(.nan) == "NaN")
        #expect(Num.bytes(267_468) == "261.2 KiB")
    }

    @Test func niceStepsAreOneTwoFive() {
        for (raw, want) in [(0.13, 0.2), (0.7, 1.0), (3.0, 5.0), (1.0, 1.0), (1234.0, 2000.0), (4.5e-7, 5e-7)] {
            #expect(abs(Plot.niceStep(raw) - want) <= 1e-12 * want, "\(raw)")
        }
    }

    @Test func linearTicksCoverTheDataWithRoundLabels() {
        let p = Plot(title: "t", x: Plot.Axis("x"), y: Plot.Axis("y"))
        let (d, t) = p.domainAndTicks(axis: p.x, values: [0.3, 9.1])
        #expect(d.lo <= 0.3 && d.hi >= 9.1)
        #expect(t.labels == ["0", "2", "4", "6", "8", "10"])
        // Large values go to mantissa × 10ⁿ instead of six-digit labels.
        let (_, big) = p.domainAndTicks(axis: p.x, values: [0, 1.7e6])
        #expect(big.labels.contains("1×10⁶"))
    }

    @Test func logTicksAreDecadesNeverMixedForms() {
        let p = Plot(title: "t", x: Plot.Axis("x", scale: .log), y: Plot.Axis("y", scale: .log))
        let (d, t) = p.domainAndTicks(axis: p.y, values: [8.7e-7, 8768])
        #expect(d.lo <= 8.7e-7 && d.hi >= 8768)
        #expect(!t.labels.isEmpty && t.labels.allSatisfy { $0.hasPrefix("10") || $0.contains("×10") }, "\(t.labels)")
        #expect(t.major.count <= 8)
        let (_, small) = p.domainAndTicks(axis: p.y, values: [0.05, 40])
        #expect(small.labels.contains("0.1") && small.labels.contains("1") && small.labels.contains("10"), "\(small.labels)")
    }

    /// Every series kind renders to well-formed XML with no script and no external reference, and drops
    /// values a log axis cannot show instead of drawing them at −∞.
    @Test func svgIsWellFormedAndSelfContained() throws {
        var p = Plot(title: "a <title> & more", x: Plot.Axis("x [units]", scale: .log), y: Plot.Axis("y", scale: .log))
        p.series.append(.init("line", kind: .line, xs: [1, 10, 100], ys: [1, 0, 0.01], color: 0, marker: .circle))
        p.series.append(.init("step", kind: .step, xs: [1, 10, 100], ys: [3, 2, 1], color: 1, dashed: true))
        p.series.append(.init("pts", kind: .scatter, xs: [2, 3], ys: [2, 3], sizes: [1, 4], color: 2, marker: .diamond))
        p.series.append(.init("dots", kind: .dots, xs: [2, 3], ys: [.nan, 3], color: 3))
        p.series.append(.init("hist", kind: .histogram(edges: [1, 2, 4]), xs: [], ys: [5, 6], color: 4))
        p.references.append(.init(y: 0.5, name: "ref"))
        let svg = p.svg(id: "t1")
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        #expect(!svg.contains("<script") && !svg.contains("href") && !svg.contains("NaN") && !svg.contains("inf"))
        #expect(svg.contains("a &lt;title&gt; &amp; more"))
        // The zero on the log axis split the line: one path from 1 to… nothing, so no segment through y = 0.
        #expect(svg.components(separatedBy: "<path d=\"M").count >= 2)
    }
}
