"""The claims' statistics on synthetic outcomes whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from preempt import claims, stats
from preempt.errors import ConfigError


def outcomes(p: float, n: int = 500, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_identical_sides_are_inconclusive_never_fails() -> None:
    a = outcomes(0.9)
    est = stats.paired_difference(a, a.copy())
    assert (est.value, est.low, est.high, est.p) == (0.0, 0.0, 0.0, 1.0)
    for kind in ("above", "below"):
        assert stats.verdict(est.low, est.high, kind, 0.0) == stats.INCONCLUSIVE
    assert stats.verdict(est.low, est.high, "within", 1.0) == stats.HOLDS  # an equality claim: +-1 point


def test_a_large_known_difference_holds_and_its_reversal_fails() -> None:
    a, b = outcomes(0.9, seed=1), outcomes(0.6, seed=2)
    est = stats.paired_difference(a, b)
    assert 20 < est.value < 40 and est.low > 0 and est.p < 1e-6
    assert stats.verdict(est.low, est.high, "above", 0) == stats.HOLDS
    rev = stats.paired_difference(b, a)
    assert stats.verdict(rev.low, rev.high, "above", 0) == stats.FAILS
    assert stats.verdict(est.low, est.high, "above", est.value) == stats.INCONCLUSIVE  # the estimate itself


def test_a_small_gap_on_few_discordant_images_is_inconclusive() -> None:
    a = outcomes(0.9, seed=3)
    b = a.copy()
    b[np.flatnonzero(a == 1)[:2]] = 0  # 0.4 points on 500 images: noise
    est = stats.paired_difference(a, b)
    assert est.value == pytest.approx(0.4) and stats.verdict(est.low, est.high, "above", 0) == stats.INCONCLUSIVE


def test_the_paired_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    """Coverage over simulated experiments: correlated pairs (the same images) with a true
    difference of 3 points; each interval from its own bootstrap seed."""
    rng = np.random.default_rng(7)
    hits, runs = 0, 200
    for i in range(runs):
        base = rng.random(400)
        a = (base < 0.80).astype(float)
        b = (base < 0.77).astype(float)  # b wrong wherever a is, plus 3% more: true difference 3 points
        flip = rng.random(400) < 0.05  # some discordance the other way
        b[flip] = 1 - b[flip]
        truth = 100 * (0.80 - (0.77 * 0.95 + 0.23 * 0.05))
        est = stats.paired_difference(a, b, resamples=2000, seed=i)
        hits += est.low <= truth <= est.high
    assert 0.90 <= hits / runs <= 0.99, hits / runs


def test_recovery_and_a_drop_too_small_to_judge() -> None:
    orig = np.ones(500)
    re = orig.copy()
    re[:50] = 0  # the defense broke 50 images
    rev = re.copy()
    rev[:40] = 1  # the reversion restored 40 of them
    share, drop = stats.recovery(orig, re, rev)
    assert share.value == pytest.approx(0.8) and share.low > 0.5 and drop.low > 0
    tiny = orig.copy()
    tiny[:1] = 0  # one image: the drop's interval contains 0
    share, drop = stats.recovery(orig, tiny, orig)
    assert math.isnan(share.value) and "too small to judge" in share.note and drop.low <= 0
    gained = orig.copy()
    gained[:50] = 0  # the original is wrong on 50 images, the RE right on all: a gain, not a drop
    share, drop = stats.recovery(gained, orig, gained)
    assert math.isnan(share.value) and "no drop to recover" in share.note and drop.high < 0


def test_a_timing_ratio_needs_three_repeats_and_brackets_the_truth() -> None:
    est = stats.time_ratio([1.0, 1.1, 0.95], [0.010, 0.011, 0.0105])
    assert est.low < 100 < est.high or abs(est.value - 100) < 10
    assert stats.verdict(est.low, est.high, "above", 28) == stats.HOLDS
    assert stats.verdict(est.low, est.high, "above", 700) == stats.FAILS
    with pytest.raises(ValueError, match="at least 3"):
        stats.time_ratio([1.0, 1.1], [0.01, 0.02, 0.03])


def test_holm_and_exact_proportions() -> None:
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    share = stats.proportion(40, 50)
    assert share.value == 0.8 and share.low < 0.8 < share.high and share.low > 0.6


# --- claims on per-image outcomes ----------------------------------------------------------------

def grid(diff: float = 30.0, n: int = 300) -> claims.Data:
    """Two victims, an undefended and a defended cell each, outcomes drawn per image."""
    cells, per = [], []
    for j, v in enumerate(("v1", "v2")):
        for d, ref, p in (("none", "none", 0.6), ("mspd", "mcgs/F1B1/N20/eta1/eps0.0314", 0.6 + diff / 100)):
            rob = outcomes(p, n, seed=10 * j + (d == "mspd"))
            cells.append({"defense": d, "defense_ref": ref, "victim": v, "attack": "aa", "attack_ref": "autoattack/x",
                          "reversion": "none", "robust_acc": 100 * rob.mean(), "clean_acc": 90.0})
            per.append(pd.DataFrame({"defense": d, "reversion": "none", "victim": v, "attack": "aa",
                                     "image": range(n), "robust": rob, "input": 1.0, "orig": 1.0, "re": 1.0}))
    return claims.Data.of(pd.DataFrame(cells), pd.concat(per, ignore_index=True))


RAISES = claims.Claim.model_validate({
    "id": "raises", "paper": "mspd", "exhibit": "Table IV", "statement": "s", "by": ["victim"],
    "lhs": {"where": {"defense_ref": "mcgs/*"}, "metric": "robust_acc"},
    "rhs": {"where": {"defense_ref": "none"}, "metric": "robust_acc"}, "threshold": {"above": 0}})


def test_a_claim_by_victim_reports_every_group_and_its_interval() -> None:
    row = claims.evaluate(RAISES, grid(30.0), claims.Statistics(resamples=2000))
    assert row["verdict"] == claims.HOLDS and row["groups"] == 2
    assert row["ci_low"] > 0 and row["n"] == 300 and "Bonferroni" in str(row["test"])
    assert "v1: " in str(row["numbers"]) and "v2: " in str(row["numbers"])
    assert claims.evaluate(RAISES, grid(-30.0), claims.Statistics(resamples=2000))["verdict"] == claims.FAILS


def test_identical_cells_never_fail_a_claim() -> None:
    same = grid(0.0)
    out = same.outcomes.reset_index()
    none = out[out.defense == "none"].copy()
    out = pd.concat([none, none.assign(defense="mspd")])
    same = claims.Data.of(same.cells, out)
    row = claims.evaluate(RAISES, same, claims.Statistics(resamples=2000))
    assert row["verdict"] == claims.INCONCLUSIVE and row["difference"] == 0.0


def test_a_claim_at_another_setting_than_the_papers_is_not_comparable() -> None:
    c = RAISES.model_copy(update={"comparable_if": {"defense_ref": ["none", "mcgs/F1B1/N100/*"]},
                                  "not_comparable": "the paper runs N = 100"})
    row = claims.evaluate(c, grid(30.0))
    assert row["verdict"] == "not comparable: the paper runs N = 100" and "mcgs/F1B1/N20" in str(row["note"])


@pytest.mark.parametrize("entry,msg", [
    ({"threshold": {"over": 0}}, "unknown threshold kind 'over'"),
    ({"threshold": {"above": 0, "below": 1}}, "exactly one threshold kind"),
    ({"test": "ratio"}, "repeated timings"),
    ({"lhs": {"metric": "sec_per_image"}}, "test: ratio on repeated timings"),
    ({"comparable_if": {"defense_ref": "x"}}, "needs not_comparable"),
])
def test_a_bad_claim_definition_is_one_clear_line(tmp_path, entry, msg) -> None:
    import yaml

    base = {"id": "a", "paper": "mspd", "exhibit": "x", "statement": "s", "lhs": {"metric": "robust_acc"},
            "rhs": {"metric": "robust_acc"}, "threshold": {"above": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump([{**base, **entry}]))
    with pytest.raises(ConfigError) as err:
        claims.load(tmp_path / "c.yaml")
    assert msg in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_ratio_claim_reads_the_repeated_timings() -> None:
    timing = pd.DataFrame([{"defense": d, "defense_ref": ref, "repeat": r, "sec_per_image": s * (1 + 0.02 * r)}
                           for d, ref, s in (("bl", "bilevel/Linf/eps0.0314/iter100/T20", 1.0),
                                             ("mspd", "mcgs/F1B1/N20/eta1/eps0.0314", 0.02)) for r in range(3)])
    c = claims.Claim.model_validate({
        "id": "fast", "paper": "mspd", "exhibit": "Table V", "statement": "s", "test": "ratio",
        "lhs": {"where": {"defense_ref": "bilevel/*"}, "metric": "sec_per_image"},
        "rhs": {"where": {"defense_ref": "mcgs/*"}, "metric": "sec_per_image"}, "threshold": {"above": 28}})
    data = claims.Data.of(pd.DataFrame(columns=["defense"]), None, timing)
    row = claims.evaluate(c, data)
    assert row["verdict"] == claims.HOLDS and row["ratio"] == pytest.approx(50.0) and row["n"] == 3
    assert claims.evaluate(c.model_copy(update={"threshold": {"above": 700}}), data)["verdict"] == claims.FAILS
