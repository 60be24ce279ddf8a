#!/usr/bin/env python3
"""Text input against the best readers: paired runs in one session, medians reported.

  CSV 1M x 16 full-precision doubles: rowflow `moments` vs polars scan_csv().mean().collect() and pyarrow.csv
  (default threads and one thread), then the same file zstd-compressed (rowflow streams it; polars.read_csv and
  pyarrow decompress it with their own zstd support), libsvm 1M rows x 20 non-zeros vs scikit-learn's
  load_svmlight_file (+ column means), and rowflow's peak RSS at 10^5 vs 10^6 rows.

Every contender is a fresh process; "wall" is the process's wall time (interpreter start and imports
included for the peers); "in-process" is what the contender timed itself around load + means (rowflow:
run.json seconds). Runs alternate between contenders (run k of each, then run k+1), so drift in machine load
hits all alike. Prints a Markdown section; --append FILE appends it.

Usage: python3 text/bench_text_peers.py --rowflow ../.build/release/rowflow [--rows 1000000] [--runs 3]
"""
import argparse, json, os, platform, random, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFESTS = os.path.join(HERE, "..", "manifests")

POLARS_CSV = """
import sys, time, json, polars as pl
t = time.perf_counter()
m = pl.scan_csv(sys.argv[1], has_header=False).mean().collect()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "means": [float(x) for x in m.row(0)], "version": "polars " + pl.__version__}))
"""
POLARS_ZST = """
import sys, time, json, polars as pl
t = time.perf_counter()
m = pl.read_csv(sys.argv[1], has_header=False).mean()   # polars' own zstd decoder (in memory), then parse
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "means": [float(x) for x in m.row(0)], "version": "polars " + pl.__version__}))
"""
PYARROW = """
import sys, time, json, pyarrow as pa, pyarrow.csv as csv, pyarrow.compute as pc
t = time.perf_counter()
tb = csv.read_csv(sys.argv[1], read_options=csv.ReadOptions(use_threads=sys.argv[2] == "1", autogenerate_column_names=True))
means = [pc.mean(c).as_py() for c in tb.columns]
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "means": means, "version": "pyarrow " + pa.__version__}))
"""
SKLEARN = """
import sys, time, json, numpy as np, sklearn
from sklearn.datasets import load_svmlight_file
t = time.perf_counter()
X, y = load_svmlight_file(sys.argv[1], n_features=100)
means = np.asarray(X.mean(axis=0)).ravel().tolist()
s = time.perf_counter() - t
print(json.dumps({"seconds": s, "means": means, "version": "scikit-learn " + sklearn.__version__}))
"""


def run(argv, env=None):
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    # ru_maxrss of the child that just ended (wait4 already reaped it: use the process's RUSAGE_CHILDREN delta).
    return p.returncode, wall, out.decode(), err.decode()


def rss_of(argv, env=None):
    """Wall seconds and peak RSS (MiB) of one run, via /usr/bin/time."""
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, capture_output=True, env=env)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{p.stderr.decode()[-2000:]}")
    rss = int(p.stderr.decode().strip().splitlines()[-1]) / 1024
    return wall, rss, p.stdout.decode()


class Contender:
    def __init__(self, name, argv, env=None, out_dir=None):
        self.name, self.argv, self.env, self.out_dir = name, argv, env, out_dir
        self.walls, self.inproc, self.rss, self.means, self.version = [], [], [], None, None

    def once(self):
        wall, rss, out = rss_of(self.argv, self.env)
        self.walls.append(wall)
        self.rss.append(rss)
        if self.out_dir:
            with open(os.path.join(self.out_dir, "run.json")) as f:
                rj = json.load(f)
            self.inproc.append(rj["seconds"])
            self.version = "rowflow " + rj["version"] + ", blas_core " + rj["blas_core"]
            self.means = read_npy(os.path.join(self.out_dir, "m", "mean.npy"))
        else:
            j = json.loads(out.strip().splitlines()[-1])
            self.inproc.append(j["seconds"])
            self.means, self.version = j["means"], j["version"]


def read_npy(path):
    import numpy as np
    return np.load(path).tolist()


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def rowflow(bin_, name, manifest, data, tmp, env_extra=None, args=()):
    out = os.path.join(tmp, name.replace(" ", "_").replace("/", "_"))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **(env_extra or {}))
    return Contender(name, [bin_, "run", os.path.join(MANIFESTS, manifest), "--input", data, "--out", out,
                            "--progress", "never", *args], env=env, out_dir=out)


def peer(name, code, *args):
    return Contender(name, [sys.executable, "-c", code, *args])


def measure(group, runs):
    for k in range(runs):
        order = group[k % len(group):] + group[:k % len(group)]
        for c in order:
            c.once()


def check_means(ref, others):
    notes = []
    for c in others:
        if c.means is None or len(c.means) != len(ref.means):
            notes.append(f"{c.name}: {0 if c.means is None else len(c.means)} means, rowflow {len(ref.means)}")
            continue
        worst = max(abs(a - b) / (1 + abs(b)) for a, b in zip(c.means, ref.means))
        if worst > 1e-9:
            notes.append(f"{c.name}: means differ from rowflow's by {worst:.2e}")
    return notes


def table(group, ref):
    rows = ["| contender | wall s (median) | in-process s | peak RSS MiB | wall ÷ rowflow's |", "|---|--:|--:|--:|--:|"]
    for c in group:
        rows.append(f"| {c.name} | {median(c.walls):.2f} | {median(c.inproc):.2f} | {median(c.rss):.0f} | "
                    f"{median(c.walls) / median(ref.walls):.2f} |")
    return "\n".join(rows)


def gen_libsvm(path, rows, seed=1):
    """rows lines of `label i:v ...` with 20 sorted distinct indices of 1..100 and full-precision values."""
    import numpy as np
    rng = np.random.default_rng(seed)
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        chunk = 50_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            idx = np.sort(np.argsort(rng.random((n, 100)), axis=1)[:, :20], axis=1) + 1
            vals = rng.standard_normal((n, 20))
            labels = rng.standard_normal(n)
            lines = []
            for r in range(n):
                lines.append(repr(float(labels[r])) + " " + " ".join(f"{i}:{v!r}" for i, v in zip(idx[r].tolist(), vals[r].tolist())))
            f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rowflow", required=True)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "data"))
    ap.add_argument("--append")
    a = ap.parse_args()
    os.makedirs(a.data, exist_ok=True)
    bin_ = os.path.abspath(a.rowflow)
    n = a.rows
    csv = os.path.join(a.data, f"regression-{n}x15-s1.csv")
    small = os.path.join(a.data, f"regression-{n // 10}x15-s1.csv")
    zst = csv + ".zst"
    svm = os.path.join(a.data, f"libsvm-{n}x100-nnz20-s1.svm")
    if not os.path.exists(csv):
        subprocess.run([bin_, "gen", "regression", "--rows", str(n), "--cols", "15", "--seed", "1", "--format", "csv", "--out", csv + ".partial"], check=True)
        os.replace(csv + ".partial", csv)
    if not os.path.exists(small):
        with open(csv, "rb") as src, open(small + ".partial", "wb") as dst:
            for i, line in enumerate(src):
                if i == n // 10:
                    break
                dst.write(line)
        os.replace(small + ".partial", small)
    if not os.path.exists(zst):
        subprocess.run(["zstd", "-q", "-3", "-f", csv, "-o", zst + ".partial"], check=True)
        os.replace(zst + ".partial", zst)
    if not os.path.exists(svm):
        gen_libsvm(svm, n)

    tmp = tempfile.mkdtemp(prefix="rowflow-textbench-")
    load_before = os.getloadavg()
    groups = []
    g1 = [rowflow(bin_, "rowflow moments", "csv-moments.yaml", csv, tmp),
          rowflow(bin_, "rowflow moments, 1 parse thread", "csv-moments.yaml", csv, tmp, {"ROWFLOW_PARSE_THREADS": "1"}),
          peer("polars scan_csv().mean().collect()", POLARS_CSV, csv),
          peer("pyarrow.csv.read_csv (default threads) + means", PYARROW, csv, "1"),
          peer("pyarrow.csv.read_csv (use_threads=False) + means", PYARROW, csv, "0")]
    g2 = [rowflow(bin_, "rowflow moments (.csv.zst, streamed)", "csv-moments.yaml", zst, tmp),
          peer("polars read_csv(.csv.zst) + mean (own zstd, in memory)", POLARS_ZST, zst),
          peer("pyarrow.csv.read_csv(.csv.zst) + means (own zstd)", PYARROW, zst, "1")]
    g3 = [rowflow(bin_, "rowflow moments (libsvm)", "libsvm-moments.yaml", svm, tmp),
          peer("sklearn load_svmlight_file + means", SKLEARN, svm)]
    g4 = [rowflow(bin_, f"rowflow moments, {n // 10} rows", "csv-moments.yaml", small, tmp),
          rowflow(bin_, f"rowflow moments, {n} rows", "csv-moments.yaml", csv, tmp)]
    for g in (g1, g2, g3, g4):
        measure(g, a.runs)
    load_after = os.getloadavg()

    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                if l.startswith("Model name")), platform.processor())
    version = ", ".join(subprocess.run([bin_, "--version"], capture_output=True, text=True).stdout.strip().splitlines())
    mb = os.path.getsize(csv) / 1e6
    out = [f"## Text input against the best readers, {time.strftime('%Y-%m-%d')}", "",
           f"CPU: {cpu}, {os.cpu_count()} cores; `rowflow --version`: {version}. Load average before/after: "
           f"{load_before[0]:.2f} / {load_after[0]:.2f} (other sessions build here; a load near 2 slows every contender). "
           f"{a.runs} paired runs per contender, medians. Data: {n} rows × 16 full-precision doubles ({mb:.0f} MB CSV, "
           f"{os.path.getsize(zst) / 1e6:.0f} MB zstd -3); libsvm {n} rows × 20 of 100 features ({os.path.getsize(svm) / 1e6:.0f} MB).",
           "", "### CSV", "", table(g1, g1[0]), "", "### CSV, zstd-compressed", "", table(g2, g2[0]), "",
           "### libsvm", "", table(g3, g3[0]), "", "### Peak RSS as rows grow 10×", "", table(g4, g4[0]), "",
           f"RSS ratio (10× rows): {median(g4[1].rss) / median(g4[0].rss):.2f}."]
    notes = check_means(g1[0], g1[2:]) + check_means(g2[0], g2[1:]) + check_means(g3[0], g3[1:])
    out += ["", "Column means checked against rowflow's m/mean.npy (relative 1e-9): " + ("all agree." if not notes else "; ".join(notes))]
    versions = sorted({c.version for g in (g1, g2, g3) for c in g if c.version})
    out += ["", "Versions: " + "; ".join(versions) + "."]
    text = "\n".join(out) + "\n"
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)
        # The goals these runs check, into the ledger behind RESULTS.md's table.
        sys.path.insert(0, os.path.join(HERE, ".."))
        import goals
        w = lambda c: median(c.walls)
        goals.record("csv-1m-16-polars", "CSV 1M × 16 full-precision doubles: rowflow `moments` wall ≤ polars `scan_csv().mean().collect()`",
                     f"{w(g1[0]):.2f} s vs {w(g1[2]):.2f} s wall (load {load_before[0]:.2f})", w(g1[0]) <= w(g1[2]), rowflow=bin_)
        goals.record("csv-zst-polars", "same, .csv.zst (zstd decode included; polars `read_csv` with its own zstd, in memory)",
                     f"{w(g2[0]):.2f} s vs {w(g2[1]):.2f} s wall", w(g2[0]) <= w(g2[1]), rowflow=bin_)
        goals.record("libsvm-sklearn", "libsvm 1M rows × 20 nnz vs scikit-learn `load_svmlight_file` (C++ core)",
                     f"{w(g3[0]):.2f} s vs {w(g3[1]):.2f} s", w(g3[0]) < w(g3[1]), rowflow=bin_)
        r = median(g4[1].rss) / median(g4[0].rss)
        goals.record("text-rss-flat", "text peak RSS flat as rows grow 10× (CSV 10⁵ → 10⁶)", f"×{r:.2f}", r <= 1.10, rowflow=bin_)
        goals.write_table()


if __name__ == "__main__":
    main()
