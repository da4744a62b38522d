"""The one on-disk format for tensors: ``NAME.pt`` + ``NAME.json`` sidecar, written atomically.

``NAME.pt`` is ``torch.save`` of a flat ``dict[str, Tensor]`` (plain tensors only, so it loads
with ``torch.load(weights_only=True)``). ``NAME.json`` is the metadata sidecar: stage, params
hash, seed, wall time, device, package versions, and the sha256 of ``NAME.pt``, which ``load``
verifies, so a truncated or swapped file is never taken for a result.

Both files are written to a temporary name in the same directory and renamed into place (data
first, sidecar last): an interrupted job leaves at most a stray ``.tmp`` file, never a
half-written artifact with a valid sidecar. Equal tensors give byte-equal ``NAME.pt`` files, so a
stage that reruns and computes what it computed before leaves DVC's hash of its output unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from . import __version__
from .errors import PreemptError


def user_path(path: str) -> Path:
    """A path from params.yaml: ``~`` and ``$VARS`` are expanded, nothing else is interpreted."""
    return Path(os.path.expandvars(os.path.expanduser(path)))


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def params_hash(obj: Any) -> str:
    """Stable hash of the (JSON-able) parameters a result depends on."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def versions() -> dict[str, str]:
    import numpy

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "preempt": __version__}


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU, contiguous, and holding only its own elements: ``torch.save`` writes a
    view's whole storage, so the first 500 of CIFAR-10's 10,000 test images (``x[:500]``) would be
    saved, and loaded and hashed by every later stage, as all 10,000 (123 MB instead of 6 MB)."""
    t = t.detach().cpu().contiguous()
    return t.clone() if t.untyped_storage().nbytes() > t.numel() * t.element_size() else t


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and the sidecar ``meta`` (plus versions and the data checksum)."""
    clean = {k: _own_storage(v) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: torch names the archive inside 'archive', not
            torch.save(clean, f)    # after the random temp name, so equal tensors give equal bytes
        digest = sha256(tmp)
    full = {**meta, "sha256": digest, "versions": versions(), "argv": sys.argv[1:],
            "shapes": {k: list(v.shape) for k, v in clean.items()}}
    write_json(sidecar(path), full)


def load_meta(path: str | Path) -> dict[str, Any]:
    side = sidecar(path)
    if not side.is_file():
        raise PreemptError(f"{path}: metadata sidecar {side} is missing; rerun the stage that makes it")
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError:
        raise PreemptError(f"{side}: corrupted sidecar (not JSON); delete it and rerun the stage") from None


def load(path: str | Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load an artifact and its sidecar; refuse a file whose checksum does not match."""
    path = Path(path)
    if not path.is_file():
        raise PreemptError(f"{path}: artifact not found; run the stage that makes it (snakemake or dvc repro)")
    meta = load_meta(path)
    if verify and meta.get("sha256") != sha256(path):
        raise PreemptError(f"{path}: checksum does not match its sidecar (corrupted or partial); delete it and rerun")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a corrupted artifact
        raise PreemptError(f"{path}: cannot be loaded safely ({type(exc).__name__}); delete it and rerun") from None
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PreemptError(f"{path}: not a preempt tensor artifact (expected a dict of tensors)")
    return data, meta
