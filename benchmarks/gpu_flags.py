"""MCGS (MSPD: F1B1, N=20) seconds per image with the GPU options of ``runtime`` switched on one
at a time (``tf32``, ``amp``, ``channels_last``, ``compile``; the process set up as a stage's,
``preempt.runtime.configure``, and the model wrapped by ``accelerate``), and how far each moves
the REs from the plain float32 run (max |difference|). On a machine without CUDA it
says so and times the plain CPU run only: the options are ignored on CPU.

    python benchmarks/gpu_flags.py [--quick] [--batch 256]
"""

from __future__ import annotations

import argparse

import torch

from _common import cifar_images, cifar_resnet, setup_threads, timeit
from preempt.config import RuntimeConfig
from preempt.defenses import DEFENSES
from preempt.defenses.mcgs import MCGSConfig
from preempt.runtime import accelerate, configure


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 images, 3 repeats")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    if a.quick:
        a.batch, a.repeat = 64, 3
    setup_threads(2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base, origin = cifar_resnet(20)
    x, _, data = cifar_images(a.batch)
    x = x.to(device)
    print(f"ResNet-20 ({origin}); {a.batch} {data}; device {device}")
    cfg = MCGSConfig(classifier="classifier", backbone="backbone", eps=8 / 255, n_samples=20)
    fn = DEFENSES["mcgs"].fn  # type: ignore[attr-defined]
    settings = [{}] if device.type == "cpu" else [{}, {"tf32": True}, {"amp": True}, {"channels_last": True},
                                                 {"compile": True}, {"tf32": True, "compile": True},
                                                 {"amp": True, "channels_last": True}]
    results: dict[str, float] = {}
    plain_xr = None
    for opts in settings:
        rt = RuntimeConfig(num_threads=2, **opts)
        configure(rt)
        model = accelerate(base.to(device), rt, device)
        models = {"classifier": model, "backbone": model}

        def once() -> torch.Tensor:
            out = fn(x, cfg=cfg, models=models, y_true=None, generator=torch.Generator(device).manual_seed(0))
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        t = timeit(once, a.repeat, warmup=2)
        xr = once()
        name = "+".join(opts) or "plain"
        results[name] = t / a.batch
        plain_xr = xr if plain_xr is None else plain_xr  # the first setting is the plain run
        diff = float((xr - plain_xr).abs().max())
        print(f"{name:20s} {t / a.batch * 1e3:8.3f} ms/image   max |x_r - plain x_r| = {diff:.2e}")
    if device.type == "cpu":
        print("no CUDA device: amp/channels_last/compile are GPU-only and ignored on CPU")
    best = min((v, k) for k, v in results.items())
    print(f"fastest: {best[1]} at {best[0] * 1e3:.3f} ms/image")


if __name__ == "__main__":
    main()
