"""One driver per checkout, and no rerun over the live jobs of a crashed one.

Two things go wrong when the controller (Snakemake) dies while its jobs live on (a login node
reboots, an SSH session drops, ``kill -9``): SLURM keeps running and queueing the jobs it was
given, and Snakemake keeps markers saying their outputs are incomplete. A rerun then either
submits the same stages again (two jobs race on the same outputs and on DVC's lock) or stops
with ``IncompleteFilesException`` whose hint, ``--rerun-incomplete``, recomputes files a live job
is still writing. And ``dvc repro`` started beside ``snakemake`` runs the same stages twice.

So every real run goes through :func:`preflight` before Snakemake plans anything:

1. **The driver lock.** The controller takes an exclusive ``flock`` on ``.preempt/driver.lock``
   and keeps it for as long as it lives; the kernel drops it when the process dies, ``kill -9``
   included, so it never goes stale. Stages run by ``dvc repro`` (or by hand) take the same lock
   for their duration and record their ``dvc`` process, so a ``snakemake`` started between two of
   its stages is refused too. Stages inside a Snakemake job carry the controller's run id
   (:data:`ENV`, exported to SLURM jobs by ``sbatch --export=ALL``) and take no lock. Whichever
   driver comes second stops with one line naming the first.
2. **Earlier jobs.** Jobs of an earlier run of this checkout that are still queued or running:
   SLURM jobs whose working directory is this checkout (``squeue``), and local stage processes
   of a dead controller (they carry :data:`ENV`; their working directory is this checkout). By
   default the run stops with one line: how many, their ids, and the ways out: wait, ``scancel``,
   or ``--config earlier_jobs=wait`` (adopt them: wait, keep what they finish) or
   ``--config earlier_jobs=cancel`` (cancel them, recompute what they did not finish).
3. **Incomplete outputs.** Once no earlier job lives, each output Snakemake still marks
   incomplete is settled by DVC, which records a stage in ``dvc.lock`` only after it succeeded:
   if DVC says the stage is up to date, its job finished after the controller died, and the
   marker goes (the stage is not run again); otherwise its partial outputs are removed and the
   stage reruns.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .errors import PreemptError, report

LOCK_FILE = Path(".preempt/driver.lock")
ENV = "PREEMPT_DRIVER"  # the controller's run id, in the environment of every job it starts
CLAIMED_ENV = "PREEMPT_STAGE_CLAIMED"  # set for a warm server's child: its command holds the lock (preempt.warm)
MODES = ("refuse", "wait", "cancel")  # --config earlier_jobs=...
POLL_S = 10.0  # how often `earlier_jobs=wait` asks again
SQUEUE_TIMEOUT_S = 30.0


def _say(message: str) -> None:
    """Progress for the user: on stderr, as Snakemake's own lines are (it sets up no logging)."""
    sys.stderr.write(f"preempt: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------------------
# 1. the driver lock
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) the driver lock: written into the lock file by its holder."""
    driver: str  # "snakemake", "dvc repro" or "python -m preempt"
    pid: int  # the driver's process: snakemake itself, or the `dvc` that runs the stage
    host: str
    since: float

    def alive(self) -> bool:
        return self.host == socket.gethostname() and psutil.pid_exists(self.pid)

    def describe(self) -> str:
        return (f"{self.driver} (pid {self.pid} on {self.host}, since "
                f"{time.strftime('%H:%M:%S', time.localtime(self.since))})")

    @classmethod
    def read(cls, text: str) -> Holder | None:
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None  # empty, or being written


_held: dict[str, int] = {}  # lock file -> fd this process holds it with (the controller: for its lifetime)


def _dvc_ancestor() -> psutil.Process | None:
    """The ``dvc`` process this stage runs under (``dvc repro`` -> shell -> python), if any."""
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process().parents():
            argv = proc.cmdline()
            if any(Path(a).name == "dvc" for a in argv[:2]):
                return proc
    return None


def claim(driver: str, pid: int, lock_file: Path = LOCK_FILE) -> int:
    """Take the driver lock for ``driver`` (process ``pid``) without waiting; returns its fd.

    Refused (PreemptError) while another process holds it, or while the ``dvc repro`` that last
    held it is still alive (it is between two stages) and is not ``pid`` itself."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Holder.read(lock_file.read_text())
            raise PreemptError(_busy(holder.describe() if holder else "another driver")) from None
        last = Holder.read(os.pread(fd, 4096, 0).decode(errors="replace"))
        if last and last.driver == "dvc repro" and last.pid != pid and last.alive():
            raise PreemptError(_busy(last.describe()))
        me = Holder(driver, pid, socket.gethostname(), time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me.__dict__).encode(), 0)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _busy(who: str) -> str:
    return (f"{who} is already running this checkout ({Path.cwd()}); wait for it to finish or stop "
            "it, then rerun: two drivers on one checkout would run the same stages twice")


def hold_for_controller(lock_file: Path = LOCK_FILE) -> str:
    """The Snakemake controller's claim: kept until the process exits; its run id goes into the
    environment its jobs inherit. Returns the run id (idempotent within one process)."""
    if str(lock_file) not in _held:
        _held[str(lock_file)] = claim("snakemake", os.getpid(), lock_file)
        os.environ[ENV] = uuid.uuid4().hex
    return os.environ[ENV]


@contextlib.contextmanager
def stage_claim(lock_file: Path = LOCK_FILE) -> Iterator[None]:
    """Around one stage: nothing inside a Snakemake job (the controller holds the lock); else the
    lock for the stage's duration, recorded for its ``dvc repro`` (or for itself, run by hand)."""
    if os.environ.get(ENV) or os.environ.get(CLAIMED_ENV) or str(lock_file) in _held:
        # a job, a warm child whose command holds it, or this process holds it already
        yield
        return
    dvc = _dvc_ancestor()
    _held[str(lock_file)] = claim("dvc repro" if dvc else "python -m preempt", dvc.pid if dvc else os.getpid(),
                                  lock_file)
    try:
        yield
    finally:
        os.close(_held.pop(str(lock_file)))


# --------------------------------------------------------------------------------------------
# 2. earlier jobs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """A job of an earlier run of this checkout that is still queued or running."""
    id: str  # SLURM job id, or local pid
    where: str  # "slurm" or "local"
    state: str
    what: str  # the rule it runs (SLURM: the plugin's `rule_<name>` comment), or its command


def slurm_jobs(root: Path, squeue: str | None = None) -> list[Job]:
    """This user's queued or running SLURM jobs whose working directory is ``root``: the
    Snakemake SLURM plugin submits each job from the checkout, named by run id, with comment
    ``rule_<rule>``. Empty where SLURM is not installed; a failing ``squeue`` is an error."""
    exe = squeue or shutil.which("squeue")
    if not exe:
        return []
    cmd = [exe, "--me", "--noheader", "--format=%i|%T|%Z|%k"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S, check=True).stdout
    except (subprocess.SubprocessError, OSError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise PreemptError(f"cannot ask SLURM for this checkout's earlier jobs (`{' '.join(cmd)}`: "
                           f"{detail.strip()[-200:]}); check the cluster (`squeue --me`), then rerun") from None
    real, jobs = os.path.realpath(root), []
    for line in out.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) == 4 and os.path.realpath(parts[2]) == real:
            jobs.append(Job(parts[0], "slurm", parts[1], parts[3].removeprefix("rule_")))
    return jobs


def local_jobs(root: Path) -> list[Job]:
    """Processes of an earlier controller's local jobs still running in ``root``: they carry
    :data:`ENV` (not ours) and are not inside a SLURM job (``squeue`` reports those). A stage run
    by a warm server's child is reported by its command, whose death ends it."""
    mine, real, jobs = os.environ.get(ENV), os.path.realpath(root), []
    skip = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid in skip or os.path.realpath(proc.cwd()) != real:
                continue
            if "preempt.warm" in (proc.info["cmdline"] or []):  # a warm server's child (its argv): it
                continue  # dies with its command (preempt.warm), which is counted instead
            env = proc.environ()
            run = env.get(ENV)
            if run and run != mine and "SLURM_JOB_ID" not in env and not _inner(proc, run):
                argv = proc.info["cmdline"] or []
                what = argv[argv.index("--single-item") + 1] if "--single-item" in argv[:-1] else " ".join(argv)[:80]
                jobs.append(Job(str(proc.pid), "local", proc.status(), what))
    return jobs


def _inner(proc: psutil.Process, run: str) -> bool:
    """Whether ``proc``'s parent belongs to the same job (report a job's outermost process only);
    a parent we may not inspect (init, another user's) is not."""
    try:
        parent = proc.parent()
        return parent is not None and parent.environ().get(ENV) == run and parent.cwd() == proc.cwd()
    except psutil.Error:
        return False


def earlier_jobs(root: Path) -> list[Job]:
    return slurm_jobs(root) + local_jobs(root)


def refusal(jobs: list[Job]) -> str:
    """The one line a rerun stops with while earlier jobs live."""
    slurm = [j.id for j in jobs if j.where == "slurm"]
    local = [j.id for j in jobs if j.where == "local"]
    listed = "; ".join(f"{j.where} {j.id} {j.state.lower()} ({j.what})" for j in jobs[:8])
    more = f"; and {len(jobs) - 8} more" if len(jobs) > 8 else ""
    cancel = " and ".join(
        ([f"`scancel {' '.join(slurm)}`"] if slurm else []) + ([f"`kill {' '.join(local)}`"] if local else []))
    watch = " and ".join(
        (["`squeue --me`"] if slurm else []) + ([f"`ps -p {','.join(local)}`"] if local else []))
    return (f"{len(jobs)} job(s) of an earlier run of this checkout are still queued or running: {listed}{more}. "
            f"Rerunning now would run their stages twice. Either wait until they end ({watch}), or "
            f"cancel them ({cancel}), then rerun; or rerun at once with `--config earlier_jobs=wait` "
            f"(adopt them: wait, and keep what they finish) or `--config earlier_jobs=cancel`")


def settle(jobs: list[Job], mode: str, query: Callable[[], list[Job]], *, poll_s: float = POLL_S,
           scancel: str = "scancel", sleep: Callable[[float], None] = time.sleep) -> None:
    """Refuse, adopt (wait for) or cancel the earlier jobs; returns once none of them lives."""
    if mode not in MODES:
        raise PreemptError(f"--config earlier_jobs={mode!r} is not one of {', '.join(MODES)}; "
                           "use e.g. `--config earlier_jobs=wait`")
    if not jobs:
        return
    if mode == "refuse":
        raise PreemptError(refusal(jobs))
    ids = {j.id for j in jobs}
    if mode == "cancel":
        slurm = sorted(j.id for j in jobs if j.where == "slurm")
        if slurm:
            subprocess.run([scancel, *slurm], check=False, capture_output=True, text=True)
        for j in jobs:
            if j.where == "local":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(j.id), signal.SIGTERM)
        _say(f"cancelled {len(ids)} job(s) of an earlier run: {' '.join(sorted(ids))}")
    start = time.monotonic()
    while live := [j for j in query() if j.id in ids]:
        _say(f"waiting for {len(live)} job(s) of an earlier run to end ({' '.join(j.id for j in live)}), "
             f"{time.monotonic() - start:.0f} s so far")
        sleep(poll_s)
    _say(f"the earlier run's jobs have ended ({' '.join(sorted(ids))})")


# --------------------------------------------------------------------------------------------
# 3. incomplete outputs
# --------------------------------------------------------------------------------------------

def reconcile(incomplete: Iterable[str], owner: dict[str, str], up_to_date: Callable[[list[str]], set[str]],
              unmark: Callable[[str], None]) -> tuple[list[str], list[str]]:
    """Settle outputs Snakemake marks incomplete (``incomplete``; ``owner``: output -> stage).

    A stage DVC calls up to date finished after its controller died: its outputs are complete, and
    only the marker goes. Any other stage's outputs are partial: removed, with the marker, so the
    stage reruns. Returns (stages kept, stages to rerun)."""
    by_stage: dict[str, list[str]] = {}
    for out in incomplete:
        if out in owner:
            by_stage.setdefault(owner[out], []).append(out)
    if not by_stage:
        return [], []
    done = up_to_date(sorted(by_stage))
    for stage, outs in by_stage.items():
        for out in outs:
            if stage not in done:
                p = Path(out)
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            unmark(out)
    kept = sorted(s for s in by_stage if s in done)
    rerun = sorted(s for s in by_stage if s not in done)
    return kept, rerun


def dvc_up_to_date(stages: list[str]) -> set[str]:
    """Which of ``stages`` DVC considers up to date (outputs and dependencies as in dvc.lock)."""
    from dvc.repo import Repo  # DVC's API costs a second to import: only when markers exist

    with Repo(".") as repo:
        changed = repo.status(targets=stages)
    return {s for s in stages if s not in changed}


def snakemake_incomplete(persistence: Any, outputs: list[str]) -> list[str]:
    """The outputs Snakemake's persistence marks incomplete and that exist (Snakemake 9's
    persistence API: ``_filter_incomplete_keys`` is the one query both backends implement; a
    key is the output's path as the rule declares it)."""
    marked = persistence._filter_incomplete_keys(outputs)
    return [o for o in outputs if o in marked and os.path.exists(o)]


# --------------------------------------------------------------------------------------------
# all three, once per controller
# --------------------------------------------------------------------------------------------

_done: list[bool] = []


def preflight(workflow: Any, outputs: dict[str, str], earlier: str = "refuse") -> None:
    """Run once by the Snakemake controller before it plans jobs (see the module docstring);
    ``outputs``: every rule's output path -> its stage. A no-op inside jobs, in dry runs and in
    commands that execute nothing (``--unlock``, ``--summary``). On refusal: one line, exit 2."""
    if _done or not workflow.is_main_process or workflow.executor_plugin is None or workflow.dryrun:
        return
    _done.append(True)
    try:
        hold_for_controller()
        root = Path.cwd()
        slurm_exec = "slurm" in type(workflow.executor_plugin.executor).__module__

        def query() -> list[Job]:  # the first look and every later one (earlier_jobs=wait) alike
            try:
                return earlier_jobs(root)
            except PreemptError:
                if slurm_exec:
                    raise
                return local_jobs(root)  # a local run where SLURM is installed but unreachable

        settle(query(), earlier, query)
        kept, rerun = reconcile(snakemake_incomplete(workflow.persistence, list(outputs)), outputs,
                                dvc_up_to_date, lambda o: _unmark(workflow.persistence, o))
        if kept:
            _say(f"finished after the earlier controller stopped (kept, not rerun): {', '.join(kept)}")
        if rerun:
            _say(f"left incomplete by the earlier run (partial outputs removed, will rerun): {', '.join(rerun)}")
    except PreemptError as err:
        os._exit(report(err))  # inside Snakemake's DAG building: an exception would come back as a traceback


def _unmark(persistence: Any, output: str) -> None:
    from snakemake.io import IOFile  # Snakemake's own file type: only inside a Snakemake process

    persistence.cleanup_metadata(IOFile(output))
