import EngineCore
import Manifest
import RowIO
#if canImport(Glibc)
import Glibc
#endif

/// `rowflow report`: one self-contained HTML page (inline SVG and CSS; no scripts, no fonts, no network — a
/// Content-Security-Policy forbids every fetch) drawn from a run directory's run.json, summary.json files and
/// arrays.
///
/// What it shows: the run's status first (a failed, interrupted or unfinished run says so above everything
/// else), its counts and the manifest as a graph; then per operator the plots of its kind, each a `<figure>`
/// with one `<svg>` and a one-line caption saying what good looks like, whose numbers are `<data>` elements
/// carrying the exact JSON text they were rounded from (`data-key` = "<operator id>.<field>" or "run.<field>").
/// Cost: reads the run's small arrays (histories are ≤ 1025 rows; samples as large as the sample) and, for
/// dpp-sample on an .npy input that is still reachable, up to `candidateLimit` candidate rows. Never fails on
/// a missing or unreadable array: that plot is replaced by a sentence saying what is missing.
public struct ReportBuilder {
    public let run: RunDirectory
    /// Says which plot shows each operator kind's outputs (`OperatorInfo.report`).
    public let registry: OperatorRegistry
    /// dpp-sample candidates are read from an .npy input of at most this many rows (and drawn thinned).
    public static let candidateLimit: Int64 = 200_000   // and at most 64 MiB of file
    var figureCount = 0

    public init(runDirectory: String, registry: OperatorRegistry) throws(EngineError) {
        run = try RunDirectory(runDirectory, registry: registry)
        self.registry = registry
    }

    /// The plot an operator's kind asks for (nil: its summary table only).
    func plot(_ op: OperatorRun) -> ReportPlot? { op.kind.flatMap { registry[$0]?.info.report } }

    /// Builds the page and writes it atomically to `out`.
    public static func write(runDirectory: String, out: String, registry: OperatorRegistry) throws(EngineError) {
        var b = try ReportBuilder(runDirectory: runDirectory, registry: registry)
        let html = b.html()
        try FileBytes.writeAtomically(Array(html.utf8), to: out)
    }

    // MARK: page

    public mutating func html() -> String {
        var body = banner() + warningsBlock()
        body += "<h1>rowflow run <code>\(escapeXML(run.path))</code></h1>\n"
        body += overview()
        var halpernDone = false
        for op in run.operators {
            body += "<section id=\"op-\(escapeXML(op.id))\">\n"
            body += "<h2>\(escapeXML(op.id)) <span class=\"kind\">\(escapeXML(op.kind ?? "no output"))</span></h2>\n"
            guard let s = op.summary else {
                body += "<p class=\"missing\">No summary.json: this operator did not finish (the run ended before its outputs were written).</p>\n</section>\n"
                continue
            }
            switch plot(op) {
            case .spectrum: body += svdSection(op, s)
            case .eigenvalueTrace: body += topSection(op, s)
            case .coreset: body += sensitivitySection(op, s)
            case .dppSample: body += dppSection(op, s)
            case .solverResidual:
                if !halpernDone { body += halpernSection(); halpernDone = true } else {
                    body += "<p>Plotted with the other solvers above.</p>\n"
                }
            case nil: break
            }
            body += summaryTable(op, s)
            body += "</section>\n"
        }
        body += dppComparison()
        return ReportBuilder.page(title: "rowflow report: \(run.path)", body: body)
    }

    static let css = """
    :root{color-scheme:light dark;--bg:#ffffff;--fg:#1b1b1b;--muted:#4d4d4d;--rule:#c8c8c8;--panel:#f3f3f3;\
    --c0:#0072B2;--c1:#D55E00;--c2:#009E73;--c3:#CC79A7;--c4:#E69F00;--c5:#56B4E9;--bad:#a4001d;--badbg:#fde8eb;--warnbg:#fff4d6;--warn:#6b4a00}
    @media (prefers-color-scheme:dark){:root{--bg:#141414;--fg:#e6e6e6;--muted:#b4b4b4;--rule:#4a4a4a;--panel:#222;\
    --c0:#56B4E9;--c5:#F0E442;--bad:#ff9aa8;--badbg:#3b1219;--warnbg:#3a2e0c;--warn:#ffd66b}}
    @media print{:root{--bg:#fff;--fg:#000;--muted:#333;--rule:#999;--panel:#fff;--c0:#0072B2;--c5:#56B4E9;--bad:#a4001d;--badbg:#fff;--warnbg:#fff;--warn:#000}\
    figure,table,.banner{break-inside:avoid}body{max-width:none}}
    body{background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-width:62rem;margin:0 auto;padding:1rem 1.5rem 3rem}
    h1{font-size:1.35rem;margin:.6rem 0 1rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid var(--rule);padding-bottom:.2rem}
    h2 .kind{font-weight:normal;color:var(--muted);font-size:.95rem;margin-left:.4rem}
    code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.9em}
    figure{margin:1rem 0 1.6rem}svg.plot{display:block;width:100%;max-width:680px;height:auto}
    figcaption{max-width:680px;font-size:.92rem;color:var(--muted);margin-top:.3rem}
    figcaption b{color:var(--fg);font-weight:600}
    table{border-collapse:collapse;margin:.4rem 0 1rem;font-size:.92rem;max-width:680px}
    th{white-space:nowrap}th,td{padding:.15rem .7rem .15rem 0;border-bottom:1px solid var(--rule);text-align:left;vertical-align:top}
    td.n{text-align:right;font-variant-numeric:tabular-nums}
    .banner{border:2px solid var(--bad);background:var(--badbg);color:var(--bad);padding:.6rem .9rem;margin:.5rem 0 1rem;border-radius:4px}
    .banner.warn{border-color:var(--warn);background:var(--warnbg);color:var(--warn)}
    .banner.ok{border-color:var(--rule);background:var(--panel);color:var(--fg)}
    .missing,.note{color:var(--muted);font-style:italic}
    details{margin:.2rem 0 1rem;font-size:.9rem;color:var(--muted)}
    """

    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="color-scheme" content="light dark">
        <meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
        <title>\(escapeXML(title))</title>
        <style>
        \(css)
        </style>
        </head>
        <body>
        \(body)
        </body>
        </html>

        """
    }

    // MARK: pieces

    /// `<data>` for a summary field: the file's exact number text as the value, the rounded form as text.
    func datum(_ op: OperatorRun, _ key: String) -> String {
        guard let s = op.summary, let t = s.numberText(key), let v = s.number(key) else { return "?" }
        return "<data value=\"\(escapeXML(t))\" data-key=\"\(escapeXML(op.id)).\(key)\">\(Num.show(v))</data>"
    }

    func runDatum(_ key: String, show: ((Double) -> String)? = nil) -> String {
        guard let t = run.run.numberText(key), let v = run.run.number(key) else { return "?" }
        return "<data value=\"\(escapeXML(t))\" data-key=\"run.\(key)\">\((show ?? Num.show)(v))</data>"
    }

    mutating func figure(_ name: String, _ plot: Plot, caption: String) -> String {
        figureCount += 1
        let id = "f\(figureCount)"
        return "<figure id=\"\(id)\" data-plot=\"\(escapeXML(name))\">\n\(plot.svg(id: id))\n<figcaption>\(caption)</figcaption>\n</figure>\n"
    }

    /// run.json's warnings (and failed operators), right under the banner: what the terminal said once.
    func warningsBlock() -> String {
        var items: [String] = []
        for (id, msg) in run.run.value["failed_operators"]?.pairs ?? [] {
            items.append("<li data-failed=\"\(escapeXML(id))\"><b>\(escapeXML(id)) failed</b>: <code>\(escapeXML(msg.string ?? ""))</code></li>")
        }
        for w in run.run.value["warnings"]?.array ?? [] {
            let id = w["id"]?.string ?? "?", what = w["what"]?.string ?? ""
            let hint = w["hint"]?.string.map { " <i>(hint: \(escapeXML($0)))</i>" } ?? ""
            items.append("<li data-warning=\"\(escapeXML(id))\"><b>\(escapeXML(id))</b>: \(escapeXML(what))\(hint)</li>")
        }
        guard !items.isEmpty else { return "" }
        return "<div class=\"banner warn\" role=\"alert\" data-warnings=\"\(items.count)\"><b>Warnings</b><ul>\n" + items.joined(separator: "\n") + "\n</ul></div>\n"
    }

    func banner() -> String {
        let st = run.status
        let err = run.run.string("error")
        switch st {
        case "complete":
            return "<div class=\"banner ok\" role=\"status\" data-status=\"complete\">Run <b>complete</b>.</div>\n"
        case "failed":
            return "<div class=\"banner\" role=\"alert\" data-status=\"failed\"><b>This run FAILED</b>"
                + (err.map { ": <code>\(escapeXML($0))</code>" } ?? "")
                + ". The plots below show only what was written before it stopped; operators without output did not finish.</div>\n"
        case "interrupted":
            return "<div class=\"banner warn\" role=\"alert\" data-status=\"interrupted\"><b>This run was INTERRUPTED</b>"
                + (err.map { ": <code>\(escapeXML($0))</code>" } ?? "")
                + ". A checkpoint was written: resume it with <code>rowflow run … --resume</code>. Outputs below may be from an earlier run or missing.</div>\n"
        default:
            return "<div class=\"banner warn\" role=\"alert\" data-status=\"\(escapeXML(st))\"><b>This run has not finished</b> (run.json says <code>\(escapeXML(st))</code>): it is still going, or it was killed before it could say so. Outputs below may be stale or missing.</div>\n"
        }
    }

    mutating func overview() -> String {
        var s = "<section id=\"overview\">\n<h2>Run</h2>\n<table class=\"overview\">\n"
        func row(_ k: String, _ v: String) { s += "<tr><th>\(k)</th><td>\(v)</td></tr>\n" }
        row("status", "<b>\(escapeXML(run.status))</b>" + ((run.run.number("exit_code")).map { " (exit \(Int($0)))" } ?? ""))
        row("rows read", runDatum("rows_read") + ((run.run.number("resumed_from_row") ?? 0) > 0 ? " (resumed from row \(runDatum("resumed_from_row")))" : ""))
        row("bad rows", "\(runDatum("rows_skipped")) skipped, \(runDatum("rows_quarantined")) quarantined")
        let bytes = run.run.number("bytes_in") ?? 0, secs = run.run.number("seconds") ?? 0
        row("input", "\(runDatum("bytes_in", show: Num.bytes))" + (run.run.string("input").map { " from <code>\(escapeXML($0))</code>" } ?? "")
            + (run.run.string("format").map { ", \(escapeXML($0))" } ?? "")
            + (run.run.number("columns").map { ", \(Int($0)) feature columns" } ?? ""))
        row("time", "\(runDatum("seconds")) s")
        row("throughput", "\(runDatum("rows_per_s")) rows/s" + (secs > 0 ? ", \(Num.show((bytes / secs / 1e6 * 1000).rounded() / 1000)) MB/s" : ""))
        row("seed, shard", "\(runDatum("seed")), \(runDatum("shard"))")
        if let from = run.run.value["merged_from"]?.array?.compactMap(\.string), !from.isEmpty {
            row("merged from", from.map { "<code>\(escapeXML($0))</code>" }.joined(separator: ", "))
        }
        row("manifest", (run.run.string("manifest").map { "<code>\(escapeXML($0))</code>" } ?? "?")
            + " (sha256 <code>\(escapeXML(String((run.run.string("manifest_sha256") ?? "").prefix(16))))…</code>)")
        row("rowflow", escapeXML(run.run.string("version") ?? "?"))
        s += "</table>\n"
        s += graphFigure()
        s += "</section>\n"
        return s
    }

    /// The manifest as a layered graph: source on the left, each operator one column right of its input.
    mutating func graphFigure() -> String {
        struct Node { var id: String; var label: String; var sub: String; var depth: Int; var row: Int; var missing: Bool }
        var nodes: [Node] = []
        let fmt = run.run.string("format") ?? run.manifest?.source.format.rawValue ?? "?"
        let cols = run.run.number("columns").map { ", \(Int($0)) cols" } ?? ""
        nodes.append(Node(id: "source", label: "source", sub: fmt + cols, depth: 0, row: 0, missing: false))
        var depth: [String: Int] = ["source": 0]
        var edges: [(String, String, Bool)] = []   // (from, to, from a sampler)
        for op in run.operators {
            let input = run.input(of: op.id) ?? "source"
            let d = (depth[input] ?? 0) + 1
            depth[op.id] = d
            edges.append((input, op.id, input != "source"))
            let kind = op.kind ?? run.manifest?.op(op.id)?.kind ?? "?"
            nodes.append(Node(id: op.id, label: op.id, sub: kind, depth: d, row: 0, missing: op.summary == nil))
        }
        let maxDepth = nodes.map(\.depth).max() ?? 0
        var perDepth = [Int](repeating: 0, count: maxDepth + 1)
        for i in nodes.indices { nodes[i].row = perDepth[nodes[i].depth]; perDepth[nodes[i].depth] += 1 }
        let boxW = 150.0, boxH = 40.0, gapX = 110.0, gapY = 16.0
        let rows = perDepth.max() ?? 1
        let width = max(680, 20 + Double(maxDepth + 1) * (boxW + gapX))
        let height = 24 + Double(rows) * (boxH + gapY)
        func pos(_ n: Node) -> (Double, Double) {
            let colRows = Double(perDepth[n.depth])
            let yOff = (Double(rows) - colRows) * (boxH + gapY) / 2
            return (10 + Double(n.depth) * (boxW + gapX), 12 + yOff + Double(n.row) * (boxH + gapY))
        }
        figureCount += 1
        let id = "f\(figureCount)"
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" aria-labelledby=\"\(id)-t\" class=\"plot graph\" font-size=\"12\">"
        s += "<title id=\"\(id)-t\">Pipeline graph</title>"
        s += "<defs><marker id=\"\(id)-arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10Z\" fill=\"currentColor\"/></marker></defs>"
        for (from, to, sampled) in edges {
            guard let a = nodes.first(where: { $0.id == from }), let b = nodes.first(where: { $0.id == to }) else { continue }
            let (ax, ay) = pos(a), (bx, by) = pos(b)
            let x1 = ax + boxW, y1 = ay + boxH / 2, x2 = bx - 2, y2 = by + boxH / 2
            let mx = (x1 + x2) / 2
            s += "<path d=\"M\(f(x1)) \(f(y1))C\(f(mx)) \(f(y1)) \(f(mx)) \(f(y2)) \(f(x2)) \(f(y2))\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.3\"\(sampled ? " stroke-dasharray=\"5 3\"" : "") marker-end=\"url(#\(id)-arrow)\"/>"
            if sampled {
                s += "<text x=\"\(f(mx))\" y=\"\(f(min(y1, y2) - 6))\" text-anchor=\"middle\" fill=\"currentColor\" font-size=\"10\">weighted rows</text>"
            }
        }
        for n in nodes {
            let (x, y) = pos(n)
            let col = n.id == "source" ? "var(--c2)" : "var(--c0)"
            s += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(boxW))\" height=\"\(f(boxH))\" rx=\"5\" style=\"fill:\(col);stroke:\(col)\" fill-opacity=\"0.12\" stroke-width=\"1.5\"\(n.missing ? " stroke-dasharray=\"4 3\"" : "")/>"
            s += "<text x=\"\(f(x + boxW / 2))\" y=\"\(f(y + 16))\" text-anchor=\"middle\" fill=\"currentColor\" font-weight=\"bold\">\(escapeXML(Self.clip(n.label, 20)))</text>"
            s += "<text x=\"\(f(x + boxW / 2))\" y=\"\(f(y + 31))\" text-anchor=\"middle\" fill=\"currentColor\" font-size=\"11\">\(escapeXML(Self.clip(n.sub + (n.missing ? " (no output)" : ""), 24)))</text>"
        }
        s += "</svg>"
        var cap = "The pipeline: the source feeds each operator; dashed arrows carry a sampler's weighted rows downstream."
        if let note = run.manifestNote {
            cap += " <span class=\"note\">Edges from the source assumed: \(escapeXML(note)).</span>"
        }
        return "<figure id=\"\(id)\" data-plot=\"graph\">\n\(s)\n<figcaption>\(cap)</figcaption>\n</figure>\n"
    }

    static func clip(_ s: String, _ n: Int) -> String { s.count <= n ? s : String(s.prefix(n - 1)) + "…" }

    /// The operator's scalars (numbers, booleans, short strings) and, folded, its long notes and params.
    func summaryTable(_ op: OperatorRun, _ s: JSONObject) -> String {
        var rows = "", notes = ""
        for (k, v) in s.pairs where k != "id" && k != "op" && k != "params" {
            switch v {
            case let .number(d, t): rows += "<tr><th>\(escapeXML(k))</th><td class=\"n\" title=\"\(escapeXML(t))\">\(Num.show(d))</td></tr>"
            case let .bool(b): rows += "<tr><th>\(escapeXML(k))</th><td>\(b)</td></tr>"
            case .null: rows += "<tr><th>\(escapeXML(k))</th><td>—</td></tr>"
            case let .string(t) where t.count <= 48: rows += "<tr><th>\(escapeXML(k))</th><td>\(escapeXML(t))</td></tr>"
            case let .string(t): notes += "<p><b>\(escapeXML(k))</b>: \(escapeXML(t))</p>"
            case let .array(a) where a.count <= 12:
                rows += "<tr><th>\(escapeXML(k))</th><td>[" + a.map { $0.double.map(Num.show) ?? "?" }.joined(separator: ", ") + "]</td></tr>"
            default: break
            }
        }
        var out = "<table class=\"summary\">\(rows)</table>\n"
        let params = (s.value["params"]?.pairs ?? []).map { k, v -> String in
            let t: String
            switch v {
            case .null: t = "default"
            case let .number(_, x): t = x
            case let .string(x): t = x
            case let .bool(b): t = String(b)
            default: t = "…"
            }
            return "\(escapeXML(k)) = \(escapeXML(t))"
        }
        if !notes.isEmpty || !params.isEmpty {
            out += "<details><summary>parameters and notes</summary><p>\(params.joined(separator: "; "))</p>\(notes)</details>\n"
        }
        return out
    }

    // MARK: truncated-svd

    mutating func svdSection(_ op: OperatorRun, _ s: JSONObject) -> String {
        guard let sv = op.array("singular_values")?.values, let f2 = s.number("frobenius_norm_sq"),
              let tail = s.number("tail_energy_bound") else {
            return "<p class=\"missing\">singular_values.npy or the bound fields are missing: no spectrum plot.</p>\n"
        }
        let k = sv.count
        // tail_energy_bound = F² − Σ_{j≤k} σ̂_j² + margin ≥ ‖A − A_k‖_F²; the same certificate at j < k adds back
        // the σ̂ⱼ² not subtracted: tail_j = tail_k + Σ_{j<i≤k} σ̂ᵢ² ≥ ‖A − A_j‖_F² (σ̂ᵢ ≤ σᵢ).
        var tails = [Double](repeating: tail, count: k + 1)
        if k > 0 { for j in stride(from: k - 1, through: 0, by: -1) { tails[j] = tails[j + 1] + sv[j] * sv[j] } }
        let js = (0...k).map(Double.init)
        var p = Plot(title: "\(op.id): singular values and the certified tail bound",
                     x: Plot.Axis("rank k", min: 0, max: Double(k) + 0.3, integer: true), y: Plot.Axis("singular value σ (data units)", scale: .log))
        p.series.append(.init("σ̂ₖ (estimated singular values)", kind: .line, xs: (1...max(1, k)).map(Double.init).prefix(k).map { $0 },
                              ys: sv, color: 0, marker: .circle))
        p.series.append(.init("certified bound on ‖A − Aₖ‖_F", kind: .line, xs: js, ys: tails.map { $0.squareRoot() }, color: 1,
                              dashed: true, marker: .triangle))
        let zeros = sv.filter { $0 <= 0 }.count
        var out = figure("svd-spectrum", p, caption:
            "Where the spectrum falls off, and how much the rank-k approximation can miss. Good: σ̂ₖ falls steeply and the bound drops with it; "
            + "at k = \(datum(op, "rank")) the certified tail energy is \(datum(op, "tail_energy_bound")) of ‖A‖²_F = \(datum(op, "frobenius_norm_sq"))"
            + (zeros > 0 ? " (\(zeros) zero value\(zeros == 1 ? "" : "s") — rank below k — not drawn on the log axis)." : "."))
        var q = Plot(title: "\(op.id): relative error bound per rank",
                     x: Plot.Axis("rank k", min: 0, max: Double(k) + 0.3, integer: true), y: Plot.Axis("‖A − Aₖ‖_F / ‖A‖_F  (bound)", min: 0, max: 1))
        let rel = tails.map { f2 > 0 ? min(1, ($0 / f2).squareRoot()) : 0 }
        q.series.append(.init("relative error bound √(tail bound / ‖A‖²_F)", kind: .line, xs: js, ys: rel, color: 2, marker: .square))
        out += figure("svd-relative-error", q, caption:
            "The fraction of ‖A‖_F a rank-k approximation may miss, certified. Good: small at the k you use — here at most "
            + "\(datum(op, "relative_error_bound")) at k = \(datum(op, "rank")) (method \(escapeXML(s.string("method") ?? "?")))." )
        return out
    }

    // MARK: top-eigenvector

    mutating func topSection(_ op: OperatorRun, _ s: JSONObject) -> String {
        guard let h = op.array("eigenvalue_history"), h.shape.count == 2, h.shape[1] == 3, h.shape[0] > 0 else {
            return "<p class=\"missing\">No eigenvalue_history.npy (written by rowflow since state version 2): no convergence plot.</p>\n"
        }
        let n = h.shape[0]
        let rows = (0..<n).map { h.values[3 * $0] }, est = (0..<n).map { h.values[3 * $0 + 1] }, heavy = (0..<n).map { h.values[3 * $0 + 2] }
        let perRow = zip(est, rows).map { $1 > 0 ? $0 / $1 : .nan }
        var p = Plot(title: "\(op.id): eigenvalue estimate over the stream", x: Plot.Axis("rows seen", min: 0),
                     y: Plot.Axis("σ̂₁² ÷ rows seen (squared data units)"))
        p.series.append(.init("estimate after each step", kind: .line, xs: rows, ys: perRow, color: 0, marker: .circle))
        if let ev = s.number("eigenvalue"), let r = s.number("rows"), r > 0 {
            p.references.append(.init(y: ev / r, name: "final eigenvalue ÷ rows", color: 1))
        }
        var out = figure("top-eigenvalue", p, caption:
            "The top eigenvalue of AᵀA per row as the stream goes by (\(escapeXML(s.string("variant") ?? "?"))). Good: the curve flattens onto the final line well before the end; "
            + "final eigenvalue \(datum(op, "eigenvalue")) over \(datum(op, "rows")) rows"
            + (s.bool("order_suspect") == true ? "; <b>order_suspect</b>: the rows do not look randomly ordered." : "."))
        if s.string("variant") == "random-order" {
            var q = Plot(title: "\(op.id): heavy rows kept exactly", x: Plot.Axis("rows seen", min: 0), y: Plot.Axis("heavy rows kept", min: 0, integer: true))
            q.height = 240
            q.series.append(.init("heavy rows", kind: .step, xs: rows, ys: heavy, color: 2, marker: .square))
            out += figure("top-heavy", q, caption:
                "Rows with ‖a‖² above the heavy threshold are kept exactly, outside the sampled power steps. Good: few, and no overflow — here "
                + "\(datum(op, "heavy_rows")) kept, \(datum(op, "heavy_overflow")) over the memory budget, \(datum(op, "heavy_demoted")) demoted.")
        }
        return out
    }

    // MARK: sensitivity-sample

    mutating func sensitivitySection(_ op: OperatorRun, _ s: JSONObject) -> String {
        var out = ""
        if let w = op.array("weights")?.values, !w.isEmpty {
            let pos = w.filter { $0 > 0 && $0.isFinite }
            let lo = pos.min() ?? 1, hi = pos.max() ?? 1
            let logBins = hi / lo > 20
            let bins = 30
            var edges: [Double] = []
            for i in 0...bins {
                let t = Double(i) / Double(bins)
                edges.append(logBins ? lo * pow(hi / lo, t) : lo + (hi - lo) * t)
            }
            if hi == lo { edges = [lo * 0.5, lo * 1.5] }
            var counts = [Double](repeating: 0, count: edges.count - 1)
            for v in pos {
                var b = 0
                if edges.count > 2 {
                    let t = logBins ? log(v / lo) / log(hi / lo) : (v - lo) / (hi - lo)
                    b = min(edges.count - 2, max(0, Int(t * Double(bins))))
                }
                counts[b] += 1
            }
            var p = Plot(title: "\(op.id): histogram of sample weights",
                         x: Plot.Axis("weight (source rows each kept row stands for)", scale: logBins ? .log : .linear, min: edges.first, max: edges.last),
                         y: Plot.Axis("kept rows", min: 0, integer: true))
            p.series.append(.init("kept rows per weight bin", kind: .histogram(edges: edges), xs: [], ys: counts, color: 0))
            out += figure("sensitivity-weights", p, caption:
                "Each kept row carries weight 1/q (its keep probability's inverse). Good: most weight on rows kept with certainty (weight 1) or small weights, and Σ weights "
                + "\(datum(op, "sample_weight_sum")) close to the \(datum(op, "weight_sum")) source rows it estimates; \(datum(op, "size")) rows kept.")
        } else {
            out += "<p class=\"missing\">weights.npy missing or empty: no weight histogram.</p>\n"
        }
        if let h = op.array("kept_history"), h.shape.count == 2, h.shape[1] == 3, h.shape[0] > 0 {
            let n = h.shape[0]
            let rows = (0..<n).map { h.values[3 * $0] }
            let kept = (0..<n).map { h.values[3 * $0 + 1] / max(1, h.values[3 * $0]) * 1e6 }
            let expd = (0..<n).map { h.values[3 * $0 + 2] / max(1, h.values[3 * $0]) * 1e6 }
            var p = Plot(title: "\(op.id): kept rows per million over the stream", x: Plot.Axis("rows seen", scale: .log),
                         y: Plot.Axis("kept rows per 10⁶ rows seen", scale: .log))
            p.series.append(.init("kept", kind: .line, xs: rows, ys: kept, color: 0, marker: .circle))
            if expd.contains(where: { $0.isFinite }) {
                p.series.append(.init("expected (Σ keep probabilities)", kind: .line, xs: rows, ys: expd, color: 2, dashed: true))
            }
            if let b = s.number("size_bound"), let r = s.number("rows"), r > 0, b.isFinite {
                p.references.append(.init(y: b / r * 1e6, name: "final size bound per 10⁶ rows", color: 1))
            }
            out += figure("sensitivity-kept", p, caption:
                "The kept fraction as the stream grows: leverage sampling keeps O(d·log d / ε²) rows, so per million it should fall. Good: the curve falls and ends below the bound — "
                + "\(datum(op, "size")) kept of \(datum(op, "rows")), size bound \(datum(op, "size_bound")).")
        } else {
            out += "<p class=\"missing\">No kept_history.npy (a merged run, or written before state version 2): no kept-rows plot.</p>\n"
        }
        return out
    }

    // MARK: dpp-sample

    /// The source's feature columns and target from an .npy input that is still reachable (nil otherwise).
    func candidates() -> (x: [Double], y: [Double]?, d: Int, n: Int)? {
        guard let spec = run.manifest, let input = run.run.string("input"), input.hasSuffix(".npy") else { return nil }
        let paths = input.hasPrefix("/") ? [input] : [input, run.path + "/../" + input]
        guard let p = paths.first(where: { FileBytes.exists($0) }) else { return nil }
        // The whole file is read: only when it is small (the row limit below is checked after reading).
        var st = stat()
        guard stat(p, &st) == 0, st.st_size <= 64 << 20 else { return nil }
        guard let a = try? NpyReader.read(p), a.shape.count == 2, Int64(a.shape[0]) <= Self.candidateLimit else { return nil }
        let c = a.shape[1]
        guard let layout = try? RowLayout(rawColumns: c, config: spec.source, location: p) else { return nil }
        var x: [Double] = [], y: [Double] = []
        x.reserveCapacity(a.shape[0] * layout.features)
        var feat = [Double](repeating: 0, count: layout.features)
        for r in 0..<a.shape[0] {
            var t = Double.nan
            for j in 0..<c {
                switch layout.roles[j] {
                case let .feature(k): feat[k] = a.values[r * c + j]
                case .target: t = a.values[r * c + j]
                default: break
                }
            }
            x += feat
            y.append(t)
        }
        return (x, layout.hasTarget ? y : nil, layout.features, a.shape[0])
    }

    mutating func dppSection(_ op: OperatorRun, _ s: JSONObject) -> String {
        guard let rowsA = op.array("rows"), let w = op.array("weights")?.values, rowsA.shape.count == 2, rowsA.shape[0] == w.count, w.count > 0 else {
            return "<p class=\"missing\">rows.npy or weights.npy missing: no sample plot.</p>\n"
        }
        let m = rowsA.shape[0], d = rowsA.shape[1]
        let rows = rowsA.values
        let targets = op.array("targets")?.values
        let coef = op.array("coefficients")?.values
        // A 1-D feature map (Legendre, polynomial): column 0 constant, column 1 the abscissa x itself.
        let oneD = d >= 2 && (0..<m).allSatisfy { rows[$0 * d] == rows[0] } && targets != nil
        let cand = (run.input(of: op.id) ?? "source") == "source" ? candidates() : nil
        var p: Plot
        if oneD {
            p = Plot(title: "\(op.id): sampled points over the candidates", x: Plot.Axis("feature column 1 (the abscissa x, up to scale)"), y: Plot.Axis("target y"))
        } else {
            p = Plot(title: "\(op.id): sampled points over the candidates", x: Plot.Axis("feature 0"), y: Plot.Axis(d >= 2 ? "feature 1" : "target y"))
        }
        func point(_ r: [Double], _ i: Int, _ dd: Int, _ t: [Double]?) -> (Double, Double) {
            if oneD { return (r[i * dd + 1], t?[i] ?? .nan) }
            return (r[i * dd], dd >= 2 ? r[i * dd + 1] : (t?[i] ?? .nan))
        }
        if let c = cand, c.d == d {
            // Every candidate would be thousands of elements: a fixed stride keeps ≤ 2000, deterministic.
            let stride = max(1, (c.n + 1499) / 1500)
            var cx: [Double] = [], cy: [Double] = []
            for i in Swift.stride(from: 0, to: c.n, by: stride) { let (a, b) = point(c.x, i, d, c.y); cx.append(a); cy.append(b) }
            p.series.append(.init("candidates" + (stride > 1 ? " (1 in \(stride))" : ""), kind: .dots, xs: cx, ys: cy, color: 5, opacity: 0.45))
            if oneD, let coef, coef.count == d {
                // The sample's weighted least-squares fit evaluated at every candidate, drawn along x.
                var fit: [(Double, Double)] = []
                for i in 0..<c.n {
                    var v = 0.0
                    for j in 0..<d { v += c.x[i * d + j] * coef[j] }
                    fit.append((c.x[i * d + 1], v))
                }
                fit.sort { $0.0 < $1.0 }
                let step = max(1, fit.count / 800)
                let thin = Swift.stride(from: 0, to: fit.count, by: step).map { fit[$0] } + [fit[fit.count - 1]]
                p.series.append(.init("fit from the sample", kind: .line, xs: thin.map(\.0), ys: thin.map(\.1), color: 1))
            }
        }
        var sx: [Double] = [], sy: [Double] = []
        for i in 0..<m { let (a, b) = point(rows, i, d, targets); sx.append(a); sy.append(b) }
        p.series.append(.init("sampled (area ∝ weight)", kind: .scatter, xs: sx, ys: sy, sizes: w, color: 0, marker: .circle))
        var cap = "Where the DPP put its \(datum(op, "size")) points (mode \(escapeXML(s.string("mode") ?? "?")), marker area ∝ weight)"
        cap += cand == nil ? " — candidates not drawn: the input is not a reachable .npy file." : " over the \(cand!.n) candidates."
        cap += " Good: points spread over the whole domain (denser where leverage is high)"
        if s.number("residual_ratio") != nil {
            cap += ", and the residual over all candidates close to the full least-squares optimum: \(datum(op, "residual")) vs \(datum(op, "optimal_residual")), ratio <b>\(datum(op, "residual_ratio"))</b>."
        } else {
            cap += "."
        }
        return figure("dpp-sample", p, caption: cap)
    }

    /// Every dpp-sample with a known error ratio, side by side.
    mutating func dppComparison() -> String {
        let ops = run.operators.filter { plot($0) == .dppSample && $0.summary?.number("residual_ratio") != nil }
        guard ops.count >= 2 else { return "" }
        let names = ops.map { "\($0.id)" }
        var p = Plot(title: "dpp-sample: error ratio against full least squares", x: Plot.Axis("operator (mode)", categories: names),
                     y: Plot.Axis("residual ÷ optimal residual", min: 0))
        p.series.append(.init("residual ratio", kind: .bars(width: 0.6), xs: (1...ops.count).map(Double.init),
                              ys: ops.map { $0.summary!.number("residual_ratio")! }, color: 0))
        p.references.append(.init(y: 1, name: "full least squares (ratio 1)"))
        let list = ops.map { "\(escapeXML($0.id)) \(datum($0, "residual_ratio"))" }.joined(separator: ", ")
        return "<section id=\"dpp-comparison\">\n<h2>dpp-sample comparison</h2>\n"
            + figure("dpp-ratio", p, caption: "Each sample's residual over all candidates divided by the full least-squares residual. Good: close to 1 — here \(list).")
            + "</section>\n"
    }

    // MARK: halpern-solver

    mutating func halpernSection() -> String {
        let ops = run.operators.filter { plot($0) == .solverResidual && $0.summary != nil }
        var p = Plot(title: "halpern-solver: residual against oracle calls", x: Plot.Axis("oracle calls (component evaluations)", scale: .log),
                     y: Plot.Axis("fixed-point residual", scale: .log))
        var parts: [String] = []
        var markers: [Plot.Series] = []
        let shapes: [Plot.Marker] = [.triangle, .diamond, .square, .cross]
        for (i, op) in ops.enumerated() {
            let s = op.summary!
            let algo = s.string("algorithm") ?? "?"
            guard let h = op.array("residual_history"), h.shape.count == 2, h.shape[1] == 3, h.shape[0] > 0 else {
                parts.append("\(escapeXML(op.id)): no residual_history.npy")
                continue
            }
            let n = h.shape[0]
            let calls = (0..<n).map { h.values[3 * $0] }, res = (0..<n).map { h.values[3 * $0 + 1] }, rs = (0..<n).map { h.values[3 * $0 + 2] }
            p.series.append(.init("\(op.id) (\(algo))", kind: .line, xs: calls, ys: res, color: i, dashed: algo == "halpern"))
            // A restart happens right after a fresh residual: mark the last point before the count goes up.
            var mx: [Double] = [], my: [Double] = []
            for j in 0..<(n - 1) where rs[j + 1] > rs[j] { mx.append(calls[j]); my.append(res[j]) }
            if !mx.isEmpty {
                markers.append(.init("\(op.id) restarts", kind: .scatter, xs: mx, ys: my, color: i, marker: shapes[i % shapes.count]))
            }
            // The exit test is on the residual relative to the start, except for games (on the duality gap).
            if i == 0, s.string("problem") != "matrix-game", let tol = s.value["params"]?["tolerance"]?.double ?? Optional(1e-8), let r0 = res.first {
                p.references.append(.init(y: tol * r0, name: "tolerance × initial residual"))
            }
            parts.append("\(escapeXML(op.id)) (\(escapeXML(algo))): residual \(datum(op, "residual")) after \(datum(op, "oracle_calls")) oracle calls, \(datum(op, "restarts")) restarts, "
                         + (s.bool("converged") == true ? "converged" : "<b>not converged</b>")
                         + (s.number("duality_gap") != nil ? " (duality gap \(datum(op, "duality_gap")), the game's exit test)" : ""))
        }
        p.series += markers
        guard !p.series.isEmpty else { return "<p class=\"missing\">No residual_history.npy: no convergence plot.</p>\n" }
        return figure("halpern-residual", p, caption:
            "How fast each solver's residual fell per unit of work, on log–log axes; markers are restarts. Good: a steep, steady descent to the tolerance line; of two solvers, the one further left is cheaper per digit of accuracy. "
            + parts.joined(separator: "; ") + ".")
    }
}
