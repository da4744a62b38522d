"""Stage ``timing DEFENSE``: seconds per image of one defense, repeated, for the speed claims.

A speed claim ("700x faster than Bi-Level") is a ratio of two noisy timings, so it needs
repeats: the ``timing`` block of params.yaml names the defenses to time, the number of images
(the first ``images`` evaluation images, one batch) and ``repeats`` (at least 3). The stage runs
the defense once untimed (warm-up: allocations, lazy initialisation), then ``repeats`` times on
the same images with the same per-image randomness, each run timed on its own, and writes
``results/timing/<defense>.json`` (``sec_per_image``: one number per repeat). The aggregate stage
joins them into ``results/timing.csv``; ``preempt.stats.time_ratio`` gives the ratio's interval.

A defense listed here need not be in the grid: the paper's Bi-Level at 100 x 20 steps can be
timed on a few images without defending every image with it.
"""

from __future__ import annotations

import time

from .. import artifacts, paths
from ..runtime import log
from . import Context, provenance
from .defend import compute, passes


def run(ctx: Context, defense: str) -> None:
    p = ctx.params
    cfg, block = p.defenses[defense], p.timing
    data, _ = artifacts.load(paths.data_path("test"))
    n = min(block.images, len(data["x"]))
    x, y = data["x"][:n].to(ctx.device), data["y"][:n].to(ctx.device)
    models = ctx.role_models(cfg)
    ref = ctx.declared.defenses[defense].ref()  # as written (a shrunk run computes with fewer samples)
    log.info("timing defense %s (%s) on %d images: 1 warm-up + %d timed runs", defense, ref, n, block.repeats)
    dev = passes(ctx, cfg, n)  # sized on the warm-up: the timed runs do not probe
    compute(cfg, x, y, models, lo=0, batch_size=n, device=ctx.device, desc=f"time {defense} (warm-up)", passes=dev)
    seconds = []
    for r in range(block.repeats):
        t0 = time.perf_counter()
        compute(cfg, x, y, models, lo=0, batch_size=n, device=ctx.device, desc=f"time {defense} ({r + 1}/{block.repeats})",
                passes=dev)
        seconds.append((time.perf_counter() - t0) / n)
    out = paths.timing_path(defense)
    artifacts.write_json(out, {**provenance(ctx, "timing", cfg, sum(seconds) * n, defense=defense), "defense_ref": ref,
                               "images": n, "repeats": block.repeats, "sec_per_image": seconds})
    log.info("defense %s: %s s/image over %d repeats -> %s", defense, ", ".join(f"{s:.4g}" for s in seconds),
             block.repeats, out)
