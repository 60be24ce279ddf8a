import EngineCore
#if canImport(Glibc)
import Glibc
#endif

/// Progress on stderr: a live, rewritten line on a terminal (`auto`), a newline-terminated line every few
/// seconds (`always`), or nothing (`never`, or `auto` without a terminal).
final class ProgressReporter: @unchecked Sendable {
    let live: Bool
    let periodic: Bool
    let totalBytes: Int64?
    let stderr: @Sendable (String) -> Void
    let start = monotonicSeconds()
    var last = 0.0
    var printedLive = false

    init(mode: ProgressMode, totalBytes: Int64?, stderr: @escaping @Sendable (String) -> Void) {
        let tty = isatty(2) == 1
        live = mode == .auto && tty
        periodic = mode == .always
        self.totalBytes = totalBytes
        self.stderr = stderr
    }

    func tick(rows: Int64, bytes: Int64) {
        guard live || periodic else { return }
        let now = monotonicSeconds()
        guard now - last >= (live ? 0.25 : 5) else { return }
        last = now
        let line = render(rows: rows, bytes: bytes, now: now)
        if live { stderr("\r\u{1B}[K" + line); printedLive = true } else { stderr(line + "\n") }
    }

    func finish(rows: Int64, bytes: Int64) {
        if printedLive { stderr("\r\u{1B}[K") }
        if periodic { stderr(render(rows: rows, bytes: bytes, now: monotonicSeconds()) + " done\n") }
    }

    func render(rows: Int64, bytes: Int64, now: Double) -> String {
        let t = max(1e-9, now - start)
        var s = "rowflow: \(rows) rows, \(Int(Double(rows) / t)) rows/s, \(Self.fixed(Double(bytes) / t / 1e6, 1)) MB/s"
        if let total = totalBytes, total > 0 {
            let frac = min(1, Double(bytes) / Double(total))
            s += ", \(Self.fixed(frac * 100, 1))%"
            if frac > 0 { s += ", ETA \(Int((t / frac - t).rounded()))s" }
        }
        return s
    }

    static func fixed(_ v: Double, _ digits: Int) -> String {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let r = (v * p).rounded() / p
        let whole = Int64(r)
        var frac = String(Int64(((r - Double(whole)) * p).rounded()))
        while frac.count < digits { frac = "0" + frac }
        return digits > 0 ? "\(whole).\(frac)" : "\(whole)"
    }
}
