"""Scale rowflow out on Apache Spark: every partition runs `rowflow run --shard k --state-out -` in a
subprocess, the task returns that one base64 line (its mergeable states) as its result, and the driver merges
the lines with `rowflow merge` into the output layout of one run (see SPARK.md).

Three inputs:
  * text (csv/tsv/libsvm lines):   `sc.textFile` -> partition lines piped into rowflow's stdin
  * raw f32/f64 or .zst files:     `sc.binaryFiles` -> each file's bytes piped into rowflow (rowflow detects
                                   and decompresses zstd itself, which Spark's pip build cannot)
  * Parquet columns:               `DataFrame.mapInArrow` -> Arrow batches streamed row-major as float32
                                   (or float64) into rowflow

Traps of `RDD.pipe` this module closes (PySpark's `pipe` is a `mapPartitions` around `subprocess.Popen`, so
this is the same mechanism with the partition index added, which `pipe`'s fixed command cannot carry):
  * `pipe` reports success when the process exits non-zero unless `checkCode=True`: here every non-zero exit
    raises, with the exit code and rowflow's one-line error, so Spark retries the task or fails the job;
  * `pipe(env=...)` replaces the whole environment: here the task's environment is kept and PATH,
    LD_LIBRARY_PATH (the shipped libraries) and OPENBLAS_NUM_THREADS=1 are set on top of it;
  * a failed attempt's partial output is discarded: states travel only as the results of successful tasks
    (never as files a failed attempt could leave behind), and the driver merges exactly one per partition.
"""

from .core import (  # noqa: F401
    RowflowBinary,
    RowflowTaskError,
    binary_files_states,
    merge_on_driver,
    parquet_states,
    text_states,
    tree_merge,
)

__all__ = [
    "RowflowBinary",
    "RowflowTaskError",
    "binary_files_states",
    "merge_on_driver",
    "parquet_states",
    "text_states",
    "tree_merge",
]
