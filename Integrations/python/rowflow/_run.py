"""`rowflow.run`: the binary as a child process, rows streamed to its stdin from a writer thread."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import warnings
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ._data import F32, Source, from_data, from_parquet, is_parquet
from ._errors import RowflowError, RowflowWarning
from ._manifest import Manifest, load_manifest, references_names, used_columns, write_manifest
from ._result import Result, _last_error

#: Bytes per block written to the pipe: bounds the writer's memory (one block being built, one in the pipe).
BLOCK_BYTES = 4 << 20
_F_SETPIPE_SZ = 1031  # Linux fcntl: grow the pipe's buffer (fewer wake-ups per byte)


def find_binary(binary: Optional[str] = None) -> str:
    """The rowflow executable: `binary` if given, else $ROWFLOW_BIN, else `rowflow` on PATH.

    Example:
        >>> rowflow.find_binary()          # after make install
        '/usr/local/bin/rowflow'
    """
    for where, b in (("binary=", binary), ("$ROWFLOW_BIN", os.environ.get("ROWFLOW_BIN"))):
        if b:
            b = os.fspath(b)
            found = b if os.sep in b else shutil.which(b)
            if found and os.path.isfile(found) and os.access(found, os.X_OK):
                return os.path.abspath(found)
            raise RowflowError(127, f"rowflow: error: {where} {b}: not an executable file")
    found = shutil.which("rowflow")
    if not found:
        raise RowflowError(127, "rowflow: error: no rowflow binary: pass binary=, set $ROWFLOW_BIN or put rowflow on "
                                "PATH (make install puts it in /usr/local/bin)")
    return os.path.abspath(found)


_names_support: Dict[Tuple[str, int, int], bool] = {}


def supports_names(exe: str) -> bool:
    """Whether this binary accepts `source.names` (asked once per binary file, by `rowflow validate`)."""
    st = os.stat(exe)
    key = (exe, st.st_mtime_ns, st.st_size)
    if key not in _names_support:
        with tempfile.TemporaryDirectory(prefix="rowflow-probe-") as d:
            m = write_manifest({"version": 1, "source": {"format": "f64", "columns": 1, "names": ["a"]},
                                "operators": [{"id": "m", "op": "moments"}]}, os.path.join(d, "probe.yaml"))
            r = subprocess.run([exe, "validate", m], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=_child_env())
        _names_support[key] = r.returncode == 0
    return _names_support[key]


def _child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"  # rowflow keeps BLAS on one thread; saying so spares it a re-exec
    return env


class _Plan:
    """What is streamed: the source, the columns sent (all; unused non-numeric ones as zeros), the dtype."""

    def __init__(self, src: Source, m: Dict[str, Any]):
        self.src = src
        bad = [j for j, k in enumerate(src.kinds) if k not in ("f32", "f64")]
        self.used = used_columns(m, src.names, src.ncols) if bad else None
        used = self.used if self.used is not None else set(range(src.ncols))
        for j in sorted(used):
            if j in bad:
                col = f"'{src.names[j]}'" if src.names else str(j)
                reason = "it is the target, the weight, a group or a selected feature" if self.used is not None else \
                    "give source.select to leave non-numeric columns out"
                raise RowflowError(65, f"rowflow: error: {src.what}: column {col} ({src.kinds[j]}) is not numeric "
                                       f"and the manifest uses it ({reason})")
        self.format = F32 if src.ncols and all(src.kinds[j] == F32 for j in used) else "f64"
        self.dtype = np.dtype("<f4") if self.format == F32 else np.dtype("<f8")
        self.read = self.used  # Parquet reads only these (None: all)
        self.zero = set(bad)   # columns sent as zeros (not used by the manifest, not numeric)


def _fill_source(m: Dict[str, Any], plan: _Plan, send_names: bool) -> Dict[str, Any]:
    src = dict(m.get("source") or {})
    for k in ("format", "columns", "header"):
        src.pop(k, None)
    given = src.pop("names", None)
    out: Dict[str, Any] = {"format": plan.format, "columns": plan.src.ncols}
    if send_names and plan.src.names is not None:
        out["names"] = list(plan.src.names)
    elif given is not None:
        out["names"] = given  # the user's names for unnamed data (a numpy array)
    out.update(src)
    m = dict(m)
    m["source"] = out
    return m


def _write_rows(stdin, plan: _Plan, stop: threading.Event, error: List[BaseException]) -> None:
    """The writer thread: chunk → row-major little-endian blocks → the child's stdin. Stops at a broken pipe
    (the child exited: its exit code says why) or when `stop` is set; an exception is kept for the caller."""
    ncols, dtype = plan.src.ncols, plan.dtype
    names, kinds = plan.src.names, plan.src.kinds
    step = max(1, BLOCK_BYTES // max(1, ncols * dtype.itemsize))
    buf = None  # one block, reused: write() returns once the bytes are in the pipe
    try:
        chunks = plan.src.chunks(plan.read)
        k = -1
        while True:
            chunk = None  # drop the previous chunk before reading the next: one row group in memory, not two
            chunk = next(chunks, None)
            if chunk is None or stop.is_set():
                break
            k += 1
            if len(chunk.kinds) != ncols or (names is not None and chunk.names != names):
                raise RowflowError(65, f"rowflow: error: {plan.src.what}: chunk {k + 1} has columns "
                                       f"{chunk.names or len(chunk.kinds)}, the first had {names or ncols}")
            for j in range(ncols):
                if j not in plan.zero and chunk.kinds[j] != kinds[j] and (F32 in (chunk.kinds[j], kinds[j]) or
                                                                         chunk.kinds[j] not in ("f32", "f64")):
                    col = f"'{names[j]}'" if names else str(j)
                    raise RowflowError(65, f"rowflow: error: {plan.src.what}: chunk {k + 1}: column {col} is "
                                           f"{chunk.kinds[j]}, in the first chunk it was {kinds[j]}")
            n = chunk.num_rows
            if n == 0:
                continue
            whole = chunk.contiguous(dtype) if not plan.zero else None
            for start in range(0, n, step):
                if stop.is_set():
                    return
                stop_ = min(n, start + step)
                if whole is not None:
                    block = whole[start:stop_]
                else:
                    if buf is None:
                        buf = np.empty((step, ncols), dtype=dtype)
                    block = buf[:stop_ - start]
                    for j in range(ncols):
                        if j in plan.zero:
                            block[:, j] = 0
                        else:
                            block[:, j] = chunk.column(j, start, stop_, dtype)
                stdin.write(memoryview(block).cast("B"))
            whole = block = None
        if stop.is_set():
            return
        stdin.close()  # end of input: the child finishes the run
    except BrokenPipeError:
        _close_quietly(stdin)  # the child stopped reading: its exit code says why
    except BaseException as e:
        if stop.is_set():
            return  # interrupted or stopped by the caller: whatever failed after that does not matter
        # The user's iterable raised, or a chunk could not be converted: stdin stays open, so the child cannot
        # take the rows so far for the whole input; the caller stops it (SIGTERM) and raises this.
        error.append(e)


def _close_quietly(f) -> None:
    try:
        f.close()
    except (OSError, ValueError):
        pass


def _detach_stdin(proc: subprocess.Popen) -> None:
    """Closes the child's stdin under the writer's feet, safely: /dev/null takes the pipe's descriptor, so the
    child sees end of input at once and a write still in progress or to come goes nowhere."""
    if proc.stdin is None:
        return
    try:
        fd = proc.stdin.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, ValueError):
        pass


def run(manifest: Manifest, data: Any = None, *, input: "Optional[Union[str, os.PathLike[str]]]" = None,
        out: "Optional[Union[str, os.PathLike[str]]]" = None, seed: int = 0, shard: Optional[int] = None,
        binary: Optional[str] = None) -> Result:
    """Runs a rowflow pipeline and returns its outputs.

    Args:
        manifest: a manifest file (YAML) or a dict of the same schema.
        data: rows to stream — a numpy 2-D array, a pandas or polars DataFrame, a pyarrow Table, RecordBatch or
            RecordBatchReader, or an iterable of those (chunks of one schema). Streamed to the binary's stdin as
            raw little-endian float64 rows (float32 when every used column is float32), one block of ≤ 4 MiB at a
            time, with the manifest's source section filled in (`format`, `columns`, and `names` from a
            DataFrame's or Table's column names, so that `target: price` or `select: [a, b]` work).
        input: instead of `data`, a path: anything rowflow reads (csv, tsv, f32/f64, npy, libsvm, plain or zstd; a
            file or a folder of shards), passed to the binary as is; or a `.parquet` file or a folder of them,
            read row group by row group (only the columns the manifest uses) and streamed like `data`.
        out: the output directory; None: a temporary directory removed when the Result is garbage-collected.
        seed, shard: as `rowflow run --seed/--shard`.
        binary: the rowflow executable (default: $ROWFLOW_BIN, then `rowflow` on PATH).

    Returns:
        a Result: `res["ridge"]["solution"]` (numpy), `res["ridge"].summary`, `res.run`, `res.warnings`.

    Raises:
        RowflowError: the binary exited non-zero (`exit_code`, `message` = its one-line error), was killed, or
            a used column is not numeric (before any row is sent).
        KeyboardInterrupt: Ctrl-C (the binary gets SIGINT and stops; run.json says `interrupted`).

    Example:
        >>> import pandas as pd, rowflow
        >>> df = pd.DataFrame({"x1": [1.0, 2, 3, 4], "x2": [0.5, 1, 0, 2], "price": [3.1, 4.9, 6.2, 9.0]})
        >>> m = {"version": 1, "source": {"target": "price"},
        ...      "operators": [{"id": "ridge", "op": "gram", "params": {"solve": "ridge", "lambda": 0.1}}]}
        >>> rowflow.run(m, df)["ridge"]["solution"]
        array([2.05572512, 0.53549276])
    """
    if (data is None) == (input is None):
        raise TypeError("rowflow.run: give exactly one of data= (arrays, DataFrames, Arrow) and input= (a path)")
    exe = find_binary(binary)
    keep = None
    if out is None:
        keep = tempfile.TemporaryDirectory(prefix="rowflow-")
        out_dir = keep.name
    else:
        out_dir = os.path.abspath(os.fspath(out))
        os.makedirs(out_dir, exist_ok=True)

    src: Optional[Source] = None
    if data is not None:
        src = from_data(data)
    elif is_parquet(os.fspath(input)):
        src = from_parquet(os.fspath(input))
    elif not os.path.exists(os.fspath(input)):
        raise RowflowError(66, f"rowflow: error: {os.fspath(input)}: no such file or directory")

    plan = None
    names_ok = None
    if src is None and not isinstance(manifest, dict):
        manifest_path = os.path.abspath(os.fspath(manifest))  # the user's file as is: errors point into it
    else:
        m = load_manifest(manifest)
        if src is not None:
            plan = _Plan(src, m)
            if src.names is not None:
                names_ok = supports_names(exe)
                m = _fill_source(m, plan, send_names=names_ok or references_names(m))
            else:
                m = _fill_source(m, plan, send_names=False)
        # Kept beside the outputs (an id cannot contain '.'), so errors' file:line:column can be looked up.
        manifest_path = write_manifest(m, os.path.join(out_dir, "manifest.yaml"))

    cmd = [exe, "run", manifest_path, "--input", "-" if plan else os.path.abspath(os.fspath(input)),
           "--out", out_dir, "--seed", str(int(seed)), "--progress", "never"]
    if shard is not None:
        cmd += ["--shard", str(int(shard))]
    # Its own session: a terminal's Ctrl-C reaches only Python, which forwards exactly one SIGINT.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if plan else subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=_child_env(), start_new_session=True)
    err_chunks: List[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    stop = threading.Event()
    writer_error: List[BaseException] = []
    writer = None
    if plan is not None:
        try:
            import fcntl

            fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, 1 << 20)
        except (ImportError, OSError):
            pass
        writer = threading.Thread(target=_write_rows, args=(proc.stdin, plan, stop, writer_error), daemon=True,
                                  name="rowflow-writer")
        writer.start()

    interrupted = False
    try:
        code = _wait(proc, writer, writer_error, stop)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        try:
            proc.send_signal(signal.SIGINT)
            _detach_stdin(proc)  # rowflow blocked reading stdin notices SIGINT at the next read or end of input
            code = proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for a clean exit
            proc.kill()
            code = proc.wait()
    finally:
        if proc.poll() is None:  # an exception we did not expect: never leave the child running
            proc.kill()
            proc.wait()
        if writer is not None:
            stop.set()  # the child is gone: the writer returns at its next chunk instead of draining the iterable
            writer.join(timeout=5)
        reader.join(timeout=5)

    stderr = b"".join(err_chunks).decode("utf-8", "replace")
    try:
        _raise_for(code, interrupted, writer_error, stderr, out_dir, names_ok)
    except BaseException as e:
        e._rowflow_keep = keep  # out=None: the temporary directory (run.json says why) lives as long as the error
        raise
    res = Result(out_dir, binary=exe, _keep=keep)
    for w in res.warnings:
        warnings.warn(f"rowflow: {w.get('id')}: {w.get('what')}" + (f" (hint: {w['hint']})" if w.get("hint") else ""),
                      RowflowWarning, stacklevel=2)
    return res


def _raise_for(code: int, interrupted: bool, writer_error: List[BaseException], stderr: str, out_dir: str,
               names_ok: Optional[bool]) -> None:
    if interrupted or code == 130:
        raise KeyboardInterrupt(f"rowflow run interrupted (exit {code}); partial outputs in {out_dir}")
    if writer_error:
        e = writer_error[0]
        if isinstance(e, RowflowError):
            e.stderr, e.path = stderr, out_dir
        raise e
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise RowflowError(code, f"rowflow: error: the rowflow process was killed by {name}", stderr, out_dir)
    if code != 0:
        msg = _last_error(stderr)
        if names_ok is False and "names" in msg:
            msg += " (this rowflow binary does not know source.names, column names: update it, or use column numbers)"
        raise RowflowError(code, msg, stderr, out_dir)


def _wait(proc: subprocess.Popen, writer: Optional[threading.Thread], writer_error: List[BaseException],
          stop: threading.Event) -> int:
    """Waits for the child; when the writer fails (the user's iterable raised, a chunk could not be converted)
    the child must not finish on a truncated stream: it gets SIGTERM and the writer's error is raised."""
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if writer is not None and writer_error and not writer.is_alive():
            stop.set()
            proc.send_signal(signal.SIGTERM)
            _detach_stdin(proc)
            return proc.wait()
