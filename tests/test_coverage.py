"""``python -m preempt coverage``: published numbers matched to an experiment's cells from its
DAG alone, with the reason for each one that is not."""

from __future__ import annotations

import pandas as pd

from conftest import ROOT
from preempt import config, coverage
from preempt.cli import main

HEADER = "paper,table,row,column,dataset,defense_ref,backbone_ref,victim_ref,attack_ref,reversion,metric,value,source\n"


def test_each_published_number_is_matched_or_says_why(tmp_path) -> None:
    p = config.load(ROOT / "params.yaml")
    cells = coverage.planned_cells(p)
    cell = cells[(cells["defense"] == "mcgs") & (cells["reversion"] == "none") & (cells["attack"] == "autoattack")].iloc[0]
    keys = f"digits,{cell.defense_ref},{cell.backbone_ref},{cell.victim_ref},{cell.attack_ref},none"
    rows = [f"x,T1,r1,c,{keys},robust_acc,80,matched",
            f"x,T1,r2,c,{keys.replace('mcgs/F1B1/N20', 'mcgs/F1B1/N5')},robust_acc,80,other N",
            f"x,T1,r3,c,{keys},cert_acc@0.5,50,not certified here",
            f"x,T1,r4,c,{keys},n_params_M,11,no stage",
            f"x,T1,r8,c,{keys.replace(cell.backbone_ref, 'Standard')},robust_acc,80,other backbone",
            "x,T2,r5,c,cifar10,,,,,,clean_acc,93,other dataset",
            "x,T2,r6,c,,,,,,,clean_acc,93,no key: documents a setting preempt lacks",
            f"x,T2,r7,c,digits,{cell.defense_ref},,,,,sec_per_image,0.02,per defense"]
    pub = tmp_path / "published.csv"
    pub.write_text(HEADER + "\n".join(rows) + "\n")
    t = coverage.coverage({"params.yaml": p}, pub).set_index("row")
    assert list(t["status"]) == ["matched", "unmatched", "unmatched", "unmatched", "unmatched", "other dataset",
                                 "no key", "matched"]
    assert "defense_ref: wants 'mcgs/F1B1/N5" in t.loc["r2", "reason"] and "has 'mcgs/F1B1/N20" in t.loc["r2", "reason"]
    assert f"backbone_ref: wants 'Standard'" in t.loc["r8", "reason"] and cell.backbone_ref in t.loc["r8", "reason"]
    assert "has no cert_acc@0.5" in t.loc["r3", "reason"] and "no stage computes n_params_M" == t.loc["r4", "reason"]
    s = coverage.summary(t.reset_index()).loc["x"]
    assert (s.loc["T1", "published"], s.loc["T1", "keyed"], s.loc["T1", "matched"]) == (5, 5, 1)
    assert (s.loc["all", "published"], s.loc["all", "keyed"], s.loc["all", "matched"]) == (8, 7, 2)


def test_the_coverage_command_prints_the_table_without_running_anything(tmp_path, capsys) -> None:
    assert main(["coverage", str(ROOT / "config" / "cifar10.yaml"), "--published", str(ROOT / "config" / "published.csv")]) == 0
    out = capsys.readouterr().out
    assert "| fast_preemption | all |" in out and "| paper | exhibit | published | keyed | matched |" in out
    assert not (tmp_path / "results").exists()
    table = pd.read_csv(ROOT / "config" / "published.csv", comment="#")
    assert f"{len(table)} published numbers" in out
