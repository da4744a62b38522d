"""preempt.recovery: one driver per checkout, and no rerun over a crashed controller's live jobs.

Unit tests pin the lock, the job queries, the refusal line and the three ways out on fakes; the
pipeline tests run the real drivers on the small experiment: ``dvc repro`` beside ``snakemake``
(both orders), and ``kill -9`` of the Snakemake controller while its job runs on (the SLURM
version of that case is in test_slurm.py).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from preempt import recovery
from preempt.errors import PreemptError
from workspace import TIMING, job_stats, make, run, small_params

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from preempt import recovery
    recovery.hold_for_controller(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(600)
""")


def _holder(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_is_refused_in_one_line_and_a_killed_one_leaves_no_stale_lock(tmp_path: Path) -> None:
    lock = tmp_path / "driver.lock"
    proc = _holder(lock)
    try:
        with pytest.raises(PreemptError) as err:
            recovery.claim("dvc repro", os.getpid(), lock)
        msg = str(err.value)
        assert f"snakemake (pid {proc.pid}" in msg and "\n" not in msg and "wait for it" in msg
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    os.close(recovery.claim("dvc repro", os.getpid(), lock))  # the kernel dropped the dead holder's lock


def test_a_dvc_repro_between_two_stages_still_holds_the_checkout(tmp_path: Path) -> None:
    lock = tmp_path / "driver.lock"
    dvc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        os.close(recovery.claim("dvc repro", dvc.pid, lock))  # its first stage ended; dvc lives on
        with pytest.raises(PreemptError, match=rf"dvc repro \(pid {dvc.pid}"):
            recovery.claim("snakemake", os.getpid(), lock)
        os.close(recovery.claim("dvc repro", dvc.pid, lock))  # its next stage goes ahead
    finally:
        dvc.kill()
        dvc.wait()
    os.close(recovery.claim("snakemake", os.getpid(), lock))  # that dvc repro is gone


def test_stages_inside_a_snakemake_job_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "driver.lock"
    proc = _holder(lock)
    try:
        monkeypatch.setenv(recovery.ENV, "run-of-the-holder")
        with recovery.stage_claim(lock):
            pass
        monkeypatch.delenv(recovery.ENV)
        with pytest.raises(PreemptError), recovery.stage_claim(lock):
            pass
    finally:
        proc.kill()
        proc.wait()


def _fake_squeue(tmp_path: Path, lines: list[str], rc: int = 0) -> str:
    exe = tmp_path / "squeue"
    body = "\n".join(lines)
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/squeue.args\ncat <<'EOF'\n{body}\nEOF\n"
                   + (f"echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit {rc}\n" if rc else ""))
    exe.chmod(0o755)
    return str(exe)


def test_slurm_jobs_are_this_checkouts_queued_and_running_jobs(tmp_path: Path) -> None:
    ws, other = tmp_path / "ws", tmp_path / "other"
    ws.mkdir(), other.mkdir()
    exe = _fake_squeue(tmp_path, [f"102|RUNNING|{ws}|rule_attack-mcgs-none-v-pgd",
                                  f"103|PENDING|{ws}/|rule_defend-mcgs",
                                  f"104|RUNNING|{other}|rule_data"])
    jobs = recovery.slurm_jobs(ws, squeue=exe)
    assert [(j.id, j.state, j.what) for j in jobs] == [("102", "RUNNING", "attack-mcgs-none-v-pgd"),
                                                       ("103", "PENDING", "defend-mcgs")]
    assert "--me" in (tmp_path / "squeue.args").read_text()
    with pytest.raises(PreemptError, match="Unable to contact slurm controller"):
        recovery.slurm_jobs(ws, squeue=_fake_squeue(tmp_path, [], rc=1))


def test_the_refusal_names_the_jobs_and_every_way_out() -> None:
    jobs = [recovery.Job("102", "slurm", "RUNNING", "attack-x"), recovery.Job("103", "slurm", "PENDING", "defend-y"),
            recovery.Job("4242", "local", "sleeping", "dvc repro --single-item z")]
    msg = recovery.refusal(jobs)
    assert "\n" not in msg and msg.startswith("3 job(s) of an earlier run")
    for part in ("slurm 102 running (attack-x)", "slurm 103 pending (defend-y)", "`scancel 102 103`", "`kill 4242`",
                 "`squeue --me` and `ps -p 4242`", "--config earlier_jobs=wait", "--config earlier_jobs=cancel"):
        assert part in msg, part
    with pytest.raises(PreemptError, match="earlier run"):
        recovery.settle(jobs, "refuse", lambda: jobs)
    with pytest.raises(PreemptError, match="not one of refuse, wait, cancel"):
        recovery.settle(jobs, "adopt", lambda: jobs)
    recovery.settle([], "refuse", lambda: [])  # nothing earlier: nothing to say


def test_wait_adopts_the_jobs_until_they_end_and_cancel_cancels_them(tmp_path: Path) -> None:
    a, b = recovery.Job("7", "slurm", "RUNNING", "x"), recovery.Job("8", "slurm", "PENDING", "y")
    answers = [[a, b], [a], []]
    sleeps: list[float] = []
    recovery.settle([a, b], "wait", lambda: answers.pop(0), poll_s=5, sleep=sleeps.append)
    assert sleeps == [5, 5] and not answers
    scancel = tmp_path / "scancel"
    scancel.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/cancelled\n")
    scancel.chmod(0o755)
    local = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    jobs = [a, b, recovery.Job(str(local.pid), "local", "sleeping", "z")]
    recovery.settle(jobs, "cancel", lambda: [j for j in jobs if j.where == "local" and local.poll() is None],
                    scancel=str(scancel), sleep=lambda _: local.wait(timeout=30))
    assert (tmp_path / "cancelled").read_text().split() == ["7", "8"]
    assert local.returncode == -signal.SIGTERM


def test_local_jobs_are_an_earlier_controllers_processes_in_this_checkout(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    env = {k: v for k, v in os.environ.items() if k not in (recovery.ENV, "SLURM_JOB_ID")}
    monkeypatch.setenv(recovery.ENV, "this-run")
    procs = {name: subprocess.Popen(sleep, cwd=tmp_path, env={**env, **extra}) for name, extra in {
        "orphan": {recovery.ENV: "earlier-run"},
        "in_slurm": {recovery.ENV: "earlier-run", "SLURM_JOB_ID": "9"},  # squeue reports it
        "ours": {recovery.ENV: "this-run"},
        "no_driver": {}}.items()}
    try:
        found = {j.id for j in recovery.local_jobs(tmp_path)}
        assert found == {str(procs["orphan"].pid)}  # init's environment, unreadable, is no obstacle
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


class FakePersistence:
    def __init__(self, marked: set[str]) -> None:
        self.marked = marked

    def _filter_incomplete_keys(self, keys):
        return {k for k in keys if k in self.marked}


def test_incomplete_outputs_are_kept_when_dvc_recorded_their_stage_and_removed_otherwise(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for f in ("re/a.pt", "re/a.json", "cells/b.json", "cells/c.json"):
        Path(f).parent.mkdir(exist_ok=True)
        Path(f).write_text("x")
    owner = {"re/a.pt": "defend-a", "re/a.json": "defend-a", "cells/b.json": "attack-b", "cells/c.json": "attack-c",
             "cells/gone.json": "attack-gone"}
    pers = FakePersistence({"re/a.pt", "re/a.json", "cells/b.json", "cells/gone.json"})
    incomplete = recovery.snakemake_incomplete(pers, list(owner))
    assert incomplete == ["re/a.pt", "re/a.json", "cells/b.json"]  # a marker without a file is no problem
    asked: list[list[str]] = []
    unmarked: list[str] = []
    kept, rerun = recovery.reconcile(incomplete, owner, lambda st: asked.append(st) or {"defend-a"}, unmarked.append)
    assert asked == [["attack-b", "defend-a"]] and kept == ["defend-a"] and rerun == ["attack-b"]
    assert sorted(unmarked) == ["cells/b.json", "re/a.json", "re/a.pt"]
    assert Path("re/a.pt").exists() and not Path("cells/b.json").exists() and Path("cells/c.json").exists()


def test_the_cli_takes_the_lock_only_for_commands_that_change_the_checkout() -> None:
    from preempt.__main__ import FREE, command

    assert command(["--params", "x.yaml", "attack", "a", "b"]) == "attack"
    assert command(["validate"]) == "validate" in FREE and command(["-h"]) is None


# --------------------------------------------------------------------------------------------
# the real drivers
# --------------------------------------------------------------------------------------------

def _start(cmd: list[str], ws: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PREEMPT_PROGRESS": "0"})


def _wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 600) -> str:
    """Read ``proc``'s output until a line matches ``pattern``; returns the output so far."""
    seen, deadline = [], time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        line = proc.stdout.readline() if ready else ""
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"never saw {pattern!r}:\n{''.join(seen)[-3000:]}")


def _finish(proc: subprocess.Popen, before: str, timeout: float = 1800) -> str:
    rest, _ = proc.communicate(timeout=timeout)
    return before + rest


def _stages_run(log: str) -> list[str]:
    """DVC's "Running stage 'X'" lines: which stages actually executed their command."""
    return re.findall(r"Running stage '([^']+)'", log)


def metrics(ws: Path) -> pd.DataFrame:
    df = pd.read_csv(ws / "results" / "metrics.csv")
    return df[[c for c in df.columns if c not in TIMING]]


@pytest.mark.pipeline
def test_dvc_repro_and_snakemake_on_one_checkout_one_is_refused_and_no_stage_runs_twice(
        small_run: Path, tmp_path: Path) -> None:
    ws = make(tmp_path, small_params())
    # dvc repro first: snakemake, started while a stage runs, stops with one line
    dvc = _start(["dvc", "repro"], ws)
    dvc_log = _wait_for(dvc, r"Running stage 'model-")
    smk = run(["snakemake", "--cores", "1"], ws, ok=False)
    lines = [ln for ln in smk.stderr.splitlines() if ln.startswith("preempt: error:")]
    assert smk.returncode != 0 and len(lines) == 1 and f"dvc repro (pid {dvc.pid}" in lines[0], smk.stderr[-2000:]
    dvc_log = _finish(dvc, dvc_log)
    assert dvc.returncode == 0, dvc_log[-3000:]
    pd.testing.assert_frame_equal(metrics(ws), metrics(small_run))
    # snakemake first (after an edit, so there is work): dvc repro fails, snakemake completes
    text = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(text.replace("\n    steps: 3\n", "\n    steps: 4\n", 1))
    smk_proc = _start(["snakemake", "--cores", "1"], ws)
    smk_log = _wait_for(smk_proc, r"Running stage '")
    dvc2 = run(["dvc", "repro"], ws, ok=False)
    assert dvc2.returncode != 0, dvc2.stdout[-2000:]
    # refused by preempt's lock (one line), or by DVC's own lock on a stage the Snakemake job holds
    assert ("preempt: error: snakemake (pid" in dvc2.stderr + dvc2.stdout
            or "is busy, it is being blocked by" in dvc2.stderr + dvc2.stdout), (dvc2.stdout + dvc2.stderr)[-2000:]
    smk_log = _finish(smk_proc, smk_log)
    assert smk_proc.returncode == 0, smk_log[-3000:]
    ran = _stages_run(smk_log) + _stages_run(dvc2.stdout + dvc2.stderr)
    assert ran and len(ran) == len(set(ran)), ran
    assert "Data and pipelines are up to date" in run(["dvc", "status"], ws).stdout


@pytest.mark.pipeline
def test_kill_9_of_the_controller_the_rerun_refuses_then_adopts_its_job_without_running_it_twice(
        small_run: Path, tmp_path: Path) -> None:
    ws = make(tmp_path, small_params())
    smk = _start(["snakemake", "--cores", "1"], ws)
    first = _wait_for(smk, r"train backbone: epoch 1/")  # a job is computing
    os.kill(smk.pid, signal.SIGKILL)  # the controller only: its job lives on, as on a rebooted login node
    smk.wait()
    drain = threading.Thread(target=lambda: smk.stdout.read(), daemon=True)  # the orphan still writes there
    drain.start()
    real = os.path.realpath(ws)
    job = [p for p in psutil.process_iter() if _in(p, real) and "--single-item" in " ".join(p.cmdline())]
    assert len(job) == 1, job
    paused = [job[0], *job[0].children(recursive=True)]
    for p in paused:  # hold the job still while the rerun looks, whatever the machine's speed
        p.suspend()
    try:
        refused = run(["snakemake", "--cores", "2"], ws, ok=False)
    finally:
        for p in paused:
            p.resume()
    lines = [ln for ln in refused.stderr.splitlines() if ln.startswith("preempt: error:")]
    assert refused.returncode != 0 and len(lines) == 1, refused.stderr[-3000:]
    assert "1 job(s) of an earlier run" in lines[0] and f"local {job[0].pid} stopped (model-backbone)" in lines[0], lines[0]
    assert "--config earlier_jobs=wait" in lines[0]
    run(["snakemake", "--unlock"], ws)  # the stale Snakemake lock of the killed controller
    rerun = run(["snakemake", "--cores", "2", "--config", "earlier_jobs=wait"], ws)
    log = rerun.stdout + rerun.stderr
    assert "kept, not rerun" in log and "model-backbone" in log, log[-3000:]
    assert "model__backbone" not in job_stats(log) and "model-backbone" not in _stages_run(log), log[-3000:]
    assert _stages_run(first).count("model-backbone") == 1
    pd.testing.assert_frame_equal(metrics(ws), metrics(small_run))
    assert "Data and pipelines are up to date" in run(["dvc", "status"], ws).stdout


def _in(proc: psutil.Process, cwd: str) -> bool:
    try:
        return os.path.realpath(proc.cwd()) == cwd
    except psutil.Error:
        return False
