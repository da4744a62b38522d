"""Stage ``aggregate``: join the per-cell JSON files into the tidy table ``results/metrics.csv``."""

from __future__ import annotations

import json

import pandas as pd

from .. import artifacts, dag
from ..runtime import log
from . import Context

COLUMNS = ["dataset", "defense", "victim", "attack", "reversion", "n", "clean_acc", "robust_acc",
           "ssim", "lpips", "linf", "l2", "sec_per_image", "adv_linf", "attack_sec_per_image", "lpips_note"]


def table(params) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    g = params.grid
    rows = [json.loads(open(dag.cell_path(d, r, v, a)).read())
            for d in g.defenses for r in g.reversions for v in g.victims for a in g.attacks]
    df = pd.DataFrame(rows)
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def run(ctx: Context) -> None:
    df = table(ctx.params)
    artifacts.write_text(dag.METRICS_CSV, df.to_csv(index=False, float_format="%.6g"))
    log.info("%d cells -> %s", len(df), dag.METRICS_CSV)
