"""Stage ``gather re DEFENSE`` / ``gather adv DEFENSE REVERSION VICTIM ATTACK``: join shards.

Shards (``shards.defend`` / ``shards.attack`` > 1 in params.yaml) each hold the images of whole
batches, in order; gathering concatenates them, checks that they tile the image range, and for
an attack cell scores it with the same code as the unsharded attack stage. Timing is the sum of
the shards' compute time (what one job would have spent), not the wall time of the fan-out.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import artifacts, paths
from ..errors import PreemptError
from ..runtime import log
from . import Context
from . import attack as attack_stage
from . import defend as defend_stage


def _load_shards(shard_paths: list[str], n: int) -> tuple[list[dict[str, torch.Tensor]], float, dict[str, Any]]:
    """The shards' tensors, their summed compute seconds, and the first shard's sidecar."""
    parts, seconds, end = [], 0.0, 0
    first: dict[str, Any] = {}
    for path in shard_paths:
        data, meta = artifacts.load(path)
        first = first or meta
        lo, hi = meta["range"]
        if lo != end:
            raise PreemptError(f"{path}: shard covers images {lo}-{hi} but {end} was expected; "
                               "rerun the workflow (a shard is stale)")
        parts.append(data)
        seconds += meta["wall_seconds"]
        end = hi
    if end != n:
        raise PreemptError(f"{shard_paths[-1]}: shards end at image {end}, not {n}; rerun the workflow (a shard is stale)")
    return parts, seconds, first


def run(ctx: Context, kind: str, *args: str) -> None:
    p = ctx.params
    if kind == "re":
        (defense,) = args
        k = p.shards.defend
        data, _ = artifacts.load(paths.data_path("test"))
        n = len(data["x"])
        parts, seconds, first = _load_shards([paths.re_shard_path(defense, (i, k)) for i in range(1, k + 1)], n)
        joined = {key: torch.cat([part[key] for part in parts]) for key in parts[0] if key != "y"}  # x, traces
        artifacts.save(paths.re_path(defense), {**joined, "y": data["y"]},
                       defend_stage.record(ctx, defense, seconds, n, shards=k, backbone_params=first.get("backbone_params")))
        log.info("gathered %d shards of defense %s -> %s", k, defense, paths.re_path(defense))
    elif kind == "adv" and len(args) == 4:
        defense, reversion, victim, attack = args
        cell = (defense, reversion, victim, attack)
        k = p.shards.attack
        x_in, y, x0, model, meta = attack_stage.inputs(ctx, *cell)
        parts, seconds, _ = _load_shards([paths.adv_shard_path(*cell, (i, k)) for i in range(1, k + 1)], len(x_in))
        advs = {key.removeprefix("x_"): torch.cat([part[key] for part in parts]).to(ctx.device) for key in parts[0]}
        attack_stage.score(ctx, cell, x_in, y, x0, model, advs, seconds, meta)
    else:
        raise PreemptError(f"gather {kind} {' '.join(args)}: use 'gather re DEFENSE' or "
                           "'gather adv DEFENSE REVERSION VICTIM ATTACK'")
