"""The small experiment (its undefended slice) on a real one-node SLURM cluster (slurmctld +
slurmd + munge on localhost, started by tests/slurm/cluster.sh), with the user's command verbatim:
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

import os
import re
import shutil
import signal
import subprocess
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from preempt import recovery
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


def _workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The small experiment's undefended slice (its none/none cells: 6 SLURM jobs, where the whole
    experiment's 19 cost about 18 s each here, mostly the job's own Snakemake start), and the
    user's slurm profile edited for the one-node test cluster. The slice's stages have the same
    params as the small experiment's, so its cells equal the local run's same cells."""
    raw = small_params()
    raw["grid"].update(defenses=["none"], reversions=["none"])
    raw["models"] = {"victim_mlp_at": raw["models"]["victim_mlp_at"]}
    raw["defenses"] = {"none": raw["defenses"]["none"]}
    raw["reversions"] = {"none": raw["reversions"]["none"]}
    raw["timing"] = {"defenses": [], "images": raw["timing"]["images"], "repeats": raw["timing"]["repeats"]}
    # resources are not stage params: they change what sbatch is asked for, never a result
    raw["resources"] = {fam: {"gpus": 0, "mem_mb": 500, "cpus_per_task": 1, "runtime": 30} for fam in RESOURCE_DEFAULTS}
    (tmp_path / "ws").mkdir()
    ws = make(tmp_path / "ws", raw)
    env = slurm_profile(tmp_path / "home-config", **{
        "default-resources": {"slurm_partition": "debug"}, "slurm-status-command": "squeue",
        "jobs": 4, "slurm-init-seconds-before-status-checks": 2, "seconds-between-status-checks": 3})
    return ws, env


def _same_metrics(ws: Path, small_run: Path) -> None:
    """The cluster run's cells equal the local run's same cells (every column but timings)."""
    a, b = pd.read_csv(ws / "results" / "metrics.csv"), pd.read_csv(small_run / "results" / "metrics.csv")
    cell = ["defense", "reversion", "victim", "attack"]
    b = a[cell].merge(b, on=cell, how="left")
    cols = [c for c in a.columns if c not in TIMING]
    assert len(a) == 2
    pd.testing.assert_frame_equal(a[cols], b[cols], check_dtype=False)  # ssim 1 of two undefended cells reads as int


def _through_sbatch(cluster: Path, log: str, earlier: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Every job of a Snakemake log that is not a local rule went through sbatch, and slurmctld
    started it and saw it exit 0 (as it did ``earlier``'s jobs); returns the log's SLURM job ids."""
    slurm_ids = set(re.findall(r"submitted with SLURM jobid (\d+)", log))
    local_rules = {"aggregate", "report__results", "all"}
    remote = [r for r in re.findall(r"^rule (\S+):", log, re.M) if r not in local_rules]
    assert remote and len(slurm_ids) == len(remote), (len(slurm_ids), len(remote), log[-3000:])
    ctld = (cluster / "slurmctld.log").read_text()
    # the controller started each job (the main scheduler logs "Allocate JobId=N", the backfill
    # scheduler "Started JobId=N") and saw it finish with exit status 0
    started = set(re.findall(r"(?:Allocate|Started) JobId=(\d+)", ctld))
    succeeded = set(re.findall(r"_job_complete: JobId=(\d+) WEXITSTATUS 0", ctld))
    every = slurm_ids | earlier
    assert every <= started and every <= succeeded, (every - started, every - succeeded)
    return slurm_ids


def scheduler_jobs(ws: Path) -> dict[str, list[str]]:
    """Stage (rule) -> SLURM job ids of every job the controller knows ran from ``ws``: its own
    record (`scontrol show job`, ended jobs kept by MinJobAge), the plugin's `rule_<name>` comment."""
    out = subprocess.run(["scontrol", "show", "job", "-o"], capture_output=True, text=True, check=True).stdout
    per: dict[str, list[str]] = {}
    real = os.path.realpath(ws)
    for line in out.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if os.path.realpath(f.get("WorkDir", "")) == real:
            per.setdefault(f.get("Comment", "").removeprefix("rule_"), []).append(f["JobId"])
    return per


def test_through_sbatch_a_killed_controller_is_refused_then_adopted_and_the_run_equals_the_local_one(
        cluster: Path, small_run: Path, tmp_path: Path) -> None:
    """The user's command on the cluster, with its controller killed -9 after two submissions (a
    login node reboots): the rerun refuses in one line naming the orphaned jobs, then adopts them;
    every stage runs once, each through sbatch, and metrics.csv equals the local run's. One run
    proves both the SLURM path and recovery (each run through sbatch costs minutes here)."""
    ws, env = _workspace(tmp_path)
    ctl = subprocess.Popen(["snakemake", "--cores", "8", "--profile", "slurm"], cwd=ws, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                           env={**os.environ, "PREEMPT_PROGRESS": "0", **env})
    assert ctl.stdout is not None
    seen: list[str] = []
    for line in ctl.stdout:  # kill -9 once two jobs are in SLURM's hands (a login node reboots)
        seen.append(line)
        if len(re.findall(r"submitted with SLURM jobid (\d+)", "".join(seen))) >= 2:
            break
    os.kill(ctl.pid, signal.SIGKILL)
    ctl.wait()
    orphans = [j.id for j in recovery.slurm_jobs(ws)]
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", "".join(seen))
    refused = run(["snakemake", "--cores", "8", "--profile", "slurm"], ws, ok=False, env=env)
    lines = [ln for ln in refused.stderr.splitlines() if ln.startswith("preempt: error:")]
    if orphans:  # normally both are still queued or running; on a very fast machine they may be done
        assert refused.returncode != 0 and len(lines) == 1, refused.stderr[-3000:]
        assert all(f"slurm {i} " in lines[0] for i in orphans) and "scancel" in lines[0], lines[0]
    run(["snakemake", "--unlock"], ws, env=env)  # the killed controller's stale Snakemake lock
    out = run(["snakemake", "--cores", "8", "--profile", "slurm", "--config", "earlier_jobs=wait"], ws,
              env=env, timeout=1800)
    _same_metrics(ws, small_run)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], ws).stdout
    per_stage = scheduler_jobs(ws)
    print("SLURM jobs per stage (scontrol):", per_stage)
    twice = {rule: ids for rule, ids in per_stage.items() if len(ids) > 1}
    assert not twice, f"stages submitted twice: {twice}"
    assert set(submitted) <= {i for ids in per_stage.values() for i in ids}
    later = _through_sbatch(cluster, out.stdout + out.stderr, earlier=set(submitted))
    # the killed run's jobs were adopted: none of their stages was submitted again (their own
    # Snakemake, inside the job, cleared the incomplete markers when they finished)
    assert later and not later & set(submitted)
    print("rerun:", [ln for ln in out.stderr.splitlines() if ln.startswith("preempt:")])
