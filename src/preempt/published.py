"""Reproduced vs published: match published numbers to grid cells by *what* ran.

A cell's names (``mspd``, ``victim3``) are the experiment's own; published numbers are keyed by
what was run instead, so the match does not depend on naming. Each config describes itself
(``ref()`` of defenses, attacks and models; the aggregate stage writes them into metrics.csv):

- ``defense_ref``: ``none``, ``mcgs/<schedule>/N<n>/eta<eta>/eps<eps>[/labels-..][+mislabel..]``,
  ``bilevel/<norm>/eps<eps>/iter<MAXITER>/T<T>``;
- ``backbone_ref``: the ref of the model the defense computes its edit on (its ``backbone`` role;
  ``none`` for a defense without one), which ``defense_ref`` leaves out: MSPD's backbone choice
  (Table XI) and Moon et al.'s preemptively robust backbone are otherwise the same defense;
- ``victim_ref``: the RobustBench zoo name, a checkpoint's file name, ``train/<arch>/<recipe>``,
  or a wrapper around one (``jpeg:<quality>(...)``, ``jatp(...)``, ``smoothed[sigma](...)``);
- ``attack_ref``: e.g. ``autoattack/standard/Linf/0.0314``, ``pgd-ce/Linf/0.0314/20``.

``config/published.csv`` holds published numbers (numbers only), one per line, with the paper and
its table, row and column, under the same keys; a blank key matches any value (a clean accuracy
does not depend on the attack that follows). A key of alternatives ``a|b|c`` marks a published
mean over cells (Trigger Activation's R_T^{S,A} averages five target models): the reproduced
value is the mean over one cell per alternative, and only when every alternative has its cell;
``min:a|b|c`` takes their lowest instead (Moon et al.'s white-box accuracy: the lowest over the
attack budgets eps' after reconstruction).
``compare`` joins them with ``metrics.csv``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import PreemptError

KEYS = ["dataset", "defense_ref", "backbone_ref", "victim_ref", "attack_ref", "reversion"]
PLACE = ["paper", "table", "row", "column"]
COLUMNS = [*PLACE, "dataset", "defense", "reversion", "victim", "attack", "metric", "reproduced", "published",
           "difference", "source"]
ANY_OF = "|"  # separates a key's alternatives (no ref contains it)
AGGREGATES = ("min", "max")  # ``min:a|b``; plain ``a|b`` is a mean
NAME_OF = {"defense": "defense_ref", "reversion": "reversion", "victim": "victim_ref", "attack": "attack_ref"}
# metrics compared per defense (mean over the experiment's cells), not per cell
PER_DEFENSE = {"sec_per_image": ["dataset", "defense_ref", "backbone_ref"]}


def load_published(path: str | Path) -> pd.DataFrame:
    """The published numbers; one clear error for a missing column or a non-numeric value."""
    df = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    missing = {*PLACE, *KEYS, "metric", "value", "source"} - set(df.columns)
    if missing:
        raise PreemptError(f"{path}: missing columns {sorted(missing)}; see the header comment of the file")
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = df.index[values.isna()]
    if len(bad):
        raise PreemptError(f"{path}: line {int(bad[0]) + 2} has value {df.loc[bad[0], 'value']!r}, not a number")
    # one aggregated key per number: a mean of minima (or a cross product) has no single reading
    twice = df.index[sum(df[k].str.contains(ANY_OF, regex=False) for k in KEYS) > 1]
    if len(twice):
        keys = [k for k in KEYS if ANY_OF in df.loc[twice[0], k]]
        raise PreemptError(f"{path}: line {int(twice[0]) + 2} aggregates over {' and '.join(keys)}; "
                           f"a published mean or min may list alternatives in one key only")
    return df.assign(value=values)


def expand(metrics: pd.DataFrame) -> pd.DataFrame:
    """metrics.csv with ``cert_acc`` (a JSON radius -> %) split into ``cert_acc@<radius>`` columns."""
    if "cert_acc" not in metrics.columns:
        return metrics
    out = metrics.copy()
    for i, text in metrics["cert_acc"].items():
        if isinstance(text, str) and text.startswith("{"):
            for r, v in json.loads(text).items():
                out.loc[i, f"cert_acc@{float(r):g}"] = float(v)
    return out


def _aggregate(value: str) -> tuple[str, str]:
    head, sep, rest = value.partition(":")
    return (head, rest) if sep and head in AGGREGATES else ("mean", value)


def alternatives(value: str) -> list[str]:
    """A key's values: one, or the members of a published mean, min or max (``[min:]a|b|c``)."""
    return _aggregate(value)[1].split(ANY_OF)


def _columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The key columns as strings, once per comparison (not once per published number)."""
    return {k: frame[k].astype(str).to_numpy() for k in KEYS if k in frame.columns}


def _mask(columns: dict[str, np.ndarray], n: int, row: pd.Series, keys: list[str]) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    for k in keys:
        if row[k] != "" and k in columns:
            mask &= np.isin(columns[k], alternatives(row[k]))
    return mask


def select(frame: pd.DataFrame, row: pd.Series, keys: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` (cells) with every non-blank key of the published ``row``."""
    return frame[_mask(_columns(frame), len(frame), row, keys)]


def missing(hit: pd.DataFrame, row: pd.Series, keys: list[str]) -> list[str]:
    """The alternatives of the row's mean keys that no selected cell has (``key=value``): a
    published mean is reproduced only over all its members."""
    return [f"{k}={alt}" for k in keys if ANY_OF in row[k] for alt in alternatives(row[k])
            if alt not in set(hit[k].astype(str))]


def _value(hit: pd.DataFrame, row: pd.Series, keys: list[str], metric: str) -> float:
    """A per-cell number (the first cell), or the mean (min, max) over the members of a published
    aggregate: one cell per member."""
    members = [k for k in keys if ANY_OF in row[k]]
    if not members:
        return float(hit[metric].iloc[0])
    how = next(_aggregate(row[k])[0] for k in members)
    return float(hit.groupby(members, sort=False)[metric].first().agg(how))


def compare(metrics: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """One row per published number that an experiment cell reproduces: both values and the gap.

    Published rows with every key blank match nothing (they document a number preempt has no cell
    for). Per-cell metrics take the first matching cell (a published mean: the mean over one cell
    per alternative, all present); ``sec_per_image`` is the mean over the experiment's cells of
    the defense.
    """
    metrics = expand(metrics)
    columns, present, rows = _columns(metrics), {m: metrics[m].notna().to_numpy() for m in metrics.columns}, []
    for _, pub in published.iterrows():
        keys = PER_DEFENSE.get(pub["metric"], KEYS)
        if all(pub[k] == "" for k in KEYS) or pub["metric"] not in metrics.columns:
            continue
        mask = _mask(columns, len(metrics), pub, keys) & present[pub["metric"]]  # select(), then dropna
        if not mask.any():
            continue
        hit = metrics[mask]
        if missing(hit, pub, keys):
            continue
        first = hit.iloc[0]
        many = pub["metric"] in PER_DEFENSE
        reproduced = float(hit[pub["metric"]].mean()) if many else _value(hit, pub, keys, pub["metric"])
        # the cells a mean or min is over: their names, in the column of the aggregated key
        names = {col: ";".join(dict.fromkeys(hit[col].astype(str))) if ANY_OF in pub[key] else str(first[col])
                 for col, key in NAME_OF.items()}
        rows.append({**{k: pub[k] for k in PLACE}, "dataset": first["dataset"], "defense": names["defense"],
                     "reversion": "" if many else names["reversion"], "victim": "" if many else names["victim"],
                     "attack": "" if many else names["attack"], "metric": pub["metric"], "reproduced": reproduced,
                     "published": float(pub["value"]), "difference": reproduced - float(pub["value"]),
                     "source": pub["source"]})
    return pd.DataFrame(rows, columns=COLUMNS).round(4)
