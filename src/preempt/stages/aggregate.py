"""Stage ``aggregate``: join the per-cell JSON files into the tidy table ``results/metrics.csv``.

Besides the experiment's names, each row says what ran (``defense_ref``, ``victim_ref``,
``attack_ref``; see ``preempt.claims``), the key that published numbers are matched on.
"""

from __future__ import annotations

import json

import pandas as pd

from .. import artifacts, dag
from ..runtime import log
from . import Context

COLUMNS = ["dataset", "defense", "victim", "attack", "reversion", "n", "clean_acc", "robust_acc",
           "robust_acc_ball", "robust_acc_by_surrogate",
           "ssim", "lpips", "linf", "l2", "sec_per_image", "adv_linf", "attack_sec_per_image", "lpips_note"]


def table(params) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    from ..claims import describe

    tables = params.grid.tables()
    rows = [{**json.loads(open(dag.cell_path(d, r, v, a)).read()), **describe(params, d, v, a),
             "tables": ";".join(tables[(d, r, v, a)])}
            for d, r, v, a in params.grid.cells()]
    df = pd.DataFrame(rows)
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def run(ctx: Context) -> None:
    df = table(ctx.params)
    artifacts.write_text(dag.METRICS_CSV, df.to_csv(index=False, float_format="%.6g"))
    log.info("%d cells -> %s", len(df), dag.METRICS_CSV)
