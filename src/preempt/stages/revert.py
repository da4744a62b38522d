"""Stage ``revert DEFENSE REVERSION``: what the adaptive attacker feeds its attack (x~ or x_r)."""

from __future__ import annotations

import time

import torch

from .. import artifacts, dag, defenses
from ..reversions import REVERSIONS
from ..runtime import generator, log
from . import Context


def run(ctx: Context, defense: str, reversion: str) -> None:
    dcfg = ctx.params.defenses[defense]
    rcfg = ctx.params.reversions[reversion]
    data, meta = artifacts.load(dag.re_path(defense))
    x_r, y = data["x"].to(ctx.device), data["y"]
    seed = getattr(dcfg, "seed", 0) + 7919  # the attacker's randomness differs from the defender's
    gen = generator(seed, ctx.device)
    cache: dict[str, torch.nn.Module] = {}

    def redefend(x: torch.Tensor, overrides: dict[str, str], **updates: object) -> torch.Tensor:
        cfg = defenses.with_roles(dcfg, overrides)
        if updates:
            unknown = [k for k in updates if k not in type(cfg).model_fields]
            if unknown:  # e.g. the 'none' defense has no dynamics to reverse: nothing to undo
                log.info("defense %s has no %s; reversion %s leaves its input unchanged", defense, unknown, reversion)
                return x.clone()
            cfg = cfg.model_copy(update=updates)
        models = defenses.load_models(cfg, ctx.params, ctx.device, cache)
        return defenses.run(cfg, x, models=models, y_true=None, generator=gen)

    log.info("reversion %s on defense %s (%d images)", reversion, defense, len(x_r))
    t0 = time.perf_counter()
    bs = ctx.params.runtime.batch_size
    x_t = torch.cat([REVERSIONS[rcfg.method].fn(x_r[i:i + bs], cfg=rcfg, redefend=redefend, generator=gen)  # type: ignore[attr-defined]
                     for i in range(0, len(x_r), bs)])
    seconds = time.perf_counter() - t0
    out = dag.input_path(defense, reversion)
    artifacts.save(out, {"x": x_t, "y": y}, {
        "stage": "revert", "defense": defense, "reversion": reversion, "method": rcfg.method,  # type: ignore[attr-defined]
        "seed": seed, "params_hash": artifacts.params_hash([dcfg.model_dump(), rcfg.model_dump()]),
        "wall_seconds": seconds, "defense_sec_per_image": meta["sec_per_image"], "device": str(ctx.device),
    })
    log.info("reversion %s/%s: mean |x~ - x_r|_inf = %.4f -> %s", defense, reversion,
             float((x_t - x_r).flatten(1).abs().amax(1).mean()), out)
