import Testing
@testable import Report

/// The plotting kernel and number formatting on their own (the page is tested end to end in ReportPageTests).
@Suite struct PlotTests {
    @Test func placeholder() { #expect(Num.show(0.20093912198132208) == "0.2009") }
}
