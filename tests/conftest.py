"""Shared fixtures: small deterministic models so unit tests never depend on pipeline outputs."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREEMPT_PROGRESS", "0")


class Linear(nn.Module):
    """A fixed random linear classifier on 1x8x8 images (convex CE loss in x)."""

    def __init__(self, seed: int = 0, n_classes: int = 10) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(n_classes, 64, generator=g), requires_grad=False)
        self.b = nn.Parameter(torch.randn(n_classes, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.t() + self.b


@pytest.fixture
def linear() -> nn.Module:
    return Linear(0).eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))


ALL_METHODS = ROOT / "config" / "digits-all.yaml"  # the default's digits with every method and table


@pytest.fixture(scope="session")
def params():
    """Every method on the embedded digits (config/digits-all.yaml, a superset of the default)."""
    from preempt import config

    return config.load(ALL_METHODS)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """``workspace.small_params`` (tests/workspace.py) run once by ``snakemake --cores 2``: the uninterrupted,
    unsharded, local reference that the fault, sharding and SLURM tests compare with (read only;
    the edit tests copy it). Built once per suite run, not once per xdist worker: the first worker
    to need it builds it under a file lock in the run's shared temp dir, the others wait and reuse
    it (a build is about 30 s of both cores)."""
    from workspace import make, run, small_params

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's dir, above popen-gwN
    ws, done = shared / "small-run", shared / "small-run.done"
    with open(shared / "small-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if the build fails
        if not done.exists():
            if ws.exists():
                shutil.rmtree(ws)  # a build that failed in another worker
            ws.mkdir()
            make(ws, small_params())
            run(["snakemake", "--cores", "2"], ws)
            done.touch()
    return ws


# the end-to-end files, longest first (from CI's --durations): with one file per worker at a
# time, a long file that starts last would run alone at the end
PIPELINE_ORDER = ["test_slurm", "test_paper_experiments", "test_faults", "test_edits", "test_recovery",
                  "test_pipeline", "test_methods_pipeline", "test_mspd_tables"]


def pytest_collection_modifyitems(config, items) -> None:
    """The end-to-end (``pipeline``) test files first, longest first, so that with pytest-xdist
    (``-n auto --dist loadfile --no-loadscope-reorder`` in pyproject.toml: one file per worker at
    a time, in this order) the long workflows start at once and the unit tests fill the gaps; the
    order within a file is kept."""
    def rank(item) -> tuple[int, int]:
        if not item.get_closest_marker("pipeline"):
            return (1, 0)
        name = item.path.stem
        return (0, PIPELINE_ORDER.index(name) if name in PIPELINE_ORDER else len(PIPELINE_ORDER))
    items.sort(key=rank)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per worker: the workers already fill the cores, and oversubscribed
    # intra-op threads slow in-process tests several times over (measured: 26 s -> 151 s)
    torch.set_num_threads(1)
