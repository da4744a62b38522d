"""The small experiment on a real one-node SLURM cluster (slurmctld + slurmd + munge on
localhost, started by tests/slurm/cluster.sh), with the user's command verbatim:
``snakemake --cores 8 --profile slurm``.

The profile is installed as ./setup.sh installs it, into the test's own user config dir
(XDG_CONFIG_HOME), and the test cluster's settings reach it as a user's would: edited into that
profile (the one-node partition `debug`, no accounting database, `squeue` status, short status
intervals) and, for the per-job resources (the node has 2 CPUs), params.yaml's `resources`.
Asserts that the jobs went through sbatch (the executor's SLURM job ids and slurmctld's
allocation log) and that metrics.csv equals the local run's.

Runs where SLURM is installed or can be installed (root and apt-get, as in CI); elsewhere it is
skipped with a loud warning.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from preempt.config import RESOURCE_DEFAULTS
from workspace import TIMING, make, run, slurm_profile, small_params

pytestmark = pytest.mark.pipeline
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3 or (proc.returncode != 0 and not shutil.which("slurmctld")):
        msg = f"SLURM TEST SKIPPED: no one-node SLURM cluster can run here ({proc.stderr.strip()[-300:]})"
        warnings.warn(msg)
        print(f"\n!!! {msg} !!!\n")
        pytest.skip(msg)
    assert proc.returncode == 0, f"cluster did not start:\n{proc.stdout}\n{proc.stderr}"
    yield state
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)], capture_output=True, timeout=60)


def test_small_experiment_through_sbatch_equals_the_local_run(cluster: Path, small_run: Path, tmp_path: Path) -> None:
    raw = small_params()
    # resources are not stage params: they change what sbatch is asked for, never a result
    raw["resources"] = {fam: {"gpus": 0, "mem_mb": 500, "cpus_per_task": 1, "runtime": 30} for fam in RESOURCE_DEFAULTS}
    ws = make(tmp_path / "ws", raw) if (tmp_path / "ws").mkdir() is None else tmp_path
    env = slurm_profile(tmp_path / "home-config", **{
        "default-resources": {"slurm_partition": "debug"}, "slurm-no-account": True, "slurm-status-command": "squeue",
        "jobs": 4, "slurm-init-seconds-before-status-checks": 2, "seconds-between-status-checks": 3})
    out = run(["snakemake", "--cores", "8", "--profile", "slurm"], ws, env=env, timeout=1800)
    log = out.stdout + out.stderr
    slurm_ids = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    local_rules = {"aggregate", "report__results", "all"}
    remote = [r for r in re.findall(r"^rule (\S+):", log, re.M) if r not in local_rules]
    assert remote and len(slurm_ids) == len(remote), (len(slurm_ids), len(remote), log[-3000:])
    ctld = (cluster / "slurmctld.log").read_text()
    # the controller started each job (the main scheduler logs "Allocate JobId=N", the backfill
    # scheduler "Started JobId=N") and saw it finish with exit status 0
    started = set(re.findall(r"(?:Allocate|Started) JobId=(\d+)", ctld))
    succeeded = set(re.findall(r"_job_complete: JobId=(\d+) WEXITSTATUS 0", ctld))
    assert slurm_ids <= started and slurm_ids <= succeeded, (slurm_ids - started, slurm_ids - succeeded)
    a, b = pd.read_csv(ws / "results" / "metrics.csv"), pd.read_csv(small_run / "results" / "metrics.csv")
    cols = [c for c in a.columns if c not in TIMING]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert "Data and pipelines are up to date" in run(["dvc", "status"], ws).stdout
