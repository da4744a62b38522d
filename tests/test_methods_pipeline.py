"""Every method on the embedded digits through the real workflow, shrunk to CI size.

config/digits-all.yaml (the default's digits with all tables: Bi-Level and its reconstruction attack, UnAdv, the schedule
ablation, Algorithm 2 training, Trigger Activation, JATP, input transforms as reversions and as
victims, BPDA/EOT, CW, Square, transfer attacks) with fewer images, epochs and iterations, run by
``python -m preempt inline`` (the same stage code in one process: tests/test_faults.py pins it bit
for bit against ``snakemake``, whose per-job DVC bookkeeping would cost this file minutes): every
cell must come out, with the behaviour each table relies on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ALL_METHODS
from preempt import config
from test_pipeline import make_workspace, run

pytestmark = pytest.mark.pipeline


def shrink(raw: dict) -> dict:
    raw["dataset"]["n_eval"] = 40
    for m in raw["models"].values():
        if "epochs" in m:
            m["epochs"] = 2
        recipe = m.get("recipe", {})
        if recipe.get("method") == "pgd_at":
            recipe["steps"] = 2
        if recipe.get("method") == "preemptive_at":
            recipe.update(outer_iters=1, steps=2)
        if m.get("source") == "jatp":
            m["attack_steps"] = 2
    for d in raw["defenses"].values():
        if d["method"] == "mcgs":
            d["n_samples"] = min(d.get("n_samples", 20), 3)
        if d["method"] == "bilevel":
            d.update(max_iter=2, inner_steps=2)
    for a in raw["attacks"].values():
        if a["method"] in ("pgd", "ifgsm", "mifgsm", "difgsm"):
            a["steps"] = 3
            if a.get("eot_iter"):
                a["eot_iter"] = 2
        if a["method"] == "autoattack":
            a.update(n_iter=5, **({"n_queries": 30} if a.get("attacks") == ["square"] else {}))
            if a.get("version") == "rand":
                a["eot_iter"] = 2
        if a["method"] == "cw":
            a.update(steps=10, binary_search_steps=2)
        if a.get("restarts"):
            a["restarts"] = 2
        if a["method"] == "certify":
            a.update(n0=20, n=200)
    g = raw["grid"]  # fewer victims where a table repeats itself per victim (DVC's per-job overhead dominates)
    g["victims"] = ["victim_resnet_at"]
    g["extra"]["transfer"]["victims"] = ["victim_trigger", "victim_mlp_at"]
    g["extra"]["test_time"]["attacks"] = ["pgd", "bpda_eot_pgd"]
    g["extra"]["protocol"]["victims"] = ["victim_mlp_at"]
    g["extra"]["protocol"]["defenses"] = ["mcgs_weak", "mcgs_mislabel"]  # both variants of the protocol
    raw["report"]["n_examples"] = 4
    raw["timing"].update(images=4, defenses=["mcgs", "bilevel"])
    raw["statistics"]["resamples"] = 1000
    return raw


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    raw = shrink(yaml.safe_load(ALL_METHODS.read_text()))
    ws = make_workspace(tmp_path_factory.mktemp("methods"), raw)
    run(["python", "-m", "preempt", "inline"], ws, timeout=3600)  # the largest workflows of the suite
    return ws


def test_every_cell_of_every_table_comes_out(ws: Path) -> None:
    from preempt import config

    params = config.load(ws / "params.yaml")
    df = pd.read_csv(ws / "results" / "metrics.csv")
    assert len(df) == len(params.grid.cells())
    assert set(df["tables"].str.split(";").explode()) == set(params.grid.blocks())
    assert df["robust_acc"].between(0, 100).all() and (df["n"] == 40).all()
    nb = json.loads((ws / "reports" / "results.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    text = json.dumps(outputs)
    for table in params.grid.blocks():
        assert f"### {table}" in text  # each table of the grid is rendered


def test_tables_carry_what_each_method_defines(ws: Path) -> None:
    df = pd.read_csv(ws / "results" / "metrics.csv")
    # every defense stays in its own budget (Linf 0.1; the smoothed classifier's Bi-Level: L2 0.5)
    res = df[(df.reversion == "none")]
    defs = config.load(ws / "params.yaml").defenses  # resolved: a default eps or norm is checked too
    for d, rows in res.groupby("defense"):
        eps, norm = getattr(defs[d], "eps", 0.0), getattr(defs[d], "norm", "Linf")  # 'none' changes nothing
        col = "l2" if norm == "L2" else "linf"
        assert (rows[col] <= eps + 1e-4).all(), (d, rows[col].max())
    assert (res[res.defense == "bilevel"]["linf"] > 0).all()
    # transfer attacks: the mean over surrogates, each one listed
    tr = df[df.attack == "mifgsm"]
    per = tr["robust_acc_by_surrogate"].map(json.loads)
    assert (per.map(len) == 2).all()
    assert ((per.map(lambda d: sum(d.values()) / len(d)) - tr["robust_acc"]).abs() < 1e-3).all()  # csv: 6 digits
    models = config.load(ws / "params.yaml").models  # surrogates named by what they are, not their entry names
    named = ",".join(sorted(models[m].ref(models) for m in ("classifier", "surrogate")))
    assert tr["attack_ref"].str.startswith(f"transfer[{named}]/").all(), tr["attack_ref"].iloc[0]
    # the reconstruction sweep: counting examples outside the ball can only add robust ones
    rec = df[df.reversion == "reconstruct"]
    assert (rec["robust_acc_ball"] >= rec["robust_acc"] - 1e-9).all()
    assert (rec[rec.attack == "pgd_rec25"]["adv_linf"] <= 0.025 + 1e-5).all()
    # test-time defenses are victims that say what they wrap
    refs = dict(zip(df["victim"], df["victim_ref"]))
    assert refs["victim_jpeg"] == "jpeg:75(train/resnet8/fgsm_at)"
    assert refs["victim_jatp_mlp"] == "jatp[from train/resnet8/fgsm_at](train/mlp/pgd_at)"  # the moved P
    assert df[df.attack == "bpda_eot_pgd"]["attack_ref"].str.startswith("bpda+").all()


def test_protocol_columns_follow_their_definitions(ws: Path) -> None:
    """Fast Preemption's protocol: orig_acc is the victim's, re_acc the RE's (= clean_acc without
    a reversion), reversion_recovery the share of the change the reversion undoes."""
    df = pd.read_csv(ws / "results" / "metrics.csv")
    deterministic = df[df.victim.isin(["victim_mlp", "victim_mlp_at", "victim_resnet_at"])]
    assert (deterministic.groupby("victim")["orig_acc"].nunique() == 1).all()
    plain = df[df.reversion == "none"]
    assert ((plain["re_acc"] - plain["clean_acc"]).abs() < 1e-6).all() and plain["reversion_recovery"].isna().all()
    prot = df[(df.attack == "clean") & (df.reversion != "none") & (df.orig_acc != df.re_acc)]
    assert len(prot) > 0
    expect = (prot["clean_acc"] - prot["re_acc"]) / (prot["orig_acc"] - prot["re_acc"])
    assert ((prot["reversion_recovery"] - expect).abs() < 1e-4).all()
    assert ((df[df.attack == "clean"]["robust_acc"] - df[df.attack == "clean"]["clean_acc"]).abs() < 1e-9).all()
    meta = json.loads((ws / "results" / "re" / "mcgs_mislabel.json").read_text())
    assert meta["mislabeled"] == 20  # 50% of the 40 images
    weak = json.loads((ws / "results" / "re" / "mcgs_weak.json").read_text())
    assert weak["mislabeled"] is None  # the weak labeller's own errors are the wrong labels


def test_table_xi_and_smoothing_columns(ws: Path) -> None:
    df = pd.read_csv(ws / "results" / "metrics.csv")
    backed = df[df.defense.isin(["mcgs", "bilevel"])]
    assert backed["grad_sim"].between(-1, 1).all() and df[df.defense == "none"]["grad_sim"].isna().all()
    both = df[df.robust_acc_by_surrogate.isna() & (df.attack != "certify")].dropna(subset=["ce_robust", "ce_fooled"])
    robust_share = both["robust_acc"] / 100
    assert ((both["ce_robust"] * robust_share + both["ce_fooled"] * (1 - robust_share) - both["ce"]).abs() < 1e-3).all()
    cert = df[df.attack == "certify"]
    assert len(cert) == 2 and cert["abstain"].between(0, 100).all()
    for _, row in cert.iterrows():
        per_r = json.loads(row["cert_acc"])
        values = [per_r[k] for k in sorted(per_r, key=float)]
        assert values == sorted(values, reverse=True) and abs(per_r["0.5"] - row["robust_acc"]) < 1e-9
    assert df[df.attack == "rpgd10"]["attack_ref"].str.endswith("x2").all()
    from preempt import artifacts

    adv, _ = artifacts.load(str(ws / "results" / "adv" / "bilevel_smoothed" / "none" / "victim_smoothed" / "certify.pt"))
    assert adv["radius"].shape == (40,) and ((adv["certified_class"] < 0) <= (adv["radius"] == 0)).all()


def test_bilevel_diagnostics_are_saved_for_the_notebooks(ws: Path) -> None:
    """Moon et al.'s Figs. 3-5: per-image distances of the reconstruction, per-iteration gradient
    norms and losses, the final worst-case loss."""
    import torch

    from preempt import artifacts

    re, _ = artifacts.load(str(ws / "results" / "re" / "bilevel.pt"))
    assert re["trace_grad_norm"].shape == re["trace_loss"].shape == (40, 2)
    assert re["trace_final_loss"].shape == (40, 1) and (re["trace_grad_norm"] >= 0).all()
    rec, _ = artifacts.load(str(ws / "results" / "inputs" / "bilevel" / "reconstruct.pt"))
    orig, _ = artifacts.load(str(ws / "results" / "data" / "test.pt"))
    assert torch.allclose(rec["dist_l2"], (rec["x"] - orig["x"]).flatten(1).norm(dim=1))


def test_every_paper_notebook_executes_with_its_claims_first(ws: Path, tmp_path: Path) -> None:
    from preempt import papers
    from test_papers import screenshot

    claims = pd.read_csv(ws / "results" / "claims.csv")
    assert set(claims["paper"]) == set(papers.PAPERS)
    for paper in papers.PAPERS:
        nb = json.loads((ws / "reports" / f"{paper}.ipynb").read_text())
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert outputs and not any(o.get("output_type") == "error" for o in outputs), paper
        text = json.dumps(outputs)
        first = min(text.find(s) for s in ("holds", "fails", "inconclusive", "not comparable", "not measured")
                    if s in text)
        assert 0 <= first < text.find(f"### {papers.PAPERS[paper].exhibits[0].label}: ")  # the claims come first
        assert (ws / "reports" / f"{paper}.html").is_file()
    # a figure of each kind is saved as PNG and PDF beside its CSV
    for fig in ("fast_preemption/fig4", "fast_preemption/fig6", "mspd/fig7", "moon/fig4", "jatp/fig4"):
        base = ws / "reports" / "figures" / fig
        assert all(base.with_suffix(s).is_file() for s in (".png", ".pdf", ".csv")), fig
    pixels = screenshot(ws / "reports" / "fast_preemption.html", tmp_path / "shot.png")
    assert pixels.std() > 5
