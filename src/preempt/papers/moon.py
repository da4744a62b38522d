"""Moon, An and Song (AAAI 2022), Bi-Level preemptive robustification: Tables 1-7, Figs. 3-5."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from . import Exhibit, Paper, Results, Shown, figure, register, save_figure

P = "moon"


def grey_white(res: Results, e: Exhibit) -> Shown | None:
    """Rows: (victim, defense); columns: Clean | grey-box robust accuracy per attack (the attack on
    x_r) | white-box, per attack: the lowest robust-or-outside-ball accuracy over the
    reconstruction attack's final-budget sweep (reversion ``reconstruct``, Definition 3)."""
    cells = res.cells(e.key)
    if cells.empty:
        return None
    grey = cells[cells["reversion"] == "none"]
    idx = ["victim", "defense"]
    parts = [grey.groupby(idx, sort=False)["clean_acc"].first().rename(("Clean", ""))]
    scored = grey[grey["attack_ref"] != "none"]
    if len(scored):
        g = scored.pivot_table(index=idx, columns="attack", values="robust_acc", sort=False)
        g.columns = pd.MultiIndex.from_product([["Grey-box"], g.columns])
        parts.append(g)
    white = cells[cells["reversion"] == "reconstruct"]
    if len(white):  # per attack (its ref without the budget), the lowest over the eps' sweep
        white = white.assign(sweep=white["attack_ref"].astype(str).str.replace(r"/\d+\.\d{4}", "", regex=True)
                             + ", min over eps'")
        w = white.pivot_table(index=idx, columns="sweep", values="robust_acc_ball", aggfunc="min", sort=False)
        w.columns = pd.MultiIndex.from_product([["White-box"], w.columns])
        parts.append(w)
    t = pd.concat(parts, axis=1)
    t.columns = pd.MultiIndex.from_tuples([c if isinstance(c, tuple) else (c, "") for c in t.columns])
    return Shown(table=t.round(1), note="White-box: Algorithm 4 (reconstruct, then attack with eps' in the sweep); an "
                 "example counts as robust if still correct or outside the eps-ball of the original. Undefended rows "
                 "have no reconstruction: the paper repeats the grey-box value there.")


def table7(res: Results, e: Exhibit) -> Shown | None:
    """Certified accuracy of the smoothed classifier: rows None / Bi-Level, columns per radius."""
    cells = res.cells(e.key)
    cells = cells[cells["attack_ref"].str.startswith("certify")]
    if cells.empty:
        return None
    rows = {}
    for _, c in cells.iterrows():
        cert = json.loads(c["cert_acc"]) if isinstance(c["cert_acc"], str) else None
        if cert:
            rows[(c["victim"], c["defense"])] = {f"r={float(r):g}": v for r, v in cert.items()}
    t = pd.DataFrame.from_dict(rows, orient="index")
    t.index = pd.MultiIndex.from_tuples(t.index, names=["victim", "defense"])
    return Shown(table=t.round(1), note="Clean = certified accuracy at radius 0 (CERTIFY correct, not abstaining).")


def _ball(ref: str) -> tuple[str, float | None]:
    """The norm and budget a defense ref names (``bilevel/Linf/eps0.0314/...``; MCGS refs: Linf)."""
    norm = re.search(r"/(Linf|L2)/", ref)
    eps = re.search(r"/eps([0-9.]+)", ref)
    return (norm.group(1) if norm else "Linf"), (float(eps.group(1)) if eps else None)


def _start(ref: str) -> str:
    return "" if not ref.startswith("bilevel/") else " (x start)" if "/x-start" in ref else " (random start)"


def fig3(res: Results, e: Exhibit) -> Shown | None:
    """Moon et al.'s Fig. 3: histogram of the distance from the original to its reconstruction (the
    ``reconstruct`` reversion), in the defense's norm, with the ball's radius eps dotted. Bi-Level
    started at x is reconstructed close to x; started at a random point of the ball, the
    reconstructions pile up near the boundary (the paper: about 80%)."""
    keys = [k for k in res.paths.get("revert", {}) if k.endswith("/reconstruct")]
    refs = dict(zip(res.metrics.get("defense", []), res.metrics.get("defense_ref", [])))
    data, balls = [], set()
    for k in keys:
        d = k.split("/")[0]
        art = res.load("revert", k)
        norm, eps = _ball(str(refs.get(d, "")))
        col = "dist_linf" if norm == "Linf" else "dist_l2"
        if col in art:
            balls.add((norm, eps))
            label = f"{d}{_start(str(refs.get(d, '')))}"
            data += [{"defense": label, "norm": norm, "eps": eps, "distance": float(v)} for v in art[col]]
    if not data:
        return None
    df = pd.DataFrame(data)
    norm, eps = next(iter(balls)) if len(balls) == 1 else (" / ".join(sorted({b[0] for b in balls})), None)
    mark = (eps, f"eps = {eps:.4g}") if eps else None
    shown = _per_defense(res, e, df, "distance", xlabel=f"{norm} distance, original to reconstruction", mark=mark)
    summary = df.groupby("defense", sort=False)["distance"].describe()
    note = ""
    if eps:
        near = df.assign(b=df["distance"] >= 0.9 * df["eps"]).groupby("defense", sort=False)["b"].mean().mul(100)
        summary["at 0.9 eps or more (%)"] = near
        note = ("at 0.9 eps or more: the reconstruction ends near or beyond the boundary of the eps-ball around the "
                "original (the paper: about 80% near it with a random start, few with x start)")
    return Shown(figure=shown.figure, csv=shown.csv, table=summary.round(4), note=note)


def _per_defense(res: Results, e: Exhibit, df: pd.DataFrame, value: str, *, xlabel: str, x: str | None = None,
                 mark: tuple[float, str] | None = None) -> Shown:
    """One curve (``x`` given: ``value`` against it, log scale) or one histogram of ``value`` per
    defense, with an optional labelled dotted line at ``mark`` (x, label); saved beside ``df``."""
    fig, axes = figure(1, 1)
    ax = axes[0][0]
    bins = np.histogram_bin_edges(df[value].to_numpy(float), bins=30)  # shared: the histograms compare
    for d, g in df.groupby("defense", sort=False):
        if x is None:
            ax.hist(g[value], bins=bins, alpha=0.6, label=d)
        else:
            ax.plot(g[x], g[value], label=f"{d} (first-order)")
    if mark is not None:
        ax.axvline(mark[0], ls=":", color="k", label=mark[1])
    ax.set(xlabel=xlabel, ylabel="images" if x is None else "update gradient norm")
    if x is not None:
        ax.set_yscale("log")
    ax.legend()
    return save_figure(fig, res, e.id, df)


def _traces(res: Results, e: Exhibit) -> dict[str, dict]:
    cells = res.cells(e.key)
    out = {}
    for d in dict.fromkeys(cells["defense"]):
        if d in res.paths.get("re", {}):
            art = res.load("re", d)
            if "trace_final_loss" in art:
                out[d] = art
    return out


def fig4(res: Results, e: Exhibit) -> Shown | None:
    """Histogram of the robustified images' loss (the inner attack's, at the end of Algorithm 1),
    with ln 2 = 0.6931 marked (the paper: 99.3% of images below it)."""
    traces = _traces(res, e)
    if not traces:
        return None
    df = pd.DataFrame([{"defense": d, "final_loss": float(v)} for d, a in traces.items() for v in a["trace_final_loss"]])
    shown = _per_defense(res, e, df, "final_loss", xlabel="loss of the robustified image", mark=(math.log(2), "ln 2"))
    below = df.assign(b=df["final_loss"] < math.log(2)).groupby("defense")["b"].mean().mul(100).round(1)
    return Shown(figure=shown.figure, csv=shown.csv,
                 note="Share below ln 2 (%): " + ", ".join(f"{d} {v}" for d, v in below.items()))


def fig5(res: Results, e: Exhibit) -> Shown | None:
    """The update gradient's norm per outer iteration (first-order; mean over images)."""
    traces = _traces(res, e)
    if not traces:
        return None
    rows = [{"defense": d, "iteration": i + 1, "grad_norm": float(v)}
            for d, a in traces.items() if "trace_grad_norm" in a for i, v in enumerate(a["trace_grad_norm"].mean(0))]
    if not rows:
        return None
    shown = _per_defense(res, e, pd.DataFrame(rows), "grad_norm", x="iteration", xlabel="iteration")
    return Shown(figure=shown.figure, csv=shown.csv, note="The exact second-order curve is not computed.")


def _tab(id: str, label: str, title: str, about: str = "") -> Exhibit:
    return Exhibit(P, id, label, title, grey_white, about=about)


PAPER = register(Paper(P, "Bi-Level preemptive robustification", "Moon, An and Song, Preemptive Image "
                       "Robustification for Protecting Users against Man-in-the-Middle Adversarial Attacks (AAAI 2022)", (
    _tab("table1", "Table 1", "CIFAR-10, grey-box and white-box, Linf"),
    _tab("table2", "Table 2", "CIFAR-10, grey-box and white-box, L2"),
    _tab("table3", "Table 3", "ImageNet, grey-box and white-box, Linf"),
    _tab("table4", "Table 4", "ImageNet, grey-box and white-box, L2",
         about="Needs an L2-robust ImageNet victim (eps 3.0): RobustBench's ImageNet zoo has Linf and corruption "
         "models only; add one as `source: file` with its sha256 to config/imagenet.yaml."),
    _tab("table5", "Table 5", "CIFAR-10, smoothed classifier, empirical (L2)"),
    _tab("table6", "Table 6", "ImageNet, smoothed classifier, empirical (L2)",
         about="Needs a Gaussian-noise-trained ImageNet base model (Cohen et al., sigma 0.25) as `source: file` "
         "with its sha256 in config/imagenet.yaml, which has no training split."),
    Exhibit(P, "table7", "Table 7", "Certified accuracy of the smoothed classifier", table7),
    Exhibit(P, "fig3", "Figure 3", "Distance from the original to the reconstruction", fig3, needs=("revert",)),
    Exhibit(P, "fig4", "Figure 4", "Loss of the robustified images", fig4),
    Exhibit(P, "fig5", "Figure 5", "Update gradient norm per iteration", fig5,
            plot=(("x", "iteration"), ("y", "grad_norm"))),
)))
