"""``python -m preempt prefetch [--check]``: fetch every external input an experiment needs.

Run it on a machine with internet (a cluster's login node) before compute jobs start on nodes
without internet: it downloads the dataset (when its source downloads) and every RobustBench
model the DAG uses, and checks every ``source: file`` checkpoint against its sha256. ``--check``
downloads nothing and fails with one line for the first missing or wrong file.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import Params
from .runtime import log


def needed_models(p: Params) -> list[str]:
    from . import dag

    return [st.args[0] for st in dag.build(p) if st.family == "model"]


def _weights(p: Params, fetch: bool) -> Iterator[tuple[str, str]]:
    """(model, what is in place) for every external weight the DAG reads; the first missing or
    wrong one raises its one-line error. ``fetch`` downloads zoo weights that are absent."""
    from .models import zoo
    from .models.file import read_checkpoint

    for name in needed_models(p):
        cfg = p.models[name]
        if cfg.source == "robustbench":  # type: ignore[attr-defined]
            files = zoo.fetch(name, cfg) if fetch else zoo.check_present(name, cfg)  # type: ignore[arg-type]
            yield name, ", ".join(map(str, files)) or "no weight file needed"
        elif cfg.source == "file":  # type: ignore[attr-defined]
            read_checkpoint(cfg)  # type: ignore[arg-type]
            yield name, f"{cfg.path} (sha256 ok)"  # type: ignore[attr-defined]


def check(p: Params) -> None:
    """Quietly verify every weight file the DAG reads (the Snakefile runs this before any job)."""
    for _ in _weights(p, fetch=False):
        pass


def run(p: Params, check_only: bool = False) -> None:
    from .data import DATASETS

    for name, what in _weights(p, fetch=not check_only):
        log.info("model %s: %s", name, what)
    if not check_only:
        entry = DATASETS[p.dataset.name]  # type: ignore[attr-defined]
        for split in ("train", "test"):
            n = len(entry.fn(p.dataset, split).y)
            log.info("dataset %s/%s: %d images available", p.dataset.name, split, n)  # type: ignore[attr-defined]
    log.info("prefetch: everything %s is in place", "the experiment reads" if check_only else "fetched")
