"""RE generation overhead of MCGS: seconds per image of MSPD (F1B1, N=20) divided by the seconds
of exactly the backbone forward+backward passes it needs (2*N per image) on the same batch.

What is outside those passes is overhead: the labelling classifier's forward pass, the random
starts, projections and averaging. Goal: <= 1.2.

    python benchmarks/mcgs_overhead.py [--quick] [--batch 32] [--n-samples 20] [--threads 2]
"""

from __future__ import annotations

import argparse

import torch

from _common import cifar_images, cifar_resnet, setup_threads, timeit
from preempt.attacks import input_grad
from preempt.defenses import DEFENSES
from preempt.defenses.mcgs import MCGSConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small batch, 3 repeats (< 2 minutes on 2 cores)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-samples", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.quick:
        a.batch, a.repeat = 16, 3
    setup_threads(a.threads)
    backbone, origin = cifar_resnet(20)
    classifier, _ = cifar_resnet(20)
    x, y, data = cifar_images(a.batch)
    print(f"backbone/classifier: ResNet-20 ({origin}); {a.batch} {data}; N={a.n_samples}")
    cfg = MCGSConfig(classifier="classifier", backbone="backbone", eps=8 / 255, schedule="F1B1",
                     n_samples=a.n_samples, chunk_size=8192)
    models = {"classifier": classifier, "backbone": backbone}
    gen = torch.Generator().manual_seed(0)
    mcgs = DEFENSES["mcgs"].fn  # type: ignore[attr-defined]
    t_mcgs = timeit(lambda: mcgs(x, cfg=cfg, models=models, y_true=None, generator=gen), a.repeat)

    starts = x.repeat(a.n_samples, 1, 1, 1)  # the same N x batch images, 2 passes (F1 + B1)
    targets = y.repeat(a.n_samples)

    def passes() -> None:
        for _ in range(2):
            for i in range(0, len(starts), cfg.chunk_size):
                input_grad(backbone, starts[i:i + cfg.chunk_size], targets[i:i + cfg.chunk_size])

    t_pass = timeit(passes, a.repeat)
    print(f"MCGS (MSPD F1B1, N={a.n_samples}): {t_mcgs / a.batch * 1e3:.3f} ms/image")
    print(f"2*N backbone forward+backward passes: {t_pass / a.batch * 1e3:.3f} ms/image")
    print(f"overhead ratio (goal <= 1.2): {t_mcgs / t_pass:.3f}")


if __name__ == "__main__":
    main()
