"""rowflow from Python on Parquet against pyarrow + numpy: a 10⁷-row × 32-column float64 Parquet file (snappy),
gram + moments.

Contenders, each in a fresh Python process (so each peak RSS is its own), median wall time of --runs runs taken
round-robin:
  * rowflow.run(manifest, input=file.parquet): the package reads the file row group by row group with pyarrow
    and streams raw float64 rows to the rowflow binary's stdin (two processes: Python's peak RSS and the
    binary's are reported apart, and their sum);
  * numpy, whole table: pyarrow.parquet.read_table, the columns copied into one float64 matrix X, X.T @ X,
    X.mean(0), X.var(0) — what a notebook does when the table fits in memory (one process);
  * numpy, by row group: the same per row group, Gram and sums accumulated — the streaming version one would
    write by hand (one process);
  * (floor) the rowflow CLI on the same rows stored as a raw .f64 file: the binary's own cost, no Parquet and
    no Python (the .f64 file, 2.56 GB, is written once beside the Parquet file).
Every contender's Gram is checked against the first's (relative difference printed).

Usage: python3 Benchmarks/python/bench_parquet.py [--rows 10000000] [--cols 32] [--runs 3]
       [--rowflow .build/release/rowflow] [--append Benchmarks/HISTORY.md]
Data go to Benchmarks/data/ (git-ignored), generated once (seeded) and reused. Needs numpy, pyarrow, pyyaml and
threadpoolctl (Benchmarks/requirements.txt) and a release binary: a debug build is ~10× slower.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH)
PACKAGE = os.path.join(REPO, "Integrations", "python")

ROWFLOW = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import numpy as np, rowflow
t = time.monotonic()
res = rowflow.run({"version": 1, "operators": [{"id": "g", "op": "gram"}, {"id": "m", "op": "moments"}]},
                  input=sys.argv[1], binary=sys.argv[2])
g = np.array(res["g"]["gram"])
wall = time.monotonic() - t
np.save(sys.argv[4], g)
print(json.dumps({"wall": wall, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "child_rss_kib": res.run.get("peak_rss_kib"), "rows": res.run["rows_read"],
                  "seconds_in_binary": res.run["seconds"], "blas_core": res.run.get("blas_core")}))
"""

CLI_RAW = r"""
import json, os, resource, subprocess, sys, time
import numpy as np
out = sys.argv[4] + ".run"
m = out + ".yaml"
with open(m, "w") as f:
    f.write(f"version: 1\nsource: {{ format: f64, columns: {sys.argv[5]} }}\noperators: [{{ id: g, op: gram }}, {{ id: m, op: moments }}]\n")
t = time.monotonic()
subprocess.run([sys.argv[2], "run", m, "--input", sys.argv[1][:-len(".parquet")] + ".f64", "--out", out,
                "--progress", "never"], check=True, env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
wall = time.monotonic() - t
run = json.load(open(os.path.join(out, "run.json")))
np.save(sys.argv[4], np.load(os.path.join(out, "g", "gram.npy")))
print(json.dumps({"wall": wall, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "child_rss_kib": run.get("peak_rss_kib"), "rows": run["rows_read"]}))
"""

NUMPY_WHOLE = r"""
import json, resource, sys, time
import numpy as np, pyarrow.parquet as pq
t = time.monotonic()
tab = pq.read_table(sys.argv[1])
x = np.empty((tab.num_rows, tab.num_columns))
for j in range(tab.num_columns):
    x[:, j] = tab.column(j).to_numpy()
del tab
g = x.T @ x
mean, var = x.mean(axis=0), x.var(axis=0)
wall = time.monotonic() - t
np.save(sys.argv[4], g)
print(json.dumps({"wall": wall, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rows": x.shape[0]}))
"""

NUMPY_STREAM = r"""
import json, resource, sys, time
import numpy as np, pyarrow.parquet as pq
t = time.monotonic()
pf = pq.ParquetFile(sys.argv[1])
d = pf.schema_arrow.__len__()
g = np.zeros((d, d)); s = np.zeros(d); s2 = np.zeros(d); n = 0
for rg in range(pf.num_row_groups):
    tab = pf.read_row_group(rg)
    x = np.empty((tab.num_rows, d))
    for j in range(d):
        x[:, j] = tab.column(j).to_numpy()
    g += x.T @ x; s += x.sum(axis=0); s2 += (x * x).sum(axis=0); n += x.shape[0]
mean = s / n; var = s2 / n - mean ** 2
wall = time.monotonic() - t
np.save(sys.argv[4], g)
print(json.dumps({"wall": wall, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rows": n}))
"""


def make_data(path: str, rows: int, cols: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    names = [f"x{j}" for j in range(cols)]
    step = 1_000_000
    tmp = path + ".tmp"
    with pq.ParquetWriter(tmp, pa.schema([(n, pa.float64()) for n in names]), compression="snappy") as w:
        for start in range(0, rows, step):
            n = min(step, rows - start)
            x = rng.standard_normal((n, cols)) * (1 + np.arange(cols) / cols)
            w.write_table(pa.table({nm: x[:, j] for j, nm in enumerate(names)}), row_group_size=step)
    os.replace(tmp, path)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def system_openblas_core() -> str:
    """The kernel the system OpenBLAS (the one rowflow links) picks on this CPU."""
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return f"{lib.openblas_get_corename().decode()} ({lib.openblas_get_config().decode()})"
        except (OSError, AttributeError):
            continue
    return "?"


def numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info

        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}, "
                         f"{i.get('num_threads')} threads" for i in infos) or "?"
    except ImportError:
        return "? (threadpoolctl not installed)"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--cols", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rowflow", default=os.path.join(REPO, ".build", "release", "rowflow"))
    ap.add_argument("--append", help="append the markdown section to this file")
    a = ap.parse_args()
    rows, cols = int(a.rows), a.cols
    rowflow = os.path.abspath(a.rowflow)
    import numpy as np

    data = os.path.join(BENCH, "data")
    os.makedirs(data, exist_ok=True)
    path = os.path.join(data, f"parquet-{rows}x{cols}-f64-snappy.parquet")
    if not os.path.exists(path):
        t = time.monotonic()
        make_data(path, rows, cols)
        print(f"generated {path} in {time.monotonic() - t:.1f} s", file=sys.stderr)
    raw = path[:-len(".parquet")] + ".f64"
    if not os.path.exists(raw):  # the same rows as raw float64, for the CLI contender (the binary's own cost)
        import pyarrow.parquet as pq

        with open(raw + ".tmp", "wb") as f:
            pf = pq.ParquetFile(path)
            for rg in range(pf.num_row_groups):
                t = pf.read_row_group(rg)
                np.stack([t.column(j).to_numpy() for j in range(t.num_columns)], axis=1).astype("<f8").tofile(f)
        os.replace(raw + ".tmp", raw)
    size_mb = os.path.getsize(path) / 1e6
    env = dict(os.environ)  # numpy keeps its default BLAS threads; rowflow.run sets the binary's (one)
    contenders = [("rowflow.run(input=file.parquet), gram + moments", ROWFLOW),
                  ("numpy: pyarrow read_table → X (n×d) → X.T @ X, mean, var", NUMPY_WHOLE),
                  ("numpy by row group: pyarrow read_row_group → Σ XᵢᵀXᵢ, sums", NUMPY_STREAM),
                  ("(floor) rowflow run CLI on the same rows as a raw .f64 file", CLI_RAW)]
    results = {name: [] for name, _ in contenders}
    grams = {}
    load0 = os.getloadavg()
    for run in range(a.runs):
        for k, (name, script) in enumerate(contenders):
            gpath = os.path.join(data, f"bench-parquet-gram-{k}.npy")
            r = subprocess.run([sys.executable, "-c", script, path, rowflow, PACKAGE, gpath, str(cols)], capture_output=True,
                               text=True, env=env)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            m = json.loads(r.stdout)
            assert m["rows"] == rows, m
            results[name].append(m)
            grams[name] = np.load(gpath)
            print(f"run {run + 1}: {name}: {m['wall']:.2f} s, {m['rss_kib'] / 1024:.0f} MiB", file=sys.stderr)
    load1 = os.getloadavg()
    ref = grams[contenders[0][0]]
    first = results[contenders[0][0]][0]
    lines = [f"## Python package: Parquet {rows:,} rows × {cols} float64 (snappy), gram + moments "
             f"({datetime.datetime.now(datetime.timezone.utc).strftime('%a %b %d %H:%M:%S UTC %Y')})", "",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}; load average "
             f"{' '.join(f'{x:.2f}' for x in load0)} at start, {' '.join(f'{x:.2f}' for x in load1)} at end",
             f"- rowflow {rowflow}; its BLAS: system OpenBLAS, kernel {first.get('blas_core') or system_openblas_core()}, "
             "one thread (rowflow's own two threads: decode beside compute)",
             f"- numpy {np.__version__}, BLAS {numpy_blas()}; pyarrow {__import__('pyarrow').__version__}; "
             f"Python {platform.python_version()}",
             f"- input: {path.replace(REPO + os.sep, '')} ({size_mb:,.0f} MB, {rows // 1_000_000} row groups of 10⁶ rows, "
             f"page-cached); each contender a fresh process, median of {a.runs} runs round-robin; "
             "script `Benchmarks/python/bench_parquet.py`", "",
             "| contender | wall s (median) | min–max | rows/s | peak RSS MiB (Python) | peak RSS MiB (rowflow binary) | Gram vs rowflow's (rel.) |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for name, _ in contenders:
        ms = results[name]
        walls = [m["wall"] for m in ms]
        med = statistics.median(walls)
        rss = max(m["rss_kib"] for m in ms) / 1024
        child = max((m.get("child_rss_kib") or 0) for m in ms) / 1024
        diff = float(np.max(np.abs(grams[name] - ref)) / np.max(np.abs(ref)))
        lines.append(f"| {name} | {med:.2f} | {min(walls):.2f}–{max(walls):.2f} | {rows / med:,.0f} | {rss:,.0f} | "
                     f"{f'{child:,.0f}' if child else '—'} | {diff:.1e} |")
    lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.append:
        with open(a.append, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
