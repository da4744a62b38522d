"""A warm interpreter for stage commands: ``python -m preempt <stage>`` without paying again for
Python, torch and the CLI's imports (about 3 s, the largest per-job cost of a local run of many
small stages; the stage itself often computes for less).

The first stage command of a checkout starts a server: a daemon that has imported the CLI and
computed nothing (no torch threads, no CUDA), listening on a user-private Unix socket in the
node's temp directory whose name fingerprints this code (the checkout, the package's source files
with sizes and mtimes, the interpreter and PYTHONPATH), so an edited source file gets a new server.
Each stage command connects, hands over its stdin/stdout/stderr and its argv, working directory
and environment; the server forks a child that runs ``preempt.cli.main`` on them, exactly as the
command would, and reports the child's pid, then its exit status. The child dies with the command
(it watches the connection), so killing a stage's command kills the stage; signals the command
receives (SIGINT, SIGTERM) are passed on. The server exits after ``IDLE_S`` without work.

Off inside SLURM jobs (each is one command on a node), with ``PREEMPT_WARM=0``, and without
``fork`` or Unix sockets. Any failure to reach or start a server runs the command in its own
process, as before: the server only ever saves time, and results are the same bit for bit
(the child sets its threads and seeds like any stage process; the tests compare both ways).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable

from .recovery import ENV as DRIVER_ENV  # the driver run's id: part of a server's key

IDLE_S = 30.0  # the server exits after this long with no command and no running child
ENV = "PREEMPT_WARM"  # "0" = never use or start a server
_HEADER = struct.Struct("!Q")  # payload length
_PID, _CODE = struct.Struct("!q"), struct.Struct("!i")
PACKAGE = Path(__file__).resolve().parent


def enabled() -> bool:
    return (os.environ.get(ENV, "1") != "0" and "SLURM_JOB_ID" not in os.environ
            and hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds"))


def fingerprint(root: Path | None = None) -> str:
    """What a server's imports depend on: this package's source files (names, sizes, mtimes), the
    interpreter, PYTHONPATH and the checkout. A stat of ~100 files: about a millisecond."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        st = f.stat()
        h.update(f"{f.relative_to(PACKAGE)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    # the driver run too: a child's /proc environ is its server's, which recovery reads to tell
    # this run's jobs from an earlier run's (preempt.recovery.local_jobs)
    h.update("\n".join([sys.executable, os.environ.get("PYTHONPATH", ""), os.environ.get(DRIVER_ENV, ""),
                         str(root or Path.cwd().resolve())]).encode())
    return h.hexdigest()[:20]


def socket_path(root: Path | None = None) -> Path:
    """Node-local (a Unix socket cannot be reached across the nodes of a shared file system)."""
    base = Path(tempfile.gettempdir()) / f"preempt-warm-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    return base / f"{fingerprint(root)}.sock"


# --------------------------------------------------------------------------------------------
# client: the stage command
# --------------------------------------------------------------------------------------------

def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return s
    except OSError:
        s.close()
        return None


def _start_server(path: Path, wait_s: float = 60.0) -> socket.socket | None:
    """Start a server for this code in the background (one: commands starting together wait for
    the first one's) and connect to it."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        proc = subprocess.Popen([sys.executable, "-m", "preempt.warm", str(path), str(PACKAGE)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, cwd="/", env=server_env())
        return _wait(path, wait_s, proc)


def server_env() -> dict[str, str]:
    """The server's environment: this command's, with this package's directory first on an
    absolute PYTHONPATH. The server runs from / (it must not hold a working directory), where a
    relative PYTHONPATH entry would name nothing and another installed copy of preempt would be
    imported instead of the code the socket's name fingerprints."""
    entries = [str(PACKAGE.parent)] + [os.path.abspath(e) for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(entries))}


def _wait(path: Path, wait_s: float, proc: subprocess.Popen[bytes] | None = None) -> socket.socket | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        conn = _connect(path)
        if conn is not None:
            return conn
        if proc is not None and proc.poll() is not None:  # the server gave up: run the command here
            return None
        time.sleep(0.05)
    return None


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    return buf


def run(argv: list[str], env: dict[str, str] | None = None) -> int | None:
    """Run ``python -m preempt argv`` in a warm server's child (with this process's environment
    plus ``env``) and return its exit status, or None when no server could be used (the caller
    then runs the command itself)."""
    if not enabled():
        return None
    try:
        path = socket_path()
        conn = _connect(path) or _start_server(path)
    except OSError:
        return None
    if conn is None:
        return None
    with conn:
        payload = json.dumps({"argv": argv, "argv0": sys.argv[0], "cwd": os.getcwd(),
                              "env": {**os.environ, **(env or {})}}).encode()
        try:
            socket.send_fds(conn, [_HEADER.pack(len(payload))], [0, 1, 2])
            conn.sendall(payload)
            raw = _recv_exact(conn, _PID.size)
        except OSError:
            return None
        if raw is None:
            return None
        child = _PID.unpack(raw)[0]

        def forward(signum: int, _frame: Any) -> None:
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        raw = _recv_exact(conn, _CODE.size)
    if raw is None:  # the server died under the child: no status to report
        print("preempt: error: the warm stage server stopped before the stage ended; rerun "
              f"(or set {ENV}=0 to run stages without it)", file=sys.stderr)
        return 1
    return _CODE.unpack(raw)[0]


# --------------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------------

def _child(conn: socket.socket, fds: list[int], request: dict[str, Any], main: Callable[[list[str]], int]) -> None:
    """In the forked child: become the stage command, run it, exit with its status."""
    code = 1
    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = [request["argv0"], *request["argv"]]
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(line_buffering=os.isatty(stream.fileno()))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

        def watch() -> None:  # the command is gone (killed): so is the stage
            try:
                conn.recv(1)
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
        code = main(request["argv"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - report as the command would, then exit non-zero
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def serve(path: Path, main: Callable[[list[str]], int], idle_s: float = IDLE_S) -> None:
    """Accept stage commands on ``path`` until idle for ``idle_s`` seconds."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp))
    srv.listen(64)
    os.replace(tmp, path)  # atomic: a client sees either no socket or a listening one
    ours = os.stat(path).st_ino
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    try:
        while children or time.monotonic() - last < idle_s:
            ready, _, _ = select.select([srv], [], [], 0.02)
            if ready:
                conn, _ = srv.accept()
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
                    raw = _recv_exact(conn, _HEADER.unpack(msg)[0]) if len(msg) == _HEADER.size else None
                    if raw is None or len(fds) != 3:
                        raise OSError("incomplete request")
                    request = json.loads(raw)
                except (OSError, ValueError):
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    srv.close()
                    for other in children.values():
                        other.close()
                    _child(conn, fds, request, main)
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                try:
                    conn.sendall(_PID.pack(pid))
                except OSError:
                    pass
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                done = children.pop(pid, None)
                if done is not None:
                    code = os.waitstatus_to_exitcode(status)  # -N: killed by signal N -> 128 + N
                    try:
                        done.sendall(_CODE.pack(code if code >= 0 else 128 - code))
                    except OSError:
                        pass
                    done.close()
                last = time.monotonic()
    finally:
        srv.close()
        try:
            if os.stat(path).st_ino == ours:  # not a newer server's socket
                path.unlink()
        except OSError:
            pass


# What stages import on first use (registry modules, and libraries imported where they are
# needed so that the CLI starts fast): a server imports them once, before its first child. Measured
# on the default's digits: a `clean` attack cell spent 5.6 of its 8.3 s importing these.
PRELOAD = ("preempt.stages.data", "preempt.stages.model", "preempt.stages.defend", "preempt.stages.revert",
           "preempt.stages.attack", "preempt.stages.gather", "preempt.stages.aggregate",
           "torchvision.models", "torchvision.transforms.functional", "torchmetrics.functional.image",
           "torchmetrics.image.lpip", "pyautoattack", "foolbox", "PIL.Image", "sklearn.datasets",
           "sklearn.model_selection")


def preload(registries: Iterable[Any]) -> None:
    """Import :data:`PRELOAD` and every registry's modules (nothing is computed: no threads start)."""
    for registry in registries:
        registry.names()  # a registry imports its package's modules on first use
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional library: its stage imports it (and fails) itself
            pass


if __name__ == "__main__":  # python -m preempt.warm SOCKET PACKAGE (started by run())
    if len(sys.argv) > 2 and Path(sys.argv[2]).resolve() != PACKAGE:
        sys.exit(f"preempt.warm: imported {PACKAGE}, not the client's {sys.argv[2]}; not serving")
    from preempt.cli import main as cli_main  # the imports this server exists to keep warm
    from preempt.config import REGISTRIES

    preload(REGISTRIES.values())
    serve(Path(sys.argv[1]), cli_main)
