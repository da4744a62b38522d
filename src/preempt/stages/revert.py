"""Stage ``revert DEFENSE REVERSION``: what the adaptive attacker feeds its attack (x~ or x_r).

Besides ``x`` and ``y``, the artifact holds each image's distance to the original image
(``dist_l2``, ``dist_linf``): for ``reconstruct``, Moon et al.'s Fig. 3 histogram.
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

    def redefend(x: torch.Tensor, overrides: dict[str, str], **updates: object) -> torch.Tensor:
        cfg = defenses.with_roles(dcfg, overrides)
        if updates:
            unknown = [k for k in updates if k not in type(cfg).model_fields]
            if unknown:  # e.g. the 'none' defense has no dynamics to reverse: nothing to undo
                log.info("defense %s has no %s; reversion %s leaves its input unchanged", defense, unknown, reversion)
                return x.clone()
            cfg = cfg.model_copy(update=updates)
        return defenses.run(cfg, x, models=ctx.role_models(cfg, cache), y_true=None, generator=gen)

    log.info("reversion %s on defense %s (%d images)", reversion, defense, len(x_r))
    t0 = time.perf_counter()
    bs = ctx.params.runtime.batch(ctx.device, x_r.shape[1:])
    revert = REVERSIONS[rcfg.method].fn
    x_t = torch.cat([revert(x_r[i:i + bs], cfg=rcfg, redefend=redefend, generator=gen) for i in range(0, len(x_r), bs)])
    seconds = time.perf_counter() - t0
    out = paths.input_path(defense, reversion)
    x0 = artifacts.load(paths.data_path("test"))[0]["x"].to(x_t.device)
    d = (x_t - x0).flatten(1)
    artifacts.save(out, {"x": x_t, "y": y, "dist_l2": d.norm(dim=1), "dist_linf": d.abs().amax(1)}, provenance(
        ctx, "revert", [dcfg, rcfg], seconds, defense=defense, reversion=reversion, method=rcfg.method, seed=seed,
        defense_sec_per_image=meta["sec_per_image"]))
    log.info("reversion %s/%s: mean |x~ - x_r|_inf = %.4f -> %s", defense, reversion,
             float((x_t - x_r).flatten(1).abs().amax(1).mean()), out)
