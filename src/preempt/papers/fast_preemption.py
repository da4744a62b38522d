"""Fast Preemption (Wang et al.): Tables 1-3 and Figs. 4-6 in the paper's layout."""

from __future__ import annotations

import re

import pandas as pd
import torch

from .. import stats
from . import (Exhibit, Paper, Results, Shown, figure, grey_map, image_grid, mean_table, register, save_figure, schedule_of,
               sig3)

P = "fast_preemption"


def table1(res: Results, e: Exhibit) -> Shown | None:
    """Per defense (rows, the paper's order): seconds per image, clean and robust accuracy under
    each AutoAttack variant, for the paper's single victim (mean over victims here)."""
    cells = res.cells(e.key)
    cells = cells[cells["reversion"] == "none"]
    if cells.empty:
        return None
    t = mean_table(cells, ["defense"], seconds=True)
    return Shown(table=t[["sec/image", *[c for c in t.columns if c != "sec/image"]]],
                 note=f"Mean over {cells['victim'].nunique()} victim(s); the paper uses one (WRN-94-16 / Swin-L).")


def table2(res: Results, e: Exhibit) -> Shown | None:
    """Rows: attacks; columns: defenses (no preemption, Bi-Level, Fast Preemption); robust accuracy (%)."""
    cells = res.cells(e.key)
    cells = cells[(cells["reversion"] == "none") & (cells["attack_ref"] != "none")]
    if cells.empty:
        return None
    t = cells.pivot_table(index="attack", columns="defense", values="robust_acc", aggfunc="mean", sort=False)
    return Shown(table=t.round(1))


REVERSION_ORDER = ("none", "jpeg", "jpeg50", "bitdepth", "gaussian", "resize_pad", "diffpure", "white", "gray", "black")


def variant(defense_ref: str) -> str:
    """Which mislabel protocol a defense ran (its ref's suffix)."""
    if defense_ref.endswith("+mislabel-weak"):
        return "weak labeller"
    share = re.search(r"\+mislabel([0-9.]+)$", defense_ref)
    return f"synthetic {100 * float(share.group(1)):g}%" if share else "none"


def table3(res: Results, e: Exhibit) -> Shown | None:
    """The mislabel protocol: Original, then per defense the clean accuracy of the RE (Clean) and
    after each reversion (JPEG, purification, white-box, black-box), mean over victims; then, per
    defense, victim and reversion, the per-image counts that make it a test (see :func:`per_image`)."""
    cells = res.cells(e.key)
    if cells.empty:
        return None
    per = cells.groupby(["defense", "reversion", "victim"], sort=False)[["clean_acc", "orig_acc", "re_acc"]].first()
    t = per["clean_acc"].groupby(level=["defense", "reversion"], sort=False).mean().unstack("reversion")
    order = [r for r in REVERSION_ORDER if r in t.columns]
    t = t[order + [c for c in t.columns if c not in order]].rename(columns={"none": "Clean (RE)"})
    t.insert(0, "Original", per["orig_acc"].groupby(level="defense", sort=False).mean())
    t.insert(0, "protocol", cells.groupby("defense", sort=False)["defense_ref"].first().map(variant))
    counts = per_image(res, cells)
    note = ("Accuracies (%) are means over victims. The per-image table: of the images the defense turned wrong "
            "(right on the original, wrong on the RE), how many the reversion restores; of those it left right, how "
            "many the reversion breaks; both with exact 95% intervals, and the recovery share (reverted - RE) / "
            "(original - RE) with its paired-bootstrap interval, or *drop too small to judge* when the defense's "
            "drop has an interval containing 0, *no drop to recover* when the defense raised accuracy. White-box: "
            "the defender's models and settings (its weak labeller, or the synthetic shift); black-box: the "
            "attacker's own backbone and labels.")
    return Shown(table=t.round(2), note=note, extra=(("Table 3 per image", counts),) if len(counts) else ())


def per_image(res: Results, cells: pd.DataFrame) -> pd.DataFrame:
    """Per defense, victim and reversion: the defense's drop (orig - RE, points, 95% CI), the
    images it broke and how many the reversion restores, the images it kept and how many the
    reversion breaks, and the recovery share with its interval (``preempt.stats``)."""
    if res.outcomes.empty:
        return pd.DataFrame()
    out = res.outcomes.set_index(["defense", "reversion", "victim", "attack"]).sort_index()
    rows = []
    for c in cells[cells["reversion"] != "none"].itertuples():
        key = (c.defense, c.reversion, c.victim, c.attack)
        if key not in out.index:
            continue
        o = out.loc[[key]]
        orig, re_, rev = (o[k].to_numpy(float) for k in ("orig", "re", "input"))
        broken, kept = (orig == 1) & (re_ == 0), re_ == 1
        restored = stats.proportion(int((rev[broken] == 1).sum()), int(broken.sum()))
        lost = stats.proportion(int((rev[kept] == 0).sum()), int(kept.sum()))
        share, drop = stats.recovery(orig, re_, rev)
        rows.append({"defense": c.defense, "protocol": variant(str(c.defense_ref)), "victim": c.victim,
                     "reversion": c.reversion, "drop (points)": _ci(drop),
                     "restored / broken by the defense": _count(restored),
                     "broken / kept by the defense": _count(lost),
                     "recovery": share.note.split(":")[0] if share.note else _ci(share)})
    return pd.DataFrame(rows).set_index(["defense", "protocol", "victim", "reversion"]) if rows else pd.DataFrame()


def _ci(est: stats.Estimate) -> str:
    return f"{sig3(est.value)} [{sig3(est.low)}, {sig3(est.high)}]"


def _count(est: stats.Estimate) -> str:
    if est.n == 0:
        return "0 / 0"
    return f"{round(est.value * est.n)} / {est.n} ({100 * est.value:.3g}% [{100 * est.low:.3g}, {100 * est.high:.3g}])"


def _pick(res: Results, e: Exhibit) -> tuple[pd.DataFrame, str | None, str | None]:
    cells = res.cells(e.key)
    defended = cells[(cells["defense_ref"] != "none") & (cells["reversion"] == "none")]
    if defended.empty:
        return cells, None, None
    d = defended["defense"].iloc[0]
    undefended = cells[(cells["defense_ref"] == "none") & (cells["attack"].isin(defended["attack"]))]
    return cells, d, (undefended["defense"].iloc[0] if len(undefended) else None)


def fig4(res: Results, e: Exhibit) -> Shown | None:
    """Originals, REs, the RE's perturbation and AutoAttack's as Eq. 14 grey maps; success cases
    (the defended image survives the attack) first, then failures."""
    cells, d, none = _pick(res, e)
    if d is None or none is None:
        return None
    # the cell shown: AutoAttack where it ran, on the victim the RE protects best (as the paper's
    # robust victims), so that both success and failure cases exist; the undefended image must
    # have been attacked on the same victim for the AutoAttack column
    mine = cells[(cells["defense"] == d) & (cells["reversion"] == "none") & (cells["attack_ref"] != "none")]
    base = cells[(cells["defense"] == none) & (cells["reversion"] == "none")][["victim", "attack"]]
    mine = mine.merge(base, on=["victim", "attack"])
    if mine.empty:
        return None
    mine = mine.assign(aa=mine["attack_ref"].astype(str).str.startswith("autoattack"))
    cell = mine.sort_values(["aa", "robust_acc"], ascending=False, kind="stable").iloc[0]
    v, a = cell["victim"], cell["attack"]
    x, y = res.load("data")["x"], res.load("data")["y"]
    xr = res.load("re", d)["x"]
    adv_re = res.load("adv", f"{d}/none/{v}/{a}")
    adv_x = res.load("adv", f"{none}/none/{v}/{a}")["x"]
    n = min(len(adv_re["x"]), len(adv_x))
    eps = float((xr[:n] - x[:n]).abs().max()) or 1.0
    correct = adv_re["correct"][:n].bool() if "correct" in adv_re else torch.ones(n, dtype=torch.bool)
    k = max(1, int(res.params.get("n_examples", 8)) // 2)
    idx = [*torch.nonzero(correct).flatten()[:k].tolist(), *torch.nonzero(~correct).flatten()[:k].tolist()]
    cols = [("original", x[idx], ""), (f"RE ({d})", xr[idx], ""),
            ("RE perturbation", grey_map(xr[idx] - x[idx], eps), "gray"),
            (f"{a} pert." if len(a) < 14 else "attack pert.", grey_map(adv_x[idx] - x[idx], eps), "gray")]
    fig = image_grid(cols, len(idx))
    for row, i in enumerate(idx):
        fig.axes[row * len(cols)].set_ylabel("success" if bool(correct[i]) else "failure", fontsize=7)
    data = pd.DataFrame({"image": idx, "label": y[idx].tolist(), "success": correct[idx].tolist(),
                         "re_linf": (xr[idx] - x[idx]).flatten(1).abs().amax(1).tolist(),
                         "aa_linf": (adv_x[idx] - x[idx]).flatten(1).abs().amax(1).tolist()})
    shown = save_figure(fig, res, e.id, data)
    return Shown(figure=shown.figure, csv=shown.csv,
                 note=f"Victim {v}, attack {a}. Rows: {int(correct[idx].sum())} success case(s) (the RE stays correct "
                      f"under the attack), then failures. Perturbation maps: Eq. 14 (NTSC grey of (delta + eps) / 2 eps); "
                      "a flat grey attack map: the original was already misclassified, so the attack left it as it was.")


def fig5(res: Results, e: Exhibit) -> Shown | None:
    """The protective perturbation x_r - x beside what is left after white- and black-box
    Preemptive Reversion (x_rev - x), as Eq. 14 grey maps."""
    cells = res.cells(e.key)
    defended = set(cells.loc[cells["defense_ref"] != "none", "defense"])
    pairs = [k for k in res.paths.get("revert", {}) if k.split("/")[0] in defended and k.split("/")[1] in ("white", "black")]
    if not pairs:
        return None
    d = pairs[0].split("/")[0]
    x = res.load("data")["x"]
    xr = res.load("re", d)["x"]
    n = max(1, int(res.params.get("n_examples", 8)) // 2)
    eps = float((xr - x[:len(xr)]).abs().max()) or 1.0
    cols = [("original", x[:n], ""), (f"x_r - x ({d})", grey_map(xr[:n] - x[:n], eps), "gray")]
    rows = []
    for r in ("white", "black"):
        if f"{d}/{r}" in res.paths["revert"]:
            xv = res.load("revert", f"{d}/{r}")["x"]
            cols.append((f"after {r}-box", grey_map(xv[:n] - x[:n], eps), "gray"))
            rows.append({"reversion": r, "linf_to_x": float((xv - x[:len(xv)]).flatten(1).abs().amax(1).mean()),
                         "l2_to_x": float((xv - x[:len(xv)]).flatten(1).norm(dim=1).mean())})
    rows.insert(0, {"reversion": "none", "linf_to_x": float((xr - x[:len(xr)]).flatten(1).abs().amax(1).mean()),
                    "l2_to_x": float((xr - x[:len(xr)]).flatten(1).norm(dim=1).mean())})
    shown = save_figure(image_grid(cols, n), res, e.id, pd.DataFrame(rows))
    return Shown(figure=shown.figure, csv=shown.csv, table=pd.DataFrame(rows).set_index("reversion").round(4),
                 note="Mean distance of the (reverted) images to the originals: a reversion that erases the protection "
                      "brings them back towards x (white-box); one that only distorts moves them further (black-box).")


def fig6(res: Results, e: Exhibit) -> Shown | None:
    """Per schedule (defense): clean accuracy, robust accuracy and seconds per image, three panels."""
    cells = res.cells(e.key)
    cells = cells[cells["reversion"] == "none"]
    if cells.empty:
        return None
    scored = cells[cells["attack_ref"] != "none"]
    data = (cells.groupby("defense", sort=False)
            .agg(schedule=("defense_ref", lambda s: schedule_of(s.iloc[0])), clean_acc=("clean_acc", "mean"),
                 sec_per_image=("sec_per_image", "mean"))
            .join(scored.groupby("defense", sort=False)["robust_acc"].mean()).reset_index())
    fig, axes = figure(1, 3, width=7.0, height=0.22 * len(data) + 0.8)
    pos = range(len(data))[::-1]  # the paper's order, top to bottom
    for j, (ax, col, label) in enumerate(zip(axes[0], ("clean_acc", "robust_acc", "sec_per_image"),
                                             ("clean accuracy (%)", "robust accuracy (%)", "seconds per image"), strict=True)):
        ax.barh(list(pos), data[col], color="#4C72B0")
        ax.set_yticks(list(pos), (data["defense"] + " (" + data["schedule"] + ")") if j == 0 else [""] * len(data))
        ax.set_xlabel(label)
        if col != "sec_per_image":
            lo = float(data[col].min())
            ax.set_xlim(max(0.0, lo - 5), min(100.0, float(data[col].max()) + 1))
        else:
            ax.set_xscale("log")
    shown = save_figure(fig, res, e.id, data)
    return Shown(table=data.set_index("defense").round(4), figure=shown.figure, csv=shown.csv,
                 note=f"Attack: {', '.join(dict.fromkeys(scored['attack']))}; mean over {cells['victim'].nunique()} victim(s).")


PAPER = register(Paper(P, "Fast Preemption", "Wang et al., Fast Preemption: Forward-Backward Cascade Learning for "
                       "Efficient and Transferable Preemptive Adversarial Defense", (
    Exhibit(P, "table1", "Table 1", "End-to-end performance against AutoAttack", table1),
    Exhibit(P, "table2", "Table 2", "Robust accuracy against various attacks (Linf)", table2,
            about="DeCoW and MCG (black-box) are not implemented."),
    Exhibit(P, "table3", "Table 3", "Preemptive defenses resist reversion attacks (the mislabel protocol)", table3),
    Exhibit(P, "fig4", "Fig. 4", "Perturbations of adversarial attacks and preemptive defenses (Eq. 14 maps)", fig4,
            needs=("adv",)),
    Exhibit(P, "fig5", "Fig. 5", "Perturbations before and after Preemptive Reversion", fig5, needs=("revert",)),
    Exhibit(P, "fig6", "Fig. 6", "Clean and robust accuracy and time per learning schedule", fig6,
            plot=(("x", "robust_acc"), ("y", "defense"), ("template", "bar_horizontal"))),
)))
