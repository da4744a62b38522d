"""Stage ``aggregate``: join the per-cell JSON files into the tidy table ``results/metrics.csv``.

Besides the experiment's names, each row says what ran (``defense_ref``, ``victim_ref``,
``attack_ref``; see ``preempt.claims``), the key that published numbers are matched on.
"""

from __future__ import annotations

import json

import pandas as pd

from .. import artifacts, paths
from ..config import Params
from ..runtime import log
from . import Context

COLUMNS = ["dataset", "defense", "victim", "attack", "reversion", "n", "clean_acc", "robust_acc",
           "robust_acc_ball", "robust_acc_by_surrogate",
           "ssim", "lpips", "linf", "l2", "sec_per_image", "adv_linf", "attack_sec_per_image", "lpips_note"]


def describe(p: Params, defense: str, victim: str, attack: str) -> dict[str, str]:
    """What a cell ran, by each config's own description (the keys published numbers use)."""
    return {"defense_ref": p.defenses[defense].ref(), "victim_ref": p.models[victim].ref(p.models),
            "attack_ref": p.attacks[attack].ref()}


def table(params: Params) -> pd.DataFrame:
    tables = params.grid.tables()
    rows = [{**json.loads(open(paths.cell_path(d, r, v, a)).read()), **describe(params, d, v, a),
             "tables": ";".join(tables[(d, r, v, a)])}
            for d, r, v, a in params.grid.cells()]
    df = pd.DataFrame(rows)
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def run(ctx: Context) -> None:
    df = table(ctx.params)
    artifacts.write_text(paths.METRICS_CSV, df.to_csv(index=False, float_format="%.6g"))
    log.info("%d cells -> %s", len(df), paths.METRICS_CSV)
