"""Stage ``defend [--shard I/K] DEFENSE``: robust examples x_r for the evaluation images, timed.

Batches of ``runtime.batch_size`` images each draw from their own seeded generator
(``runtime.batch_generator``), so a shard (images of whole batches, ``dag.shard_range``) computes
exactly what the unsharded stage computes for those images; ``gather re`` joins the shards.
"""

from __future__ import annotations

import time

import torch

from .. import artifacts, dag, defenses
from ..runtime import batch_generator, log, progress
from . import Context


def run(ctx: Context, name: str, shard: tuple[int, int] | None = None) -> None:
    cfg = ctx.params.defenses[name]
    data, _ = artifacts.load(dag.data_path("test"))
    bs = ctx.params.runtime.batch_size
    lo, hi = dag.shard_range(len(data["x"]), bs, shard)
    x, y = data["x"][lo:hi].to(ctx.device), data["y"][lo:hi].to(ctx.device)
    models = defenses.load_models(cfg, ctx.params, ctx.device)
    seed = getattr(cfg, "seed", 0)
    where = f" (shard {dag.shard_suffix(shard)}: images {lo}-{hi})" if shard else ""
    log.info("defense %s (%s) on %d images%s, batch %d", name, cfg.method, len(x), where, bs)  # type: ignore[attr-defined]
    parts = [x[:0]]
    t0 = time.perf_counter()
    for i in progress(range(0, len(x), bs), desc=f"defend {name}", total=-(-len(x) // bs)):
        gen = batch_generator(seed, lo + i, ctx.device)
        parts.append(defenses.run(cfg, x[i:i + bs], models=models, y_true=y[i:i + bs], generator=gen))
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    x_r = torch.cat(parts)
    out = dag.re_shard_path(name, shard) if shard else dag.re_path(name)
    artifacts.save(out, {"x": x_r, "y": y}, {
        "stage": "defend", "defense": name, "method": cfg.method, "seed": seed,  # type: ignore[attr-defined]
        "shard": list(shard) if shard else None, "range": [lo, hi],
        "params_hash": artifacts.params_hash(cfg.model_dump()), "wall_seconds": seconds,
        "sec_per_image": seconds / max(len(x), 1), "device": str(ctx.device), "n": len(x),
    })
    log.info("defense %s: %.4f s/image, max |x_r - x| = %.4f -> %s", name, seconds / max(len(x), 1),
             float((x_r - x).abs().max()) if len(x) else 0.0, out)
