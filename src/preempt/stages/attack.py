"""Stage ``attack DEFENSE REVERSION VICTIM ATTACK``: one grid cell, attacked and measured.

The attack's budget is measured from the input the attacker receives (the RE, or the reverted
RE), as in the papers. ``clean_acc`` is the victim's accuracy on that input, ``robust_acc`` after
the attack; ``ssim``/``lpips``/``linf``/``l2`` compare that input with the original images (how
visible the defense is, plus the reversion if any); ``adv_linf`` checks the attack's budget.
"""

from __future__ import annotations

import time

from .. import artifacts, dag, metrics
from ..attacks import ATTACKS
from ..models import load
from ..runtime import generator, log
from . import Context


def run(ctx: Context, defense: str, reversion: str, victim: str, attack: str) -> None:
    p = ctx.params
    acfg = p.attacks[attack]
    inp, meta = artifacts.load(dag.input_path(defense, reversion))
    orig, _ = artifacts.load(dag.data_path("test"))
    x_in, y, x0 = inp["x"].to(ctx.device), inp["y"].to(ctx.device), orig["x"].to(ctx.device)
    model = load(victim, p, ctx.device)
    log.info("attack %s on victim %s, input %s/%s (%d images, eps=%.4g)", attack, victim, defense,
             reversion, len(x_in), acfg.eps)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    x_adv = ATTACKS[acfg.method].fn(model, x_in, y, cfg=acfg, generator=generator(acfg.seed, ctx.device))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - t0
    n = len(x_adv)  # an attack may evaluate only the first n_ex images
    x_in, y, x0 = x_in[:n], y[:n], x0[:n]
    lp, lp_note = metrics.lpips(x_in.cpu(), x0.cpu(), p.metrics.lpips_net)
    row = {
        "dataset": p.dataset.name, "defense": defense, "victim": victim, "attack": attack,  # type: ignore[attr-defined]
        "reversion": reversion, "n": n,
        "clean_acc": metrics.accuracy(metrics.predict(model, x_in), y),
        "robust_acc": metrics.accuracy(metrics.predict(model, x_adv), y),
        "ssim": metrics.ssim(x_in, x0, p.metrics.ssim_kernel_size, p.metrics.ssim_sigma),
        **metrics.distances(x_in, x0),
        "lpips": lp, "lpips_note": lp_note,
        "adv_linf": float((x_adv - x_in).flatten(1).abs().amax(1).max()),
        "sec_per_image": meta["defense_sec_per_image"],
        "attack_sec_per_image": seconds / max(n, 1),
    }
    adv_out = dag.adv_path(defense, reversion, victim, attack)
    artifacts.save(adv_out, {"x": x_adv, "y": y}, {
        "stage": "attack", "cell": [defense, reversion, victim, attack], "seed": acfg.seed,  # type: ignore[attr-defined]
        "params_hash": artifacts.params_hash(acfg.model_dump()), "wall_seconds": seconds, "device": str(ctx.device),
    })
    artifacts.write_json(dag.cell_path(defense, reversion, victim, attack), row)
    log.info("cell %s/%s/%s/%s: clean %.1f%% robust %.1f%% -> %s", defense, reversion, victim, attack,
             row["clean_acc"], row["robust_acc"], dag.cell_path(defense, reversion, victim, attack))
