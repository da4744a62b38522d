"""Tables and figures the report notebooks show (kept here so notebooks stay thin and tested)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .published import compare

# One style for every figure: sized for a paper's column (3.4 in) or page (7 in), 8 pt text.
COLUMN_IN, PAGE_IN = 3.4, 7.0
STYLE: dict[str, Any] = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
         "grid.alpha": 0.3, "lines.linewidth": 1.2, "lines.markersize": 4, "savefig.bbox": "tight",
         "savefig.pad_inches": 0.02, "pdf.fonttype": 42}


VERDICT_COLOURS = {"holds": "#d8efd3", "fails": "#f6d2cf", "inconclusive": "#fbefc4"}  # others: grey
NOT_RUN = "not run"


def sig3(v: Any) -> str:
    """A number to 3 significant digits ("" when missing), thousands in full: what the reports show."""
    if v is None or (isinstance(v, float) and pd.isna(v)) or v == "":
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) >= 10_000 else str(int(v))
    v = float(v)
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _cell(v: Any) -> Any:
    return sig3(v) if isinstance(v, (int, float, np.number)) else v


def verdict_colour(v: Any) -> str:
    """CSS of a verdict cell: holds green, fails red, inconclusive amber, anything else grey."""
    text = str(v)
    key = next((k for k in VERDICT_COLOURS if text.startswith(k)), None)
    return f"background-color: {VERDICT_COLOURS[key] if key else '#e8e8e8'}"


def readable(df: pd.DataFrame) -> Any:
    """A table as the reports render it (a pandas Styler): numbers to 3 significant digits, a
    missing cell as "not run" (never NaN), verdict columns coloured."""
    sty = df.style.format(_cell, na_rep=NOT_RUN)
    verdicts = [c for c in df.columns if str(c[-1] if isinstance(c, tuple) else c) == "verdict"]
    return sty.map(verdict_colour, subset=verdicts) if verdicts else sty


def readable_tables() -> None:
    """Make every DataFrame a notebook displays render through :func:`readable` (the reports'
    first code cell calls this once); outside IPython it does nothing."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - the report kernels have IPython
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, lambda df: readable(df).to_html())


def figure(nrows: int = 1, ncols: int = 1, *, width: float = COLUMN_IN, height: float | None = None) -> tuple[Any, Any]:
    """A styled figure and a 2-D array of axes (``width``: COLUMN_IN or PAGE_IN)."""
    import matplotlib.pyplot as plt

    plt.style.use(STYLE)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height or 0.75 * width * nrows / max(ncols, 1) + 0.3),
                             squeeze=False)
    return fig, axes


def tilt(ax: Any) -> None:
    """Category labels slanted and right-aligned so long names never overlap."""
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def bare(ax: Any) -> None:
    """An image panel: no ticks, no grid, no spines."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def save(fig: Any, png: str | Path) -> None:
    """The figure as PNG (for the report, 200 dpi) and PDF (vector, for a paper) side by side."""
    import matplotlib.pyplot as plt

    png = Path(png)
    fig.savefig(png, dpi=200)
    fig.savefig(png.with_suffix(".pdf"))
    plt.close(fig)


def rows(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """The cells of one table of the grid ('main' or a ``grid.extra`` name)."""
    if "tables" not in df.columns:
        return df
    return df[df["tables"].fillna("").str.split(";").apply(lambda t: table in t)]


def table_names(df: pd.DataFrame) -> list[str]:
    if "tables" not in df.columns:
        return ["main"]
    return list(dict.fromkeys(t for ts in df["tables"].fillna("") for t in ts.split(";") if t))


def block_table(df: pd.DataFrame) -> pd.DataFrame:
    """Any table of the grid: one row per (defense, reversion, victim) with the clean accuracy of
    its input and the robust accuracy under each attack, plus a ``mean`` row per (defense,
    reversion) over victims; for a transfer attack that mean is R_T^{S,A} (robust accuracy is
    already the mean over surrogates). Attacks with a ``threat_eps`` also show ``robust_acc_ball``."""
    keys = ["defense", "reversion", "victim"]
    order = list(dict.fromkeys(df["attack"]))
    clean = df.groupby(keys, sort=False)["clean_acc"].first().rename(("clean", ""))
    robust = df.pivot_table(index=keys, columns="attack", values="robust_acc", sort=False)[order]
    robust.columns = pd.MultiIndex.from_product([["robust"], robust.columns])
    parts = [clean, robust]
    if "robust_acc_ball" in df.columns and (df["robust_acc_ball"] - df["robust_acc"]).abs().max() > 0:
        ball = df.pivot_table(index=keys, columns="attack", values="robust_acc_ball", sort=False)[order]
        ball.columns = pd.MultiIndex.from_product([["robust_or_outside_ball"], ball.columns])
        parts.append(ball)
    out = pd.concat(parts, axis=1)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    if out.index.get_level_values("victim").nunique() > 1:
        means = out.groupby(level=["defense", "reversion"], sort=False).mean()
        means.index = pd.MultiIndex.from_tuples([(d, r, "mean") for d, r in means.index], names=keys)
        body = list(out.index)
        out = pd.concat([out, means]).reindex(
            [i for dr in dict.fromkeys(zip(df["defense"], df["reversion"]))
             for i in [*(j for j in body if j[:2] == dr), (*dr, "mean")]])
    return out.round(1)


def accuracy_table(df: pd.DataFrame, reversion: str = "none") -> pd.DataFrame:
    """Per victim: clean accuracy and robust accuracy per attack, for each defense (incl. none)."""
    sub = df[df["reversion"] == reversion]
    clean = sub.groupby(["victim", "defense"])["clean_acc"].first().unstack("defense")
    clean.columns = pd.MultiIndex.from_product([["clean"], clean.columns])
    robust = sub.pivot_table(index="victim", columns=["attack", "defense"], values="robust_acc")
    return pd.concat([clean, robust], axis=1).round(1)


def end_to_end_table(df: pd.DataFrame, reversion: str = "none") -> pd.DataFrame:
    """The papers' main table: per defense, mean over victims of clean accuracy, robust accuracy
    under each attack, and the defense's seconds per image."""
    sub = df[df["reversion"] == reversion]
    clean = sub.groupby(["defense", "victim"])["clean_acc"].first().groupby("defense").mean().rename("clean")
    robust = sub.pivot_table(index="defense", columns="attack", values="robust_acc", aggfunc="mean")
    secs = sub.groupby("defense")["sec_per_image"].mean().rename("sec_per_image")
    out = pd.concat([clean, robust, secs], axis=1)
    return out.reindex(list(dict.fromkeys(sub["defense"]))).round({"clean": 1, **dict.fromkeys(robust.columns, 1),
                                                                  "sec_per_image": 4})


def reversion_table(df: pd.DataFrame, attack: str | None = None) -> pd.DataFrame:
    """The reversion table: per defense (mean over victims), accuracy on the released RE
    (``none``) and after JPEG / white-box / black-box reversion. Without ``attack``: accuracy of
    the reverted images themselves; with it: robust accuracy when ``attack`` follows."""
    if attack is None:
        cells = df.groupby(["defense", "reversion", "victim"])["clean_acc"].first().reset_index()
        table = cells.pivot_table(index="defense", columns="reversion", values="clean_acc", aggfunc="mean")
    else:
        table = df[df["attack"] == attack].pivot_table(index="defense", columns="reversion", values="robust_acc",
                                                      aggfunc="mean")
    order = [r for r in ("none", "jpeg", "white", "gray", "black") if r in table.columns]
    rows = list(dict.fromkeys(df["defense"]))
    return table[order + [c for c in table.columns if c not in order]].reindex(rows).round(1)


def published_table(df: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Reproduced vs published, side by side with the difference (see ``preempt.published``)."""
    return compare(df, published)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over victims per defense/reversion/attack, with image quality and defense time."""
    return (df.groupby(["defense", "reversion", "attack"])
            .agg(clean_acc=("clean_acc", "mean"), robust_acc=("robust_acc", "mean"), ssim=("ssim", "mean"),
                 linf=("linf", "mean"), sec_per_image=("sec_per_image", "mean"))
            .round(4))


def accuracy_figure(df: pd.DataFrame, path: str | Path, reversion: str = "none") -> None:
    """Robust accuracy per victim (bars: defenses), one panel per attack, page-wide."""
    sub = df[df["reversion"] == reversion]
    attacks = sorted(sub["attack"].unique())
    fig, axes = figure(1, len(attacks), width=PAGE_IN, height=2.3)
    for k, (ax, attack) in enumerate(zip(axes[0], attacks, strict=True)):
        piv = sub[sub["attack"] == attack].pivot_table(index="victim", columns="defense", values="robust_acc",
                                                       sort=False)
        piv.plot.bar(ax=ax, legend=False, width=0.8)
        tilt(ax)
        ax.set(title=f"robust accuracy under {attack}", ylabel="%" if k == 0 else "", xlabel="", ylim=(0, 100))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="defense", loc="lower center", bbox_to_anchor=(0.5, 1.0),
               ncol=len(labels), frameon=False)
    save(fig, path)


def examples_figure(x: torch.Tensor, res: dict[str, torch.Tensor], path: str | Path, n: int = 8,
                    gain: float = 10.0) -> None:
    """Originals, each defense's REs, and their perturbations amplified by ``gain`` around gray."""
    defs = [d for d in res if not torch.equal(res[d][:n], x[:n])]
    rows = 1 + 2 * len(defs)
    fig, axes = figure(rows, n, width=PAGE_IN, height=0.9 * rows + 0.2)

    def show(ax: Any, img: torch.Tensor, title: str | None) -> None:
        hwc = img.clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(hwc.squeeze(-1) if hwc.shape[-1] == 1 else hwc, cmap="gray", vmin=0, vmax=1)
        bare(ax)
        if title:
            ax.set_ylabel(title, fontsize=7)

    for j in range(n):
        show(axes[0][j], x[j], "original" if j == 0 else None)
        for i, d in enumerate(defs):
            show(axes[1 + 2 * i][j], res[d][j], f"RE {d}" if j == 0 else None)
            show(axes[2 + 2 * i][j], 0.5 + gain * (res[d][j] - x[j]), f"x{gain:g} diff" if j == 0 else None)
    save(fig, path)
