"""The warm stage server (preempt.warm): a stage run in a warm child computes what it computes in
its own process, bit for bit, reports the same exit status and error line, and dies with its
command; a new source file or another driver run gets another server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from preempt import warm
from workspace import make, run, small_params


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make(tmp_path_factory.mktemp("warm"), small_params())


def _warm_children(ws: Path) -> list[psutil.Process]:
    real = os.path.realpath(ws)
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "preempt.warm" in (p.info["cmdline"] or []) and os.path.realpath(p.cwd()) == real:
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_a_stage_in_a_warm_child_computes_what_its_own_process_computes(ws: Path) -> None:
    out = {}
    for mode in ("0", "1"):
        run(["python", "-m", "preempt", "data"], ws, env={warm.ENV: mode})
        run(["python", "-m", "preempt", "model", "classifier"], ws, env={warm.ENV: mode})
        out[mode] = torch.load(ws / "results/models/classifier.pt", weights_only=True)
    assert warm.socket_path(ws.resolve()).parent.is_dir()
    a, b = out["0"], out["1"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_warm_child_reports_the_status_and_the_one_error_line(ws: Path) -> None:
    for mode in ("0", "1"):
        bad = run(["python", "-m", "preempt", "defend", "nosuch"], ws, ok=False, env={warm.ENV: mode})
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.strip().splitlines() == [
            "preempt: error: defend: params.yaml has no defenses entry 'nosuch'; valid: mcgs, none"], bad.stderr


def test_killing_the_command_kills_the_stage_and_writes_nothing(ws: Path) -> None:
    run(["python", "-m", "preempt", "data"], ws)
    out = ws / "results/models/victim_mlp_at.pt"
    env = {**os.environ, "PREEMPT_PROGRESS": "0"}
    cmd = subprocess.Popen(["python", "-m", "preempt", "model", "victim_mlp_at"], cwd=ws, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (child := [p for p in _warm_children(ws) if p.ppid() != 1]) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server itself runs in '/', so only its children are found here
    assert child, "no warm child started"
    os.kill(cmd.pid, signal.SIGKILL)
    cmd.wait()
    gone, alive = psutil.wait_procs(child, timeout=10)
    assert not alive and not out.exists()


def test_the_server_is_keyed_by_the_code_and_the_driver_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(warm, "PACKAGE", tmp_path)
    monkeypatch.delenv(warm.DRIVER_ENV, raising=False)
    first = warm.fingerprint(tmp_path)
    assert warm.fingerprint(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 22\n")  # an edited source file: its imports are stale
    edited = warm.fingerprint(tmp_path)
    assert edited != first
    monkeypatch.setenv(warm.DRIVER_ENV, "run-b")  # another Snakemake run: its own server
    assert warm.fingerprint(tmp_path) != edited
    assert warm.fingerprint(tmp_path / "other") != warm.fingerprint(tmp_path)  # another checkout


def test_the_server_imports_the_clients_code_whatever_else_is_installed(tmp_path: Path) -> None:
    """The server runs from /, so a relative PYTHONPATH (``PYTHONPATH=src``) is made absolute and
    this package's directory comes first; a server that still imports another copy exits at once."""
    old = os.environ.get("PYTHONPATH")
    try:
        os.environ["PYTHONPATH"] = "some/relative/dir"
        entries = warm.server_env()["PYTHONPATH"].split(os.pathsep)
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    assert entries == [str(warm.PACKAGE.parent), os.path.abspath("some/relative/dir")]
    other = tmp_path / "elsewhere" / "preempt"
    proc = subprocess.run([os.sys.executable, "-m", "preempt.warm", str(tmp_path / "x.sock"), str(other)],
                          capture_output=True, text=True, timeout=120, env=warm.server_env())
    assert proc.returncode == 1 and "not serving" in proc.stderr and not (tmp_path / "x.sock").exists()


def test_off_inside_slurm_jobs_and_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv(warm.ENV, "1")
    assert warm.enabled()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not warm.enabled() and warm.run(["data"]) is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(warm.ENV, "0")
    assert not warm.enabled() and warm.run(["data"]) is None
