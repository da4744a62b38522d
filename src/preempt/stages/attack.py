"""Stage ``attack [--shard I/K] DEFENSE REVERSION VICTIM ATTACK``: one grid cell, attacked and measured.

The attack's budget is measured from the input the attacker receives (the RE, or the reverted
RE), as in the papers. ``clean_acc`` is the victim's accuracy on that input, ``robust_acc`` after
the attack; ``ssim``/``lpips``/``linf``/``l2`` compare that input with the original images (how
visible the defense is, plus the reversion if any); ``adv_linf`` checks the attack's budget.

Fast Preemption's protocol for reversions (Sec. 4.3) reads three accuracies of the victim:
``orig_acc`` on the original images, ``re_acc`` on the robust examples, ``clean_acc`` on the
reverted ones; ``reversion_recovery`` is the share of the defense's change that the reversion
undoes (:func:`preempt.metrics.recovery`; meaningful with a ``mislabel`` defense). MSPD's Table XI
columns: ``grad_sim``, the mean cosine of the defense backbone's and the victim's input gradients
on the first ``metrics.grad_sim_images`` original images (empty without a backbone), and the
victim's cross-entropy on the attacker's input, over all images (``ce``) and split by the
attack's outcome (``ce_robust``: still correct after the attack; ``ce_fooled``).

A transfer attack (``surrogates`` set) is crafted white-box on each surrogate and evaluated on
the victim: ``robust_acc`` is the mean over surrogates and ``robust_acc_by_surrogate`` lists
each. ``robust_acc_ball`` also counts as robust an example whose attack left the ``threat_eps``
ball of the true original (equal to ``robust_acc`` when the attack sets no ``threat_eps``).

Per image, the cell also keeps its outcomes (``outcomes`` in the cell's JSON, one list per
column of :data:`OUTCOMES`): the victim correct on the original image (``orig``), on the RE
(``re``), on the attacker's input (``input``), after the attack (``robust``: the share of
surrogates a transfer attack fails with; ``robust_ball``) and, for certification, the certified
radius of a correct prediction (``cert``; -1 for an abstention or a wrong class). The aggregate
stage joins them into ``results/outcomes.csv.gz``: two cells on the same images are then paired
samples (``preempt.stats``).

The attack runs batch by batch (``runtime.batch_size``, or the smaller ``runtime.model_batch`` of
the victim or a surrogate: a declared number, since an attack's random draws are per batch), each batch with its own seeded
generator, so a shard (``--shard I/K``, whole batches) crafts exactly the examples the unsharded
stage crafts for its images; it saves them, and ``gather adv`` joins the shards and scores the
cell with :func:`score`, the same code as the unsharded stage.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from .. import artifacts, metrics, paths
from ..attacks import ATTACKS, AttackConfig
from ..defenses import roles
from ..models.wrappers import bpda
from ..paths import Shard
from ..runtime import batch_generator, log, progress, shard_range
from . import Context, provenance

Cell = tuple[str, str, str, str]  # defense, reversion, victim, attack
OUTCOMES = ("orig", "re", "input", "robust", "robust_ball", "cert")  # per-image columns (module docstring)


def n_attacked(acfg: AttackConfig, n: int) -> int:
    """How many of the cell's images the attack evaluates (the first n_ex, where it sets one)."""
    return n if acfg.n_ex is None else min(n, acfg.n_ex)


def record(ctx: Context, cell: Cell, seconds: float, **extra: Any) -> dict[str, Any]:
    """The sidecar of a cell's adversarial examples (whole, or one shard)."""
    acfg = ctx.params.attacks[cell[3]]
    return provenance(ctx, "attack", acfg, seconds, cell=list(cell), seed=acfg.seed, **extra)


def craft(ctx: Context, attack: str, victim: str, x_in: torch.Tensor, y: torch.Tensor, lo: int,
          model: torch.nn.Module, bs: int) -> dict[str, torch.Tensor]:
    """Adversarial examples for images ``lo..lo+len(x_in)`` of the cell, crafted on the victim or on
    each surrogate (a transfer attack) in batches of ``bs``: model name -> examples."""
    acfg = ctx.params.attacks[attack]
    fn = ATTACKS[acfg.method].fn
    surrogates = list(acfg.surrogates)
    advs: dict[str, torch.Tensor] = {}
    for name in surrogates or [victim]:
        crafted_on = ctx.model(name) if surrogates else model
        parts = [x_in[:0]]
        with bpda(crafted_on, acfg.bpda):
            for i in progress(range(0, len(x_in), bs), desc=f"{attack} on {name}", total=-(-len(x_in) // bs)):
                gen = batch_generator(acfg.seed, lo + i, ctx.device)
                parts.append(fn(crafted_on, x_in[i:i + bs], y[i:i + bs], cfg=acfg, generator=gen))
        advs[name] = torch.cat(parts)
    return advs


def score(ctx: Context, cell: Cell, x_in: torch.Tensor, y: torch.Tensor, x0: torch.Tensor,
          model: torch.nn.Module, advs: dict[str, torch.Tensor], seconds: float, meta: dict[str, Any]) -> None:
    """Measure one cell from its adversarial examples and write its adv artifact and metrics row."""
    defense, reversion, victim, attack = cell
    p = ctx.params
    acfg = p.attacks[attack]
    surrogates = list(acfg.surrogates)
    n = len(next(iter(advs.values())))
    x_in, y, x0 = x_in[:n], y[:n], x0[:n]
    threat = acfg.threat_eps
    robust, robust_ball, correct, correct_ball = {}, {}, {}, {}
    for name, x_adv in advs.items():
        pred = metrics.predict(model, x_adv)
        correct[name] = pred == y
        robust[name] = metrics.accuracy(pred, y)
        if threat is not None:  # an example pushed out of the threat ball counts as robust
            d = (x_adv - x0).flatten(1)
            dist = d.abs().amax(1) if acfg.norm == "Linf" else d.norm(dim=1)  # in the attack's norm
            pred = torch.where(dist > threat + 1e-6, y, pred)
        correct_ball[name] = pred == y
        robust_ball[name] = metrics.accuracy(pred, y)
    x_adv = next(iter(advs.values()))
    lp, lp_note = metrics.lpips(x_in.cpu(), x0.cpu(), p.metrics.lpips_net)
    pred_in = metrics.predict(model, x_in)  # once: a randomized victim must give one answer per image
    clean_acc = metrics.accuracy(pred_in, y)
    outcomes = {"input": pred_in == y, "robust": torch.stack(list(correct.values())).float().mean(0),
                "robust_ball": torch.stack(list(correct_ball.values())).float().mean(0)}
    row = {
        "dataset": p.dataset.name, "defense": defense, "victim": victim, "attack": attack,
        "reversion": reversion, "n": n,
        "clean_acc": clean_acc,
        "robust_acc": sum(robust.values()) / len(robust),
        "robust_acc_ball": sum(robust_ball.values()) / len(robust_ball),
        "robust_acc_by_surrogate": json.dumps(robust) if surrogates else "",
        "ssim": metrics.ssim(x_in, x0, p.metrics.ssim_kernel_size, p.metrics.ssim_sigma),
        **metrics.distances(x_in, x0),
        "lpips": lp, "lpips_note": lp_note,
        "adv_linf": max(float((a - x_in).flatten(1).abs().amax(1).max()) if n else 0.0 for a in advs.values()),
        "sec_per_image": meta["defense_sec_per_image"],
        "backbone_params_M": None if meta.get("defense_backbone_params") is None else meta["defense_backbone_params"] / 1e6,
        "attack_sec_per_image": seconds / max(n, 1),
        **diagnostics(ctx, cell, x_in, y, x0, model, next(iter(correct.values())), clean_acc, outcomes),
    }
    t0 = time.perf_counter()
    measured = acfg.measure(model, x_in, y, batch_generator(acfg.seed, 0, ctx.device))
    row["attack_sec_per_image"] += (time.perf_counter() - t0) / max(n, 1)  # certification is the attack's time
    row.update({k: v for k, v in measured.items() if not isinstance(v, torch.Tensor)})
    per_image = {k: v for k, v in measured.items() if isinstance(v, torch.Tensor)}  # e.g. certified radii
    if "radius" in per_image:  # certification: the certified radius of a correct prediction, -1 otherwise
        right = per_image["certified_class"].to(y.device) == y
        outcomes["cert"] = torch.where(right, per_image["radius"].to(y.device).float().clamp(max=1e6), -1.0)
        outcomes["robust"] = outcomes["robust_ball"] = (outcomes["cert"] >= acfg.eps).float()  # as robust_acc
    row["outcomes"] = {k: [_compact(v) for v in outcomes[k].float().tolist()] for k in OUTCOMES if k in outcomes}
    extra = {f"x_{s}": a for s, a in advs.items()} if surrogates else {}
    # ``correct``: per image, still correct after the (first surrogate's) attack (success/failure figures)
    artifacts.save(paths.adv_path(*cell), {"x": x_adv, "y": y, "correct": next(iter(correct.values())), **extra, **per_image},
                   record(ctx, cell, seconds, surrogates=surrogates))
    artifacts.write_json(paths.cell_path(*cell), row)
    log.info("cell %s: clean %.1f%% robust %.1f%% -> %s", "/".join(cell), row["clean_acc"], row["robust_acc"],
             paths.cell_path(*cell))


def _compact(v: float) -> float | int:
    """0/1 outcomes as ints, shares and radii rounded: a small cell JSON."""
    return int(v) if v in (0.0, 1.0) else round(v, 6)


def diagnostics(ctx: Context, cell: Cell, x_in: torch.Tensor, y: torch.Tensor, x0: torch.Tensor,
                model: torch.nn.Module, robust: torch.Tensor, clean_acc: float,
                outcomes: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """The protocol accuracies and MSPD's Table XI columns of a cell (see the module docstring);
    ``robust`` marks the images still correct after the (first surrogate's) attack. Adds the
    per-image ``orig`` and ``re`` outcomes to ``outcomes``."""
    defense, reversion, _, _ = cell
    n = len(y)
    pred0 = metrics.predict(model, x0)
    outcomes["orig"] = pred0 == y
    orig_acc = metrics.accuracy(pred0, y)
    if reversion == "none":
        re_acc = clean_acc
        outcomes["re"] = outcomes["input"]
    else:
        x_re = artifacts.load(paths.re_path(defense))[0]["x"][:n].to(ctx.device)
        pred_re = metrics.predict(model, x_re)
        outcomes["re"] = pred_re == y
        re_acc = metrics.accuracy(pred_re, y)
    ce = metrics.cross_entropy(model, x_in, y)
    backbone = roles(ctx.params.defenses[defense]).get("backbone")
    k = min(n, ctx.params.metrics.grad_sim_images)
    sim = None
    if backbone is not None and k:
        with bpda(model):  # a pre-processing victim: the gradient of the classifier behind it
            sim = float(metrics.gradient_similarity(ctx.model(backbone), model, x0[:k], y[:k]).mean())

    def mean(v: torch.Tensor) -> float | None:
        return float(v.mean()) if len(v) else None

    return {"orig_acc": orig_acc, "re_acc": re_acc,
            "reversion_recovery": None if reversion == "none" else metrics.recovery(orig_acc, re_acc, clean_acc),
            "grad_sim": sim, "ce": mean(ce), "ce_robust": mean(ce[robust]), "ce_fooled": mean(ce[~robust])}


def inputs(ctx: Context, defense: str, reversion: str, victim: str,
           attack: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.nn.Module, dict[str, Any]]:
    """The attacker's input, labels, original images (first n_attacked), the victim, and input metadata."""
    inp, meta = artifacts.load(paths.input_path(defense, reversion))
    orig, _ = artifacts.load(paths.data_path("test"))
    n = n_attacked(ctx.params.attacks[attack], len(inp["x"]))
    x_in, y, x0 = (t[:n].to(ctx.device) for t in (inp["x"], inp["y"], orig["x"]))
    return x_in, y, x0, ctx.model(victim), meta


def run(ctx: Context, defense: str, reversion: str, victim: str, attack: str, shard: Shard | None = None) -> None:
    p = ctx.params
    acfg = p.attacks[attack]
    cell = (defense, reversion, victim, attack)
    x_in, y, x0, model, meta = inputs(ctx, *cell)
    surrogates = list(acfg.surrogates)
    bs = p.runtime.batch(ctx.device, x_in.shape[1:], [victim, *surrogates])
    lo, hi = shard_range(len(x_in), bs, shard)
    log.info("attack %s on victim %s%s, input %s/%s (images %d-%d of %d%s, eps=%.4g)", attack, victim,
             f" (transfer from {', '.join(surrogates)})" if surrogates else "", defense, reversion, lo, hi,
             len(x_in), f", shard {paths.shard_suffix(shard)}" if shard else "", acfg.eps)
    t0 = time.perf_counter()
    advs = craft(ctx, attack, victim, x_in[lo:hi], y[lo:hi], lo, model, bs)
    seconds = time.perf_counter() - t0
    if shard is None:
        score(ctx, cell, x_in, y, x0, model, advs, seconds, meta)
        return
    out = paths.adv_shard_path(*cell, shard)
    artifacts.save(out, {f"x_{name}": a for name, a in advs.items()},
                   record(ctx, cell, seconds, shard=list(shard), range=[lo, hi]))
    log.info("shard %s of cell %s -> %s", paths.shard_suffix(shard), "/".join(cell), out)
