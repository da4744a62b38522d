"""MSPD (Minimal Cascade Gradient Smoothing): Tables IV-VII and IX-XV, Figs. 4 and 7."""

from __future__ import annotations

import re

import pandas as pd

from . import (Exhibit, Paper, Results, Shown, by_defense, by_victim, figure, mean_table, register, save_figure,
               schedule_of, tilt)

P = "mspd"


def table4(res: Results, e: Exhibit) -> Shown | None:
    """End-to-end: per defense, clean and robust accuracy under each AutoAttack variant and time."""
    return by_defense(res, e)


def table6(res: Results, e: Exhibit) -> Shown | None:
    """Rows: attacks; columns: defenses; robust accuracy (%)."""
    cells = res.cells(e.key)
    cells = cells[(cells["reversion"] == "none") & (cells["attack_ref"] != "none")]
    if cells.empty:
        return None
    return Shown(table=cells.pivot_table(index="attack", columns="defense", values="robust_acc", aggfunc="mean",
                                         sort=False).round(1))


def table10(res: Results, e: Exhibit) -> Shown | None:
    """Rows: defense x reversion (No / White); columns: SSIM, LPIPS, clean and robust accuracy."""
    cells = res.cells(e.key)
    if cells.empty:
        return None
    t = mean_table(cells, ["defense", "reversion"])
    q = cells.groupby(["defense", "reversion"], sort=False)[["ssim", "lpips"]].mean()
    return Shown(table=pd.concat([q.round(3), t], axis=1))


def table15(res: Results, e: Exhibit) -> Shown | None:
    """Rows: the attack's budget; columns: robust accuracy without and with the defense."""
    cells = res.cells(e.key)
    cells = cells[cells["reversion"] == "none"]
    if cells.empty:
        return None
    t = cells.pivot_table(index="attack_ref", columns="defense", values="robust_acc", aggfunc="mean", sort=False)
    t.index = [r.split("/")[2] if r.count("/") >= 2 else r for r in t.index]
    t.index.name = "attack eps"
    return Shown(table=t.round(1))


def fig4(res: Results, e: Exhibit) -> Shown | None:
    """Clean and robust accuracy and the RE's loss against the number of steps ("epochs") for
    forward-only, backward-only and the cascade."""
    cells = res.cells(e.key)
    cells = cells[(cells["reversion"] == "none") & (cells["defense_ref"] != "none")]
    if cells.empty:
        return None
    rows = []
    for d, g in cells.groupby("defense", sort=False):
        sched = schedule_of(g["defense_ref"].iloc[0]).split(" ")[0]
        fam = "forward" if "B" not in sched else "backward" if sched.startswith(("B", "F0")) else "cascade"
        steps = sum(int(n) for n in re.findall(r"\d+", sched.split("x")[0]))
        steps *= int(sched.split("x")[1]) if "x" in sched else 1
        rows.append({"defense": d, "schedule": sched, "family": fam, "epochs": steps,
                     "smoothing": "N" + g["defense_ref"].iloc[0].split("/")[2][1:],
                     "clean_acc": g["clean_acc"].mean(), "robust_acc": g["robust_acc"].mean(),
                     "ce": g["ce"].mean() if "ce" in g else float("nan")})
    data = pd.DataFrame(rows).sort_values(["family", "epochs"])
    panels = [("clean_acc", "clean accuracy (%)"), ("robust_acc", "robust accuracy (%)")]
    if data["ce"].notna().any():
        panels.append(("ce", "victim's CE loss on the RE"))
    fig, axes = figure(1, len(panels), width=7.0, height=2.3)
    for (fam, smooth), g in data.groupby(["family", "smoothing"], sort=False):
        for ax, (col, _) in zip(axes[0], panels, strict=True):
            ax.plot(g["epochs"], g[col], marker="o", label=f"{fam} ({smooth})")
    for ax, (_, label) in zip(axes[0], panels, strict=True):
        ax.set(xlabel="epochs (F/B steps)", ylabel=label, xscale="log")
    axes[0][0].legend()
    shown = save_figure(fig, res, e.id, data)
    return Shown(table=data.set_index("defense").round(4), figure=shown.figure, csv=shown.csv)


def fig7(res: Results, e: Exhibit) -> Shown | None:
    """Clean accuracy of the REs after purification (JPEG, ...) and after Preemptive Reversion."""
    cells = res.cells(e.key)
    if cells.empty:
        return None
    data = (cells.groupby(["defense", "reversion"], sort=False)["clean_acc"].mean().reset_index())
    fig, axes = figure(1, 1, width=3.4, height=2.2)
    ax = axes[0][0]
    piv = data.pivot_table(index="reversion", columns="defense", values="clean_acc", sort=False)
    piv.plot.bar(ax=ax)
    tilt(ax)
    lo = float(data["clean_acc"].min())
    ax.set(ylabel="clean accuracy (%)", xlabel="reversion (none: the RE as released)", ylim=(max(0.0, lo - 5), 100))
    ax.legend(title="defense", loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, frameon=False)
    shown = save_figure(fig, res, e.id, data)
    return Shown(table=piv.round(1), figure=shown.figure, csv=shown.csv)


def _sweep(id: str, label: str, title: str, extra: tuple[str, ...] = ()) -> Exhibit:
    return Exhibit(P, id, label, title, lambda res, e: by_defense(res, e, extra=extra))


PAPER = register(Paper(P, "MSPD (MCGS)", "Minimal Cascade Gradient Smoothing for Fast Transferable Preemptive "
                       "Adversarial Defense", (
    Exhibit(P, "table4", "Table IV", "End-to-end performance (clean, AutoAttack Linf/L2/rand, time)", table4),
    _sweep("table5", "Table V", "Budget of epochs: forward, backward and cascade"),
    Exhibit(P, "table6", "Table VI", "Robust accuracy against various attacks", table6,
            about="MCG and DeCoW are not implemented."),
    Exhibit(P, "table7", "Table VII", "Transferability: clean and robust accuracy per victim",
            lambda res, e: by_victim(res, e)),
    _sweep("table9", "Table IX", "Gradient smoothing in forward, backward and cascade"),
    Exhibit(P, "table10", "Table X", "Image quality and reversion (SSIM, LPIPS, clean, robust)", table10),
    _sweep("table11", "Table XI", "Backbone selection: CE loss and gradient similarity",
           extra=("backbone_params_M", "ce", "ce_robust", "ce_fooled", "grad_sim")),
    _sweep("table12", "Table XII", "Label sources (coupled, black, white, ground truth)"),
    _sweep("table13", "Table XIII", "Number of smoothing samples N"),
    _sweep("table14", "Table XIV", "Step size eta"),
    Exhibit(P, "table15", "Table XV", "Attack budget vs defense budget", table15),
    Exhibit(P, "fig4", "Fig. 4", "Accuracy and loss against epochs: forward, backward, cascade", fig4,
            plot=(("x", "epochs"), ("y", "robust_acc"))),
    Exhibit(P, "fig7", "Fig. 7", "Purification and reversion", fig7,
            plot=(("x", "clean_acc"), ("y", "reversion"), ("template", "bar_horizontal"))),
)))
