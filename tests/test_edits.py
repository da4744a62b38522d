"""The user's sequence, verbatim: edit one value of params.yaml in an editor, then run
`snakemake --cores 2` or `dvc repro`. Exactly the cells that value affects rerun (counted from
the jobs planned and run), both drivers agree afterwards, and an edit reverted before anything
ran plans nothing.

With `dvc repro`, the edits are ones whose every downstream output really changes: where a rerun
stage reproduces a byte-identical file (white-box reversion of the undefended images is the
identity), DVC skips what follows but the file is newer, so Snakemake would then plan those jobs
(they run as DVC no-ops, and Snakemake's own runs touch their outputs; see the README).

Runs on a copy of the small experiment (tests/workspace.py ``small_params``: defenses none and
mcgs, reversions none and white, victim victim_mlp_at, attacks pgd and autoattack; 8 cells) that
``snakemake --cores 2`` already built (the ``small_run`` fixture).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from workspace import edit_params, job_stats, jobs_planned, run

pytestmark = pytest.mark.pipeline
TABLES = {"aggregate", "report__results", "all"}


def cells(d=("none", "mcgs"), r=("none", "white"), v=("victim_mlp_at",), a=("pgd", "autoattack")) -> set[str]:
    return {f"attack__{x}__{y}__{z}__{w}" for x in d for y in r for z in v for w in a}


@pytest.fixture
def built(small_run: Path, tmp_path: Path) -> Path:
    """A private copy of the built small experiment (dates kept, so it is up to date)."""
    ws = tmp_path / "ws"
    shutil.copytree(small_run, ws, symlinks=True)
    assert jobs_planned(ws) == {}
    return ws


@pytest.mark.parametrize("key,value,driver,expected", [
    ("defenses.mcgs.n_samples", 3, "snakemake",
     {"defend__mcgs", "revert__mcgs__none", "revert__mcgs__white", "timing__mcgs"} | cells(d=["mcgs"]) | TABLES),
    ("attacks.pgd.steps", 2, "dvc", cells(a=["pgd"]) | TABLES),
    ("reversions.white.classifier", "backbone", "snakemake",
     {"revert__none__white", "revert__mcgs__white"} | cells(r=["white"]) | TABLES),
    ("models.victim_mlp_at.epochs", 1, "dvc", {"model__victim_mlp_at"} | cells() | TABLES),  # not the REs
], ids=["defense", "attack", "reversion", "model"])
def test_one_edit_reruns_exactly_the_cells_it_affects(built: Path, key: str, value, driver: str,
                                                      expected: set[str]) -> None:
    original = edit_params(built, key, value)
    planned = jobs_planned(built)
    assert set(planned) == expected and all(n == 1 for n in planned.values()), sorted(planned)
    if driver == "snakemake":
        proc = run(["snakemake", "--cores", "2"], built)
        assert job_stats(proc.stdout + proc.stderr) == planned
    else:
        # DVC names a stage of pipelines/<defense>/dvc.yaml by that path, a colon and its name
        ran = set(re.findall(r"Running stage '(?:[^':]+:)?([^':]+)'", run(["dvc", "repro"], built).stdout))
        assert {s.replace("-", "__") for s in ran} == expected - {"all"}
    assert jobs_planned(built) == {}
    assert "Data and pipelines are up to date" in run(["dvc", "status"], built).stdout
    if driver == "dvc":
        # back to the value Snakemake last built with: the outputs are DVC's, made with the edit,
        # so the same jobs are planned again (Snakemake's own stale records must not decide)
        edit_params(built, key, original)
        assert jobs_planned(built) == planned
        assert "Data and pipelines are up to date" not in run(["dvc", "status"], built).stdout


def test_an_edit_reverted_before_anything_ran_plans_nothing(built: Path) -> None:
    """Edit, dry-run, restore the file: nothing to do, not a no-op rerun of every job the edit
    touched (the params snapshots follow dvc.lock, not the date of the last edit)."""
    before = (built / "params.yaml").read_text()
    edit_params(built, "defenses.mcgs.n_samples", 5)
    assert "defend__mcgs" in jobs_planned(built)
    (built / "params.yaml").write_text(before)
    assert jobs_planned(built) == {}
    proc = run(["snakemake", "--cores", "2"], built)
    assert "Nothing to be done" in proc.stdout + proc.stderr and "Finished job" not in proc.stdout + proc.stderr
