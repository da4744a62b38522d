"""The papers, exhibit by exhibit: every table and figure preempt reproduces, in the paper's layout.

One module per paper (``fast_preemption``, ``mspd``, ``moon``, ``trigger``, ``jatp``) registers
its :class:`Paper` with its exhibits in the paper's order. An exhibit is built from a
:class:`Results` (the tidy ``metrics.csv`` plus the artifacts a figure needs) and returns a
:class:`Shown` (a table, a figure saved as PNG and PDF beside the CSV it was drawn from) or None
when this experiment has no data for it.

An experiment says which exhibits its grid blocks reproduce (``grid.extra.<block>.reproduces:
[mspd/table4]``; ``preempt.config`` checks the names against :func:`exhibit_keys`); the aggregate
stage writes those tags into metrics.csv's ``reproduces`` column and an exhibit selects its cells
by them (:meth:`Results.cells`). The paper notebooks (``notebooks/<paper>.ipynb``) only loop over
a paper's exhibits; all logic is here, tested.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .. import artifacts
from ..claims import select
from ..errors import PreemptError
from ..plots import PAGE_IN, bare, figure, readable, readable_tables, save, sig3, tilt
from ..published import compare, load_published


@dataclass(frozen=True)
class Shown:
    """What an exhibit shows: a table and/or a figure (PNG for the report, PDF for papers, both
    saved beside ``csv``, the tidy data it was drawn from), and a note under it."""

    table: pd.DataFrame | None = None
    figure: Path | None = None
    csv: Path | None = None
    note: str = ""
    extra: tuple[tuple[str, pd.DataFrame], ...] = ()  # further tables, each under its title


@dataclass
class Results:
    """One experiment's results as the exhibits read them.

    ``metrics``: results/metrics.csv; ``outcomes``: results/outcomes.csv.gz (per cell and image);
    ``claims``: results/claims.csv; ``published``: the published
    numbers (config/published.csv); ``paths``: artifact paths by kind (``data``: the test split;
    ``re``: defense -> RE; ``adv``: "defense/reversion/victim/attack" -> adversarial examples;
    ``revert``: "defense/reversion" -> reverted REs); ``producers``: exhibit key -> the experiment
    files whose grid reproduces it; ``figures_dir``: where figures and their CSVs go."""

    metrics: pd.DataFrame
    figures_dir: Path
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)
    outcomes: pd.DataFrame = field(default_factory=pd.DataFrame)
    published: pd.DataFrame = field(default_factory=pd.DataFrame)
    paths: dict[str, Any] = field(default_factory=dict)
    producers: dict[str, list[str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def cells(self, key: str) -> pd.DataFrame:
        """The cells of the grid blocks tagged with exhibit ``key`` (e.g. ``mspd/table4``)."""
        return select(self.metrics, {"reproduces": key})  # the claims' selector: ";"-lists match by entry

    def load(self, kind: str, key: str = "") -> dict[str, Any]:
        """The tensors of one artifact (see ``paths``); KeyError where this experiment has none."""
        where = self.paths[kind] if kind == "data" else self.paths[kind][key]
        return artifacts.load(where)[0]

    def save(self, name: str, data: pd.DataFrame) -> Path:
        """Write a figure's tidy data next to it; the figure itself is saved by ``plots.save``."""
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        path = self.figures_dir / f"{name}.csv"
        data.to_csv(path, index=False, float_format="%.6g")
        return path


@dataclass(frozen=True)
class Exhibit:
    """One table or figure of a paper. ``key`` = "<paper>/<id>" (what grid blocks tag)."""

    paper: str
    id: str
    label: str  # the paper's own name for it: "Table 3", "Fig. 4" (published.csv's ``table``)
    title: str
    build: Callable[[Results, "Exhibit"], Shown | None]
    about: str = ""
    needs: tuple[str, ...] = ()  # artifacts beyond metrics.csv: "adv" (attacked images), "revert" (reverted REs)
    plot: tuple[tuple[str, Any], ...] = ()  # DVC plot spec of its CSV (dvc.yaml `plots:`), e.g. (("x", "schedule"), ...)

    @property
    def key(self) -> str:
        return f"{self.paper}/{self.id}"


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    citation: str
    exhibits: tuple[Exhibit, ...]

    def exhibit(self, id: str) -> Exhibit:
        for e in self.exhibits:
            if e.id == id:
                return e
        raise PreemptError(f"paper {self.id} has no exhibit {id!r}; it has {[e.id for e in self.exhibits]}")


PAPERS: dict[str, Paper] = {}


def register(paper: Paper) -> Paper:
    if paper.id in PAPERS:
        raise PreemptError(f"paper {paper.id!r} registered twice")
    PAPERS[paper.id] = paper
    return paper


def exhibit_keys() -> list[str]:
    return [e.key for p in PAPERS.values() for e in p.exhibits]


# --- what the paper notebooks call (kept here so the notebooks stay a loop) ----------------------

def open_results(*, metrics_csv: str, figures_dir: str, claims_csv: str = "", published_csv: str = "",
                 outcomes_csv: str = "", paths: dict[str, Any] | None = None,
                 producers: dict[str, list[str]] | None = None, params: dict[str, Any] | None = None) -> Results:
    return Results(metrics=pd.read_csv(metrics_csv), figures_dir=Path(figures_dir),
                   claims=pd.read_csv(claims_csv) if claims_csv else pd.DataFrame(),
                   outcomes=pd.read_csv(outcomes_csv) if outcomes_csv and Path(outcomes_csv).is_file() else pd.DataFrame(),
                   published=load_published(published_csv) if published_csv else pd.DataFrame(),
                   paths=paths or {}, producers=producers or {}, params=params or {})


CLAIM_COLUMNS = ["verdict", "statement", "exhibit", "estimate", "95% CI", "n", "p", "threshold", "test", "numbers", "claim"]
def claims_table(paper: Paper | None, res: Results) -> pd.DataFrame:
    """The paper's claims (all, without a paper) as checked on this experiment
    (results/claims.csv): verdict first, then the estimate, its interval, n, p and the threshold."""
    if res.claims.empty:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    df = res.claims if paper is None else res.claims[res.claims["paper"] == paper.id]
    est = df["difference"].where(df["difference"].notna(), df["ratio"]) if "difference" in df else pd.Series(dtype=float)
    out = pd.DataFrame({
        "verdict": df["verdict"], "statement": df["statement"], "exhibit": df["exhibit"],
        "estimate": est.map(sig3), "95% CI": [f"[{sig3(a)}, {sig3(b)}]" if pd.notna(a) else ""
                                              for a, b in zip(df.get("ci_low", est), df.get("ci_high", est))],
        "n": df.get("n", pd.Series(index=df.index, dtype=float)).map(lambda v: "" if pd.isna(v) else f"{int(v)}"),
        "p": df.get("p", pd.Series(index=df.index, dtype=float)).map(lambda v: "" if pd.isna(v) else f"{v:.2g}"),
        "threshold": df.get("threshold", ""), "test": df.get("test", ""),
        "numbers": df["numbers"].fillna("").astype(str) + df.get("note", pd.Series("", index=df.index)).fillna("").map(
            lambda t: f" ({t})" if t else ""),
        "claim": df["claim"]})
    return out.fillna("").reset_index(drop=True)


def style_claims(table: pd.DataFrame) -> Any:
    """The claims table with each verdict coloured (holds green, fails red, inconclusive amber,
    not comparable / not measured grey): a pandas Styler, rendered by the notebooks and their HTML."""
    return readable(table).hide(axis="index")


def build(exhibit: Exhibit, res: Results) -> Shown | None:
    return exhibit.build(res, exhibit)


def missing(exhibit: Exhibit, res: Results) -> str:
    """Why an exhibit is not shown, and which experiment file produces it."""
    files = res.producers.get(exhibit.key, [])
    if files:
        runs = "; ".join(f"`{f}` (`python -m preempt use {f}`, then `snakemake --cores 8 --profile slurm`)" for f in files)
        return f"*Not in this experiment.* Produced by {runs}."
    return f"*No experiment file reproduces it yet.* {exhibit.about}".strip()


def versus_published(exhibit: Exhibit, res: Results) -> pd.DataFrame:
    """Ours beside the paper's numbers for this exhibit, with the difference (where cells match)."""
    if res.published.empty:
        return pd.DataFrame()
    pub = res.published[(res.published["paper"] == exhibit.paper) & (res.published["table"] == exhibit.label)]
    return compare(res.metrics, pub) if len(pub) else pd.DataFrame()


def published_count(paper: Paper, res: Results) -> tuple[int, int]:
    """(numbers transcribed for the paper, numbers this experiment reproduces)."""
    if res.published.empty:
        return 0, 0
    pub = res.published[res.published["paper"] == paper.id]
    return len(pub), len(compare(res.metrics, pub))


def save_figure(fig: Any, res: Results, name: str, data: pd.DataFrame) -> Shown:
    """PNG (report) and PDF (paper) of ``fig``, beside the CSV it was drawn from."""
    csv = res.save(name, data)
    png = res.figures_dir / f"{name}.png"
    save(fig, png)
    return Shown(figure=png, csv=csv)


# --- layouts shared by the papers' tables ---------------------------------------------------------

def mean_table(cells: pd.DataFrame, index: list[str], *, attacks: bool = True, clean: str = "clean",
               seconds: bool = False, ball: bool = False) -> pd.DataFrame:
    """Rows ``index`` (in first-appearance order), columns: the clean accuracy of the input, the
    robust accuracy (%) under each attack, optionally the robust-or-outside-ball accuracy and the
    defense's seconds per image; each the mean over the cells a row gathers (e.g. victims)."""
    order = list(dict.fromkeys(map(tuple, cells[index].astype(str).values.tolist())))
    c = cells.assign(**{k: cells[k].astype(str) for k in index})
    parts = [c.groupby(index + ["victim"], sort=False)["clean_acc"].first().groupby(level=index, sort=False).mean()
             .rename(clean)]
    if attacks:
        scored = c[c["attack_ref"] != "none"]
        metric = "robust_acc_ball" if ball else "robust_acc"
        if len(scored):
            parts.append(scored.pivot_table(index=index, columns="attack", values=metric, aggfunc="mean", sort=False)
                         [list(dict.fromkeys(scored["attack"]))])
    if seconds:
        parts.append(c.groupby(index, sort=False)["sec_per_image"].mean().rename("sec/image"))
    out = pd.concat(parts, axis=1)
    out = out.reindex(pd.MultiIndex.from_tuples(order, names=index) if len(index) > 1 else [o[0] for o in order])
    return out.round(2)


def schedule_of(defense_ref: str) -> str:
    """``mcgs/F1B2/N20/...`` -> ``F1B2 N20``; other defenses keep their ref's method."""
    parts = defense_ref.split("/")
    return f"{parts[1]} {parts[2]}" if parts[0] == "mcgs" and len(parts) > 2 else parts[0]


def grey(delta: Any) -> Any:
    """Fast Preemption's Eq. 14 perturbation map: the NTSC luma of a perturbation,
    0.299 R + 0.587 G + 0.114 B (a single channel passes through)."""
    if delta.shape[-3] == 1:
        return delta[..., 0, :, :]
    r, g, b = delta[..., 0, :, :], delta[..., 1, :, :], delta[..., 2, :, :]
    return 0.299 * r + 0.587 * g + 0.114 * b


def grey_map(delta: Any, eps: float) -> Any:
    """Eq. 14 in full: a perturbation in [-eps, eps] mapped to [0, 1], then to NTSC grey; centred
    on 0 for the diverging maps of :func:`image_grid`."""
    return grey((delta + eps) / (2 * eps)) - 0.5


def image_grid(columns: list[tuple[str, Any, str]], n: int) -> Any:
    """A page-wide grid: one column per (title, images [N,C,H,W] or maps [N,H,W], cmap), n rows.
    Maps share one scale, [-0.5, 0.5] (Eq. 14's [0, 1] centred), so columns compare."""
    fig, axes = figure(n, len(columns), width=min(PAGE_IN, 0.9 * len(columns) + 0.3),
                       height=0.9 * n + 0.3)
    for j, (title, imgs, cmap) in enumerate(columns):
        for i in range(n):
            ax = axes[i][j]
            img = imgs[i]
            if img.dim() == 3:
                hwc = img.clamp(0, 1).permute(1, 2, 0).numpy()
                ax.imshow(hwc.squeeze(-1) if hwc.shape[-1] == 1 else hwc, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.numpy(), cmap=cmap, vmin=-0.5, vmax=0.5)
            bare(ax)
            if i == 0:
                ax.set_title(title, fontsize=7)
    return fig


def by_defense(res: Results, e: Exhibit, *, seconds: bool = True, extra: tuple[str, ...] = ()) -> Shown | None:
    """The sweep tables' layout: one row per defense (what ran: its schedule, N, eta, eps, and its
    backbone), then seconds per image, clean accuracy and robust accuracy per attack, mean over
    victims, and any ``extra`` metric columns (SSIM, LPIPS, gradient similarity, ...)."""
    cells = res.cells(e.key)
    cells = cells[cells["reversion"] == "none"] if (cells["reversion"] == "none").any() else cells
    if cells.empty:
        return None
    t = mean_table(cells, ["defense"], seconds=seconds)
    t.insert(0, "what ran", cells.groupby("defense", sort=False)["defense_ref"].first())
    if "backbone_ref" in cells.columns:  # the defense's ref leaves its backbone out (Tables XI, XII vary it)
        t.insert(1, "backbone", cells.groupby("defense", sort=False)["backbone_ref"].first())
    for m in extra:
        if m in cells.columns:
            t[m] = cells.groupby("defense", sort=False)[m].mean().round(4)
    return Shown(table=t, note=f"Victims: {', '.join(dict.fromkeys(cells['victim']))}.")


def by_victim(res: Results, e: Exhibit, metric: str = "robust_acc") -> Shown | None:
    """Rows: victim x (clean, robust); columns: defenses (the transferability tables' layout)."""
    cells = res.cells(e.key)
    cells = cells[cells["reversion"] == "none"]
    if cells.empty:
        return None
    clean = cells.groupby(["victim", "defense"], sort=False)["clean_acc"].first().unstack("defense")
    scored = cells[cells["attack_ref"] != "none"]
    parts = {"clean": clean}
    for a in dict.fromkeys(scored["attack"]):
        parts[a] = scored[scored["attack"] == a].pivot_table(index="victim", columns="defense", values=metric, sort=False)
    t = pd.concat(parts, names=["metric"]).swaplevel().sort_index(level=0, sort_remaining=False)
    return Shown(table=t.round(1))


def attack_rows(res: Results, e: Exhibit, columns: str = "victim", metric: str = "robust_acc",
                cells: pd.DataFrame | None = None) -> Shown | None:
    """Rows: Clean, then each attack; columns: ``columns`` (victims or defenses; cells sharing a
    column are averaged); accuracy (%). ``cells``: the exhibit's cells, already given a column."""
    cells = res.cells(e.key) if cells is None else cells
    if cells.empty:
        return None
    clean = cells.groupby(columns, sort=False)["clean_acc"].mean().rename("Clean").to_frame().T
    scored = cells[cells["attack_ref"] != "none"]
    t = pd.concat([clean, scored.pivot_table(index="attack", columns=columns, values=metric, aggfunc="mean", sort=False)])
    t = t[list(dict.fromkeys(cells[columns]))]
    if len(scored):
        t.loc["mean over attacks"] = t.drop(index="Clean").mean()
    return Shown(table=t.round(1))


# every paper module registers itself (imported last: they use the helpers above)

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
