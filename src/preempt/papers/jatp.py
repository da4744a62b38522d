"""JATP (Zhou et al., NeurIPS 2021): white-box robustness of pre-processing defenses (Tables 1-2),
robustness degradation (Fig. 1), fooling rate of BPDA vs PGD (Fig. 4)."""

from __future__ import annotations

import pandas as pd

from . import Exhibit, Paper, Results, Shown, attack_rows, figure, register, save_figure, tilt

P = "jatp"


def table(res: Results, e: Exhibit) -> Shown | None:
    """Rows: pre-processing defense in front of the target (the victim); columns: Natural, then each
    white-box attack; accuracy (%)."""
    shown = attack_rows(res, e, columns="victim")
    if shown is None or shown.table is None:
        return None
    t = shown.table.T
    t.insert(0, "what ran", res.cells(e.key).groupby("victim", sort=False)["victim_ref"].first())
    return Shown(table=t.rename(columns={"Clean": "Natural"}))


def fooling(res: Results, e: Exhibit) -> Shown | None:
    """Fooling rate (100 - robust accuracy) of each attack, per defended target: BPDA vs PGD."""
    cells = res.cells(e.key)
    cells = cells[cells["attack_ref"] != "none"]
    if cells.empty:
        return None
    data = cells.assign(fooling_rate=100 - cells["robust_acc"])[["victim", "attack", "fooling_rate", "robust_acc"]]
    piv = data.pivot_table(index="victim", columns="attack", values="fooling_rate", sort=False)
    fig, axes = figure(1, 1, width=3.4, height=2.3)
    piv.plot.bar(ax=axes[0][0])
    axes[0][0].set(ylabel="fooling rate (%)", xlabel="", ylim=(0, 100))
    tilt(axes[0][0])
    shown = save_figure(fig, res, e.id, data)
    return Shown(table=piv.round(1), figure=shown.figure, csv=shown.csv)


def degradation(res: Results, e: Exhibit) -> Shown | None:
    """Robust accuracy of each defended target under the non-adaptive attack (the first) and the
    adaptive ones: the robustness degradation of pre-processing defenses."""
    cells = res.cells(e.key)
    cells = cells[cells["attack_ref"] != "none"]
    if cells.empty:
        return None
    data = cells[["victim", "victim_ref", "attack", "robust_acc"]]
    piv = data.pivot_table(index="victim", columns="attack", values="robust_acc", sort=False)
    fig, axes = figure(1, 1, width=3.4, height=2.3)
    piv.plot.bar(ax=axes[0][0])
    axes[0][0].set(ylabel="robust accuracy (%)", xlabel="", ylim=(0, 100))
    tilt(axes[0][0])
    shown = save_figure(fig, res, e.id, pd.DataFrame(data))
    return Shown(table=piv.round(1), figure=shown.figure, csv=shown.csv)


PAPER = register(Paper(P, "JATP", "Zhou et al., Improving White-box Robustness of Pre-processing Defenses via Joint "
                       "Adversarial Training (NeurIPS 2021)", (
    Exhibit(P, "table1", "Table 1", "White-box robustness of pre-processing defenses (CIFAR-10)", table),
    Exhibit(P, "table2", "Table 2", "White-box robustness per target model (CIFAR-10; P trained against TRADES)", table),
    Exhibit(P, "fig1", "Fig. 1", "Robustness degradation of pre-processing defenses", degradation,
            plot=(("x", "robust_acc"), ("y", "victim"), ("template", "bar_horizontal"))),
    Exhibit(P, "fig4", "Fig. 4", "Fooling rate of BPDA vs PGD", fooling,
            plot=(("x", "fooling_rate"), ("y", "victim"), ("template", "bar_horizontal"))),
)))
