import EngineCore
import RowIO
import Foundation
import TestSupport
import Testing

/// Checks one report page with Python's own parsers, independently of the Swift that wrote it: the HTML is
/// well-formed (every non-void element closed in order), every `<svg>` parses as XML, nothing can fetch or
/// run anything (no script, link, src, href, event handler), every `<figure>` holds exactly one `<svg>` and
/// one caption, and every `<data>` number equals the JSON field it names (value = the file's number; the
/// shown text = that number rounded to 4 significant digits). Prints a JSON summary; exit 1 on any problem.
let pageChecker = #"""
import html, json, os, re, sys
from html.parser import HTMLParser
import xml.etree.ElementTree as ET

page, rundir = sys.argv[1], sys.argv[2]
text = open(page, encoding='utf-8').read()
VOID = {'meta', 'br', 'img', 'input', 'link', 'hr', 'area', 'base', 'col', 'embed', 'source', 'track', 'wbr'}
FORBIDDEN = {'script', 'link', 'iframe', 'img', 'object', 'embed', 'base', 'form'}

class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.figures, self.data = [], [], [], []
        self.cur = None
        self.caption = False
        self.first = None
        self.svg = 0
    def attrs_ok(self, tag, attrs):
        if tag in FORBIDDEN: self.errors.append('forbidden <%s>' % tag)
        for k, v in attrs:
            if k.startswith('on'): self.errors.append('event handler %s on <%s>' % (k, tag))
            if k in ('src', 'href', 'xlink:href', 'srcset', 'action'): self.errors.append('%s="%s" on <%s>' % (k, v, tag))
    def handle_starttag(self, tag, attrs):
        self.attrs_ok(tag, attrs)
        a = dict(attrs)
        if self.stack and self.stack[-1] == 'body' and self.first is None: self.first = (tag, a)
        if tag == 'figure': self.figures.append({'name': a.get('data-plot'), 'svgs': 0, 'captions': 0, 'data': 0})
        if tag == 'svg':
            if self.svg == 0:
                if 'figure' in self.stack: self.figures[-1]['svgs'] += 1
                else: self.errors.append('<svg> outside a <figure>')
            self.svg += 1
        if tag == 'figcaption':
            self.figures[-1]['captions'] += 1
            self.caption = True
        if tag == 'data': self.cur = [a.get('value'), a.get('data-key'), '', self.caption]
        if tag not in VOID: self.stack.append(tag)
    def handle_startendtag(self, tag, attrs):
        self.attrs_ok(tag, attrs)
        if self.svg == 0 and tag not in VOID: self.errors.append('self-closing <%s/> outside svg' % tag)
    def handle_endtag(self, tag):
        if tag in VOID: return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append('mismatched </%s>, open: %s' % (tag, self.stack[-3:]))
            return
        self.stack.pop()
        if tag == 'svg': self.svg -= 1
        if tag == 'figcaption': self.caption = False
        if tag == 'data':
            self.data.append(self.cur)
            if self.cur[3]: self.figures[-1]['data'] += 1
            self.cur = None
    def handle_data(self, d):
        if self.cur is not None: self.cur[2] += d

p = Page()
p.feed(text)
p.close()
errors = list(p.errors)
if p.stack: errors.append('unclosed at end: %s' % p.stack)
if not text.startswith('<!DOCTYPE html>'): errors.append('no doctype')
if '@import' in text: errors.append('@import in CSS')
for m in re.findall(r'url\(([^)]*)\)', text):
    if not m.startswith('#'): errors.append('url(%s) is not a local fragment' % m)
svgs = re.findall(r'<svg\b.*?</svg>', text, re.S)
for s in svgs:
    try: ET.fromstring(s)
    except ET.ParseError as e: errors.append('svg not well-formed XML: %s' % e)
for f in p.figures:
    if f['svgs'] != 1 or f['captions'] != 1: errors.append('figure %s: %d svg, %d captions' % (f['name'], f['svgs'], f['captions']))
    if f['name'] != 'graph' and f['data'] == 0: errors.append('figure %s: no number from a summary in its caption' % f['name'])

SUP = str.maketrans('⁰¹²³⁴⁵⁶⁷⁸⁹⁻', '0123456789-')
UNITS = {'B': 1, 'KiB': 1024, 'MiB': 1024**2, 'GiB': 1024**3}
def shown(t):
    t = t.strip()
    parts = t.split(' ')
    if len(parts) == 2 and parts[1] in UNITS: return float(parts[0]) * UNITS[parts[1]], 0.01
    if '×10' in t:
        m, e = t.split('×10')
        return float(m) * 10 ** int(e.translate(SUP)), 5.001e-4
    return float(t), 5.001e-4
cache = {}
def field(key):
    src, name = key.split('.', 1)
    path = os.path.join(rundir, 'run.json' if src == 'run' else os.path.join(src, 'summary.json'))
    if path not in cache: cache[path] = json.load(open(path))
    return cache[path][name]
checked = 0
for value, key, shown_text, in_caption in p.data:
    try:
        want = field(key)
    except Exception as e:
        errors.append('data %s: no such field (%s)' % (key, e)); continue
    if float(value) != float(want): errors.append('data %s: value %s, JSON has %r' % (key, value, want))
    got, tol = shown(shown_text)
    if abs(got - float(want)) > tol * max(abs(float(want)), 1e-300): errors.append('data %s: shows %s for %r' % (key, shown_text, want))
    checked += 1
banner = p.first[1].get('data-status') if p.first and 'banner' in p.first[1].get('class', '') else None
print(json.dumps({'figures': [f['name'] for f in p.figures], 'svgs': len(svgs), 'data': checked, 'banner': banner,
                  'banner_text': html.unescape(re.sub('<[^>]+>', '', text.split('<div class="banner', 1)[1].split('>', 1)[1].split('</div>', 1)[0])) if banner else '',
                  'errors': errors}))
sys.exit(1 if errors else 0)
"""#

struct PageCheck {
    var figures: [String]
    var svgs: Int
    var data: Int
    var banner: String?
    var bannerText: String
    var errors: [String]
}

func checkPage(_ html: String, runDir: String) throws -> PageCheck {
    let script = temporaryDirectory("checker") + "/check.py"
    writeFile(script, pageChecker)
    let r = runProcess("/usr/bin/env", ["python3", script, html, runDir])
    let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
    guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        throw CheckError(message: "checker printed no JSON: \(r.stdout) \(r.stderr)")
    }
    return PageCheck(figures: obj["figures"] as? [String] ?? [], svgs: obj["svgs"] as? Int ?? -1, data: obj["data"] as? Int ?? 0,
                     banner: obj["banner"] as? String, bannerText: obj["banner_text"] as? String ?? "",
                     errors: obj["errors"] as? [String] ?? ["unreadable"])
}

struct CheckError: Error, CustomStringConvertible { var message: String; var description: String { message } }

/// The plots a run directory should get, from its summaries alone (independent of the report's code).
func expectedFigures(_ out: String) throws -> [String] {
    let run = try loadJSON(out + "/run.json")
    var figs = ["graph"], dppWithRatio = 0, halpern = false
    for id in run["operators"] as? [String] ?? [] {
        guard let s = try? loadJSON(out + "/" + id + "/summary.json") else { continue }
        switch s["op"] as? String {
        case "truncated-svd": figs += ["svd-spectrum", "svd-relative-error"]
        case "top-eigenvector": figs += ["top-eigenvalue"] + (s["variant"] as? String == "random-order" ? ["top-heavy"] : [])
        case "sensitivity-sample": figs += ["sensitivity-weights"] + (run["merged_from"] == nil ? ["sensitivity-kept"] : [])
        case "dpp-sample":
            figs.append("dpp-sample")
            if s["residual_ratio"] != nil { dppWithRatio += 1 }
        case "halpern-solver": halpern = true
        default: break
        }
    }
    if halpern { figs.append("halpern-residual") }
    if dppWithRatio >= 2 { figs.append("dpp-ratio") }
    return figs.sorted()
}

let pipelineNames: [String] = {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: packageRoot + "/Pipelines")) ?? []
    return names.filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
}()

/// Runs Pipelines/<name>.yaml on its fixture into a fresh directory; returns the run directory.
func runPipeline(_ name: String) throws -> String {
    let fixture = packageRoot + "/Fixtures/" + name
    let input = try FileManager.default.contentsOfDirectory(atPath: fixture).first { $0.hasPrefix("input.") }!
    let out = temporaryDirectory("report-\(name)") + "/out"
    let r = rowflow(["run", packageRoot + "/Pipelines/\(name).yaml", "--input", fixture + "/" + input, "--out", out, "--progress", "never"],
                    cwd: packageRoot)
    guard r.status == 0 else { throw CheckError(message: "run \(name): \(r.stderr)") }
    return out
}

@Suite(.serialized) struct ReportPageTests {
    /// Every Pipelines/ example: `rowflow report` on its output is a valid page with the plots its operators
    /// call for, one SVG each, and caption numbers equal to summary.json's.
    @Test(arguments: pipelineNames)
    func reportOfEveryPipeline(name: String) throws {
        let probe = runProcess("/usr/bin/env", ["python3", "-c", "import html.parser, xml.etree.ElementTree"])
        try #require(probe.status == 0, "python3 is needed to check the page independently")
        let out = try runPipeline(name)
        let r = rowflow(["report", out])
        #expect(r.status == 0 && r.stderr.isEmpty, "\(r.stderr)")
        let c = try checkPage(out + "/report.html", runDir: out)
        #expect(c.errors.isEmpty, "\(name): \(c.errors)")
        #expect(c.figures.sorted() == (try expectedFigures(out)), "\(name): figures \(c.figures)")
        #expect(c.svgs == c.figures.count, "\(name): \(c.svgs) svg for \(c.figures.count) figures")
        #expect(c.banner == "complete")
        // Every plotted operator put at least one of its numbers in a caption, and the run table its counts.
        #expect(c.data >= c.figures.count + 3)
    }

    /// `--out` elsewhere, and the manifest unreachable (a relative path from another directory): the graph
    /// falls back to the operator list and says why, the page is still complete.
    @Test func outPathAndUnreachableManifest() throws {
        let out = try runPipeline("coreset-ridge")
        // run.json says "…/Pipelines/coreset-ridge.yaml" absolutely (the test passed an absolute path); make it
        // relative so that it cannot be found from the run directory's side.
        let runPath = out + "/run.json"
        var text = try String(contentsOfFile: runPath, encoding: .utf8)
        text = text.replacingOccurrences(of: packageRoot + "/Pipelines/", with: "nowhere/")
        writeFile(runPath, text)
        let page = temporaryDirectory("report-out") + "/page.html"
        let r = rowflow(["report", out, "--out", page], cwd: "/")
        #expect(r.status == 0, "\(r.stderr)")
        let c = try checkPage(page, runDir: out)
        #expect(c.errors.isEmpty, "\(c.errors)")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(html.contains("Edges from the source assumed") && html.contains("not reachable"))
        #expect(!FileManager.default.fileExists(atPath: out + "/report.html"))
    }

    /// A failed run (a NaN in the data, exit 65) and an interrupted one: the page's first element says so,
    /// with the error, before any plot.
    @Test func failedAndInterruptedRunsSaySoAtTheTop() throws {
        let out = temporaryDirectory("report-failed") + "/out"
        let r = rowflow(["run", packageRoot + "/Pipelines/quickstart.yaml", "--input", packageRoot + "/Fixtures/hostile/nan.csv", "--out", out])
        #expect(r.status == 65, "\(r.stderr)")
        #expect(rowflow(["report", out]).status == 0)
        let c = try checkPage(out + "/report.html", runDir: out)
        #expect(c.errors.isEmpty, "\(c.errors)")
        #expect(c.banner == "failed" && c.bannerText.contains("FAILED"), "\(c.banner ?? "none")")
        let run = try loadJSON(out + "/run.json")
        let err = try #require(run["error"] as? String)
        #expect(c.bannerText.contains(err), "\(c.bannerText)")

        // Interrupted: what the runner writes on SIGINT (status, error, exit_code 130) over a real run's outputs;
        // a real SIGINT needs a run slow enough to catch, which RobustnessTests already exercises.
        let done = try runPipeline("svd")
        var text = try String(contentsOfFile: done + "/run.json", encoding: .utf8)
        text = text.replacingOccurrences(of: "\"status\": \"complete\",",
                                         with: "\"status\": \"interrupted\",\n  \"error\": \"rowflow: error: run: interrupted by SIGINT after a checkpoint at row 2048\",\n  \"exit_code\": 130,")
        writeFile(done + "/run.json", text)
        #expect(rowflow(["report", done]).status == 0)
        let i = try checkPage(done + "/report.html", runDir: done)
        #expect(i.errors.isEmpty, "\(i.errors)")
        #expect(i.banner == "interrupted" && i.bannerText.contains("INTERRUPTED") && i.bannerText.contains("row 2048"))
        #expect(i.figures.count == (try expectedFigures(done)).count)
    }

    /// docs/errors.md: a missing directory 66; not a run directory (no run.json, or a file) 64; a run.json
    /// that is not JSON 65 — each one line naming the path.
    @Test func errorsHaveTheirExitCodes() throws {
        let dir = temporaryDirectory("report-errors")
        let cases: [(String, Int32, String)] = [
            (dir + "/missing", 66, "no such directory"),
            (dir, 64, "no run.json"),
        ]
        writeFile(dir + "/file.txt", "x")
        try FileManager.default.createDirectory(atPath: dir + "/broken", withIntermediateDirectories: true)
        writeFile(dir + "/broken/run.json", "{\"status\": ")
        for (path, code, fragment) in cases + [(dir + "/file.txt", 64, "not a directory"), (dir + "/broken", 65, "not valid JSON")] {
            let r = rowflow(["report", path])
            #expect(r.status == code, "\(path): \(r.status) \(r.stderr)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("rowflow: error: \(path)") && r.stderr.contains(fragment), "\(r.stderr)")
        }
        // An unwritable --out: 74.
        let out = try runPipeline("quickstart")
        let r = rowflow(["report", out, "--out", dir + "/no/such/dir/page.html"])
        #expect(r.status == 74, "\(r.stderr)")
    }
}

/// Decodes a PNG with zlib alone (8-bit RGB or RGBA, non-interlaced, as Chromium writes screenshots) and
/// prints its size, the fraction of pixels unlike the top-left (background) pixel, the fraction of strongly
/// coloured pixels (the plots' palette), and the background's luma.
let pngChecker = #"""
import json, struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
pos, idat, w = 8, b'', None
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, depth, ctype, _, _, interlace = struct.unpack('>IIBBBBB', body)
        assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(idat)
stride = w * bpp
rows, prev, i = [], bytearray(stride), 0
for y in range(h):
    f = raw[i]; line = bytearray(raw[i + 1:i + 1 + stride]); i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b = prev[x]
        c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(line); prev = line
bg = tuple(rows[0][0:3])
diff = colour = 0
for line in rows:
    for x in range(0, stride, bpp):
        r, g, b = line[x], line[x + 1], line[x + 2]
        if abs(r - bg[0]) + abs(g - bg[1]) + abs(b - bg[2]) > 30: diff += 1
        if max(r, g, b) - min(r, g, b) > 80: colour += 1
print(json.dumps({'width': w, 'height': h, 'different': diff / (w * h), 'coloured': colour / (w * h),
                  'background_luma': 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]}))
"""#

/// Chromium's binary, if installed (Debian's package is `chromium`).
let chromiumPath: String? = {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"] where FileManager.default.isExecutableFile(atPath: p) {
        return p
    }
    // CI installs chromium (.ci/run sets ROWFLOW_REQUIRE_CHROMIUM=1): there its absence is a failure, not a skip.
    if ProcessInfo.processInfo.environment["ROWFLOW_REQUIRE_CHROMIUM"] == "1" { return "/usr/bin/chromium" }
    FileHandle.standardError.write(Data("ReportRenderingTests skipped: no chromium (apt-get install chromium; .ci/run installs it)\n".utf8))
    return nil
}()

/// The page as a browser draws it: headless Chromium renders the report of the svd and halpern pipelines
/// (light and dark colour schemes) without a console message, at the window size asked for, and not blank.
@Suite(.serialized, .enabled(if: chromiumPath != nil, "chromium is not installed"))
struct ReportRenderingTests {
    struct Shot { var width: Int; var height: Int; var different: Double; var coloured: Double; var backgroundLuma: Double; var stderr: String }

    func screenshot(_ html: String, dark: Bool, width: Int = 800, height: Int = 1200) throws -> Shot {
        let png = temporaryDirectory("shot") + "/page.png"
        var args = ["120", chromiumPath!, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
                    "--enable-logging=stderr", "--v=0", "--window-size=\(width),\(height)", "--screenshot=\(png)"]
        if dark { args.append("--force-dark-mode") }
        args.append("file://" + html)
        let r = runProcess("/usr/bin/timeout", args, environment: ["HOME": temporaryDirectory("chromium-home"), "PATH": "/usr/bin:/bin"])
        guard r.status == 0, FileManager.default.fileExists(atPath: png) else {
            throw CheckError(message: "chromium exit \(r.status): \(r.stderr.suffix(2000))")
        }
        let script = temporaryDirectory("png") + "/png.py"
        writeFile(script, pngChecker)
        let p = runProcess("/usr/bin/env", ["python3", script, png])
        guard let o = try? JSONSerialization.jsonObject(with: Data(p.stdout.utf8)) as? [String: Any] else {
            throw CheckError(message: "png check: \(p.stdout) \(p.stderr)")
        }
        return Shot(width: o["width"] as? Int ?? 0, height: o["height"] as? Int ?? 0, different: o["different"] as? Double ?? 0,
                    coloured: o["coloured"] as? Double ?? 0, backgroundLuma: o["background_luma"] as? Double ?? -1, stderr: r.stderr)
    }

    /// The DOM after Chromium parsed the page: as many <svg> elements as the file has (nothing dropped by
    /// error recovery) and no console message.
    func dumpDOM(_ html: String) throws -> (svgs: Int, stderr: String) {
        let r = runProcess("/usr/bin/timeout", ["120", chromiumPath!, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                                                "--enable-logging=stderr", "--v=0", "--dump-dom", "file://" + html],
                           environment: ["HOME": temporaryDirectory("chromium-home"), "PATH": "/usr/bin:/bin"])
        guard r.status == 0 else { throw CheckError(message: "chromium --dump-dom exit \(r.status): \(r.stderr.suffix(2000))") }
        return (r.stdout.components(separatedBy: "<svg").count - 1, r.stderr)
    }

    /// Console output reaches stderr as "…:INFO:CONSOLE(…)] "message", source: …" (errors, CSP refusals too).
    func consoleLines(_ stderr: String) -> [String] {
        stderr.split(separator: "\n").map(String.init).filter { $0.contains(":CONSOLE") || $0.contains("Refused to") || $0.contains("Uncaught") }
    }

    @Test(arguments: ["svd", "halpern-ridge", "dpp-legendre"])
    func rendersWithoutErrors(name: String) throws {
        let out = try runPipeline(name)
        #expect(rowflow(["report", out]).status == 0)
        let page = out + "/report.html"
        let fileSVGs = (try String(contentsOfFile: page, encoding: .utf8)).components(separatedBy: "<svg").count - 1
        let dom = try dumpDOM(page)
        let figures = try expectedFigures(out).count
        #expect(dom.svgs == fileSVGs && fileSVGs == figures, "\(dom.svgs) svg in the DOM, \(fileSVGs) in the file, \(figures) plots")
        #expect(consoleLines(dom.stderr).isEmpty, "\(consoleLines(dom.stderr))")
        // Dark mode once (pure-Python PNG decoding takes seconds a shot).
        for dark in name == "svd" ? [false, true] : [false] {
            let s = try screenshot(page, dark: dark)
            #expect(s.width == 800 && s.height == 1200, "screenshot \(s.width)×\(s.height)")
            #expect(consoleLines(s.stderr).isEmpty, "\(consoleLines(s.stderr))")
            // Not blank: text, axes and plots cover well over 3 % of an 800×1200 window (a bare banner and
            // title cover ~1 %), and the palette shows (coloured series and graph boxes).
            #expect(s.different > 0.03, "only \(s.different) of the pixels differ from the background")
            #expect(s.coloured > 0.001, "only \(s.coloured) of the pixels are coloured")
            // The colour scheme followed: white page in light mode, dark page in dark mode.
            #expect(dark ? s.backgroundLuma < 60 : s.backgroundLuma > 200, "background luma \(s.backgroundLuma), dark \(dark)")
        }
    }
}

/// The histories the plots draw end where the operators' summaries end, and a merge (where one shard's
/// trajectory means nothing for the union) writes none — and its report still draws the rest.
@Suite(.serialized) struct HistoryOutputTests {
    func lastRow(_ path: String) throws -> [Double] {
        let a = try NpyReader.read(path)
        #expect(a.shape.count == 2 && a.shape[1] == 3 && a.shape[0] >= 2 && a.shape[0] <= 1025, "\(a.shape)")
        return Array(a.values.suffix(3))
    }

    /// Equal up to Foundation's JSON number parsing, which is not always correctly rounded: a 17-digit number
    /// goes through NSDecimalNumber, measured 4 ulps off (halpern-ridge vr's residual 2.0147759172238651e-07).
    func same(_ a: Double, _ b: Any?) -> Bool {
        guard let b = (b as? Double) ?? (b as? Int).map(Double.init) else { return false }
        return abs(a - b) <= 1e-15 * abs(b)
    }

    @Test func historiesEndAtTheSummary() throws {
        let top = try runPipeline("top-eigenvector")
        for id in ["top", "oja"] {
            let s = try loadJSON(top + "/\(id)/summary.json")
            let h = try lastRow(top + "/\(id)/eigenvalue_history.npy")
            #expect(same(h[0], s["rows"]) && same(h[1], s["eigenvalue"]) && same(h[2], s["heavy_rows"]), "\(id): \(h) vs \(s)")
        }
        let hal = try runPipeline("halpern-ridge")
        for id in ["vr", "det"] {
            let s = try loadJSON(hal + "/\(id)/summary.json")
            let h = try lastRow(hal + "/\(id)/residual_history.npy")
            #expect(same(h[0], s["oracle_calls"]) && same(h[1], s["residual"]) && h[2] <= Double(s["restarts"] as! Int), "\(id): \(h)")
            // The first point is the residual at the start: the solve's relative residual is measured from it.
            let first = try NpyReader.read(hal + "/\(id)/residual_history.npy").values[1]
            #expect(abs(h[1] / first - (s["relative_residual"] as! Double)) <= 1e-12 * (s["relative_residual"] as! Double))
        }
        let cs = try runPipeline("coreset-ridge")
        let s = try loadJSON(cs + "/coreset/summary.json")
        let h = try lastRow(cs + "/coreset/kept_history.npy")
        #expect(same(h[0], s["rows"]) && same(h[1], s["size"]) && same(h[2], s["expected_size"]), "\(h)")
    }

    /// Merge-reduce keeps the (rows seen, rows held) trajectory too, with no expected size (NaN).
    @Test func mergeReduceHistory() throws {
        let dir = temporaryDirectory("report-mr")
        writeFile(dir + "/m.yaml", """
        version: 1
        source: { format: f32, columns: 7, target: last }
        operators:
          - { id: lp, op: sensitivity-sample, params: { p: 1.5, method: root-leverage, samples: 300 } }
        """)
        let r = rowflow(["run", dir + "/m.yaml", "--input", packageRoot + "/Fixtures/coreset-ridge/input.f32.zst", "--out", dir + "/out"])
        #expect(r.status == 0, "\(r.stderr)")
        let s = try loadJSON(dir + "/out/lp/summary.json")
        let a = try NpyReader.read(dir + "/out/lp/kept_history.npy")
        let rows = a.shape[0]
        #expect(rows >= 2 && a.values[3 * (rows - 1)] == Double(s["rows"] as! Int))
        #expect((0..<rows).allSatisfy { a.values[3 * $0 + 2].isNaN && a.values[3 * $0 + 1] <= a.values[3 * $0] })
        #expect(rowflow(["report", dir + "/out"]).status == 0)
        let c = try checkPage(dir + "/out/report.html", runDir: dir + "/out")
        #expect(c.errors.isEmpty && c.figures.sorted() == ["graph", "sensitivity-kept", "sensitivity-weights"], "\(c.figures) \(c.errors)")
    }

    @Test func mergedRunHasNoKeptHistoryAndStillReports() throws {
        let input = packageRoot + "/Fixtures/coreset-ridge/input.f32.zst"
        let manifest = packageRoot + "/Pipelines/coreset-ridge.yaml"
        let dir = temporaryDirectory("report-merge")
        for k in 0..<2 {
            let r = rowflow(["run", manifest, "--input", input, "--out", dir + "/s\(k)", "--shard", "\(k)", "--progress", "never"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(FileManager.default.fileExists(atPath: dir + "/s\(k)/coreset/kept_history.npy"))
        }
        let m = rowflow(["merge", manifest, dir + "/s0", dir + "/s1", "--out", dir + "/merged"])
        #expect(m.status == 0, "\(m.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/merged/coreset/kept_history.npy"))
        #expect(rowflow(["report", dir + "/merged"]).status == 0)
        let c = try checkPage(dir + "/merged/report.html", runDir: dir + "/merged")
        #expect(c.errors.isEmpty, "\(c.errors)")
        #expect(c.figures.sorted() == ["graph", "sensitivity-weights"])
        let html = try String(contentsOfFile: dir + "/merged/report.html", encoding: .utf8)
        #expect(html.contains("merged from") && html.contains("a merged run") && !html.contains("Edges from the source assumed"))
    }
}
