"""MSPD's analyses (Tables V, IX, XI-XV) as ``config/mspd-digits.yaml`` declares them, run shrunk
by ``python -m preempt inline`` (every stage, in one process; pinned against snakemake in
tests/test_faults.py): every table comes out, with the behaviour each one is about."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from test_pipeline import make_workspace, run

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    raw = yaml.safe_load((ROOT / "config" / "mspd-digits.yaml").read_text())
    raw["dataset"]["n_eval"] = 40
    for m in raw["models"].values():
        m["epochs"] = 2
        if m["recipe"]["method"] == "pgd_at":
            m["recipe"]["steps"] = 2
    for d in raw["defenses"].values():
        if d["method"] == "bilevel":
            d.update(max_iter=min(d["max_iter"], 3), inner_steps=2)
    for a in raw["attacks"].values():
        a.update(steps=3) if a["method"] == "pgd" else a.update(n_iter=5)
    raw["report"]["n_examples"] = 4
    ws = make_workspace(tmp_path_factory.mktemp("mspd"), raw)
    run(["python", "-m", "preempt", "inline"], ws, timeout=3600)
    return Path(ws)


@pytest.fixture(scope="module")
def df(ws: Path) -> pd.DataFrame:
    return pd.read_csv(ws / "results" / "metrics.csv")


def cell(df: pd.DataFrame, defense: str, attack: str = "pgd") -> pd.Series:
    return df[(df.defense == defense) & (df.attack == attack)].iloc[0]


def test_every_table_comes_out(df: pd.DataFrame) -> None:
    tables = set(df["tables"].str.split(";").explode())
    assert tables == {"main", "budget", "epochs", "backbones", "labels", "samples", "eta", "attack_eps"}
    assert df["robust_acc"].between(0, 100).all() and (df["n"] == 40).all()


def test_table_xi_gradient_alignment(df: pd.DataFrame) -> None:
    """The oracle's backbone is the target itself: gradient similarity 1 (Lemma 1's trivial case);
    every other backbone is less aligned, and the undefended row has none."""
    assert cell(df, "mspd_oracle")["grad_sim"] == pytest.approx(1.0, abs=1e-5)
    for other in ("mspd", "mspd_bb_std", "mspd_bb_resnet"):
        assert -1 <= cell(df, other)["grad_sim"] < 0.999
    assert pd.isna(cell(df, "none")["grad_sim"])


def test_table_xii_ground_truth_labels_change_only_the_misclassified(ws: Path) -> None:
    """Same seed, same algorithm: the REs with ground-truth labels differ from the classifier-labelled
    ones only on images the classifier gets wrong."""
    import json

    import torch

    from preempt import artifacts

    a, _ = artifacts.load(str(ws / "results" / "re" / "mspd.pt"))
    b, _ = artifacts.load(str(ws / "results" / "re" / "mspd_gt.pt"))
    differ = int((a["x"] != b["x"]).flatten(1).any(1).sum())
    acc = json.loads((ws / "results" / "models" / "classifier.json").read_text())["clean_acc"]
    assert differ <= round((100 - acc) / 100 * 40)
    assert torch.equal(a["y"], b["y"])


def test_table_xv_attack_budget(df: pd.DataFrame) -> None:
    for d in ("none", "mspd"):  # a larger attack budget never leaves more robust images
        assert cell(df, d, "pgd_eps20")["robust_acc"] <= cell(df, d, "pgd_eps05")["robust_acc"]
    assert set(df[df.attack == "pgd_eps05"]["adv_linf"].round(4)) == {0.05}
