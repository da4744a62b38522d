"""Process-wide settings for a stage: device, threads, determinism, batches and their RNGs, logging.

``RuntimeConfig`` (params.yaml's ``runtime`` section) lives here, beside the code it configures.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Literal, TypeVar

import torch
from pydantic import Field
from tqdm.auto import tqdm

from .errors import PreemptError
from .paths import Shard
from .registry import MethodConfig

log = logging.getLogger("preempt")
T = TypeVar("T")


class RuntimeConfig(MethodConfig):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch intra-op threads per job: fixed so that results do not depend on the driver's
    # parallelism (CPU reductions are bit-identical only for a fixed thread count).
    num_threads: int = Field(1, ge=1)
    batch_size: int = Field(256, ge=1)
    # GPU speed-ups, off by default (see accelerate below); each changes float results
    # slightly, so they are stage params: switching one reruns the stages it affects.
    amp: bool = Field(False, description="autocast forward passes to bfloat16/float16 (CUDA only)")
    channels_last: bool = Field(False, description="NHWC memory format for conv models (CUDA only)")
    compile: bool = Field(False, description="torch.compile the models a stage runs (CUDA only)")


def shard_range(n: int, batch_size: int, shard: Shard | None) -> tuple[int, int]:
    """Images [lo, hi) of shard ``(i, k)`` (1-based i): whole batches, as even as possible, so a
    sharded run draws exactly the batches (and per-batch seeds) of an unsharded one."""
    if shard is None:
        return 0, n
    i, k = shard
    n_batches = -(-n // batch_size)
    lo_b, hi_b = (i - 1) * n_batches // k, i * n_batches // k
    return min(n, lo_b * batch_size), min(n, hi_b * batch_size)


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
    if rt.device == "cuda" and not torch.cuda.is_available():
        raise PreemptError("runtime.device: 'cuda' requested but no GPU is visible; set runtime.device: auto or cpu")
    if rt.device == "cpu" or (rt.device == "auto" and not torch.cuda.is_available()):
        # CPU kernels are deterministic for a fixed thread count (bit-identical reruns are tested);
        # the flag below only matters for CUDA kernels and costs ~1.5 s of imports per job.
        return torch.device("cpu")
    # cuBLAS needs this workspace setting for deterministic matmuls (before its first use)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return torch.device("cuda")


class Accelerated(torch.nn.Module):
    """A frozen model run with the GPU options of ``runtime``: autocast (AMP) forward passes whose
    logits come back as float32, and/or channels-last inputs. Gradients still flow to the input."""

    def __init__(self, model: torch.nn.Module, amp: bool, channels_last: bool) -> None:
        super().__init__()
        self.model, self.amp, self.channels_last = model, amp, channels_last
        self.dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=self.dtype, enabled=self.amp):
            return self.model(x).float()


def accelerate(model: torch.nn.Module, rt: RuntimeConfig, device: torch.device | str) -> torch.nn.Module:
    """Apply ``runtime.amp`` / ``channels_last`` / ``compile`` to a model on a CUDA device.

    All three default off, and on a CPU device they are ignored (with one log line): AMP and
    compilation change float results and make CPU runs slower or less reproducible, which is
    exactly what the CPU default must not be."""
    wanted = [k for k in ("amp", "channels_last", "compile") if getattr(rt, k)]
    if not wanted:
        return model
    if torch.device(device).type != "cuda":
        log.info("runtime: %s ignored on %s (GPU-only options)", ", ".join(wanted), device)
        return model
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rt.amp or rt.channels_last:
        model = Accelerated(model, rt.amp, rt.channels_last)
    if rt.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A private RNG for one stage: randomness never depends on what ran before in the process."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def batch_generator(seed: int, start: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The RNG of the batch that starts at image ``start``: a batch draws the same numbers however
    the images are split into shards or jobs (the seed mixes both with a 64-bit hash)."""
    digest = hashlib.sha256(f"{seed}:{start}".encode()).digest()
    return generator(int.from_bytes(digest[:8], "little") & (2**63 - 1), device)


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm progress bar on stderr (quiet when PREEMPT_PROGRESS=0)."""
    disable = os.environ.get("PREEMPT_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, file=sys.stderr)
