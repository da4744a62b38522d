"""The experiment files in config/: valid, activatable, and they dry-run through the user's SLURM
profile (``snakemake --profile slurm``, installed as ./setup.sh installs it) with the resources their
stages need."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_pipeline import make_workspace, run
from workspace import slurm_profile

EXPERIMENTS = ["cifar10", "imagenet", "cifar10-cpu", "cifar100", "svhn", "mspd-digits", "digits-all", "moon-cifar10",
               "jatp-cifar10", "trigger-cifar10", "trigger-cifar100"]


def job_resources(out: str) -> dict[str, str]:
    """rule name -> its 'resources:' line, from `snakemake -n` output."""
    found = {}
    for block in out.split("\nrule ")[1:]:
        name = block.split(":", 1)[0].strip()
        m = re.search(r"^\s*resources: (.*)$", block, re.M)
        if m:
            found[name] = m.group(1)
    return found


@pytest.fixture(scope="module")
def profile(tmp_path_factory) -> dict[str, str]:
    """The user's slurm profile, installed once for every experiment's dry run (the same file)."""
    return slurm_profile(tmp_path_factory.mktemp("home-config"), **{"default-resources": {"slurm_partition": "gpu"}})


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_dry_runs_on_the_slurm_profile(name: str, tmp_path: Path, profile: dict[str, str]) -> None:
    raw = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    ws = make_workspace(tmp_path / "ws", raw, dag=False) if (tmp_path / "ws").mkdir() is None else tmp_path
    out = run(["snakemake", "-n", "--profile", "slurm"], ws, env=profile).stdout
    assert "This was a dry-run" in out
    res = job_resources(out)
    attack = next(v for k, v in res.items() if k.startswith("attack__"))
    model = next(v for k, v in res.items() if k.startswith("model__"))
    assert "gpu=1" in attack and "gpu=1" in model and "runtime=" in attack and "mem_mb=" in attack
    assert "gpu=" not in res["aggregate"]
    cells = sum(k.startswith("attack__") for k in res)
    from preempt import config

    assert cells == len(config.load(ws / "params.yaml").grid.cells())
    if name == "jatp-cifar10":  # a CPU-only cluster drops every GPU request (the same code for any
        # experiment: checked on a 26-job one, a second dry run of cifar10's 787 jobs costs 15 s)
        cpu = run(["snakemake", "-n", "--profile", "slurm", "--config", "gpus=0"], ws, env=profile).stdout
        assert "gpu=" not in cpu and "This was a dry-run" in cpu


def test_use_activates_an_experiment_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, yaml.safe_load((ROOT / "params.yaml").read_text()), dag=False)
    before = (ws / "params.yaml").read_text()
    bad = ws / "config" / "bad.yaml"
    bad.write_text((ROOT / "config" / "cifar10-cpu.yaml").read_text().replace("schedule: F1B2", "schedule: X2"))
    proc = subprocess.run([sys.executable, "-m", "preempt", "use", str(bad)], cwd=ws, capture_output=True, text=True)
    assert proc.returncode == 2 and "schedule" in proc.stderr and (ws / "params.yaml").read_text() == before
    run([sys.executable, "-m", "preempt", "use", "config/cifar10-cpu.yaml"], ws)
    assert yaml.safe_load((ws / "params.yaml").read_text()) == yaml.safe_load(
        (ROOT / "config" / "cifar10-cpu.yaml").read_text())


def test_a_missing_zoo_weight_stops_the_workflow_before_any_job(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"]["victim_mlp"] = {"source": "robustbench", "name": "Wong2020Fast", "model_dir": str(tmp_path / "zoo")}
    ws = make_workspace(tmp_path / "ws", raw, dag=False) if (tmp_path / "ws").mkdir() is None else None
    proc = run(["snakemake", "--cores", "1"], ws, ok=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("preempt: error")]
    assert len(lines) == 1 and str(tmp_path / "zoo" / "cifar10" / "Linf" / "Wong2020Fast.pt") in lines[0]
    assert not (ws / "results").exists()  # nothing ran, nothing half-written
