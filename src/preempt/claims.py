"""The papers' headline claims as checks on ``results/metrics.csv``: holds / fails / not measured.

A claim (``config/claims.yaml``) compares two numbers drawn from the tidy table, never a verdict
written by hand::

    - id: mspd_raises_robust_acc
      paper: mspd
      exhibit: table4                # the paper's table or figure it rests on
      statement: MSPD raises robust accuracy under AutoAttack over no defense on every
                 adversarially trained victim
      where: {attack_ref: "autoattack/standard/*", reversion: none, victim_at: true}
      by: [victim, attack]           # the comparison must hold in every group
      lhs: {where: {defense_ref: "mcgs/F1B1/N20/*"}, metric: robust_acc}
      op: ">"
      rhs: {where: {defense_ref: none}, metric: robust_acc}

A side is the ``agg`` (mean by default) of ``metric`` over the rows its ``where`` (and the claim's
``where``) select, per group of ``by``; ``rhs`` may also be a number. The claim reads
``lhs op factor * rhs + margin``. Filters match columns by shell pattern (``fnmatch``, a leading
``!`` excludes), a list of patterns (any), or an exact bool/number; the ``;``-joined columns
(``tables``, ``reproduces``) match when any of their entries does. A claim whose sides select no
common group is "not measured in this experiment".
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Literal, Union

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError
from .published import expand
from .registry import validate_model

Pattern = Union[str, bool, int, float, list[str]]
LIST_COLUMNS = ("tables", "reproduces")
HOLDS, FAILS, NOT_MEASURED = "holds", "fails", "not measured in this experiment"
COLUMNS = ["claim", "paper", "exhibit", "statement", "verdict", "lhs", "rhs", "groups", "numbers"]


class Side(BaseModel):
    model_config = ConfigDict(extra="forbid")

    where: dict[str, Pattern] = Field(default_factory=dict)
    metric: str
    agg: Literal["mean", "min", "max"] = "mean"


class Claim(BaseModel):
    """One machine-checkable statement of a paper (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    paper: str
    exhibit: str
    statement: str
    where: dict[str, Pattern] = Field(default_factory=dict)
    by: list[str] = Field(default_factory=list)
    lhs: Side
    op: Literal[">", ">=", "<", "<="]
    rhs: Side | float
    factor: float = 1.0
    margin: float = 0.0
    published: str = Field("", description="the paper's own numbers behind the claim, quoted")


def load(path: str | Path) -> list[Claim]:
    """The claims file, validated: one clear error naming the entry and the field."""
    raw = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected a list of claims")
    out = [validate_model(Claim, c, f"{path}: claim {i}") for i, c in enumerate(raw)]
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: claim ids repeat ({sorted({i for i in ids if ids.count(i) > 1})}); make them unique")
    return out


def _match(series: pd.Series, pattern: Pattern, column: str) -> pd.Series:
    if isinstance(pattern, bool | int | float):
        return series == pattern
    pats = [pattern] if isinstance(pattern, str) else pattern
    include = [p for p in pats if not p.startswith("!")]
    exclude = [p[1:] for p in pats if p.startswith("!")]

    def hit(value: object) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            values = [""]
        else:
            values = str(value).split(";") if column in LIST_COLUMNS else [str(value)]
        ok = any(fnmatch.fnmatchcase(v, p) for v in values for p in include) if include else True
        return ok and not any(fnmatch.fnmatchcase(v, p) for v in values for p in exclude)

    return series.map(hit).astype(bool)


def select(df: pd.DataFrame, where: dict[str, Pattern]) -> pd.DataFrame:
    """The rows matching every filter; a filter on a column the table lacks selects nothing."""
    mask = pd.Series(True, index=df.index)
    for column, pattern in where.items():
        if column not in df.columns:
            return df.iloc[0:0]
        mask &= _match(df[column], pattern, column)
    return df[mask]


def _side(df: pd.DataFrame, claim: Claim, side: Side) -> pd.Series:
    rows = select(df, {**claim.where, **side.where})
    if side.metric not in rows.columns:
        return pd.Series(dtype=float)
    rows = rows.dropna(subset=[side.metric])
    if claim.by:
        return rows.groupby(claim.by)[side.metric].agg(side.agg)
    return pd.Series([rows[side.metric].agg(side.agg)] if len(rows) else [], dtype=float)


def _holds(a: float, op: str, b: float) -> bool:
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]


def evaluate(claim: Claim, df: pd.DataFrame) -> dict[str, object]:
    """The verdict of one claim on the tidy table, with the numbers it used."""
    lhs = _side(df, claim, claim.lhs)
    if isinstance(claim.rhs, Side):
        rhs = _side(df, claim, claim.rhs)
        keys = [k for k in lhs.index if k in rhs.index]
    else:
        rhs = pd.Series({k: float(claim.rhs) for k in lhs.index}, dtype=float)
        keys = list(lhs.index)
    base = {"claim": claim.id, "paper": claim.paper, "exhibit": claim.exhibit, "statement": claim.statement}
    if not keys:
        return {**base, "verdict": NOT_MEASURED, "lhs": None, "rhs": None, "groups": 0, "numbers": ""}
    checks = [(k, float(lhs[k]), float(rhs[k])) for k in keys]
    ok = [_holds(a, claim.op, claim.factor * b + claim.margin) for _, a, b in checks]
    scale = f"{claim.factor:g} x " if claim.factor != 1 else ""
    shift = f" {claim.margin:+g}" if claim.margin else ""
    numbers = "; ".join(f"{_label(k, claim.by)}{a:.4g} {claim.op} {scale}{b:.4g}{shift}{'' if o else ' (no)'}"
                        for (k, a, b), o in zip(checks, ok, strict=True))
    return {**base, "verdict": HOLDS if all(ok) else FAILS, "lhs": sum(a for _, a, _ in checks) / len(checks),
            "rhs": sum(b for _, _, b in checks) / len(checks), "groups": len(checks), "numbers": numbers}


def _label(key: object, by: list[str]) -> str:
    if not by:
        return ""
    parts = key if isinstance(key, tuple) else (key,)
    return "/".join(map(str, parts)) + ": "


def check(claims: list[Claim], df: pd.DataFrame) -> pd.DataFrame:
    """``results/claims.csv``: one row per claim, in the file's order (``cert_acc@<radius>``
    columns split from the certified accuracies, as for the published numbers)."""
    df = expand(df)
    return pd.DataFrame([evaluate(c, df) for c in claims], columns=COLUMNS)


def summary(table: pd.DataFrame) -> dict[str, int]:
    """Counts per verdict (DVC metrics: ``dvc metrics diff`` shows a claim flipping)."""
    counts = table["verdict"].value_counts()
    return {"holds": int(counts.get(HOLDS, 0)), "fails": int(counts.get(FAILS, 0)),
            "not_measured": int(counts.get(NOT_MEASURED, 0))}
