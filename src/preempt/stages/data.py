"""Stage ``data``: materialize the dataset's train split (its first ``n_train`` images, if set) and
the first ``n_eval`` test images."""

from __future__ import annotations

import time

from .. import artifacts, paths
from ..data import DATASETS
from ..runtime import log
from . import Context


def run(ctx: Context) -> None:
    cfg = ctx.params.dataset
    entry = DATASETS[cfg.name]
    for split in ("train", "test"):
        t0 = time.perf_counter()
        data = entry.fn(cfg, split)
        x, y = data.x, data.y
        if split == "test":
            x, y = x[: cfg.n_eval], y[: cfg.n_eval]
        elif cfg.n_train is not None:
            x, y = x[: cfg.n_train], y[: cfg.n_train]
        out = paths.data_path(split)
        artifacts.save(out, {"x": x, "y": y}, {
            "stage": "data", "dataset": cfg.name, "split": split, "n": len(y),
            "image_shape": list(x.shape[1:]), "classes": list(data.classes),
            "mean": list(data.mean), "std": list(data.std),
            "params_hash": artifacts.params_hash(cfg.model_dump()), "wall_seconds": time.perf_counter() - t0,
        })
        log.info("dataset %s/%s: %d images %s -> %s", cfg.name, split, len(y), tuple(x.shape[1:]), out)
