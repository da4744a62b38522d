"""The workflow DAG, derived once from params.yaml, for both drivers.

Every stage (its name, command, file dependencies, params keys and outputs) is computed here, in
topological order. ``preempt.dvcfile`` writes ``dvc.yaml`` from this list and the Snakefile declares
one rule per stage from the same list, so no command, path or parameter is typed twice. Paths come
from ``preempt.paths``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from . import papers
from .attacks import ATTACKS
from .config import Params
from .data import DATASETS
from .defenses import DEFENSES, roles
from .models import SOURCES
from .paths import (CLAIMS_CSV, CLAIMS_FILE, CLAIMS_JSON, CONFIG_DIR, DVC_YAML, METRICS_CSV, OUTCOMES_CSV, PUBLISHED_CSV,
                    SUMMARY_JSON, TIMING_CSV, Shard, timing_path,
                    adv_path, adv_shard_path, cell_path, data_path, figures_dir, html_path, input_path, model_path, module_file, notebook_path, pipeline_dvc_yaml, re_path, re_shard_path,
                    report_path, shard_suffix, with_sidecar)
from .registry import model_refs
from .reversions import REVERSIONS


@dataclass(frozen=True)
class Stage:
    family: str
    args: tuple[str, ...]
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]
    dir_outs: tuple[str, ...] = field(default=())
    shard: Shard | None = None  # (i, k): the i-th of k chunks of the images
    metrics: tuple[str, ...] = field(default=())  # outputs DVC shows as metrics (`dvc metrics show/diff`)
    plots: tuple[tuple[str, dict[str, Any]], ...] = field(default=())  # (CSV inside an out, DVC plot spec)

    def _parts(self) -> tuple[str, ...]:
        return (self.family, *self.args, *((shard_suffix(self.shard),) if self.shard else ()))

    @property
    def name(self) -> str:
        return "-".join(self._parts())

    @property
    def rule(self) -> str:
        return "__".join(self._parts())

    @property
    def defense(self) -> str | None:
        """The defense whose stages this one belongs to (None: data, models, tables, reports)."""
        if self.family in ("defend", "revert", "attack", "timing"):
            return self.args[0]
        return self.args[1] if self.family == "gather" else None

    @property
    def dvc_file(self) -> str:
        """The dvc.yaml that declares the stage: one per defense, so that the dvc.lock DVC loads
        and rewrites after each stage (a YAML round trip, under its repository lock) stays small."""
        return DVC_YAML if self.defense is None else pipeline_dvc_yaml(self.defense)

    @property
    def target(self) -> str:
        """How DVC addresses the stage from the project root (``dvc repro``, ``dvc status``)."""
        return self.name if self.dvc_file == DVC_YAML else f"{self.dvc_file}:{self.name}"

    @property
    def cmd(self) -> str:
        shard = (f"--shard {self.shard[0]}/{self.shard[1]}",) if self.shard else ()
        return " ".join(("python -m preempt", self.family, *shard, *self.args))

    def all_outs(self) -> list[str]:
        return [*self.file_outs(), *self.dir_outs]

    def file_outs(self) -> list[str]:
        return [*self.outs, *self.metrics]


def _code(*modules: str) -> tuple[str, ...]:
    out: list[str] = []
    for m in modules:
        f = module_file(m)
        if f not in out:
            out.append(f)
    return tuple(out)


def _models(names: Iterable[str]) -> list[str]:
    return [model_path(n) for n in names]


def models_needed(p: Params) -> list[str]:
    """Every model the grid uses (victims, the models of its defenses, reversions and attacks) and,
    first, the models those are built from (a wrapper's base model, a denoiser's target): a
    topological order, so a model stage always comes after the stages of the models it reads."""
    g = p.grid
    defenses = dict.fromkeys([*g.names("defenses"), *p.timing.defenses])
    roots = [*g.names("victims"), *(m for d in defenses for m in model_refs(p.defenses[d])),
             *(m for r in g.names("reversions") for m in model_refs(p.reversions[r])),
             *(m for a in g.names("attacks") for m in model_refs(p.attacks[a]))]
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dep in model_refs(p.models[name]):
                visit(dep)
            order.append(name)

    for name in roots:
        visit(name)
    return order


def build(p: Params) -> list[Stage]:
    """All stages of the experiment, in topological order."""
    g = p.grid
    test = (data_path("test"),)
    stages = [Stage("data", (), _code("preempt.stages.data", DATASETS[p.dataset.name].module),
                    ("dataset",), (*with_sidecar(data_path("train")), *with_sidecar(data_path("test"))))]
    for name in models_needed(p):
        cfg = p.models[name]
        entry = SOURCES[cfg.source]
        code = [entry.module, *cfg.code_modules()]
        stages.append(Stage("model", (name,), (data_path("train"), *test, *_models(model_refs(cfg)),
                                               *_code("preempt.stages.model", *code)),
                            (f"models.{name}", "runtime"), tuple(with_sidecar(model_path(name)))))
    k_def, k_att = p.shards.defend, p.shards.attack
    for d in g.names("defenses"):
        dcfg = p.defenses[d]
        deps = (*test, *_models(roles(dcfg).values()),
                *_code("preempt.stages.defend", DEFENSES[dcfg.method].module))
        params: tuple[str, ...] = (f"defenses.{d}", "runtime")
        if k_def == 1:
            stages.append(Stage("defend", (d,), deps, params, tuple(with_sidecar(re_path(d)))))
            continue
        shards = [(i, k_def) for i in range(1, k_def + 1)]
        stages += [Stage("defend", (d,), deps, params, tuple(with_sidecar(re_shard_path(d, s))), shard=s) for s in shards]
        stages.append(Stage("gather", ("re", d), (*(re_shard_path(d, s) for s in shards), *_code("preempt.stages.gather")),
                            (), tuple(with_sidecar(re_path(d)))))
    cells = g.cells()
    pairs = list(dict.fromkeys((d, r) for d, r, _, _ in cells))
    for d, r in pairs:
        rcfg = p.reversions[r]
        stages.append(Stage(
            "revert", (d, r),
            (re_path(d), *test, *_models(dict.fromkeys([*model_refs(rcfg), *(
                 roles(p.defenses[d]).values() if rcfg.uses_defense_models() else [])])),
             *_code("preempt.stages.revert", REVERSIONS[rcfg.method].module, *rcfg.code_modules(),
                    DEFENSES[p.defenses[d].method].module)),
            # a file without a reversions section gets the implicit 'none', a key DVC cannot read
            (*((f"reversions.{r}",) if r in p.raw.get("reversions", {}) else ()), f"defenses.{d}", "runtime"),
            tuple(with_sidecar(input_path(d, r)))))
    for d, r, v, a in cells:
        # the cell also reads the RE (protocol accuracies) and the defense's backbone (grad_sim)
        extra = (*((re_path(d),) if r != "none" else ()),
                 *_models(b for b in [roles(p.defenses[d]).get("backbone")] if b and p.metrics.grad_sim_images))
        deps = tuple(dict.fromkeys((input_path(d, r), *test, *extra, *_models([v, *model_refs(p.attacks[a])]),
                                    *_code("preempt.stages.attack", "preempt.metrics", ATTACKS[p.attacks[a].method].module))))
        params = (f"attacks.{a}", "metrics", "runtime")
        outs = (*with_sidecar(adv_path(d, r, v, a)), cell_path(d, r, v, a))
        if k_att == 1:
            stages.append(Stage("attack", (d, r, v, a), deps, params, outs))
            continue
        shards = [(i, k_att) for i in range(1, k_att + 1)]
        stages += [Stage("attack", (d, r, v, a), deps, (f"attacks.{a}", "runtime"),
                         tuple(with_sidecar(adv_shard_path(d, r, v, a, s))), shard=s) for s in shards]
        stages.append(Stage("gather", ("adv", d, r, v, a),
                            (*(adv_shard_path(d, r, v, a, s) for s in shards), input_path(d, r), *test, *extra,
                             model_path(v),
                             *_code("preempt.stages.gather", "preempt.stages.attack", "preempt.metrics")),
                            params, outs))
    for d in p.timing.defenses:  # the speed claims' repeated timings (preempt.stages.timing)
        dcfg = p.defenses[d]
        stages.append(Stage("timing", (d,), (*test, *_models(roles(dcfg).values()),
                                              *_code("preempt.stages.timing", "preempt.stages.defend",
                                                     DEFENSES[dcfg.method].module)),
                            (f"defenses.{d}", "timing", "runtime"), (timing_path(d),)))
    stages.append(Stage("aggregate", (), (*(cell_path(*c) for c in cells), *(timing_path(d) for d in p.timing.defenses),
                                          CLAIMS_FILE, *_code("preempt.stages.aggregate", "preempt.claims",
                                                              "preempt.stats", "preempt.published")),
                        ("grid", *(("statistics",) if "statistics" in p.raw else ())), (METRICS_CSV, OUTCOMES_CSV, TIMING_CSV, CLAIMS_CSV),
                        metrics=(CLAIMS_JSON, SUMMARY_JSON)))
    for nb in p.report.notebooks:
        inputs = report_inputs(p, nb)
        modules = ("preempt.stages.report", "preempt.plots", "preempt.published", "preempt.papers",
                   *((f"preempt.papers.{nb}",) if nb in papers.PAPERS else ()))
        stages.append(Stage(
            "report", (nb,),
            (METRICS_CSV, OUTCOMES_CSV, CLAIMS_CSV, notebook_path(nb), PUBLISHED_CSV, *experiment_files(), inputs["data"],
             *inputs["re"].values(), *inputs["adv"].values(), *inputs["revert"].values(), *_code(*modules)),
            ("report", "grid"), (report_path(nb), html_path(nb)), (figures_dir(nb),),
            plots=tuple((f"{figures_dir(nb)}/{e.id}.csv", dict(e.plot)) for e in _exhibits(nb) if e.plot)))
    if p.shrink is not None:  # the test-only switch changes what each of these computes (preempt.shrink)
        stages = [replace(st, params=(*st.params, "shrink")) if st.family in SHRUNK else st for st in stages]
    return stages


SHRUNK = ("data", "model", "defend", "revert", "attack", "gather", "timing", "report")  # the families `shrink` reaches


def _exhibits(notebook: str) -> tuple[papers.Exhibit, ...]:
    return papers.PAPERS[notebook].exhibits if notebook in papers.PAPERS else ()


def experiment_files() -> list[str]:
    """The experiment files under config/ (a paper notebook names those that produce what the
    current experiment lacks)."""
    return sorted(str(f) for f in Path(CONFIG_DIR).glob("*.yaml") if str(f) != CLAIMS_FILE)


def report_inputs(p: Params, notebook: str) -> dict[str, Any]:
    """The artifacts a report notebook reads besides metrics.csv (its stage's dependencies and its
    papermill parameters, from this one function): the test split, every RE, and the adversarial
    examples / reverted REs of the cells tagged with an exhibit of its paper that shows them."""
    g = p.grid
    cells, tags = g.cells(), g.exhibits()
    needs: dict[str, set[str]] = {"adv": set(), "revert": set()}
    for e in _exhibits(notebook):
        for kind in e.needs:
            needs[kind].add(e.key)
    return {
        "data": data_path("test"),
        "re": {d: re_path(d) for d in g.names("defenses")},
        "adv": {"/".join(c): adv_path(*c) for c in cells if needs["adv"] & set(tags[c])},
        "revert": {f"{c[0]}/{c[1]}": input_path(c[0], c[1]) for c in cells
                   if c[1] != "none" and needs["revert"] & set(tags[c])},
    }


