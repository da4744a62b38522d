"""Sharding: RE generation and attacks split the images into k chunks that run as separate jobs
and are gathered. Wall time of the defend + attack part of a run with k parallel jobs vs 1 job,
and whether the sharded metrics equal the unsharded ones.

    python benchmarks/shard_scaling.py [--quick] [--k 2] [--n 500]

Each job is one process with ``runtime.num_threads`` threads, so k jobs use k cores; on a
cluster each shard is one SLURM job (``snakemake --profile workflow/profiles/slurm``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

import _common  # noqa: F401  (puts tests/ on sys.path for workspace)
from preempt import config, paths
from workspace import TIMING, make, run, tiny_params, write_params


def params(n: int, k: int, batch: int) -> dict:
    raw = tiny_params(n_eval=n)
    raw["runtime"].update(batch_size=batch, num_threads=1)
    raw["models"] = {m: raw["models"][m] for m in ("classifier", "backbone")}
    raw["defenses"]["mcgs"].update(n_samples=40, schedule="F5B5")  # enough work per image that compute,
    raw["attacks"]["pgd"].update(steps=300)                           # not job start-up (~4 s), dominates
    raw["attacks"] = {"pgd": raw["attacks"]["pgd"]}
    raw["reversions"] = {"none": raw["reversions"]["none"]}
    raw["grid"] = {"defenses": ["mcgs"], "reversions": ["none"], "victims": ["backbone"], "attacks": ["pgd"]}
    raw["shards"] = {"defend": k, "attack": k}
    return raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="240 images, k=2 (< 2 minutes on 2 cores)")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--n", type=int, default=500)
    a = ap.parse_args()
    if a.quick:
        a.n = 240
    batch = max(1, a.n // (4 * a.k))
    with tempfile.TemporaryDirectory(prefix="preempt-shards-") as tmp:
        ws = make(Path(tmp), params(a.n, 1, batch))
        p = config.load(ws / "params.yaml")
        run(["snakemake", "--cores", "2", *(paths.model_path(m) for m in p.models)], ws)
        cells = [paths.cell_path(*c) for c in p.grid.cells()]
        times, frames = {}, {}
        for k, cores in ((1, 1), (a.k, a.k)):
            for d in ("re", "shards", "inputs", "adv", "cells"):
                shutil.rmtree(ws / "results" / d, ignore_errors=True)
            write_params(ws, params(a.n, k, batch))
            t0 = time.perf_counter()
            run(["snakemake", "--cores", str(cores), *cells], ws)
            times[k] = time.perf_counter() - t0
            frames[k] = pd.concat([pd.read_json(ws / c, typ="series").to_frame().T for c in cells])
            print(f"k={k}: {times[k]:.1f} s wall with {cores} parallel job(s)")
        cols = [c for c in frames[1].columns if c not in TIMING]
        same = frames[1][cols].reset_index(drop=True).equals(frames[a.k][cols].reset_index(drop=True))
    print(f"{a.n} images in batches of {batch}: sharded metrics identical to unsharded: {same}")
    print(f"speed-up with k={a.k} parallel shards: {times[1] / times[a.k]:.2f}x")


if __name__ == "__main__":
    main()
