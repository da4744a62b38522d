"""Stage ``defend DEFENSE``: robust examples x_r for the evaluation images, timed."""

from __future__ import annotations

import time

import torch

from .. import artifacts, dag, defenses
from ..runtime import generator, log, progress
from . import Context


def run(ctx: Context, name: str) -> None:
    cfg = ctx.params.defenses[name]
    data, _ = artifacts.load(dag.data_path("test"))
    x, y = data["x"].to(ctx.device), data["y"].to(ctx.device)
    models = defenses.load_models(cfg, ctx.params, ctx.device)
    seed = getattr(cfg, "seed", 0)
    gen = generator(seed, ctx.device)
    bs = ctx.params.runtime.batch_size
    log.info("defense %s (%s) on %d images, batch %d", name, cfg.method, len(x), bs)  # type: ignore[attr-defined]
    parts = []
    t0 = time.perf_counter()
    for i in progress(range(0, len(x), bs), desc=f"defend {name}", total=-(-len(x) // bs)):
        parts.append(defenses.run(cfg, x[i:i + bs], models=models, y_true=y[i:i + bs], generator=gen))
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    x_r = torch.cat(parts)
    out = dag.re_path(name)
    artifacts.save(out, {"x": x_r, "y": y}, {
        "stage": "defend", "defense": name, "method": cfg.method, "seed": seed,  # type: ignore[attr-defined]
        "params_hash": artifacts.params_hash(cfg.model_dump()), "wall_seconds": seconds,
        "sec_per_image": seconds / len(x), "device": str(ctx.device), "n": len(x),
    })
    log.info("defense %s: %.4f s/image, max |x_r - x| = %.4f -> %s", name, seconds / len(x),
             float((x_r - x).abs().max()), out)
