"""A run's output directory as Python objects: run.json, warnings, each operator's summary and arrays."""

from __future__ import annotations

import difflib
import html
import json
import os
import subprocess
from typing import Any, Dict, Iterator, List, Mapping, Optional

import numpy as np

from ._errors import RowflowError

#: Arrays larger than this are memory-mapped (read-only) instead of read into memory.
MMAP_BYTES = 1 << 20


class OperatorResult(Mapping[str, np.ndarray]):
    """One operator's outputs: `summary` (summary.json as a dict), `arrays` (the names of its .npy files) and
    `op[name]` (the array; memory-mapped read-only when larger than 1 MiB).

    Example:
        >>> res = rowflow.run("Pipelines/quickstart.yaml", input="Fixtures/quickstart/input.csv.zst")
        >>> res["ridge"].arrays
        ['gram', 'solution', 'xty']
        >>> res["ridge"]["solution"][:3]          # numpy array, float64
        array([ 0.25379034, -0.38645483,  1.25295389])
        >>> res["ridge"].summary["objective"]
        643.7490363920261
    """

    def __init__(self, path: str, id: str, parent: Any = None):
        self.path = path
        self.id = id
        self._parent = parent  # keeps a temporary output directory alive: rowflow.run(...)["id"]["name"] works
        self._summary: Optional[Dict[str, Any]] = None

    @property
    def summary(self) -> Dict[str, Any]:
        """summary.json as a dict (rows, weight_sum, params and the operator's scalars)."""
        if self._summary is None:
            p = os.path.join(self.path, "summary.json")
            try:
                with open(p, encoding="utf-8") as f:
                    self._summary = json.load(f)
            except FileNotFoundError:
                raise RowflowError(66, f"rowflow: error: {p}: no summary (did this operator finish?)") from None
        return self._summary

    @property
    def arrays(self) -> List[str]:
        """The names of the operator's arrays (its .npy files without the suffix), sorted."""
        try:
            return sorted(n[:-4] for n in os.listdir(self.path) if n.endswith(".npy") and not n.startswith("."))
        except FileNotFoundError:
            return []

    def __getitem__(self, name: str) -> np.ndarray:
        p = os.path.join(self.path, name + ".npy")
        if not os.path.exists(p):
            close = difflib.get_close_matches(name, self.arrays, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"{self.id} has no array {name!r} (arrays: {', '.join(self.arrays) or 'none'}{hint})")
        return np.load(p, mmap_mode="r" if os.path.getsize(p) > MMAP_BYTES else None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def __repr__(self) -> str:
        s = self.summary if os.path.exists(os.path.join(self.path, "summary.json")) else {}
        op = s.get("op", "?")
        shapes = []
        for n in self.arrays:
            a = self[n]
            shapes.append(f"{n}{list(a.shape)}")
        return f"<rowflow operator {self.id} ({op}), rows={s.get('rows')}: {', '.join(shapes) or 'no arrays'}>"


class Result(Mapping[str, OperatorResult]):
    """A run's outputs: `res.run` (run.json), `res.warnings`, `res[id]` (an OperatorResult), `res.path`.
    Returned by `rowflow.run` and `rowflow.load`. With `out=None` the outputs live in a temporary directory
    that exists as long as this object does.

    Example:
        >>> res = rowflow.load("/tmp/rowflow-quick")
        >>> res.ids
        ['stats', 'ridge']
        >>> res["ridge"]["solution"].shape
        (8,)
    """

    def __init__(self, path: str, binary: Optional[str] = None, _keep: Any = None):
        self.path = os.path.abspath(path)
        self._binary = binary
        self._keep = _keep  # the TemporaryDirectory of out=None: removed when this Result is collected
        p = os.path.join(self.path, "run.json")
        try:
            with open(p, encoding="utf-8") as f:
                self.run: Dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise RowflowError(66, f"rowflow: error: {p}: not found ({self.path} is not a run directory)") from None
        except ValueError as e:
            raise RowflowError(65, f"rowflow: error: {p}: not valid JSON: {e}") from None

    @property
    def warnings(self) -> List[Dict[str, Any]]:
        """run.json `warnings`: one dict per warning, {id, what} and `hint` when there is one."""
        return list(self.run.get("warnings") or [])

    @property
    def ids(self) -> List[str]:
        """The operator ids, in manifest order."""
        ops = self.run.get("operators")
        if isinstance(ops, list) and ops:
            return [str(o) for o in ops]
        return sorted(n for n in os.listdir(self.path) if os.path.exists(os.path.join(self.path, n, "summary.json")))

    def __getitem__(self, id: str) -> OperatorResult:
        if id not in self.ids:
            close = difflib.get_close_matches(id, self.ids, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"no operator {id!r} in this run (operators: {', '.join(self.ids)}{hint})")
        return OperatorResult(os.path.join(self.path, id), id, parent=self)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def report(self, out: Optional[str] = None) -> str:
        """Runs `rowflow report` on this run and returns the HTML page's path (default `<path>/report.html`).

        Example:
            >>> rowflow.load("/tmp/rowflow-quick").report()
            '/tmp/rowflow-quick/report.html'
        """
        from ._run import find_binary

        exe = find_binary(self._binary)
        cmd = [exe, "report", self.path] + (["--out", os.fspath(out)] if out is not None else [])
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if r.returncode != 0:
            err = r.stderr.decode("utf-8", "replace")
            raise RowflowError(r.returncode, _last_error(err), err, self.path)
        return os.path.abspath(os.fspath(out)) if out is not None else os.path.join(self.path, "report.html")

    def __repr__(self) -> str:
        r = self.run
        lines = [f"<rowflow run {r.get('status', '?')}: {self.path}",
                 f"  rows_read={r.get('rows_read')} seconds={r.get('seconds')} format={r.get('format')} columns={r.get('columns')}"]
        for id in self.ids:
            op = self[id]
            lines.append(f"  {id} ({_op_name(op)}): {', '.join(op.arrays) or 'no arrays'}")
        for w in self.warnings:
            lines.append(f"  warning: {w.get('id')}: {w.get('what')}")
        return "\n".join(lines) + ">"

    def _repr_html_(self) -> str:
        r = self.run
        rows = "".join(
            f"<tr><td><code>{html.escape(id)}</code></td><td>{html.escape(_op_name(self[id]))}</td>"
            f"<td>{html.escape(', '.join(self[id].arrays))}</td></tr>" for id in self.ids)
        page = os.path.join(self.path, "report.html")
        link = (f'<a href="file://{html.escape(page)}" target="_blank">report.html</a>' if os.path.exists(page)
                else "<code>res.report()</code> writes the report page")
        warn = "".join(f"<li>{html.escape(str(w.get('id')))}: {html.escape(str(w.get('what')))}</li>" for w in self.warnings)
        return (f"<div><b>rowflow run</b> {html.escape(str(r.get('status')))}, {r.get('rows_read')} rows in "
                f"{r.get('seconds')} s — <code>{html.escape(self.path)}</code> — {link}"
                f"<table><tr><th>id</th><th>op</th><th>arrays</th></tr>{rows}</table>"
                + (f"<ul>{warn}</ul>" if warn else "") + "</div>")


def _op_name(op: OperatorResult) -> str:
    try:
        return str(op.summary.get("op", "?"))
    except RowflowError:
        return "no summary"


def _last_error(stderr: str) -> str:
    """The binary's one-line error: the last `rowflow: error:` line, else the last line."""
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("rowflow: error:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(no message on stderr)"


def load(run_dir: "str | os.PathLike[str]") -> Result:
    """Opens a finished run directory (any `rowflow run --out` or `rowflow merge --out`).

    Example:
        >>> rowflow.load("/tmp/rowflow-quick")["ridge"]["solution"].shape   # after rowflow run … --out /tmp/rowflow-quick
        (8,)
    """
    return Result(os.fspath(run_dir))
