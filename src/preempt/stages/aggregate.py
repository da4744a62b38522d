"""Stage ``aggregate``: join the per-cell JSON files into the tidy table ``results/metrics.csv``
and their per-image outcomes into ``results/outcomes.csv.gz`` (one row per cell and image:
``defense, reversion, victim, attack, image`` and the outcome columns of
``preempt.stages.attack.OUTCOMES``), join the timing block's repeats into ``results/timing.csv``,
then check the papers' claims on them (``results/claims.csv``, with intervals) and summarise for
DVC (``results/claims.json``, ``results/summary.json``: ``dvc metrics diff`` compares experiments).

Besides the experiment's names, each row says what ran (``defense_ref``, ``backbone_ref``: the
model the defense computes its edit on, ``victim_ref``, ``attack_ref``; see ``preempt.published``), the key that published numbers are matched on,
whether the victim is adversarially trained (``victim_at``), and which paper exhibits its grid
blocks reproduce (``reproduces``, see ``preempt.papers``).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pandas as pd

from .. import artifacts, claims, paths
from ..config import Params
from ..defenses import roles
from ..runtime import log
from . import Context
from .attack import OUTCOMES

COLUMNS = ["dataset", "defense", "victim", "attack", "reversion", "n", "clean_acc", "robust_acc",
           "robust_acc_ball", "robust_acc_by_surrogate",
           "ssim", "lpips", "linf", "l2", "sec_per_image", "adv_linf", "attack_sec_per_image", "lpips_note"]


def describe(p: Params, defense: str, victim: str, attack: str) -> dict[str, str | bool | None]:
    """What a cell ran, by each config's own description (the keys published numbers use)."""
    acfg, dcfg = p.attacks[attack], p.defenses[defense]
    backbone = roles(dcfg).get("backbone")  # a defense's ref leaves out its models (MSPD's Table XI varies it)
    return {"defense_ref": dcfg.ref(), "backbone_ref": p.models[backbone].ref(p.models) if backbone else "none",
            "victim_ref": p.models[victim].ref(p.models),
            "attack_ref": acfg.ref([p.models[s].ref(p.models) for s in acfg.surrogates]),
            "victim_at": p.models[victim].adversarial(p.models)}


def tables(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics.csv: one row per cell, outcomes: one row per cell and image)."""
    tags, exhibits = params.grid.tables(), params.grid.exhibits()
    rows, per_image = [], []
    for d, r, v, a in params.grid.cells():
        cell: dict[str, Any] = json.loads(open(paths.cell_path(d, r, v, a)).read())
        out = cell.pop("outcomes", {})
        rows.append({**cell, **describe(params, d, v, a), "tables": ";".join(tags[(d, r, v, a)]),
                     "reproduces": ";".join(exhibits[(d, r, v, a)])})
        if out:
            per_image.append(pd.DataFrame({"defense": d, "reversion": r, "victim": v, "attack": a,
                                           "image": range(len(next(iter(out.values())))), **out}))
    df = pd.DataFrame(rows)
    outcomes = pd.concat(per_image, ignore_index=True) if per_image else pd.DataFrame(columns=[*claims.CELL, "image"])
    outcomes = outcomes[[*claims.CELL, "image", *(c for c in OUTCOMES if c in outcomes.columns)]]
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]], outcomes


def timing(params: Params) -> pd.DataFrame:
    """The timing block's repeats, one row each (defense, defense_ref, images, repeat, sec_per_image)."""
    rows = []
    for d in params.timing.defenses:
        rec = json.loads(open(paths.timing_path(d)).read())
        rows += [{"defense": d, "defense_ref": rec["defense_ref"], "images": rec["images"], "repeat": i,
                  "sec_per_image": s} for i, s in enumerate(rec["sec_per_image"])]
    return pd.DataFrame(rows, columns=["defense", "defense_ref", "images", "repeat", "sec_per_image"])


def summary(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per defense, the main table's means over victims and attacks (reversion none)."""
    main = claims.select(df, {"reversion": "none", "tables": "main"})
    cols = [c for c in ("clean_acc", "robust_acc", "ssim", "linf", "sec_per_image") if c in main.columns]
    means = main.groupby("defense", sort=False)[cols].mean()
    return {d: {c: round(float(v), 6) for c, v in row.items() if pd.notna(v)} for d, row in means.iterrows()}


def run(ctx: Context) -> None:
    checked = claims.load(paths.CLAIMS_FILE)  # a bad claims file fails before anything is written
    p = ctx.declared  # refs and tables of the experiment as written (a shrunk run: the same cells)
    df, outcomes = tables(p)
    times = timing(p)
    log.info("checking %d claims on %d cells (%d per-image outcomes) and %d timings (%d bootstrap resamples)",
             len(checked), len(df), len(outcomes), len(times), p.statistics.resamples)
    verdicts = claims.check(checked, claims.Data.of(df, outcomes, times), p.statistics)
    artifacts.write_text(paths.METRICS_CSV, df.to_csv(index=False, float_format="%.6g"))
    # gzip without a file name or time in its header: the same outcomes give the same bytes (DVC hash)
    artifacts.write_bytes(paths.OUTCOMES_CSV, gzip.compress(outcomes.to_csv(index=False, float_format="%.6g").encode(),
                                                            mtime=0))
    artifacts.write_text(paths.TIMING_CSV, times.to_csv(index=False, float_format="%.6g"))
    artifacts.write_text(paths.CLAIMS_CSV, verdicts.to_csv(index=False, float_format="%.6g"))
    artifacts.write_json(paths.CLAIMS_JSON, {
        "claims": claims.summary(verdicts),
        **{row.claim: c for row in verdicts.itertuples() if (c := claims.code(str(row.verdict))) is not None}})
    artifacts.write_json(paths.SUMMARY_JSON, summary(df))
    log.info("%d cells -> %s (+ %s, %s); %d claims -> %s (%s)", len(df), paths.METRICS_CSV, paths.OUTCOMES_CSV,
             paths.TIMING_CSV, len(verdicts), paths.CLAIMS_CSV,
             ", ".join(f"{k} {v}" for k, v in claims.summary(verdicts).items()))
