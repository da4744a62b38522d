"""AutoAttack through the pipeline's attack stage (``preempt.stages.attack.craft``: the registry
entry, per-batch seeding, BPDA context) vs ``pyautoattack.AutoAttack`` called directly on the
same model, images and settings. Goal: ratio <= 1.05.

    python benchmarks/autoattack_overhead.py [--quick] [--n 64] [--sub apgd-ce apgd-t] [--n-iter 100]
"""

from __future__ import annotations

import argparse
import copy

import torch
import yaml

from _common import ROOT, cifar_images, cifar_resnet, setup_threads, timeit
from preempt import config
from preempt.stages import Context
from preempt.stages import attack as attack_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 images, APGD-CE + APGD-T (3 targets), 20 iterations, 5 repeats")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--sub", nargs="+", default=["apgd-ce", "apgd-t"])
    ap.add_argument("--n-iter", type=int, default=100)
    ap.add_argument("--targets", type=int, default=9)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.quick:
        a.n, a.n_iter, a.targets, a.repeat = 64, 20, 3, 5
    setup_threads(a.threads)
    model, origin = cifar_resnet(20)
    x, y, data = cifar_images(a.n)
    eps = 8 / 255
    print(f"ResNet-20 ({origin}); {a.n} {data}; AutoAttack {a.sub}, {a.n_iter} iterations, {a.targets} targets")

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["attacks"]["autoattack"] = {"method": "autoattack", "version": "standard", "attacks": a.sub, "eps": eps,
                                    "n_iter": a.n_iter, "n_target_classes": a.targets, "seed": 0,
                                    "batch_size": a.n}
    raw["runtime"]["batch_size"] = a.n
    ctx = Context(config.parse(raw), torch.device("cpu"))

    def pipeline() -> torch.Tensor:
        return attack_stage.craft(ctx, "autoattack", "victim", x, y, 0, model)["victim"]

    def direct() -> torch.Tensor:
        from pyautoattack import AutoAttack

        aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
        aa.attacks_to_run = list(a.sub)
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = a.n_iter
        aa.apgd_targeted.n_target_classes = a.targets
        aa.verbose = False
        return aa.run_standard_evaluation(x, y, batch_size=a.n)[0]

    same = torch.equal(pipeline(), direct())
    t_direct, t_pipe = [], []
    for _ in range(a.repeat):  # interleaved, so drift of the machine hits both alike
        t_direct.append(timeit(direct, 1, warmup=0))
        t_pipe.append(timeit(pipeline, 1, warmup=0))
    td, tp = sorted(t_direct)[len(t_direct) // 2], sorted(t_pipe)[len(t_pipe) // 2]
    print(f"identical adversarial examples: {same}")
    print(f"direct pyautoattack: {td:.2f} s; through the pipeline: {tp:.2f} s")
    print(f"pipeline / direct (goal <= 1.05): {tp / td:.3f}")


if __name__ == "__main__":
    main()
