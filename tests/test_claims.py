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


RAISES = claims.Claim.model_validate({
    "id": "raises", "paper": "mspd", "exhibit": "Table IV", "statement": "s",
    "where": {"attack_ref": ["autoattack/*", "!*/square*"], "reversion": "none", "victim_at": True},
    "by": ["victim", "attack"], "lhs": {"where": {"defense_ref": "mcgs/F1B1/N20/*"}, "metric": "robust_acc"},
    "op": ">", "rhs": {"where": {"defense_ref": "none"}, "metric": "robust_acc"}})


def test_a_claim_holds_or_fails_as_the_numbers_say() -> None:
    held = claims.evaluate(RAISES, table(80.0, 60.0))
    assert held["verdict"] == claims.HOLDS and held["groups"] == 2  # v3 is not adversarially trained; Square excluded
    assert "v1/aa: 80 > 60" in held["numbers"]
    failed = claims.evaluate(RAISES, table(55.0, 60.0))
    assert failed["verdict"] == claims.FAILS and "(no)" in failed["numbers"]


def test_one_group_against_it_fails_the_claim() -> None:
    df = table(80.0, 60.0)
    df.loc[(df["victim"] == "v2") & (df["defense"] == "mspd") & (df["attack"] == "aa"), "robust_acc"] = 59.0
    assert claims.evaluate(RAISES, df)["verdict"] == claims.FAILS


def test_a_claim_without_cells_is_not_measured() -> None:
    df = table()
    assert claims.evaluate(RAISES, df[df["defense"] != "mspd"])["verdict"] == claims.NOT_MEASURED
    assert claims.evaluate(RAISES, df.drop(columns=["victim_at"]))["verdict"] == claims.NOT_MEASURED


def test_a_factor_and_a_constant_right_hand_side() -> None:
    faster = claims.Claim.model_validate({
        "id": "fast", "paper": "mspd", "exhibit": "Table V", "statement": "s", "op": ">=", "factor": 28,
        "lhs": {"where": {"defense_ref": "bilevel/*"}, "metric": "sec_per_image"},
        "rhs": {"where": {"defense_ref": "mcgs/*"}, "metric": "sec_per_image"}})
    assert claims.evaluate(faster, table())["verdict"] == claims.HOLDS  # 1.0 >= 28 x 0.02
    assert claims.evaluate(faster.model_copy(update={"factor": 100}), table())["verdict"] == claims.FAILS
    const = claims.Claim.model_validate({
        "id": "c", "paper": "mspd", "exhibit": "x", "statement": "s", "op": "<", "rhs": 0.5,
        "lhs": {"where": {"defense": "mspd", "attack": "aa"}, "metric": "robust_acc", "agg": "min"}})
    assert claims.evaluate(const, table())["verdict"] == claims.FAILS


def test_certified_accuracy_per_radius_is_selectable() -> None:
    df = table()
    df["cert_acc"] = [json.dumps({"0.0": 90.0, "0.5": 70.0 if d == "mspd" else 40.0}) for d in df["defense"]]
    c = claims.Claim.model_validate({
        "id": "cert", "paper": "moon", "exhibit": "Table 7", "statement": "s", "by": ["victim"], "op": ">",
        "lhs": {"where": {"defense": "mspd"}, "metric": "cert_acc@0.5"},
        "rhs": {"where": {"defense": "none"}, "metric": "cert_acc@0.5"}})
    assert claims.check([c], df).iloc[0]["verdict"] == claims.HOLDS


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
    ("- {id: a, paper: mspd, exhibit: x, statement: s, op: '>', rhs: 1, lhs: {metric: m}, colour: red}", "colour"),
    ("- {id: a, paper: mspd, exhibit: x, statement: s, op: '=>', rhs: 1, lhs: {metric: m}}", "op"),
    ("- {id: a, paper: mspd, exhibit: x, statement: s, op: '>', rhs: 1, lhs: {metric: m}}\n"
     "- {id: a, paper: mspd, exhibit: x, statement: s, op: '>', rhs: 1, lhs: {metric: m}}", "repeat"),
])
def test_a_bad_claims_file_is_one_clear_error(tmp_path, text, msg) -> None:
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        claims.load(tmp_path / "c.yaml")
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_summary_counts_each_verdict() -> None:
    out = claims.check([RAISES, RAISES.model_copy(update={"id": "b", "lhs": RAISES.lhs.model_copy(update={"metric": "nope"})})],
                       table())
    assert claims.summary(out) == {"holds": 1, "fails": 0, "not_measured": 1}
