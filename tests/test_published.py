"""Reproduced-vs-published matching, the paper-shaped tables, and grid exclusions."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import ROOT
from preempt import config, dag, paths, plots, published as claims
from preempt.stages.aggregate import describe
from preempt.errors import ConfigError


def cells(**over) -> pd.DataFrame:
    base = {"dataset": "cifar10", "defense": "none", "victim": "v1", "attack": "aa", "reversion": "none",
            "clean_acc": 90.0, "robust_acc": 70.0, "sec_per_image": 0.0, "defense_ref": "none", "backbone_ref": "none",
            "victim_ref": "Wong2020Fast", "attack_ref": "autoattack/standard/Linf/0.0314"}
    return pd.DataFrame([{**base, **over}])


def test_published_numbers_are_matched_on_what_ran_and_differenced() -> None:
    published = claims.load_published(ROOT / paths.PUBLISHED_CSV)
    m = pd.concat([cells(), cells(attack="pgd", attack_ref="pgd-ce/Linf/0.0314/20", robust_acc=1.0),
                   cells(victim="v2", victim_ref="Peng2023Robust")])
    out = claims.compare(m, published[published["paper"] == "robustbench"])
    wong = out[out["victim"] == "v1"].set_index("metric")
    assert set(out["metric"]) == {"clean_acc", "robust_acc"}
    assert wong.loc["robust_acc", "published"] == 43.21  # from the RobustBench entry, not from PGD
    assert wong.loc["robust_acc", "difference"] == pytest.approx(70.0 - 43.21)
    assert len(out[out["metric"] == "clean_acc"]) == 2  # one per victim, not per attack (blank attack key)
    assert set(out["table"]) == {"leaderboard"} and set(out["paper"]) == {"robustbench"}


R18, WRN94 = "Gowal2021Improving_R18_ddpm_100m", "Bartoldson2024Adversarial_WRN-94-16"


def test_seconds_per_image_match_on_the_defense_and_its_backbone() -> None:
    """MSPD's 0.02 s/image is on its PreActResNet-18: the mean over that defense's cells only, not
    over the same schedule on a WRN-94-16 backbone (Table XI's cells, 10x slower)."""
    published = claims.load_published(ROOT / paths.PUBLISHED_CSV)
    ref = "mcgs/F1B1/N20/eta1/eps0.0314"
    m = pd.concat([cells(defense="mspd", defense_ref=ref, backbone_ref=R18, sec_per_image=0.03),
                   cells(defense="mspd_bb_wrn94", defense_ref=ref, backbone_ref=WRN94, sec_per_image=0.5),
                   cells(defense="mspd", defense_ref=ref, backbone_ref=R18, sec_per_image=0.05, victim="v2")])
    out = claims.compare(m, published[published["table"] == "abstract"])
    row = out[out["metric"] == "sec_per_image"].iloc[0]
    assert row["reproduced"] == pytest.approx(0.04) and row["published"] == 0.02 and row["defense"] == "mspd"


def test_a_backbone_choice_is_matched_by_its_own_cell_whatever_the_order() -> None:
    """MSPD's Table XI: one defense, four backbones; every row finds its backbone's cell, also
    when another backbone's cell comes first (a defense_ref alone would take the first)."""
    published = claims.load_published(ROOT / paths.PUBLISHED_CSV)
    xi = published[(published["table"] == "Table XI") & (published["metric"] == "robust_acc")]
    ref, victim = "mcgs/F1B1/N20/eta1/eps0.0314", "Debenedetti2022Light_XCiT-L12"
    m = pd.concat([cells(defense=d, defense_ref=ref, backbone_ref=b, victim_ref=victim, attack="pgd",
                         attack_ref="pgd-ce/Linf/0.0314/20", robust_acc=acc)
                   for d, b, acc in [("mspd_bb_wrn94", WRN94, 77.0), ("mspd_bb_standard", "Standard", 61.0),
                                     ("mspd", R18, 78.0)]])
    out = claims.compare(m, xi).set_index("row")
    assert out.loc["PreActResNet-18 (Ours)", "defense"] == "mspd" and out.loc["PreActResNet-18 (Ours)", "reproduced"] == 78.0
    assert out.loc["WideResNet-94-16", "defense"] == "mspd_bb_wrn94"
    assert out.loc["WideResNet-28-10 (Nonrobust)", "reproduced"] == 61.0
    assert "WideResNet-28-10" not in out.index  # the paper does not name its robust WRN-28-10: not keyed


def test_a_published_mean_or_min_over_cells_is_reproduced_only_over_all_of_them() -> None:
    """Trigger Activation's R_T^{S,A}: one number over several targets (a key ``a|b``)."""
    pub = pd.DataFrame([{"paper": "trigger", "table": "Table I", "row": "PGD", "column": "w/o", "dataset": "cifar10",
                         "defense_ref": "none", "backbone_ref": "", "victim_ref": "train/a/standard|train/b/standard", "attack_ref": "",
                         "reversion": "none", "metric": "robust_acc", "value": 11.0, "source": ""}])
    m = pd.concat([cells(victim="va", victim_ref="train/a/standard", robust_acc=10.0),
                   cells(victim="va", victim_ref="train/a/standard", attack="pgd", robust_acc=99.0),  # first cell counts
                   cells(victim="vb", victim_ref="train/b/standard", robust_acc=20.0),
                   cells(victim="vc", victim_ref="train/c/standard", robust_acc=90.0)])  # not a member
    row = claims.compare(m, pub).iloc[0]
    assert row["reproduced"] == pytest.approx(15.0) and row["victim"] == "va;vb"
    assert claims.compare(m[m["victim"] != "vb"], pub).empty  # a mean with a member missing is not reproduced
    assert claims.missing(m[m["victim"] != "vb"], pub.iloc[0], claims.KEYS) == ["victim_ref=train/b/standard"]
    lowest = pub.assign(victim_ref="min:train/a/standard|train/b/standard|train/c/standard")  # Moon's white box
    assert claims.compare(m, lowest).iloc[0]["reproduced"] == pytest.approx(10.0)
    assert claims.compare(m, lowest).iloc[0]["victim"] == "va;vb;vc"


def test_a_published_number_aggregates_over_one_key_only(tmp_path) -> None:
    """A mean over victims of a min over attacks has no single reading: one clear error."""
    text = (ROOT / paths.PUBLISHED_CSV).read_text()
    line = "trigger,Table I,PGD,w/o,cifar10,none,,train/a/standard|train/b/standard,min:pgd|ifgsm,none,robust_acc,1.0,x\n"
    (tmp_path / "p.csv").write_text(text + line)
    with pytest.raises(Exception, match=r"p.csv: line \d+ aggregates over victim_ref and attack_ref"):
        claims.load_published(tmp_path / "p.csv")


def test_every_keyed_published_number_has_a_cell_in_some_experiment_file() -> None:
    """A published row with keys names a setting some experiment file runs (else its keys are wrong)."""
    rows = []
    for f in [ROOT / "params.yaml", *sorted((ROOT / "config").glob("*.yaml"))]:
        if f.name == "claims.yaml":
            continue
        p = config.load(f)
        rows += [{"dataset": p.dataset.name, "reversion": r, **describe(p, d, v, a)} for d, r, v, a in p.grid.cells()]
    grid = pd.DataFrame(rows).astype(str)
    published = claims.load_published(ROOT / paths.PUBLISHED_CSV)
    keyed = published[(published[claims.KEYS] != "").any(axis=1)]
    assert len(keyed) >= 200  # the transcription keyed the papers' CIFAR-10 tables
    for _, row in keyed.iterrows():
        hit = claims.select(grid, row, claims.KEYS)
        where = f"{row['paper']} {row['table']} {row['row']} / {row['column']}"
        assert len(hit), f"{where}: no cell runs it"
        assert not claims.missing(hit, row, claims.KEYS), f"{where}: no cell for {claims.missing(hit, row, claims.KEYS)}"
    assert set(published["paper"]) >= {"fast_preemption", "mspd", "moon", "trigger", "jatp"}


def test_a_non_numeric_published_value_is_one_clear_error(tmp_path) -> None:
    text = (ROOT / paths.PUBLISHED_CSV).read_text().replace(",93.68,", ",93.6x,", 1)
    (tmp_path / "p.csv").write_text(text)
    with pytest.raises(Exception, match=r"p.csv: line \d+ has value '93.6x', not a number"):
        claims.load_published(tmp_path / "p.csv")


def test_published_victims_exist_in_the_robustbench_zoo() -> None:
    from preempt.models.robustbench import zoo_entries

    published = claims.load_published(ROOT / paths.PUBLISHED_CSV)
    published = published[published["dataset"].isin(["cifar10", "imagenet"])]
    names = 0
    for key in ("victim_ref", "backbone_ref"):  # every member of a mean too (a|b|c)
        for _, row in published[published[key] != ""].iterrows():
            for ref in claims.alternatives(row[key]):
                if not any(c in ref for c in "/([") and ref != "none":  # a zoo name, not train/.. or a wrapper
                    assert ref in zoo_entries(row["dataset"], "Linf"), (key, ref)
                    names += 1
    assert names > 300


def test_paper_tables_have_the_paper_shapes() -> None:
    rows = []
    for d in ("none", "mspd"):
        for r in (["none", "jpeg"] if d == "none" else ["none", "jpeg", "white", "black"]):
            for v in ("v1", "v2"):
                for a in ("aa", "pgd"):
                    rows.append({"defense": d, "reversion": r, "victim": v, "attack": a, "clean_acc": 90.0,
                                 "robust_acc": 50.0 + (d == "mspd") * 20 - (r != "none") * 10, "sec_per_image": 0.01,
                                 "ssim": 1.0, "linf": 0.0})
    df = pd.DataFrame(rows)
    e2e = plots.end_to_end_table(df)
    assert list(e2e.index) == ["none", "mspd"] and list(e2e.columns) == ["clean", "aa", "pgd", "sec_per_image"]
    assert e2e.loc["mspd", "aa"] == 70.0
    rev = plots.reversion_table(df, "aa")
    assert list(rev.columns) == ["none", "jpeg", "white", "black"] and rev.loc["mspd", "white"] == 60.0
    assert pd.isna(rev.loc["none", "white"])


def test_grid_exclude_drops_cells_and_their_stages(params) -> None:
    raw = dict(params.raw)
    raw["grid"] = {"defenses": ["none", "mcgs"], "reversions": ["none", "white", "black", "jpeg"],
                   "victims": ["victim_mlp", "victim_mlp_at", "victim_resnet_at"], "attacks": ["pgd", "autoattack"],
                   "exclude": [{"defense": "none", "reversion": ["white", "black"]},
                               {"reversion": "jpeg", "attack": "pgd"}]}
    p = config.parse(raw)
    got = set(p.grid.cells())
    assert ("none", "white", "victim_mlp", "pgd") not in got and ("mcgs", "jpeg", "victim_mlp", "pgd") not in got
    assert ("mcgs", "jpeg", "victim_mlp", "autoattack") in got
    assert len(got) == 2 * 4 * 3 * 2 - 2 * 3 * 2 - 2 * 3  # 48 - (none x {white,black}) - (jpeg x pgd)
    names = {st.name for st in dag.build(p)}
    assert "revert-none-white" not in names and "revert-mcgs-white" in names
    assert sum(n.startswith("attack-") for n in names) == len(got)


@pytest.mark.parametrize("rule,msg", [
    ({"defense": "nosuch"}, "grid.exclude.0.defense: 'nosuch' is not in grid.defenses"),
    ({"victims": "victim_mlp"}, "grid.exclude.0.victims"),
    ({"attack": ["pgd", "autoattack"]}, "every cell is excluded"),
])
def test_bad_exclusions_are_one_line(params, rule, msg) -> None:
    raw = dict(params.raw)
    raw["grid"] = {**raw["grid"], "exclude": [rule]}
    with pytest.raises(ConfigError) as err:
        config.parse(raw)
    assert msg in str(err.value) and "\n" not in str(err.value)
