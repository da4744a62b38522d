"""Params as Snakemake inputs: one snapshot file per stage, dated by what DVC last ran it with.

Snakemake reruns a job when an input is newer than its outputs (``rerun-triggers: [mtime]``; its
own params and code triggers are off, because its records never see the ``dvc repro`` runs). So
each stage gets ``.preempt/params/<stage>.json``, holding the values of the params keys the stage
reads, and the file's date says whether those values are what the stage's outputs were made with:

- equal to the values DVC recorded for the stage in its ``dvc.lock`` (DVC ran it, directly or inside a
  Snakemake job, with exactly these values): dated to the epoch, older than any output;
- anything else (an edit, or a stage never run): dated now, newer than the stage's outputs.

Hence an edit plans exactly the stages whose values changed (and what depends on their files);
an edit reverted before anything ran plans nothing; and after ``dvc repro`` has rerun an edited
stage, Snakemake agrees it is up to date. Both files are read with ruamel's YAML 1.2 loader, the
one DVC uses, so ``1e-3`` is the same number to both drivers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from ruamel.yaml import YAML

from .artifacts import write_text
from .dag import Stage
from .paths import PARAMS_FILE, lock_of

SNAPSHOTS = Path(".preempt/params")
BUILT = 0.0  # the date of a snapshot whose values the stage's outputs were made with


def snapshot_path(stage: Stage) -> str:
    return str(SNAPSHOTS / f"{stage.name}.json")


def _lookup(raw: Any, key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _canonical(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True, indent=1, default=str) + "\n"


def _load(path: str) -> Any:
    p = Path(path)
    return YAML(typ="safe", pure=False).load(p.read_text()) if p.is_file() else None


def locked_params(lock_files: Iterable[str], params_file: str = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """Stage name -> the params values DVC last ran it with (from the dvc.lock files; {} without)."""
    out: dict[str, dict[str, Any]] = {}
    for lock_file in lock_files:
        lock = _load(lock_file) or {}
        for name, entry in (lock.get("stages") or {}).items():
            out[name] = dict((entry.get("params") or {}).get(params_file) or {})
    return out


def write(stages: list[Stage], params_file: str = PARAMS_FILE) -> None:
    """Write or re-date every stage's snapshot (see the module docstring); files are rewritten only
    when their values change and re-dated only when their state changes."""
    raw = _load(params_file) or {}
    locked = locked_params(dict.fromkeys(lock_of(st.dvc_file) for st in stages), params_file)
    now = time.time()
    for st in stages:
        values = {k: _lookup(raw, k) for k in st.params}
        text = _canonical(values)
        built = st.name in locked and _canonical(locked[st.name]) == text
        path = Path(snapshot_path(st))
        changed = not path.is_file() or path.read_text() != text
        if changed:
            write_text(path, text)
        stamp = os.stat(path).st_mtime
        if built and stamp != BUILT:
            os.utime(path, (BUILT, BUILT))
        elif not built and (changed or stamp == BUILT):
            os.utime(path, (now, now))
