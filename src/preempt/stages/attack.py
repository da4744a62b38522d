"""Stage ``attack DEFENSE REVERSION VICTIM ATTACK``: one grid cell, attacked and measured.

The attack's budget is measured from the input the attacker receives (the RE, or the reverted
RE), as in the papers. ``clean_acc`` is the victim's accuracy on that input, ``robust_acc`` after
the attack; ``ssim``/``lpips``/``linf``/``l2`` compare that input with the original images (how
visible the defense is, plus the reversion if any); ``adv_linf`` checks the attack's budget.

A transfer attack (``surrogates`` set) is crafted white-box on each surrogate and evaluated on
the victim: ``robust_acc`` is the mean over surrogates and ``robust_acc_by_surrogate`` lists
each. ``robust_acc_ball`` also counts as robust an example whose attack left the ``threat_eps``
ball of the true original (equal to ``robust_acc`` when the attack sets no ``threat_eps``).
"""

from __future__ import annotations

import json
import time

import torch

from .. import artifacts, dag, metrics
from ..attacks import ATTACKS
from ..models import load
from ..models.wrappers import bpda
from ..runtime import generator, log
from . import Context


def run(ctx: Context, defense: str, reversion: str, victim: str, attack: str) -> None:
    p = ctx.params
    acfg = p.attacks[attack]
    inp, meta = artifacts.load(dag.input_path(defense, reversion))
    orig, _ = artifacts.load(dag.data_path("test"))
    x_in, y, x0 = inp["x"].to(ctx.device), inp["y"].to(ctx.device), orig["x"].to(ctx.device)
    model = load(victim, p, ctx.device)
    surrogates = list(acfg.surrogates)  # type: ignore[attr-defined]
    log.info("attack %s on victim %s%s, input %s/%s (%d images, eps=%.4g)", attack, victim,
             f" (transfer from {', '.join(surrogates)})" if surrogates else "", defense, reversion,
             len(x_in), acfg.eps)  # type: ignore[attr-defined]
    fn = ATTACKS[acfg.method].fn  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    advs: dict[str, torch.Tensor] = {}
    for name in surrogates or [victim]:
        crafted_on = load(name, p, ctx.device) if surrogates else model
        with bpda(crafted_on, acfg.bpda):  # type: ignore[attr-defined]
            advs[name] = fn(crafted_on, x_in, y, cfg=acfg, generator=generator(acfg.seed, ctx.device))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    n = min(len(a) for a in advs.values())  # an attack may evaluate only the first n_ex images
    x_in, y, x0 = x_in[:n], y[:n], x0[:n]
    threat = acfg.threat_eps  # type: ignore[attr-defined]
    robust, robust_ball = {}, {}
    for name, x_adv in advs.items():
        pred = metrics.predict(model, x_adv[:n])
        robust[name] = metrics.accuracy(pred, y)
        if threat is not None:  # an example pushed out of the threat ball counts as robust
            pred = torch.where((x_adv[:n] - x0).flatten(1).abs().amax(1) > threat + 1e-6, y, pred)
        robust_ball[name] = metrics.accuracy(pred, y)
    x_adv = next(iter(advs.values()))[:n]
    lp, lp_note = metrics.lpips(x_in.cpu(), x0.cpu(), p.metrics.lpips_net)
    row = {
        "dataset": p.dataset.name, "defense": defense, "victim": victim, "attack": attack,  # type: ignore[attr-defined]
        "reversion": reversion, "n": n,
        "clean_acc": metrics.accuracy(metrics.predict(model, x_in), y),
        "robust_acc": sum(robust.values()) / len(robust),
        "robust_acc_ball": sum(robust_ball.values()) / len(robust_ball),
        "robust_acc_by_surrogate": json.dumps(robust) if surrogates else "",
        "ssim": metrics.ssim(x_in, x0, p.metrics.ssim_kernel_size, p.metrics.ssim_sigma),
        **metrics.distances(x_in, x0),
        "lpips": lp, "lpips_note": lp_note,
        "adv_linf": max(float((a[:n] - x_in).flatten(1).abs().amax(1).max()) for a in advs.values()),
        "sec_per_image": meta["defense_sec_per_image"],
        "attack_sec_per_image": seconds / max(n, 1),
    }
    adv_out = dag.adv_path(defense, reversion, victim, attack)
    extra = {f"x_{s}": a[:n] for s, a in advs.items()} if surrogates else {}
    artifacts.save(adv_out, {"x": x_adv, "y": y, **extra}, {
        "stage": "attack", "cell": [defense, reversion, victim, attack], "seed": acfg.seed,  # type: ignore[attr-defined]
        "surrogates": surrogates,
        "params_hash": artifacts.params_hash(acfg.model_dump()), "wall_seconds": seconds, "device": str(ctx.device),
    })
    artifacts.write_json(dag.cell_path(defense, reversion, victim, attack), row)
    log.info("cell %s/%s/%s/%s: clean %.1f%% robust %.1f%% -> %s", defense, reversion, victim, attack,
             row["clean_acc"], row["robust_acc"], dag.cell_path(defense, reversion, victim, attack))
