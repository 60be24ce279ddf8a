"""Spark against one `rowflow run`: wall time of a 10⁷-row job (gram + moments on float32 rows) on local[N],
Spark's start-up timed apart, with the merged Gram checked against the single run's (1e-12 relative).

Contenders, each on the same rows:
  * rowflow run on the whole file (one process; default 2 threads: decode beside compute);
  * the same shard files as parallel `rowflow run --shard k --state-out` processes (xargs -P N) + `rowflow merge`:
    what Spark adds on top of plain processes;
  * Spark local[N]: binaryFiles over the shard files → rowflow per file → merge on the driver (rowflow.spark).
    Start-up (SparkSession + a first trivial job) is timed once; the job is timed `--repeat` times in that
    session (the first job also pays the Python workers' start).

Usage: python3 Benchmarks/spark/bench_spark.py [--rows 10000000] [--cols 32] [--shards 8] [--master local[2]]
       [--rowflow .build/release/rowflow] [--work /tmp/rowflow-spark-bench] [--repeat 3] [--append Benchmarks/HISTORY.md]
Needs the packages of Integrations/python/requirements.txt and java.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "Integrations", "python"))
os.environ["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "Integrations", "python"), os.environ.get("PYTHONPATH", "")])
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def timed(fn):
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--cols", type=int, default=32)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--rowflow", default=os.path.join(REPO, ".build", "release", "rowflow"))
    ap.add_argument("--work", default="/tmp/rowflow-spark-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--append", help="append the markdown section to this file")
    a = ap.parse_args()
    rowflow = os.path.abspath(a.rowflow)
    import numpy as np

    os.makedirs(a.work, exist_ok=True)
    parts = os.path.join(a.work, f"parts-{a.rows}x{a.cols}-{a.shards}")
    whole = os.path.join(a.work, f"all-{a.rows}x{a.cols}.f32")
    manifest = os.path.join(a.work, "gram-moments.yaml")
    with open(manifest, "w") as f:
        f.write(f"version: 1\nsource: {{ format: f32, columns: {a.cols} }}\noperators:\n"
                "  - { id: g, op: gram }\n  - { id: m, op: moments }\n")
    if not os.path.isdir(parts) or not os.path.exists(whole):
        shutil.rmtree(parts, ignore_errors=True)
        os.makedirs(parts)
        per = [a.rows // a.shards + (1 if k < a.rows % a.shards else 0) for k in range(a.shards)]
        for k, n in enumerate(per):
            sh([rowflow, "gen", "spectrum", "--rows", str(n), "--cols", str(a.cols), "--seed", str(k + 1),
                "--format", "f32", "--out", os.path.join(parts, f"part-{k:05d}.f32")])
        with open(whole, "wb") as out:
            for k in range(a.shards):
                with open(os.path.join(parts, f"part-{k:05d}.f32"), "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
    size_mb = os.path.getsize(whole) / 1e6
    load0 = os.getloadavg()

    # 1. One rowflow run.
    single_out = os.path.join(a.work, "single")
    single = [timed(lambda: sh([rowflow, "run", manifest, "--input", whole, "--out", single_out, "--progress", "never"]))
              for _ in range(a.repeat)]

    # 2. Parallel processes, no Spark.
    procs_out = os.path.join(a.work, "procs")
    os.makedirs(procs_out, exist_ok=True)
    n_par = int(a.master[a.master.index("[") + 1:].split("]")[0].split(",")[0]) if "[" in a.master else 2

    def processes():
        script = (f'for k in $(seq 0 {a.shards - 1}); do echo $k; done | xargs -P {n_par} -I{{}} sh -c '
                  f'\'"{rowflow}" run "{manifest}" --input "{parts}/part-$(printf %05d {{}}).f32" --shard {{}} '
                  f'--state-out "{procs_out}/{{}}.blob" --progress never\'')
        sh(["bash", "-c", script])
        sh([rowflow, "merge", manifest] + [os.path.join(procs_out, f"{k}.blob") for k in range(a.shards)]
           + ["--out", os.path.join(a.work, "procs-merged")])

    procs = [timed(processes) for _ in range(a.repeat)]

    # 3. Spark.
    from pyspark.sql import SparkSession
    from rowflow.spark import RowflowBinary, binary_files_states, merge_on_driver

    t0 = time.monotonic()
    spark = (SparkSession.builder.master(a.master).appName("rowflow-bench").config("spark.ui.enabled", "false")
             .config("spark.driver.memory", "4g").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark.sparkContext.parallelize([1], 1).count()
    startup = time.monotonic() - t0
    binary = RowflowBinary(rowflow)
    spark_out = os.path.join(a.work, "spark-merged")
    jobs, merges = [], []
    for _ in range(a.repeat):
        t = time.monotonic()
        states = binary_files_states(spark.sparkContext, parts, manifest, binary, partitions=a.shards).collect()
        t1 = time.monotonic()
        merge_on_driver(states, manifest, spark_out, binary)
        jobs.append(time.monotonic() - t)
        merges.append(time.monotonic() - t1)
    spark.stop()
    load1 = os.getloadavg()

    g1 = np.load(os.path.join(single_out, "g", "gram.npy"))
    err = float(np.max(np.abs(np.load(os.path.join(spark_out, "g", "gram.npy")) - g1)) / np.max(np.abs(g1)))
    err_p = float(np.max(np.abs(np.load(os.path.join(a.work, "procs-merged", "g", "gram.npy")) - g1)) / np.max(np.abs(g1)))
    assert err < 1e-12 and err_p < 1e-12, (err, err_p)
    with open(os.path.join(spark_out, "run.json")) as f:
        assert json.load(f)["rows_read"] == a.rows

    med = statistics.median
    rng = lambda xs: f"{min(xs):.2f}–{max(xs):.2f}"
    import pyspark

    lines = [
        f"## Spark: {a.rows:,} rows × {a.cols} float32, gram + moments ({datetime.datetime.now(datetime.timezone.utc):%a %b %d %H:%M:%S UTC %Y})",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {cpu_model()}; load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} at start, "
        f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} at end",
        f"- rowflow {rowflow}; PySpark {pyspark.__version__} on {a.master}, Java {sh(['java', '-version']).stderr.splitlines()[0]}",
        f"- input: {a.shards} raw f32 shard files ({size_mb:.0f} MB in all, page-cached) and their concatenation for the single run; "
        f"median of {a.repeat} runs; script `Benchmarks/spark/bench_spark.py`",
        "",
        "| contender | wall s (median) | min–max | rows/s | ÷ single run |",
        "|---|--:|--:|--:|--:|",
        f"| rowflow run, one process | {med(single):.2f} | {rng(single)} | {a.rows / med(single):,.0f} | 1.00 |",
        f"| {a.shards} shard processes (xargs -P {n_par}) + rowflow merge | {med(procs):.2f} | {rng(procs)} | {a.rows / med(procs):,.0f} | {med(procs) / med(single):.2f} |",
        f"| Spark {a.master} job: binaryFiles → rowflow per file → driver merge | {med(jobs):.2f} | {rng(jobs)} | {a.rows / med(jobs):,.0f} | {med(jobs) / med(single):.2f} |",
        f"| Spark start-up (SparkSession + first trivial job), once | {startup:.2f} | — | — | {startup / med(single):.2f} |",
        f"| Spark start-up + job | {startup + med(jobs):.2f} | — | {a.rows / (startup + med(jobs)):,.0f} | {(startup + med(jobs)) / med(single):.2f} |",
        "",
        f"Driver merge of {a.shards} blobs: {med(merges):.3f} s (median). Merged Gram vs the single run: {err:.1e} relative "
        f"(processes: {err_p:.1e}); rows_read = {a.rows:,}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.append:
        with open(a.append, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
