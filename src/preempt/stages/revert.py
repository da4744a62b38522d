"""Stage ``revert DEFENSE REVERSION``: what the adaptive attacker feeds its attack (x~ or x_r).

Besides ``x`` and ``y``, the artifact holds each image's distance to the original image
(``dist_l2``, ``dist_linf``): for ``reconstruct``, Moon et al.'s Fig. 3 histogram.

The white-box attacker (a reversion that re-runs the defense with the defender's own models)
knows "both the backbone model and defense algorithm (including settings)" (Fast Preemption,
Sec. 4.2): under the synthetic mislabel protocol (``defenses.<d>.mislabel``) its re-run uses the
same label source *including the shift*; a gray- or black-box attacker does not get the shift.
Under the paper's own protocol (a weak labelling classifier) there is nothing extra to know: the
white-box re-run uses the defender's classifier, whose errors are the wrong labels.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .. import artifacts, defenses, paths
from ..reversions import REVERSIONS
from ..runtime import generator, log
from . import Context, provenance


def run(ctx: Context, defense: str, reversion: str) -> None:
    dcfg = ctx.params.defenses[defense]
    rcfg = ctx.params.reversions[reversion]
    data, meta = artifacts.load(paths.re_path(defense))
    x_r, y = data["x"].to(ctx.device), data["y"]
    seed = dcfg.seed + 7919  # the attacker's randomness differs from the defender's
    gen = generator(seed, ctx.device)
    cache: dict[str, nn.Module] = {}

    # the synthetic protocol's shift, per image of the evaluation set, for the white-box attacker
    # (it re-runs the defense with the defender's own models: no role overrides); None otherwise
    white_box = dcfg.mislabel is not None and rcfg.uses_defense_models()
    shift_all = dcfg.mislabel.shifts(len(x_r), ctx.env.spec.n_classes) if dcfg.mislabel is not None and white_box else None
    batch = slice(0, 0)  # the images of the batch being reverted (set by the loop below)

    def redefend(x: torch.Tensor, overrides: dict[str, str], **updates: object) -> torch.Tensor:
        cfg = defenses.with_roles(dcfg, overrides)
        shift = None if shift_all is None else shift_all[batch]
        if updates:
            unknown = [k for k in updates if k not in type(cfg).model_fields]
            if unknown:  # e.g. the 'none' defense has no dynamics to reverse: nothing to undo
                log.info("defense %s has no %s; reversion %s leaves its input unchanged", defense, unknown, reversion)
                return x.clone()
            cfg = cfg.model_copy(update=updates)
        return defenses.run(cfg, x, models=ctx.role_models(cfg, cache), y_true=None, generator=gen, label_shift=shift)

    log.info("reversion %s on defense %s (%d images)%s", reversion, defense, len(x_r),
             "; the white-box attacker re-runs it with the same wrong-label shift" if shift_all is not None else "")
    t0 = time.perf_counter()
    bs = ctx.params.runtime.batch(ctx.device, x_r.shape[1:])
    revert = REVERSIONS[rcfg.method].fn
    parts = []
    for i in range(0, len(x_r), bs):
        batch = slice(i, i + bs)
        parts.append(revert(x_r[batch], cfg=rcfg, redefend=redefend, generator=gen))
    x_t = torch.cat(parts)
    seconds = time.perf_counter() - t0
    out = paths.input_path(defense, reversion)
    x0 = artifacts.load(paths.data_path("test"))[0]["x"].to(x_t.device)
    d = (x_t - x0).flatten(1)
    artifacts.save(out, {"x": x_t, "y": y, "dist_l2": d.norm(dim=1), "dist_linf": d.abs().amax(1)}, provenance(
        ctx, "revert", [dcfg, rcfg], seconds, defense=defense, reversion=reversion, method=rcfg.method, seed=seed,
        defense_sec_per_image=meta["sec_per_image"], defense_backbone_params=meta.get("backbone_params")))
    log.info("reversion %s/%s: mean |x~ - x_r|_inf = %.4f -> %s", defense, reversion,
             float((x_t - x_r).flatten(1).abs().amax(1).mean()), out)
