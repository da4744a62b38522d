"""Shared set-up for the benchmark scripts: a real CIFAR-10 model and real images when the offline
copies are present (``PREEMPT_SHARED`` or ``../shared``), else the same architecture with random
weights and random images: timings depend on shapes, not on weight values.

Benchmarks measure and print; the figure each one is about is its last line.
"""

from __future__ import annotations

import os
import sys
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from preempt.models import ARCHS, Normalized

os.environ.setdefault("PREEMPT_PROGRESS", "0")  # no progress bars between the figures
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tests/workspace.py: scratch project copies (shared with the tests)
SHARED = Path(os.environ.get("PREEMPT_SHARED", ROOT.parent / "shared"))
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def cifar_resnet(depth: int = 20) -> tuple[torch.nn.Module, str]:
    """akamaster's CIFAR-10 ResNet-<depth> (real weights if available), frozen, eval mode."""
    net = ARCHS[f"resnet{depth}"].fn((3, 32, 32), 10)  # type: ignore[attr-defined]
    files = sorted((SHARED / "weights" / "akamaster-resnet-cifar10").glob(f"akamaster_resnet{depth}-*.th"))
    origin = "random weights (offline copy not found)"
    if files:
        ckpt = torch.load(files[0], map_location="cpu", weights_only=True)
        net.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()})
        origin = f"akamaster weights {files[0].name}"
    model = Normalized(net, CIFAR_MEAN, CIFAR_STD).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, origin


def cifar_images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    f = SHARED / "data" / "cifar10" / "cifar10_test_first1000.npz"
    if f.is_file():  # CIFAR's row format: 3072 bytes = R, G, B planes of 32x32 (see its README)
        with np.load(f) as z:
            x = torch.from_numpy(z["data"][:n].reshape(-1, 3, 32, 32)).float() / 255.0
            y = torch.from_numpy(z["labels"][:n]).long()
        return x.contiguous(), y, f"CIFAR-10 test images ({f.name})"
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g), "random images"


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median wall seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def setup_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} CPU thread(s)")
