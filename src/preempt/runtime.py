"""Process-wide settings for a stage: device, threads, determinism, logging."""

from __future__ import annotations

import logging
import os
import sys

import torch

from .config import RuntimeConfig

log = logging.getLogger("preempt")


def setup_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[preempt %(asctime)s] %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(os.environ.get("PREEMPT_LOGLEVEL", "INFO"))
        log.propagate = False


def configure(rt: RuntimeConfig) -> torch.device:
    """Fix threads and determinism for this process and pick the device."""
    torch.set_num_threads(rt.num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if rt.device == "cuda" and not torch.cuda.is_available():
        from .errors import PreemptError

        raise PreemptError("runtime.device: 'cuda' requested but no GPU is visible; set runtime.device: auto or cpu")
    if rt.device == "cpu" or (rt.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    torch.backends.cudnn.benchmark = False
    return torch.device("cuda")


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private RNG for one stage: randomness never depends on what ran before in the process."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def progress(iterable, desc: str, total: int | None = None):  # type: ignore[no-untyped-def]
    """tqdm progress bar on stderr (quiet when PREEMPT_PROGRESS=0)."""
    from tqdm.auto import tqdm

    disable = os.environ.get("PREEMPT_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, file=sys.stderr)
