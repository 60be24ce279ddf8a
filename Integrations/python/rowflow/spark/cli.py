"""`rowflow-spark` (or `python -m rowflow.spark`): run a manifest over text, binary shard files or Parquet columns on Spark and write
the merged output layout of one run. Prints one JSON line of timings on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from .core import RowflowBinary, binary_files_states, merge_on_driver, parquet_states, text_states, tree_merge


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rowflow-spark", description=__doc__)
    p.add_argument("manifest", help="pipeline manifest (ship it with --files when executors do not share the path)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", metavar="PATH", help="csv/tsv/libsvm text (sc.textFile; plain, gzip or bz2)")
    src.add_argument("--binary-files", metavar="PATH", help="raw f32/f64 or .zst shard files (sc.binaryFiles), one shard per file")
    src.add_argument("--parquet", metavar="PATH", help="Parquet (spark.read.parquet), with --columns")
    p.add_argument("--columns", help="Parquet: comma-separated columns, in the manifest's order (target included)")
    p.add_argument("--dtype", choices=["f32", "f64"], default="f32", help="Parquet: what is streamed (the manifest's format)")
    p.add_argument("--out", required=True, help="output directory of the merged run (on the driver)")
    p.add_argument("--partitions", type=int, help="minimum partitions (text, binary files)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--master", help="Spark master when not started by spark-submit (e.g. local[2])")
    p.add_argument("--rowflow", default="rowflow", help="rowflow on the executors: a path, or the path inside --archives (e.g. rowflow/bin/rowflow)")
    p.add_argument("--lib-dir", help="libraries on the executors (e.g. rowflow/lib inside --archives)")
    p.add_argument("--driver-rowflow", help="rowflow on the driver, for the merge (default: --rowflow)")
    p.add_argument("--driver-lib-dir", help="libraries on the driver (default: --lib-dir)")
    p.add_argument("--tree-depth", type=int, default=0, help="merge through treeReduce with this depth (≥ 2) instead of on the driver")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    a = parser().parse_args(argv)
    if a.parquet and not a.columns:
        parser().error("--parquet needs --columns")
    from pyspark.sql import SparkSession

    t0 = time.monotonic()
    b = SparkSession.builder.appName("rowflow")
    if a.master:
        b = b.master(a.master)
    spark = b.getOrCreate()
    sc = spark.sparkContext
    t1 = time.monotonic()
    executor = RowflowBinary(a.rowflow, a.lib_dir)
    driver = RowflowBinary(a.driver_rowflow or a.rowflow, a.driver_lib_dir or a.lib_dir)
    if a.text:
        states = text_states(sc, a.text, a.manifest, executor, partitions=a.partitions, seed=a.seed)
    elif a.binary_files:
        states = binary_files_states(sc, a.binary_files, a.manifest, executor, partitions=a.partitions, seed=a.seed)
    else:
        df = spark.read.parquet(a.parquet)
        states = parquet_states(df, [c.strip() for c in a.columns.split(",")], a.manifest, executor, seed=a.seed, dtype=a.dtype)
    if a.tree_depth >= 2:
        collected = [tree_merge(states, a.manifest, executor, depth=a.tree_depth)]
    else:
        collected = states.collect()
    t2 = time.monotonic()
    merge_on_driver(collected, a.manifest, a.out, driver)
    t3 = time.monotonic()
    print(json.dumps({"out": a.out, "partials": len(collected), "startup_s": round(t1 - t0, 3),
                      "job_s": round(t2 - t1, 3), "merge_s": round(t3 - t2, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
