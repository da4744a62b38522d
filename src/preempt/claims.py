"""The papers' headline claims as tests on the per-image outcomes: holds / fails / inconclusive.

A claim (``config/claims.yaml``) compares cells of the tidy table, never a verdict written by hand::

    - id: mspd_raises_robust_acc
      paper: mspd
      exhibit: Table IV              # the paper's table or figure it rests on
      statement: MSPD raises robust accuracy under AutoAttack over no defense on every
                 adversarially trained victim
      where: {attack_ref: "autoattack/*", reversion: none, victim_at: true}
      by: [victim, attack]           # judged in every group
      lhs: {where: {defense_ref: "mcgs/F1B1/N20/*"}, metric: robust_acc}
      rhs: {where: {defense_ref: none}, metric: robust_acc}
      threshold: {above: 0}          # lhs - rhs > 0 points

``test`` says what is estimated, with its interval (:mod:`preempt.stats`):

- ``difference`` (default): lhs - rhs in accuracy points, paired over the images both sides
  scored (``results/outcomes.csv.gz``). A side's per-image score is the mean over the cells its
  ``where`` selects in the group (``agg: min|max``: the one cell with the lowest/highest metric).
  Metrics: the accuracies with a per-image outcome (:data:`OUTCOME_OF`, ``cert_acc@<radius>``).
  ``subset: broken`` keeps the images the defense turned wrong (right on the original, wrong on
  the RE), ``kept`` those it left right: "of the images the defense broke, how many ...".
- ``recovery``: Fast Preemption's share (reverted - RE) / (original - RE) of the lhs cells (their
  own orig, re and input outcomes); inconclusive when the defense's drop is too small to judge.
- ``ratio``: lhs / rhs of the seconds per image from the repeated timings of the ``timing``
  block (``results/timing.csv``, at least 3 repeats each side).

``threshold`` is the claim in its paper's terms: ``{above: v}``, ``{below: v}`` or
``{within: m}`` (an equality claim, |estimate| <= m). The verdict is *holds* when the interval
lies entirely on the claimed side, *fails* when entirely on the other, else *inconclusive*; with
several groups each is judged at the Bonferroni level (``preempt.stats``) and the claim holds when
all hold, fails when one fails. ``comparable_if`` (filters every used row must match) with
``not_comparable`` (the reason) turns a claim measured at another setting than the paper's into
*not comparable: <reason>*; a claim with no data is *not measured in this experiment*.

Filters match columns by shell pattern (``fnmatch``, a leading ``!`` excludes), a list of patterns
(any), or an exact bool/number; the ``;``-joined columns (``tables``, ``reproduces``) match when
any of their entries does.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, cast

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import stats
from .errors import ConfigError
from .published import expand
from .registry import validate_model

Pattern = Union[str, bool, int, float, list[str]]
LIST_COLUMNS = ("tables", "reproduces")
HOLDS, FAILS, INCONCLUSIVE = stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE
NOT_MEASURED, NOT_COMPARABLE = "not measured in this experiment", "not comparable"
COLUMNS = ["claim", "paper", "exhibit", "statement", "verdict", "difference", "ratio", "ci_low", "ci_high", "n", "p",
           "threshold", "test", "lhs", "rhs", "groups", "numbers", "note"]
CELL = ["defense", "reversion", "victim", "attack"]
OUTCOME_OF = {"clean_acc": "input", "robust_acc": "robust", "robust_acc_ball": "robust_ball", "orig_acc": "orig",
              "re_acc": "re"}  # metric -> its per-image column in outcomes.csv.gz (cert_acc@r: cert >= r)
KINDS = ("above", "below", "within")
UNITS = {"difference": " points", "recovery": "", "ratio": "x"}


class Side(BaseModel):
    model_config = ConfigDict(extra="forbid")

    where: dict[str, Pattern] = Field(default_factory=dict)
    metric: str
    agg: Literal["mean", "min", "max"] = "mean"


class Statistics(BaseModel):
    """params.yaml ``statistics``: how the claims' intervals are computed."""

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(0.95, gt=0.5, lt=1, description="of every claim's interval (all its groups together)")
    resamples: int = Field(10_000, ge=100, le=1_000_000, description="paired bootstrap resamples")
    seed: int = Field(0, description="of the bootstrap: the same numbers give the same interval")


class Claim(BaseModel):
    """One machine-checkable statement of a paper (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    paper: str
    exhibit: str
    statement: str
    where: dict[str, Pattern] = Field(default_factory=dict)
    by: list[str] = Field(default_factory=list)
    test: Literal["difference", "recovery", "ratio"] = "difference"
    lhs: Side
    rhs: Side | None = None
    threshold: dict[str, float]
    subset: Literal["all", "broken", "kept"] = "all"
    comparable_if: dict[str, Pattern] = Field(default_factory=dict)
    not_comparable: str = ""
    published: str = Field("", description="the paper's own numbers behind the claim, quoted")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: dict[str, float]) -> dict[str, float]:
        if len(v) != 1:
            raise ValueError(f"give exactly one threshold kind ({', '.join(KINDS)}), e.g. {{above: 0}}; got {sorted(v)}")
        kind, value = next(iter(v.items()))
        if kind not in KINDS:
            raise ValueError(f"unknown threshold kind {kind!r}; use above, below or within")
        if kind == "within" and value < 0:
            raise ValueError("a 'within' margin is a distance; make it >= 0")
        return v

    @model_validator(mode="after")
    def _sides(self) -> "Claim":
        metrics = [self.lhs.metric] + ([self.rhs.metric] if self.rhs else [])
        if self.test == "ratio":
            if self.rhs is None or any(m != "sec_per_image" for m in metrics):
                raise ValueError("a ratio claim compares repeated timings: lhs and rhs with metric sec_per_image "
                                 "(from the timing block's repeats)")
        elif self.test == "recovery":
            if self.rhs is not None:
                raise ValueError("a recovery claim has no rhs: the share is read from the lhs cells' own outcomes")
        else:
            if self.rhs is None:
                raise ValueError("a difference claim needs an rhs to pair with the lhs")
            for m in metrics:
                if m not in OUTCOME_OF and not m.startswith("cert_acc@"):
                    hint = ("; a speed claim is test: ratio on repeated timings" if m == "sec_per_image" else "")
                    raise ValueError(f"metric {m!r} has no per-image outcome to pair; use one of "
                                     f"{', '.join([*OUTCOME_OF, 'cert_acc@<radius>'])}{hint}")
        if self.comparable_if and not self.not_comparable:
            raise ValueError("comparable_if needs not_comparable: the reason, in the paper's terms")
        return self

    @property
    def kind(self) -> stats.Kind:
        kind = next(iter(self.threshold))
        assert kind in KINDS  # validated
        return cast(stats.Kind, kind)

    @property
    def value(self) -> float:
        return float(next(iter(self.threshold.values())))

    def threshold_text(self) -> str:
        unit = UNITS[self.test]
        if self.kind == "within":
            return f"within +-{self.value:g}{unit}"
        return f"{'>' if self.kind == 'above' else '<'} {self.value:g}{unit}"


def load(path: str | Path) -> list[Claim]:
    """The claims file, validated: one clear error naming the entry and the field."""
    raw = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: expected a list of claims")
    out = [validate_model(Claim, c, f"{path}: claim {c.get('id', i) if isinstance(c, dict) else i}")
           for i, c in enumerate(raw)]
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


@dataclass
class Data:
    """What the claims read: the cells (metrics.csv), their per-image outcomes (outcomes.csv.gz,
    indexed by cell and image) and the repeated timings (timing.csv)."""

    cells: pd.DataFrame
    outcomes: pd.DataFrame
    timing: pd.DataFrame

    @classmethod
    def of(cls, cells: pd.DataFrame, outcomes: pd.DataFrame | None = None,
           timing: pd.DataFrame | None = None) -> "Data":
        out = outcomes if outcomes is not None else pd.DataFrame(columns=[*CELL, "image"])
        return cls(expand(cells), out.set_index(CELL).sort_index(),
                   timing if timing is not None else pd.DataFrame(columns=["defense", "defense_ref", "repeat",
                                                                           "sec_per_image"]))


def _groups(rows: pd.DataFrame, by: list[str]) -> dict[Any, pd.DataFrame]:
    if not by:
        return {(): rows} if len(rows) else {}
    if any(b not in rows.columns for b in by):
        return {}
    return {k if isinstance(k, tuple) else (k,): g for k, g in rows.groupby(by, sort=False)}


def _side_rows(data: pd.DataFrame, claim: Claim, side: Side) -> pd.DataFrame:
    rows = select(data, {**claim.where, **side.where})
    if side.metric not in rows.columns:
        return rows.iloc[0:0]
    return rows.dropna(subset=[side.metric])


def _pick(rows: pd.DataFrame, side: Side) -> pd.DataFrame:
    """The cells a side uses in one group: all of them (mean) or the one with the lowest/highest metric."""
    if side.agg == "mean" or len(rows) <= 1:
        return rows
    pos = rows[side.metric].astype(float).to_numpy()
    i = int(np.argmin(pos) if side.agg == "min" else np.argmax(pos))
    return rows.iloc[[i]]


def _per_image(outcomes: pd.DataFrame, rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """Image index -> one column per cell of ``rows``: that cell's outcome ``column`` (or
    ``cert >= r`` for cert_acc@r); only images every cell scored."""
    parts = {}
    for key in rows[CELL].itertuples(index=False, name=None):
        if key not in outcomes.index:
            continue
        o = outcomes.loc[[key]].set_index("image")
        if column.startswith("cert_acc@"):
            if "cert" not in o.columns:
                continue
            v = (o["cert"].astype(float) >= float(column.split("@", 1)[1])).astype(float)
            parts[key] = v.where(o["cert"].notna())
        elif column in o.columns:
            parts[key] = o[column].astype(float)
    return pd.DataFrame(parts).dropna() if parts else pd.DataFrame()


def _column(metric: str) -> str:
    return OUTCOME_OF.get(metric, metric)


@dataclass
class Group:
    label: str
    estimate: stats.Estimate
    lhs: float
    rhs: float | None
    verdict: str = ""
    p_adj: float = math.nan


def _difference(claim: Claim, data: Data, lrows: pd.DataFrame, rrows: pd.DataFrame, conf: Statistics,
                level: float, seed: int) -> tuple[stats.Estimate, float, float] | None:
    assert claim.rhs is not None
    lp, rp = _pick(lrows, claim.lhs), _pick(rrows, claim.rhs)
    a = _per_image(data.outcomes, lp, _column(claim.lhs.metric))
    b = _per_image(data.outcomes, rp, _column(claim.rhs.metric))
    if a.empty or b.empty:
        return None
    images = a.index.intersection(b.index)
    if claim.subset != "all":
        orig = pd.concat([_per_image(data.outcomes, lp, "orig"), _per_image(data.outcomes, rp, "orig")], axis=1)
        re = pd.concat([_per_image(data.outcomes, lp, "re"), _per_image(data.outcomes, rp, "re")], axis=1)
        images = images.intersection(orig.index).intersection(re.index)
        right = (orig.loc[images] == 1).all(axis=1)
        keep = right & ((re.loc[images] == 0).all(axis=1) if claim.subset == "broken" else (re.loc[images] == 1).all(axis=1))
        images = images[keep.to_numpy()]
    if len(images) == 0:
        return None
    x, y = a.loc[images].mean(axis=1).to_numpy(), b.loc[images].mean(axis=1).to_numpy()
    est = stats.paired_difference(x, y, confidence=level, resamples=conf.resamples, seed=seed)
    return est, 100 * float(x.mean()), 100 * float(y.mean())


def _recovery(claim: Claim, data: Data, rows: pd.DataFrame, conf: Statistics, level: float,
              seed: int) -> tuple[stats.Estimate, float, float] | None:
    cols = {c: _per_image(data.outcomes, rows, c) for c in ("orig", "re", "input")}
    if any(v.empty for v in cols.values()):
        return None
    # each (cell, image) is one unit: a cell's three outcomes stay together
    o, r, v = (np.concatenate([cols[c][k].to_numpy() for k in cols["orig"].columns]) for c in ("orig", "re", "input"))
    est, drop = stats.recovery(o, r, v, confidence=level, resamples=conf.resamples, seed=seed)
    return est, 100 * float(v.mean()), 100 * float(r.mean())


def _ratio(claim: Claim, data: Data, lrows: pd.DataFrame, rrows: pd.DataFrame,
           level: float) -> tuple[stats.Estimate, float, float] | str | None:
    for name, rows in (("lhs", lrows), ("rhs", rrows)):
        timed = list(dict.fromkeys(rows["defense"]))
        if len(timed) > 1:
            return f"the {name} selects {len(timed)} timed defenses ({', '.join(timed)}); narrow its where"
    a, b = lrows["sec_per_image"].astype(float).to_numpy(), rrows["sec_per_image"].astype(float).to_numpy()
    try:
        est = stats.time_ratio(a, b, confidence=level)
    except ValueError as err:
        raise ConfigError(f"claim {claim.id}: {err}; set timing.repeats >= {stats.MIN_REPEATS} in params.yaml") from None
    return est, float(np.exp(np.log(a).mean())), float(np.exp(np.log(b).mean()))


def evaluate(claim: Claim, data: Data, conf: Statistics | None = None) -> dict[str, object]:
    """The verdict of one claim, with the estimate and interval that decide it."""
    conf = conf or Statistics()
    base: dict[str, object] = {"claim": claim.id, "paper": claim.paper, "exhibit": claim.exhibit,
                               "statement": claim.statement, "threshold": claim.threshold_text()}
    table = data.timing if claim.test == "ratio" else data.cells
    lg = _groups(_side_rows(table, claim, claim.lhs), claim.by)
    rg = _groups(_side_rows(table, claim, claim.rhs), claim.by) if claim.rhs else {k: None for k in lg}
    keys = [k for k in lg if k in rg]

    def unmeasured(note: str = "") -> dict[str, object]:
        return {**base, "verdict": NOT_MEASURED, "groups": 0, "numbers": "", "note": note}

    if not keys:
        return unmeasured()
    incomparable = ""
    if claim.comparable_if:
        used = pd.concat([lg[k] for k in keys] + [rg[k] for k in keys if rg[k] is not None])
        off = used.loc[~used.index.isin(select(used, claim.comparable_if).index)]
        if len(off):
            incomparable = ", ".join(dict.fromkeys(off["defense_ref"].astype(str))) if "defense_ref" in off else f"{len(off)} rows"
    level = stats.bonferroni(conf.confidence, len(keys))
    groups: list[Group] = []
    for i, k in enumerate(keys):
        seed = conf.seed + i
        label = "/".join(map(str, k))
        if claim.test == "difference":
            got: Any = _difference(claim, data, lg[k], rg[k], conf, level, seed)
        elif claim.test == "recovery":
            got = _recovery(claim, data, lg[k], conf, level, seed)
        else:
            got = _ratio(claim, data, lg[k], rg[k], level)
        if isinstance(got, str):
            return {**base, "verdict": f"{NOT_COMPARABLE}: {got}", "groups": len(keys), "numbers": "", "note": got}
        if got is None:
            continue
        est, left, right = got
        groups.append(Group(label, est, left, None if claim.test == "recovery" else right))
    if not groups:
        return unmeasured("no per-image outcomes for the selected cells")
    for g, p in zip(groups, stats.holm([g.estimate.p for g in groups]), strict=True):
        g.verdict = stats.verdict(g.estimate.low, g.estimate.high, claim.kind, claim.value)
        g.p_adj = p
    verdicts = [g.verdict for g in groups]
    verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
    pool = [g for g in groups if g.verdict == FAILS] if verdict == FAILS else groups
    decide = min(pool, key=lambda g: stats.margin(g.estimate.low, g.estimate.high, claim.kind, claim.value)
                 if verdict != FAILS else -abs(stats.margin(g.estimate.low, g.estimate.high, claim.kind, claim.value)))
    est = decide.estimate
    test = est.test + (f"; {len(groups)} groups, each at Bonferroni level {level:.4g}; p Holm-adjusted"
                       if len(groups) > 1 else "")
    numbers = "; ".join(f"{g.label + ': ' if claim.by else ''}{_fmt(g.estimate.value)} "
                        f"[{_fmt(g.estimate.low)}, {_fmt(g.estimate.high)}] n={g.estimate.n} p={g.p_adj:.2g}"
                        f"{'' if g.verdict == HOLDS else ' (' + g.verdict + ')'}" for g in groups)
    notes = "; ".join(dict.fromkeys(f"{g.label}: {g.estimate.note}" if claim.by else g.estimate.note
                                    for g in groups if g.estimate.note))
    if incomparable:  # measured, but at another setting than the paper's: the numbers go to the note only
        return {**base, "verdict": f"{NOT_COMPARABLE}: {claim.not_comparable}", "groups": len(groups), "numbers": numbers,
                "note": f"measured here at {incomparable}: {_fmt(est.value)} [{_fmt(est.low)}, {_fmt(est.high)}], "
                        f"not judged"}
    return {**base, "verdict": verdict,
            "difference": est.value if claim.test == "difference" else None,
            "ratio": est.value if claim.test != "difference" else None,
            "ci_low": est.low, "ci_high": est.high, "n": est.n, "p": decide.p_adj, "test": test,
            "lhs": decide.lhs, "rhs": decide.rhs, "groups": len(groups), "numbers": numbers, "note": notes}


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:+.3g}" if abs(v) < 1000 else f"{v:+.0f}"


def check(claims: list[Claim], data: Data, conf: Statistics | None = None) -> pd.DataFrame:
    """``results/claims.csv``: one row per claim, in the file's order."""
    return pd.DataFrame([evaluate(c, data, conf) for c in claims], columns=COLUMNS)


def code(verdict: str) -> int | None:
    """A verdict as a DVC metric (``dvc metrics diff`` shows it flip): 1 holds, 0 inconclusive,
    -1 fails; None where it was not judged (not measured, not comparable)."""
    return {HOLDS: 1, INCONCLUSIVE: 0, FAILS: -1}.get(verdict)


def summary(table: pd.DataFrame) -> dict[str, int]:
    """Counts per verdict (DVC metrics)."""
    v = table["verdict"].astype(str)
    return {"holds": int((v == HOLDS).sum()), "fails": int((v == FAILS).sum()),
            "inconclusive": int((v == INCONCLUSIVE).sum()),
            "not_comparable": int(v.str.startswith(NOT_COMPARABLE).sum()), "not_measured": int((v == NOT_MEASURED).sum())}


def markdown(table: pd.DataFrame) -> str:
    """results/claims.csv as a Markdown table for the README: verdict, claim, estimate [95% CI], n, p."""
    def num(v: Any) -> str:
        return "" if v is None or pd.isna(v) else f"{float(v):.3g}"
    lines = ["| claim | verdict | estimate [95% CI] | n | p | threshold |", "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        est = r.difference if pd.notna(r.difference) else r.ratio
        ci = f"{num(est)} [{num(r.ci_low)}, {num(r.ci_high)}]" if pd.notna(est) else ""
        n = "" if pd.isna(r.n) else str(int(r.n))
        p = "" if pd.isna(r.p) else f"{float(r.p):.2g}"
        lines.append(f"| `{r.claim}` | {r.verdict} | {ci} | {n} | {p} | {r.threshold} |")
    return "\n".join(lines) + "\n"
