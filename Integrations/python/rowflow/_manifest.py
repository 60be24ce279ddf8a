"""Reading a manifest (path or dict), finding which raw columns it uses, and writing the manifest the binary runs."""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Set, Union

from ._errors import RowflowError

Manifest = Union[str, "os.PathLike[str]", Dict[str, Any]]


#: Words that are keywords where a column is expected (`target: last`, `weight: none`, `select: all`); the
#: binary reads them as keywords however they are quoted, and they are written plain.
KEYWORDS = frozenset({"none", "last", "first", "all"})


class Quoted(str):
    """A string that was quoted in the manifest file: written quoted again (a column name, never a keyword or a
    number: `target: "last"` is the column named last, `select: ["3"]` the column named 3)."""


def _yaml_loader():
    """PyYAML's SafeLoader with YAML 1.2 booleans (only true/false: a column named `no` must not become False)
    and quoted strings kept as Quoted, because the binary tells `last` from `"last"`."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag not in replaced]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    # YAML 1.2's core schema, as the binary reads numbers: 1e-8 is a float (PyYAML's 1.1 rules want a dot),
    # 1_000 and 1:20 are not numbers.
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+.0123456789"))

    def construct_str(loader, node):
        v = loader.construct_scalar(node)
        return Quoted(v) if node.style in ('"', "'") else v

    Loader.add_constructor("tag:yaml.org,2002:str", construct_str)
    return Loader


def load_manifest(manifest: Manifest) -> Dict[str, Any]:
    """The manifest as a dict (a deep copy when a dict was given)."""
    if isinstance(manifest, dict):
        return copy.deepcopy(manifest)
    path = os.fspath(manifest)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise RowflowError(66, f"rowflow: error: {path}: cannot read the manifest: {e.strerror}") from None
    import yaml

    try:
        m = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        raise RowflowError(64, f"rowflow: error: {path}: not valid YAML: {e}") from None
    if not isinstance(m, dict):
        raise RowflowError(64, f"rowflow: error: {path}: the manifest must be a mapping (version, source, operators)")
    return m


def to_yaml(v: Any, indent: int = 0) -> str:
    """YAML in JSON's flow style: every string quoted (nothing reinterpreted as a number, boolean or keyword)
    except the keywords none/last/first/all given as plain strings, which stay plain."""
    pad = "  " * (indent + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {to_yaml(x, indent + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(v, (list, tuple)):
        if all(not isinstance(x, (dict, list, tuple)) for x in v):
            return "[" + ", ".join(to_yaml(x, indent + 1) for x in v) + "]"
        return "[\n" + ",\n".join(pad + to_yaml(x, indent + 1) for x in v) + "\n" + "  " * indent + "]"
    if isinstance(v, str):
        return v if type(v) is str and v in KEYWORDS else json.dumps(str(v), ensure_ascii=False)
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return repr(v)
    try:  # numpy scalars
        import numpy as np

        if isinstance(v, np.integer):
            return str(int(v))
        if isinstance(v, np.floating):
            return repr(float(v))
    except ImportError:
        pass
    raise RowflowError(64, f"rowflow: error: manifest: cannot write a {type(v).__name__} ({v!r}) as YAML")


def write_manifest(m: Dict[str, Any], path: str) -> str:
    """Writes the manifest (see to_yaml) to `path`."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(to_yaml(m) + "\n")
    return path


def _is_name(v: Any) -> bool:
    return isinstance(v, Quoted) or (isinstance(v, str) and v not in KEYWORDS)


def references_names(m: Dict[str, Any]) -> bool:
    """Whether the manifest names a column (target, weight, select or truncated-svd's group)."""
    src = m.get("source") or {}
    refs: List[Any] = [src.get("target"), src.get("weight")]
    sel = src.get("select")
    if isinstance(sel, list):
        refs += sel
    for op in m.get("operators") or []:
        if isinstance(op, dict) and isinstance(op.get("params"), dict):
            refs.append(op["params"].get("group"))
    return any(_is_name(r) for r in refs)


def _lookup(name: str, names: Optional[Sequence[str]], where: str) -> int:
    if names is not None and name in names:
        return list(names).index(name)
    close = difflib.get_close_matches(name, list(names or []), n=3)
    hint = f" (hint: did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    have = f"columns: {', '.join(names)}" if names else "the data has no column names"
    raise RowflowError(65, f"rowflow: error: {where}: no column named '{name}' ({have}){hint}")


def used_columns(m: Dict[str, Any], names: Optional[Sequence[str]], ncols: int) -> Optional[Set[int]]:
    """The raw columns (0-based) the manifest reads: target, weight, the selected features and truncated-svd's
    group; None when it reads every column (no `select`). Raises RowflowError for a name not among `names` or
    a column number out of range — only called when that matters (some column cannot be streamed)."""
    src = m.get("source") or {}
    select = src.get("select", "all")
    if select is None or (isinstance(select, str) and select == "all"):
        return None

    def raw(v: Any, where: str) -> Optional[int]:
        if isinstance(v, Quoted):
            return _lookup(v, names, where)
        if v in (None, "none"):
            return None
        if v == "last":
            return ncols - 1
        if v == "first":
            return 0
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise RowflowError(64, f"rowflow: error: {where}: expected a column number or name, found {v!r}")
        if isinstance(v, str):
            return _lookup(v, names, where)
        if not 0 <= v < ncols:
            raise RowflowError(64, f"rowflow: error: {where}: column {v} is out of range (the data has {ncols} columns)")
        return v

    target = raw(src.get("target"), "source.target")
    weight = raw(src.get("weight"), "source.weight")
    used = {c for c in (target, weight) if c is not None}
    features = [c for c in range(ncols) if c not in used]
    if not isinstance(select, list):
        raise RowflowError(64, f"rowflow: error: source.select: expected all or a list, found {select!r}")

    def feature(v: Any, where: str) -> Set[int]:
        if isinstance(v, str):
            return {_lookup(v, names, where)}
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(features):
            raise RowflowError(64, f"rowflow: error: {where}: feature {v!r} is out of range ({len(features)} features)")
        return {features[v]}

    for i, v in enumerate(select):
        used |= feature(v, f"source.select[{i}]")
    for op in m.get("operators") or []:
        params = op.get("params") if isinstance(op, dict) else None
        if isinstance(params, dict) and params.get("group") is not None:
            g = params["group"]
            # A group number may count features or selected features: keep both columns (conservative).
            used |= feature(g, f"{op.get('id')}.params.group")
            if isinstance(g, int) and not isinstance(g, bool) and 0 <= g < len(select) and isinstance(select[g], int):
                used |= feature(select[g], f"{op.get('id')}.params.group")
    return used
