"""``python -m preempt prefetch [--check]``: fetch every external input an experiment needs.

Run it on a machine with internet (a cluster's login node) before compute jobs start on nodes
without internet: it downloads the dataset (when its source downloads) and every RobustBench
model the DAG uses, and checks every ``source: file`` checkpoint against its sha256. ``--check``
downloads nothing and fails with one line for the first missing or wrong file.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import Params, effective
from .dag import models_needed
from .data import DATASETS
from .runtime import log


def _weights(p: Params, fetch: bool) -> Iterator[tuple[str, str]]:
    """(model, what is in place) for every external file the DAG's models read; the first missing
    or wrong one raises its one-line error. ``fetch`` downloads zoo weights that are absent. Under
    the test-only ``shrink:`` switch, what the shrunk run reads (stand-ins need no weights)."""
    p = effective(p)
    for name in models_needed(p):
        what = p.models[name].external(name, fetch)
        if what is not None:
            yield name, what


def check(p: Params) -> None:
    """Quietly verify every weight file the DAG reads (the Snakefile runs this before any job)."""
    for _ in _weights(p, fetch=False):
        pass


def run(p: Params, check_only: bool = False) -> None:
    for name, what in _weights(p, fetch=not check_only):
        log.info("model %s: %s", name, what)
    if not check_only:
        entry = DATASETS[p.dataset.name]
        for split in ("train", "test"):
            n = len(entry.fn(p.dataset, split).y)
            log.info("dataset %s/%s: %d images available", p.dataset.name, split, n)
    log.info("prefetch: everything %s is in place", "the experiment reads" if check_only else "fetched")
