"""Stage ``aggregate``: join the per-cell JSON files into the tidy table ``results/metrics.csv``,
then check the papers' claims on it (``results/claims.csv``) and summarise both for DVC
(``results/claims.json``, ``results/summary.json``: ``dvc metrics diff`` compares experiments).

Besides the experiment's names, each row says what ran (``defense_ref``, ``victim_ref``,
``attack_ref``; see ``preempt.published``), the key that published numbers are matched on,
whether the victim is adversarially trained (``victim_at``), and which paper exhibits its grid
blocks reproduce (``reproduces``, see ``preempt.papers``).
"""

from __future__ import annotations

import json

import pandas as pd

from .. import artifacts, claims, paths
from ..config import Params
from ..runtime import log
from . import Context

COLUMNS = ["dataset", "defense", "victim", "attack", "reversion", "n", "clean_acc", "robust_acc",
           "robust_acc_ball", "robust_acc_by_surrogate",
           "ssim", "lpips", "linf", "l2", "sec_per_image", "adv_linf", "attack_sec_per_image", "lpips_note"]


def describe(p: Params, defense: str, victim: str, attack: str) -> dict[str, str | bool | None]:
    """What a cell ran, by each config's own description (the keys published numbers use)."""
    return {"defense_ref": p.defenses[defense].ref(), "victim_ref": p.models[victim].ref(p.models),
            "attack_ref": p.attacks[attack].ref(), "victim_at": p.models[victim].adversarial(p.models)}


def table(params: Params) -> pd.DataFrame:
    tables, exhibits = params.grid.tables(), params.grid.exhibits()
    rows = [{**json.loads(open(paths.cell_path(d, r, v, a)).read()), **describe(params, d, v, a),
             "tables": ";".join(tables[(d, r, v, a)]), "reproduces": ";".join(exhibits[(d, r, v, a)])}
            for d, r, v, a in params.grid.cells()]
    df = pd.DataFrame(rows)
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def summary(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per defense, the main table's means over victims and attacks (reversion none)."""
    main = claims.select(df, {"reversion": "none", "tables": "main"})
    cols = [c for c in ("clean_acc", "robust_acc", "ssim", "linf", "sec_per_image") if c in main.columns]
    means = main.groupby("defense", sort=False)[cols].mean()
    return {d: {c: round(float(v), 6) for c, v in row.items() if pd.notna(v)} for d, row in means.iterrows()}


def run(ctx: Context) -> None:
    checked = claims.load(paths.CLAIMS_FILE)  # a bad claims file fails before anything is written
    df = table(ctx.params)
    verdicts = claims.check(checked, df)
    artifacts.write_text(paths.METRICS_CSV, df.to_csv(index=False, float_format="%.6g"))
    artifacts.write_text(paths.CLAIMS_CSV, verdicts.to_csv(index=False, float_format="%.6g"))
    artifacts.write_json(paths.CLAIMS_JSON, {
        "claims": claims.summary(verdicts),
        **{row.claim: int(row.verdict == claims.HOLDS) for row in verdicts.itertuples() if row.verdict != claims.NOT_MEASURED}})
    artifacts.write_json(paths.SUMMARY_JSON, summary(df))
    log.info("%d cells -> %s; %d claims -> %s (%s)", len(df), paths.METRICS_CSV, len(verdicts), paths.CLAIMS_CSV,
             ", ".join(f"{k} {v}" for k, v in claims.summary(verdicts).items()))
