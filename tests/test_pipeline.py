"""The whole workflow on a tiny config, through both drivers, in a temporary copy of the repo.

Pins the contract of the foundation: metrics table and executed notebooks come out; after a
Snakemake run `dvc status` is clean and `dvc repro` reruns nothing; after `dvc repro`,
`snakemake -n` has nothing to do (tests/test_edits.py: editing one value reruns exactly what it
affects, in both drivers); both drivers give the same numbers; bad params fail before any job
with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

import workspace
from preempt import config
from workspace import TIMING, jobs_planned, run, tiny_params

pytestmark = pytest.mark.pipeline


def make_workspace(dest: Path, params: dict, dag: bool = True) -> Path:
    return workspace.make(dest, params, dag=dag)


def dvc_clean(cwd: Path) -> bool:
    return "Data and pipelines are up to date" in run(["dvc", "status"], cwd).stdout


def metrics(cwd: Path) -> pd.DataFrame:
    return pd.read_csv(cwd / "results" / "metrics.csv")


@pytest.fixture(scope="module")
def snake(tmp_path_factory) -> Path:
    ws = make_workspace(tmp_path_factory.mktemp("snake"), tiny_params())
    run(["snakemake", "--cores", "2"], ws)
    shutil.copy(ws / "results" / "metrics.csv", ws / "first_run_metrics.csv")  # reference for later tests
    return ws


def test_snakemake_produces_metrics_and_reports(snake: Path) -> None:
    df = metrics(snake)
    assert len(df) == 2 * 3 * 2 * 2
    for col in ["dataset", "defense", "victim", "attack", "reversion", "n", "clean_acc", "robust_acc", "ssim",
                "linf", "l2", "sec_per_image", "lpips"]:
        assert col in df.columns
    assert (df["n"] == 40).all()
    assert df["robust_acc"].between(0, 100).all() and df["clean_acc"].between(0, 100).all()
    none = df[df.defense == "none"]
    assert (none[none.reversion == "none"]["linf"] == 0).all()
    mcgs = df[(df.defense == "mcgs") & (df.reversion == "none")]
    assert (mcgs["linf"] <= 0.1 + 1e-6).all() and (mcgs["linf"] > 0).all()
    # what each defense computed on: MCGS's backbone (its ref and size), nothing for no defense
    models = config.load(snake / "params.yaml").models
    assert set(df.loc[df.defense == "mcgs", "backbone_ref"]) == {models["backbone"].ref(models)} and set(none["backbone_ref"]) == {"none"}
    assert none["backbone_params_M"].isna().all() and mcgs["backbone_params_M"].nunique() == 1
    assert 0.01 < mcgs["backbone_params_M"].iloc[0] < 100
    assert (df["adv_linf"] <= 0.1 + 1e-5).all()  # attack budgets measured from the attacker's input
    nb = json.loads((snake / "reports" / "results.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert outputs and not any(o.get("output_type") == "error" for o in outputs)
    assert {p.name for p in (snake / "reports" / "figures" / "results").glob("*.png")} == {"accuracy.png", "examples.png"}
    # the paper notebook: its tagged table and Eq. 14 figure, a browser-ready HTML, and the claims
    for nb in ("results", "fast_preemption"):
        assert "<html" in (snake / "reports" / f"{nb}.html").read_text()[:2000].lower()
    assert {"fig4.png", "fig4.pdf", "fig4.csv"} <= {p.name for p in (snake / "reports" / "figures" / "fast_preemption").iterdir()}
    claims = pd.read_csv(snake / "results" / "claims.csv")
    assert set(claims["verdict"]) <= {"holds", "fails", "not measured in this experiment"}
    assert len(claims) == len(yaml.safe_load((snake / "config" / "claims.yaml").read_text()))
    # this tiny grid runs MCGS with N=4: the MSPD claims (N=20) are honestly not measured here
    assert claims.set_index("claim").loc["mspd_raises_robust_acc", "verdict"] == "not measured in this experiment"
    assert json.loads((snake / "results" / "claims.json").read_text())["claims"]["holds"] >= 0


def test_dvc_metrics_show_the_claims_and_summary(snake: Path) -> None:
    out = run(["dvc", "metrics", "show", "--json"], snake).stdout
    shown = json.loads(out)
    files = {f for ws in shown.values() for f in ws.get("data", {})}
    assert {"results/claims.json", "results/summary.json"} <= files


def test_a_second_clone_pulls_results_from_a_shared_remote(snake: Path, tmp_path: Path) -> None:
    """A team shares trained models, REs and cells through a DVC remote in a shared folder: after
    `dvc push` here, a fresh copy of the project with the same dvc.lock gets everything with
    `dvc pull`, and neither driver recomputes anything."""
    remote = tmp_path / "shared-remote"
    run(["dvc", "remote", "add", "--local", "-f", "-d", "team", str(remote)], snake)
    run(["dvc", "push"], snake)
    assert any(remote.rglob("*"))
    # the colleague's clone: the same project files and dvc.lock, no outputs, an empty DVC cache
    clone = tmp_path / "clone"
    shutil.copytree(snake, clone, ignore=shutil.ignore_patterns("results", "reports", "cache", "tmp", "config.local",
                                                                ".snakemake", "first_run_metrics.csv"))
    assert not (clone / "results").exists() and not (clone / ".dvc" / "cache").exists()
    run(["dvc", "remote", "add", "--local", "-d", "team", str(remote)], clone)
    run(["dvc", "pull"], clone)
    assert dvc_clean(clone)  # DVC: every output is the recorded one
    # pulled files get new modification times; Snakemake is told they are current (README)
    run(["snakemake", "--touch", "--cores", "1"], clone)
    assert jobs_planned(clone) == {} and dvc_clean(clone)
    for sub in ("models", "re"):
        assert {p.name for p in (snake / "results" / sub).iterdir()} == {p.name for p in (clone / "results" / sub).iterdir()}
    pd.testing.assert_frame_equal(metrics(clone), metrics(snake))


def test_after_snakemake_dvc_is_clean_and_nothing_reruns(snake: Path) -> None:
    assert dvc_clean(snake)
    assert jobs_planned(snake) == {}
    locks = {f: f.read_text() for f in [snake / "dvc.lock", *(snake / "pipelines").glob("*/dvc.lock")]}
    assert len(locks) > 1  # the root's and one per defense
    out = run(["dvc", "repro"], snake).stdout
    assert "Running stage" not in out
    assert {f: f.read_text() for f in locks} == locks
    assert jobs_planned(snake) == {}


def test_dvc_repro_gives_the_same_results_and_snakemake_agrees(snake: Path, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, tiny_params())
    run(["dvc", "repro"], ws)
    assert jobs_planned(ws) == {}
    a, b = metrics(ws), pd.read_csv(snake / "first_run_metrics.csv")
    cols = [c for c in a.columns if c not in TIMING]
    pd.testing.assert_frame_equal(a[cols], b[cols])  # bit-identical numbers from either driver


def test_bad_params_fail_before_any_job_with_one_line(tmp_path: Path) -> None:
    raw = tiny_params()
    raw["defenses"]["mcgs"]["n_samples"] = 0
    ws = make_workspace(tmp_path, raw, dag=False)
    proc = run(["snakemake", "-n", "--cores", "2"], ws, ok=False)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("preempt: error:")]
    assert len(errors) == 1 and "defenses.mcgs.n_samples" in errors[0]
    assert not (ws / "results").exists()
