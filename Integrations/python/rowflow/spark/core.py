"""The per-partition subprocess, the three inputs and the two ways to merge. See the package docstring."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

#: Every base64 state blob starts with these characters (the base64 of the magic "RFBLOB01").
BLOB_PREFIX = "UkZCTE9C"

#: (shards covered, one base64 state blob line): what each successful task returns.
States = Tuple[Tuple[int, ...], str]


class RowflowTaskError(RuntimeError):
    """rowflow exited non-zero (or printed something that is not one state blob) for one shard. The message
    carries the exit code (64 usage/manifest, 65 bad data, 66 not found, 74 I/O, 70 internal)
    and rowflow's one-line error, so that the Spark job failure says why."""

    def __init__(self, shard: object, code: int, detail: str):
        self.shard = shard
        self.code = code
        self.detail = detail
        super().__init__(f"rowflow exited with exit code {code} on shard {shard}: {detail}")


@dataclass
class RowflowBinary:
    """Where the rowflow executable (and, when shipped with `--archives`, its libraries) is on the machine
    that runs it.

    `path`: an absolute path (local mode, or a binary installed on every node), a name on PATH, or a path
    relative to where Spark unpacks archives — e.g. with `--archives rowflow-linux.tar.gz#rowflow` use
    `path="rowflow/bin/rowflow", lib_dir="rowflow/lib"`. Relative paths are tried against the task's working
    directory (YARN) and then SparkFiles' root directory (standalone, Kubernetes, local).
    `env`: extra variables for the subprocess (the task's own environment is kept underneath)."""

    path: str = "rowflow"
    lib_dir: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)

    def resolve(self) -> Tuple[str, Dict[str, str]]:
        exe = _locate(self.path, executable=True)
        if not os.access(exe, os.X_OK):
            # Spark unpacks --archives without file modes (the executable bit is lost); the unpacked copy is the
            # task's own, so restore it.
            try:
                os.chmod(exe, os.stat(exe).st_mode | 0o111)
            except OSError as e:
                raise PermissionError(f"rowflow.spark: {exe} is not executable and cannot be made so: {e}") from e
        env = dict(os.environ)
        env.update(self.env)
        # The trap of pipe(env=...): a replaced environment loses PATH and the library path. Keep the task's
        # environment and put the binary's directory and its shipped libraries in front.
        env["PATH"] = os.pathsep.join([os.path.dirname(exe), env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
        if self.lib_dir:
            lib = _locate(self.lib_dir, executable=False)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [lib, env.get("LD_LIBRARY_PATH", "")] if p)
        # rowflow keeps BLAS single-threaded; saying so spares it a re-exec.
        env["OPENBLAS_NUM_THREADS"] = "1"
        return exe, env


def _locate(p: str, executable: bool) -> str:
    if os.path.isabs(p):
        if os.path.exists(p):
            return p
        raise FileNotFoundError(f"rowflow.spark: {p} does not exist on this node")
    candidates = [os.path.abspath(p)]
    try:
        from pyspark import SparkFiles

        candidates.append(os.path.join(SparkFiles.getRootDirectory(), p))
    except Exception:  # no SparkContext in this process (driver-side use, plain scripts)
        pass
    for c in candidates:
        if os.path.exists(c):
            return c
    if executable and os.sep not in p:
        found = shutil.which(p)
        if found:
            return found
    raise FileNotFoundError(
        f"rowflow.spark: {p} not found (looked in {', '.join(candidates)}"
        + (" and PATH" if executable else "")
        + "); ship it with --archives and give the path inside the archive"
    )


def _manifest_path(manifest: str) -> str:
    """The manifest on this node: the path as given when it exists here, else the file shipped with
    `--files` (SparkFiles)."""
    if os.path.exists(manifest):
        return os.path.abspath(manifest)
    try:
        from pyspark import SparkFiles

        shipped = SparkFiles.get(os.path.basename(manifest))
        if os.path.exists(shipped):
            return shipped
    except Exception:
        pass
    raise FileNotFoundError(f"rowflow.spark: manifest {manifest} not found on this node; ship it with --files")


def run_shard(
    binary: RowflowBinary,
    manifest: str,
    shard: int,
    feed: Callable[[Callable[[bytes], None]], None],
    seed: int = 0,
    extra_args: Sequence[str] = (),
) -> str:
    """Runs `rowflow run <manifest> --input - --shard <shard> --state-out -`, feeding its stdin with `feed`
    (called with a write function, on this thread: Spark's iterators stay on the task's thread), and returns
    the one base64 state blob line. Raises `RowflowTaskError` with the exit code and rowflow's last stderr
    line when it exits non-zero or prints anything but one blob line — the checkCode=True that RDD.pipe
    lacks by default. Cost: one pipe copy of the partition's bytes; memory: the blob (bounded by the
    operators' states, not by the rows)."""
    exe, env = binary.resolve()
    cmd = [exe, "run", _manifest_path(manifest), "--input", "-", "--shard", str(shard), "--seed", str(seed),
           "--state-out", "-", "--progress", "never", *extra_args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out: List[bytes] = []
    err: List[bytes] = []
    readers = [threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    broken = False

    def write(b: bytes) -> None:
        nonlocal broken
        if broken or not b:
            return
        try:
            proc.stdin.write(b)
        except BrokenPipeError:
            # rowflow stopped reading (it failed on a bad row): the exit code below says why.
            broken = True

    try:
        feed(write)
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        for t in readers:
            t.join()
    stderr_text = b"".join(err).decode("utf-8", "replace").strip()
    last = stderr_text.splitlines()[-1] if stderr_text else "(no message on stderr)"
    if code != 0:
        raise RowflowTaskError(shard, code, last)
    text = b"".join(out).decode("ascii", "replace")
    lines = text.splitlines()
    if len(lines) != 1 or not lines[0].startswith(BLOB_PREFIX):
        raise RowflowTaskError(shard, code, f"expected one state blob line on stdout, got {len(lines)} lines ({text[:60]!r}…)")
    return lines[0]


def _lines_feeder(lines: Iterable[bytes], chunk: int = 1 << 16) -> Callable[[Callable[[bytes], None]], None]:
    def feed(write: Callable[[bytes], None]) -> None:
        buf: List[bytes] = []
        size = 0
        for line in lines:
            if isinstance(line, str):
                line = line.encode("utf-8")
            buf.append(line)
            buf.append(b"\n")
            size += len(line) + 1
            if size >= chunk:
                write(b"".join(buf))
                buf, size = [], 0
        write(b"".join(buf))

    return feed


def text_states(sc, path, manifest: str, binary: RowflowBinary, partitions: Optional[int] = None, seed: int = 0):
    """Text input (csv, tsv, libsvm): `sc.textFile(path)` (or an RDD of lines), partition k piped into
    `rowflow run --shard k`. Returns an RDD of `States`, one per partition (empty partitions give empty
    blobs, which merge skips). Spark's pip build reads plain text and gzip/bz2 but not .zst: for .zst shards use
    `binary_files_states`."""
    rdd = sc.textFile(path, minPartitions=partitions, use_unicode=False) if isinstance(path, str) else path

    def task(k: int, lines: Iterator[bytes]) -> Iterator[States]:
        yield (k,), run_shard(binary, manifest, k, _lines_feeder(lines), seed=seed)

    return rdd.mapPartitionsWithIndex(task)


def list_files(sc, path: str) -> List[str]:
    """The data files under `path` (a file, a directory or a glob), fully qualified as `binaryFiles` names
    them, in bytewise name order, skipping names that start with `.` or `_` (as rowflow and Hadoop do)."""
    jvm = sc._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(sc._jsc.hadoopConfiguration())
    statuses = fs.globStatus(hpath) or []
    files: List[str] = []
    for st in statuses:
        if st.isDirectory():
            files += [s.getPath().toString() for s in fs.listStatus(st.getPath()) if s.isFile()]
        else:
            files.append(st.getPath().toString())
    files = [f for f in files if not os.path.basename(f).startswith((".", "_"))]
    return sorted(set(files), key=lambda f: f.encode("utf-8"))


def _canonical(uri: str) -> str:
    # binaryFiles and FileSystem.listStatus agree on the path; only the spelling of a local scheme differs.
    for prefix in ("file://", "file:"):
        if uri.startswith(prefix):
            return "/" + uri[len(prefix):].lstrip("/")
    return uri


def binary_files_states(sc, path: str, manifest: str, binary: RowflowBinary, partitions: Optional[int] = None, seed: int = 0):
    """Raw f32/f64 or zstd-compressed shard files (any format rowflow reads from bytes): `sc.binaryFiles`,
    file i (bytewise name order) piped whole into `rowflow run --shard i`, which detects and decompresses
    zstd itself. One `States` per file. Memory: Spark hands Python each file whole, so keep shard files to a
    few hundred MB."""
    files = list_files(sc, path)
    if not files:
        raise FileNotFoundError(f"rowflow.spark: no data files under {path}")
    shard_of = {_canonical(f): i for i, f in enumerate(files)}
    rdd = sc.binaryFiles(path, minPartitions=partitions)

    def task(items: Iterator[Tuple[str, bytes]]) -> Iterator[States]:
        for name, data in items:
            k = shard_of.get(_canonical(name))
            if k is None:
                raise RuntimeError(f"rowflow.spark: {name} was not in the driver's file listing of {path}")
            yield (k,), run_shard(binary, manifest, k, lambda write: write(bytes(data)), seed=seed)

    return rdd.mapPartitions(task)


def parquet_states(df, columns: Sequence[str], manifest: str, binary: RowflowBinary, seed: int = 0, dtype: str = "f32"):
    """Parquet (any DataFrame) columns: `df.select(columns).mapInArrow`, each Arrow batch converted to a
    row-major little-endian float32 (`dtype="f64"`: float64) block and streamed into `rowflow run --shard k`
    (k = the partition id). The manifest must say `format: f32` (or f64) and `columns: len(columns)`. Nulls
    become NaN, which rowflow rejects as a bad value (exit 65) unless the manifest allows non-finite values.
    Returns an RDD of `States`, one per partition."""
    import numpy as np
    import pyarrow as pa

    np_type = {"f32": "<f4", "f64": "<f8"}[dtype]
    cols = list(columns)

    def task(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        from pyspark import TaskContext

        k = TaskContext.get().partitionId()

        def feed(write: Callable[[bytes], None]) -> None:
            for b in batches:
                if b.num_rows == 0:
                    continue
                block = np.empty((b.num_rows, len(cols)), dtype=np_type)
                for j in range(len(cols)):
                    block[:, j] = b.column(j).to_numpy(zero_copy_only=False)
                write(block.tobytes())

        line = run_shard(binary, manifest, k, feed, seed=seed)
        yield pa.RecordBatch.from_pydict({"shard": [k], "blob": [line]})

    out = df.select(*cols).mapInArrow(task, "shard long, blob string")
    return out.rdd.map(lambda r: ((int(r["shard"]),), r["blob"]))


def _rowflow_merge(binary: RowflowBinary, manifest: str, lines: Sequence[str], out: Optional[str],
                   state_out: bool) -> str:
    exe, env = binary.resolve()
    with tempfile.TemporaryDirectory(prefix="rowflow-merge-") as tmp:
        blobs = os.path.join(tmp, "blobs.txt")
        with open(blobs, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        cmd = [exe, "merge", _manifest_path(manifest), blobs]
        if out is not None:
            cmd += ["--out", out]
        if state_out:
            cmd += ["--state-out", "-"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if r.returncode != 0:
        err = r.stderr.decode("utf-8", "replace").strip()
        raise RowflowTaskError("merge", r.returncode, err.splitlines()[-1] if err else "(no message on stderr)")
    return r.stdout.decode("ascii").strip()


def _check_unique(states: Sequence[States]) -> None:
    seen: Dict[int, int] = {}
    for i, (shards, _) in enumerate(states):
        for k in shards:
            if k in seen:
                raise RuntimeError(f"rowflow.spark: shard {k} returned twice (results {seen[k]} and {i})")
            seen[k] = i


def merge_on_driver(states: Sequence[States], manifest: str, out: str, binary: RowflowBinary) -> None:
    """`rowflow merge` on the driver over the collected lines, in shard order (so the result is reproducible):
    writes the layout of one run to `out`, including the operators downstream of a merged sampler."""
    states = sorted(states, key=lambda s: s[0])
    _check_unique(states)
    _rowflow_merge(binary, manifest, [line for _, line in states], out, state_out=False)


def tree_merge(states_rdd, manifest: str, binary: RowflowBinary, depth: int = 2) -> States:
    """`treeReduce` through `rowflow merge --state-out -`: partial merges run on the executors, so the driver
    receives one blob however many partitions there are. Pass the result to `merge_on_driver` to write the
    output layout. Sums (gram, moments) agree with a flat merge to rounding; sketches stay within their
    bounds, but the reduction order Spark picks may vary between runs."""

    def merge_pair(a: States, b: States) -> States:
        first, second = sorted([a, b], key=lambda s: s[0])
        overlap = set(first[0]) & set(second[0])
        if overlap:
            raise RuntimeError(f"rowflow.spark: shards {sorted(overlap)} met twice in a tree merge")
        line = _rowflow_merge(binary, manifest, [first[1], second[1]], None, state_out=True)
        return tuple(sorted(first[0] + second[0])), line

    return states_rdd.treeReduce(merge_pair, depth=depth)
