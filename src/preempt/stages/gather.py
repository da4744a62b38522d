"""Stage ``gather re DEFENSE`` / ``gather adv DEFENSE REVERSION VICTIM ATTACK``: join shards.

Shards (``shards.defend`` / ``shards.attack`` > 1 in params.yaml) each hold the images of whole
batches, in order; gathering concatenates them, checks that they tile the image range, and for
an attack cell scores it with the same code as the unsharded attack stage. Timing is the sum of
the shards' compute time (what one job would have spent), not the wall time of the fan-out.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import artifacts, dag
from ..errors import PreemptError
from ..runtime import log
from . import Context
from . import attack as attack_stage


def _load_shards(paths: list[str], n: int) -> tuple[list[dict[str, torch.Tensor]], float]:
    parts, seconds, end = [], 0.0, 0
    for path in paths:
        data, meta = artifacts.load(path)
        lo, hi = meta["range"]
        if lo != end:
            raise PreemptError(f"{path}: shard covers images {lo}-{hi} but {end} was expected; "
                               "rerun the workflow (a shard is stale)")
        parts.append(data)
        seconds += meta["wall_seconds"]
        end = hi
    if end != n:
        raise PreemptError(f"{paths[-1]}: shards end at image {end}, not {n}; rerun the workflow (a shard is stale)")
    return parts, seconds


def run(ctx: Context, kind: str, *args: str) -> None:
    p = ctx.params
    if kind == "re":
        (defense,) = args
        k = p.shards.defend
        data, _ = artifacts.load(dag.data_path("test"))
        n = len(data["x"])
        parts, seconds = _load_shards([dag.re_shard_path(defense, (i, k)) for i in range(1, k + 1)], n)
        x_r = torch.cat([part["x"] for part in parts])
        meta: dict[str, Any] = {
            "stage": "defend", "defense": defense, "method": p.defenses[defense].method,  # type: ignore[attr-defined]
            "seed": getattr(p.defenses[defense], "seed", 0), "shards": k,
            "params_hash": artifacts.params_hash(p.defenses[defense].model_dump()), "wall_seconds": seconds,
            "sec_per_image": seconds / max(n, 1), "device": str(ctx.device), "n": n,
        }
        artifacts.save(dag.re_path(defense), {"x": x_r, "y": data["y"]}, meta)
        log.info("gathered %d shards of defense %s -> %s", k, defense, dag.re_path(defense))
    elif kind == "adv":
        cell = tuple(args)
        k = p.shards.attack
        x_in, y, x0, model, meta = attack_stage.inputs(ctx, *cell)
        parts, seconds = _load_shards([dag.adv_shard_path(*cell, (i, k)) for i in range(1, k + 1)], len(x_in))  # type: ignore[arg-type]
        advs = {key.removeprefix("x_"): torch.cat([part[key] for part in parts]).to(ctx.device) for key in parts[0]}
        attack_stage.score(ctx, cell, x_in, y, x0, model, advs, seconds, meta)  # type: ignore[arg-type]
    else:
        raise PreemptError(f"gather: unknown kind {kind!r}; use 're' or 'adv'")
