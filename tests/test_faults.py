"""Faults and reruns, on the small experiment (``workspace.small_params`` (tests/workspace.py)):

- kill -9 of the whole run (Snakemake, DVC and the stage: a node crash) in the middle of model
  training, RE generation and an attack: no partial file is left where a result belongs, and the
  rerun completes with metrics equal to an uninterrupted run;
- determinism: a second run from scratch gives bit-identical REs, attack outputs and metrics;
- sharding: RE generation and attacks split into chunks give bit-identical results too.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from preempt import artifacts
from workspace import TIMING, make, run, small_params

pytestmark = pytest.mark.pipeline


def metrics(ws: Path) -> pd.DataFrame:
    df = pd.read_csv(ws / "results" / "metrics.csv")
    return df[[c for c in df.columns if c not in TIMING]]


def kill_when(ws: Path, marker: str, timeout: float = 600) -> str:
    """Start ``snakemake --cores 1``; when a line containing ``marker`` appears on its output (a
    stage has started computing), SIGKILL its whole process group. Returns the output so far."""
    proc = subprocess.Popen(["snakemake", "--cores", "1"], cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, "PREEMPT_PROGRESS": "0"})
    seen, deadline = [], time.monotonic() + timeout
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            line = proc.stdout.readline() if ready else ""
            seen.append(line)
            if marker in line:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "".join(seen)
            if not line and proc.poll() is not None:
                break
        raise AssertionError(f"never saw {marker!r}:\n{''.join(seen)[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def no_partial_results(ws: Path) -> None:
    """Every artifact present is complete (its sidecar's checksum matches); stray temporaries only."""
    for sidecar in (ws / "results").rglob("*.json"):
        data = sidecar.with_suffix(".pt")
        if data.exists():
            artifacts.load(data)  # raises on a truncated or mismatched file
    for pt in (ws / "results").rglob("*.pt"):
        assert pt.with_suffix(".json").exists(), f"{pt} has no sidecar: a half-written artifact"


def test_kill_9_in_training_defense_and_attack_then_rerun_equals_an_uninterrupted_run(
        small_run: Path, tmp_path: Path) -> None:
    ws = make(tmp_path, small_params())
    for marker, artifact in (("train backbone: epoch 1/2", "results/models/backbone.pt"),
                             ("defense mcgs (mcgs) on", "results/re/mcgs.pt"),
                             ("attack autoattack on victim", None)):
        kill_when(ws, marker)
        if artifact:
            assert not (ws / artifact).exists(), f"{artifact} exists after its stage was killed"
        no_partial_results(ws)
        run(["snakemake", "--unlock"], ws)  # the documented step after a crash (stale Snakemake lock)
    run(["snakemake", "--cores", "2"], ws)
    no_partial_results(ws)
    pd.testing.assert_frame_equal(metrics(ws), metrics(small_run))
    assert "Data and pipelines are up to date" in run(["dvc", "status"], ws).stdout


def tensors(ws: Path, sub: str) -> dict[str, dict[str, torch.Tensor]]:
    return {str(p.relative_to(ws)): artifacts.load(p)[0] for p in sorted((ws / "results" / sub).rglob("*.pt"))}


def assert_bit_identical(a: Path, b: Path, sub: str) -> None:
    ta, tb = tensors(a, sub), tensors(b, sub)
    assert ta.keys() == tb.keys() and ta
    for name in ta:
        for key in ta[name]:
            assert torch.equal(ta[name][key], tb[name][key]), f"{name}[{key}] differs"


def test_reruns_from_scratch_and_sharded_runs_are_bit_identical(small_run: Path, tmp_path: Path) -> None:
    raw = small_params()
    raw["shards"] = {"defend": 3, "attack": 2}  # 40 images in batches of 10: uneven shards on purpose
    ws = make(tmp_path, raw)
    planned = run(["snakemake", "-n", "--cores", "2"], ws).stdout
    assert "defend__mcgs__3of3" in planned and "gather__re__mcgs" in planned
    assert "attack__mcgs__white__victim_mlp_at__pgd__2of2" in planned
    run(["snakemake", "--cores", "2"], ws)
    assert (ws / "results" / "shards" / "re" / "mcgs" / "3of3.pt").exists()
    for sub in ("models", "re", "inputs", "adv"):  # trained weights, REs, reverted inputs, adversarial examples
        assert_bit_identical(ws, small_run, sub)
    pd.testing.assert_frame_equal(metrics(ws), metrics(small_run))


def test_the_inline_driver_computes_what_snakemake_computes(small_run: Path, tmp_path: Path) -> None:
    """``python -m preempt inline`` (every stage in one process, as the methods and paper-experiment
    tests run them) gives the snakemake run's models, REs, inputs, adversarial examples and
    metrics bit for bit: each stage sets its threads and seeds afresh, nothing leaks between them."""
    ws = make(tmp_path, small_params())
    out = run(["python", "-m", "preempt", "inline"], ws).stderr
    assert "inline: " in out and not (ws / "dvc.lock").exists()  # recorded nothing in DVC
    for sub in ("models", "re", "inputs", "adv"):
        assert_bit_identical(ws, small_run, sub)
    pd.testing.assert_frame_equal(metrics(ws), metrics(small_run))

