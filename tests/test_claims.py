"""The claims check: verdicts computed from the numbers, never written by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import ROOT
from preempt import claims, paths, papers
from preempt.errors import ConfigError


def table(mspd_robust: float = 80.0, none_robust: float = 60.0) -> pd.DataFrame:
    rows = []
    for v, at in (("v1", True), ("v2", True), ("v3", False)):
        for d, ref, rob in (("none", "none", none_robust), ("mspd", "mcgs/F1B1/N20/eta1/eps0.0314", mspd_robust),
                            ("bl", "bilevel/Linf/eps0.0314/iter100/T20", 70.0)):
            for a, aref in (("aa", "autoattack/standard/Linf/0.0314"), ("sq", "autoattack/standard/Linf/0.0314/square/q1000")):
                rows.append({"defense": d, "defense_ref": ref, "victim": v, "victim_at": at, "attack": a,
                             "attack_ref": aref, "reversion": "none", "clean_acc": 90.0,
                             "robust_acc": rob if a == "aa" else 10.0, "sec_per_image": 0.02 if d == "mspd" else 1.0,
                             "tables": "main", "reproduces": "mspd/table4", "cert_acc": ""})
    return pd.DataFrame(rows)


def data(df: pd.DataFrame, n: int = 200) -> claims.Data:
    """Per-image outcomes that reproduce each cell's accuracies exactly (the first k images right)."""
    per = []
    for r in df.itertuples():
        k = round(n * r.robust_acc / 100)
        per.append(pd.DataFrame({"defense": r.defense, "reversion": r.reversion, "victim": r.victim, "attack": r.attack,
                                 "image": range(n), "robust": [1.0] * k + [0.0] * (n - k), "input": 1.0,
                                 "orig": 1.0, "re": 1.0}))
    return claims.Data.of(df, pd.concat(per, ignore_index=True))


RAISES = claims.Claim.model_validate({
    "id": "raises", "paper": "mspd", "exhibit": "Table IV", "statement": "s",
    "where": {"attack_ref": ["autoattack/*", "!*/square*"], "reversion": "none", "victim_at": True},
    "by": ["victim", "attack"], "lhs": {"where": {"defense_ref": "mcgs/F1B1/N20/*"}, "metric": "robust_acc"},
    "rhs": {"where": {"defense_ref": "none"}, "metric": "robust_acc"}, "threshold": {"above": 0}})
FAST = claims.Statistics(resamples=1000)


def test_a_claim_holds_or_fails_as_the_numbers_say() -> None:
    held = claims.evaluate(RAISES, data(table(80.0, 60.0)), FAST)
    assert held["verdict"] == claims.HOLDS and held["groups"] == 2  # v3 is not adversarially trained; Square excluded
    assert "v1/aa: +20 [" in held["numbers"] and held["difference"] == pytest.approx(20.0)
    failed = claims.evaluate(RAISES, data(table(55.0, 60.0)), FAST)
    assert failed["verdict"] == claims.FAILS and "(fails)" in failed["numbers"]


def test_one_group_against_it_fails_the_claim() -> None:
    df = table(80.0, 60.0)
    df.loc[(df["victim"] == "v2") & (df["defense"] == "mspd") & (df["attack"] == "aa"), "robust_acc"] = 40.0
    out = claims.evaluate(RAISES, data(df), FAST)
    assert out["verdict"] == claims.FAILS and out["difference"] == pytest.approx(-20.0)  # the failing group decides


def test_a_claim_without_cells_is_not_measured() -> None:
    df = table()
    assert claims.evaluate(RAISES, data(df[df["defense"] != "mspd"]))["verdict"] == claims.NOT_MEASURED
    assert claims.evaluate(RAISES, data(df.drop(columns=["victim_at"])))["verdict"] == claims.NOT_MEASURED


def test_min_picks_one_cell_per_side() -> None:
    df = table()
    low = claims.Claim.model_validate({
        "id": "c", "paper": "mspd", "exhibit": "x", "statement": "s", "threshold": {"above": 0},
        "lhs": {"where": {"defense": "mspd"}, "metric": "robust_acc", "agg": "min"},
        "rhs": {"where": {"defense": "none", "attack": "aa"}, "metric": "robust_acc"}})
    out = claims.evaluate(low, data(df), FAST)  # mspd's lowest cell is Square (10) against none's 60
    assert out["verdict"] == claims.FAILS and out["lhs"] == pytest.approx(10.0)


def test_certified_accuracy_per_radius_is_selectable() -> None:
    df = table()
    df["cert_acc"] = [json.dumps({"0.0": 90.0, "0.5": 70.0 if d == "mspd" else 40.0}) for d in df["defense"]]
    d = data(df)
    out = d.outcomes.reset_index()
    out["cert"] = [0.8 if (dd == "mspd" and i < 140) or i < 80 else -1.0 for dd, i in zip(out["defense"], out["image"])]
    c = claims.Claim.model_validate({
        "id": "cert", "paper": "moon", "exhibit": "Table 7", "statement": "s", "by": ["victim"],
        "threshold": {"above": 0},
        "lhs": {"where": {"defense": "mspd"}, "metric": "cert_acc@0.5"},
        "rhs": {"where": {"defense": "none"}, "metric": "cert_acc@0.5"}})
    row = claims.check([c], claims.Data.of(df, out), FAST).iloc[0]
    assert row["verdict"] == claims.HOLDS and row["difference"] == pytest.approx(30.0)


def test_list_columns_match_any_entry() -> None:
    df = table()
    assert len(claims.select(df, {"reproduces": "mspd/table4"})) == len(df)
    assert claims.select(df, {"reproduces": "mspd/table5"}).empty


def test_the_claims_file_loads_and_names_registered_papers() -> None:
    loaded = claims.load(ROOT / paths.CLAIMS_FILE)
    assert len(loaded) >= 15
    assert {c.paper for c in loaded} == set(papers.PAPERS)
    labels = {e.label for p in papers.PAPERS.values() for e in p.exhibits} | {"Table V", "Table IX", "Table XIII"}
    assert all(c.exhibit in labels for c in loaded), [c.exhibit for c in loaded if c.exhibit not in labels]


@pytest.mark.parametrize("text,msg", [
    ("- {id: a, paper: mspd, exhibit: x, statement: s, threshold: {above: 0}, lhs: {metric: clean_acc}, "
     "rhs: {metric: clean_acc}, colour: red}", "colour"),
    ("- {id: a, paper: mspd, exhibit: x, statement: s, threshold: {greater: 0}, lhs: {metric: clean_acc}, "
     "rhs: {metric: clean_acc}}", "threshold"),
    ("- {id: a, paper: mspd, exhibit: x, statement: s, threshold: {above: 0}, lhs: {metric: clean_acc}}", "rhs"),
    ("- {id: a, paper: mspd, exhibit: x, statement: s, threshold: {above: 0}, lhs: {metric: m}, rhs: {metric: m}}",
     "per-image outcome"),
    ("- {id: a, paper: mspd, exhibit: x, statement: s, threshold: {above: 0}, lhs: {metric: clean_acc}, rhs: {metric: clean_acc}}\n"
     "- {id: a, paper: mspd, exhibit: x, statement: s, threshold: {above: 0}, lhs: {metric: clean_acc}, rhs: {metric: clean_acc}}",
     "repeat"),
])
def test_a_bad_claims_file_is_one_clear_error(tmp_path, text, msg) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        claims.load(tmp_path / "c.yaml")
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_summary_counts_each_verdict() -> None:
    other = RAISES.model_copy(update={"id": "b", "lhs": RAISES.lhs.model_copy(update={"where": {"defense_ref": "nope"}})})
    out = claims.check([RAISES, other], data(table()), FAST)
    assert claims.summary(out) == {"holds": 1, "fails": 0, "inconclusive": 0, "not_comparable": 0, "not_measured": 1}
    assert [claims.code(v) for v in out["verdict"]] == [1, None]


def test_the_papers_claims_leave_the_backbone_ablations_out() -> None:
    """A defense's ref does not name its backbone: MSPD with the target itself as backbone (Table
    XII's white row) must not lift "MSPD raises robust accuracy" on that target."""
    claim = next(c for c in claims.load(ROOT / paths.CLAIMS_FILE) if c.id == "mspd_raises_robust_acc")
    df = table(80.0, 60.0).assign(backbone_ref="none")
    df.loc[df["defense"] != "none", "backbone_ref"] = "Gowal2021Improving_R18_ddpm_100m"
    oracle = df[df["defense"] == "mspd"].assign(defense="mspd_oracle", robust_acc=100.0,
                                                backbone_ref="Bartoldson2024Adversarial_WRN-94-16")
    out = claims.evaluate(claim, data(pd.concat([df, oracle], ignore_index=True)), FAST)
    assert out["difference"] == pytest.approx(20.0) and out["groups"] == 2  # 80 - 60, not (80 + 100) / 2 - 60
    no_key = claims.evaluate(claim, data(pd.concat([df, oracle], ignore_index=True).drop(columns="backbone_ref")), FAST)
    assert no_key["verdict"] == claims.NOT_MEASURED  # an older metrics.csv without the key: not silently pooled
