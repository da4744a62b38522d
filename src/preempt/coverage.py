"""``python -m preempt coverage [EXPERIMENT ...]``: which published numbers an experiment file
will reproduce, decided from its DAG alone (no run), before any GPU hour is spent.

Each published number (``config/published.csv``) is, for the experiments given:

- ``no key``: every key blank (the row documents a number preempt has no setting for; its
  ``source`` says why);
- ``other dataset``: keyed to a dataset the experiment does not run;
- ``matched``: some planned cell has every non-blank key and produces the metric (the same rule
  as ``published.compare`` applies to the finished results);
- ``unmatched``: keyed, but no planned cell fits; the reason names the nearest cell and the first
  key that differs (or the metric it lacks).

The planned cells carry the same refs the aggregate stage writes into ``results/metrics.csv``
(``stages.aggregate.describe``), so "matched" here means matched after the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .config import Params
from .published import KEYS, PER_DEFENSE, alternatives, load_published, missing
from .stages.aggregate import describe

# what the attack stage writes per cell (stages/attack.py); grad_sim needs a defense with a backbone
ALWAYS = {"clean_acc", "orig_acc", "re_acc", "ssim", "lpips", "linf", "l2", "sec_per_image", "reversion_recovery", "ce"}
ATTACKED = {"robust_acc", "robust_acc_ball", "adv_linf", "attack_sec_per_image", "ce_robust", "ce_fooled"}
DEFENDED = {"grad_sim"}
ON_BACKBONE = {"backbone_params_M"}  # a defense with a backbone (stages/defend.py counts it)


def planned_cells(p: Params) -> pd.DataFrame:
    """One row per cell of the grid, with the keys published numbers are matched on and the
    attack's method (which decides the metrics it produces)."""
    rows = [{"defense": d, "reversion": r, "victim": v, "attack": a, "dataset": p.dataset.name,
             **{k: str(val) for k, val in describe(p, d, v, a).items() if k != "victim_at"},
             "attack_method": p.attacks[a].method}
            for d, r, v, a in p.grid.cells()]
    return pd.DataFrame(rows, columns=["defense", "victim", "attack", *KEYS, "attack_method"])


def produces(cell: pd.Series, metric: str) -> bool:
    """Whether a cell of this kind writes ``metric`` into metrics.csv."""
    if metric.startswith("cert_acc"):
        return cell["attack_method"] == "certify"
    if metric in ATTACKED:
        return cell["attack_ref"] != "none"
    if metric in DEFENDED:
        return cell["defense_ref"] != "none"
    if metric in ON_BACKBONE:
        return cell["backbone_ref"] != "none"
    return metric in ALWAYS


def known(metric: str) -> bool:
    return metric.startswith("cert_acc") or metric in ALWAYS | ATTACKED | DEFENDED | ON_BACKBONE


def classify(row: pd.Series, cells: pd.DataFrame) -> tuple[str, str]:
    """(status, reason) of one published number against the planned cells."""
    keys = [k for k in PER_DEFENSE.get(row["metric"], KEYS) if row[k] != ""]
    if all(row[k] == "" for k in KEYS):
        return "no key", ""
    if row["dataset"] and row["dataset"] not in set(cells["dataset"]):
        return "other dataset", f"dataset {row['dataset']}"
    if cells.empty:
        return "unmatched", "the experiment has no cells"
    if not known(row["metric"]):
        return "unmatched", f"no stage computes {row['metric']}"
    hits = pd.DataFrame({k: cells[k].isin(alternatives(row[k])) for k in keys})
    score = hits.sum(axis=1)
    full = cells[score == len(keys)]
    if len(full):
        making = full[[produces(c, row["metric"]) for _, c in full.iterrows()]]
        if making.empty:
            return "unmatched", f"cell {_name(full.iloc[0])} has no {row['metric']} (its attack is {full.iloc[0]['attack_method']})"
        absent = missing(making, row, keys)
        if absent:
            return "unmatched", f"no cell for {absent[0]} ({len(absent)} of a published mean's members missing)"
        return "matched", ""
    near = cells[score == score.max()]

    def first_miss(c: pd.Series) -> str:
        return next(k for k in keys if c[k] not in alternatives(row[k]))

    # among the cells that miss fewest keys, the one whose first wrong value is most like the wanted one
    best = max((c for _, c in near.iterrows()),
               key=lambda c: len(os.path.commonprefix([str(c[first_miss(c)]), row[first_miss(c)]])))
    k = first_miss(best)
    return "unmatched", f"{k}: wants {row[k]!r}, nearest cell {_name(best)} has {best[k]!r}"


def _name(cell: pd.Series) -> str:
    return "/".join(str(cell[k]) for k in ("defense", "reversion", "victim", "attack"))


def coverage(experiments: dict[str, Params], published_csv: str | Path) -> pd.DataFrame:
    """Per published number: its place, status and reason, against the union of the experiments'
    cells (``matched_by``: the files whose cells match it)."""
    pub = load_published(published_csv)
    cells = {name: planned_cells(p) for name, p in experiments.items()}
    rows = []
    for _, row in pub.iterrows():
        verdicts = {name: classify(row, c) for name, c in cells.items()}
        matched = [n for n, (s, _) in verdicts.items() if s == "matched"]
        status, reason = ("matched", "") if matched else _first_reason(verdicts)
        rows.append({"paper": row["paper"], "table": row["table"], "row": row["row"], "column": row["column"],
                     "metric": row["metric"], "value": row["value"], "status": status, "reason": reason,
                     "matched_by": ", ".join(matched)})
    return pd.DataFrame(rows)


def _first_reason(verdicts: dict[str, tuple[str, str]]) -> tuple[str, str]:
    order = ["unmatched", "other dataset", "no key"]  # the most informative status across files
    for status in order:
        for name, (s, reason) in verdicts.items():
            if s == status:
                return s, (f"{name}: {reason}" if reason and len(verdicts) > 1 else reason)
    return "no key", ""


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per paper and exhibit: published, keyed, matched."""
    g = table.assign(keyed=table["status"] != "no key", matched=table["status"] == "matched")
    out = g.groupby(["paper", "table"], sort=False).agg(published=("status", "size"), keyed=("keyed", "sum"),
                                                        matched=("matched", "sum"))
    total = out.groupby(level="paper", sort=False).sum()
    total.index = pd.MultiIndex.from_tuples([(p, "all") for p in total.index], names=out.index.names)
    return pd.concat([out, total]).sort_index(level="paper", sort_remaining=False)


def markdown(table: pd.DataFrame, details: bool = True) -> str:
    """The summary, then every keyed number no experiment matches, with its reason."""
    s = summary(table).reset_index()
    lines = ["| paper | exhibit | published | keyed | matched |", "|---|---|---|---|---|"]
    lines += [f"| {r.paper} | {r.table} | {r.published} | {r.keyed} | {r.matched} |" for r in s.itertuples()]
    if details:
        un = table[table["status"] == "unmatched"]
        if len(un):
            lines += ["", f"Keyed but not matched ({len(un)}):", "",
                      "| paper | exhibit | row | column | metric | why |", "|---|---|---|---|---|---|"]
            lines += [f"| {r.paper} | {r.table} | {r.row} | {r.column} | {r.metric} | {r.reason} |"
                      for r in un.itertuples()]
    return "\n".join(lines) + "\n"
