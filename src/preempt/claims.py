"""Reproduced vs published: match published numbers to grid cells by *what* ran.

A cell's names (``mspd``, ``victim3``) are the experiment's own; published numbers are keyed by
what was run instead, so the match does not depend on naming. Each config describes itself
(``ref()`` of defenses, attacks and models; the aggregate stage writes them into metrics.csv):

- ``defense_ref``: ``none`` or ``mcgs/<schedule>/N<n>/eta<eta>/eps<eps>`` (eps to 4 decimals);
- ``victim_ref``: the RobustBench zoo name, a checkpoint's file name, or ``train/<arch>/<recipe>``;
- ``attack_ref``: e.g. ``autoattack/standard/Linf/0.0314``, ``pgd-ce/Linf/0.0314/20``.

``config/published.csv`` holds published numbers (numbers only, each with its source and table
reference) under the same keys; ``compare`` joins them with the reproduced ``metrics.csv`` rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import PreemptError

KEYS = ["dataset", "defense_ref", "victim_ref", "attack_ref", "reversion"]


def load_published(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path, comment="#", dtype={"value": float})
    missing = {*KEYS, "metric", "value", "source", "reference"} - set(df.columns)
    if missing:
        raise PreemptError(f"{path}: missing columns {sorted(missing)}")
    return df


def compare(metrics: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """One row per published number that an experiment cell reproduces: both values and the gap.

    ``clean_acc``/``robust_acc`` match cell by cell; ``sec_per_image`` matches on the defense
    alone (averaged over the experiment's cells of that defense).
    """
    cols = ["dataset", "defense", "victim", "attack", "reversion", *KEYS[1:4]]
    rows = []
    cell_metrics = published[published["metric"].isin(["clean_acc", "robust_acc"])]
    long = metrics.melt(id_vars=[c for c in cols if c in metrics.columns],
                        value_vars=["clean_acc", "robust_acc"], var_name="metric", value_name="reproduced")
    m = long.merge(cell_metrics, on=[*KEYS, "metric"], how="inner")
    if len(m):
        # clean accuracy does not depend on the attack: keep one row per published clean number
        m = m.drop_duplicates(subset=[*KEYS, "metric", "value"]) if (m["metric"] == "clean_acc").any() else m
        rows.append(m)
    timing = published[published["metric"] == "sec_per_image"]
    if len(timing):
        t = (metrics.groupby(["dataset", "defense", "defense_ref"], as_index=False)["sec_per_image"].mean()
             .rename(columns={"sec_per_image": "reproduced"}))
        rows.append(t.merge(timing.drop(columns=["victim_ref", "attack_ref", "reversion"]),
                            on=["dataset", "defense_ref"], how="inner"))
    if not rows:
        return pd.DataFrame(columns=["dataset", "defense", "victim", "attack", "reversion", "metric",
                                     "reproduced", "published", "difference", "source", "reference"])
    out = pd.concat(rows, ignore_index=True).rename(columns={"value": "published"})
    out["difference"] = out["reproduced"] - out["published"]
    keep = ["dataset", "defense", "victim", "attack", "reversion", "metric", "reproduced", "published",
            "difference", "source", "reference"]
    return out.reindex(columns=keep).round(4)
