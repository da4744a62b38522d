"""Schema of ``params.yaml`` and its validation, before any compute.

Every error is one line that names the offending key and the fix (closest valid name, allowed
range). Sections whose entries select an implementation (``method``/``source``/``name``) are
validated by the pydantic config class that the registry entry declares, so a new method brings
its own schema with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .attacks import ATTACKS, AttackConfig
from .data import DATASETS, DatasetConfig
from .defenses import DEFENSES, DefenseConfig
from . import papers
from .claims import Statistics
from .errors import ConfigError
from .models import SOURCES, ModelConfig
from .registry import MethodConfig, Registry, closest, model_refs, validate_model
from .reversions import REVERSIONS, ReversionConfig
from .runtime import RuntimeConfig
from .shrink import ShrinkConfig, shrunk_raw

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
DEFAULT_PARAMS = "params.yaml"


Cell = tuple[str, str, str, str]


class GridBlock(MethodConfig):
    """One product of defense x reversion x victim x attack (one table of a paper)."""

    defenses: list[str] = Field(min_length=1)
    reversions: list[str] = Field(default_factory=lambda: ["none"], min_length=1)
    victims: list[str] = Field(min_length=1)
    attacks: list[str] = Field(min_length=1)
    reproduces: list[str] = Field(default_factory=list, description="the papers' tables and figures these cells "
                                  "reproduce, as <paper>/<exhibit> (see preempt.papers)")

    def product(self) -> list[Cell]:
        return [(d, r, v, a) for d in self.defenses for r in self.reversions for v in self.victims for a in self.attacks]


class GridConfig(GridBlock):
    """The experiment's cells: the main product, plus named ``extra`` products (an ablation, a
    transfer table, ...) that add cells without multiplying every axis by every other one.

    ``exclude`` drops cells from the main product, e.g. {reversion: [white, black], attack: pgd}:
    a cell is dropped when it matches every key of one entry (a value may be a name or a list)."""

    exclude: list[dict[Literal["defense", "reversion", "victim", "attack"], str | list[str]]] = Field(default_factory=list)
    extra: dict[str, GridBlock] = Field(default_factory=dict)

    def blocks(self) -> dict[str, GridBlock]:
        return {"main": self, **self.extra}

    def names(self, field: str) -> list[str]:
        """Every name of ``field`` ('defenses', ...) used by some block, in first-use order."""
        return list(dict.fromkeys(n for b in self.blocks().values() for n in getattr(b, field)))

    def main_cells(self) -> list[Cell]:
        def hit(rule: dict[Any, str | list[str]], cell: dict[str, str]) -> bool:
            return all(cell[k] in ([v] if isinstance(v, str) else v) for k, v in rule.items())

        keys = ("defense", "reversion", "victim", "attack")
        return [c for c in self.product() if not any(hit(rule, dict(zip(keys, c))) for rule in self.exclude)]

    def cells(self) -> list[Cell]:
        """(defense, reversion, victim, attack) of every cell, in a stable order, each once."""
        return list(dict.fromkeys([*self.main_cells(), *(c for b in self.extra.values() for c in b.product())]))

    def exhibits(self) -> dict[Cell, list[str]]:
        """Cell -> the paper exhibits its blocks are tagged with (``reproduces``), each once."""
        out: dict[Cell, list[str]] = {c: [] for c in self.cells()}
        for c in self.main_cells():
            out[c] += self.reproduces
        for b in self.extra.values():
            for c in b.product():
                out[c] += [k for k in b.reproduces if k not in out[c]]
        return out

    def tables(self) -> dict[Cell, list[str]]:
        """Cell -> the blocks ('main' and extra names) it belongs to (the report groups by them)."""
        out: dict[Cell, list[str]] = {c: [] for c in self.cells()}
        for c in self.main_cells():
            out[c].append("main")
        for name, b in self.extra.items():
            for c in b.product():
                out[c].append(name)
        return out


class MetricsConfig(MethodConfig):
    ssim_kernel_size: int = Field(11, ge=3, description="odd; capped at the image side")
    ssim_sigma: float = Field(1.5, gt=0)
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    grad_sim_images: int = Field(100, ge=0, description="images for the backbone-victim gradient similarity "
                                 "(MSPD Table XI uses 100); 0 skips it")

    @field_validator("ssim_kernel_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"the SSIM Gaussian window must have an odd size; use {v - 1} or {v + 1}")
        return v


class TimingConfig(MethodConfig):
    """The timing block (``python -m preempt timing``): seconds per image of each listed defense,
    ``repeats`` times on the first ``images`` evaluation images, for the speed claims' ratios."""

    defenses: list[str] = Field(default_factory=list, description="entries of defenses (in the grid or not)")
    images: int = Field(8, ge=1, le=100_000)
    repeats: int = Field(3, ge=3, le=100, description="a ratio's interval needs at least 3 timings per side")


class ShardsConfig(MethodConfig):
    """Split the evaluation images into k chunks for RE generation and attacks: each chunk is a
    separate job (a SLURM job on a cluster) and a gather stage joins them. Chunks follow
    ``runtime.batch_size`` boundaries and every batch draws from its own seeded generator, so the
    results are the same for every k (on CPU, bit-identical; tested)."""

    defend: int = Field(1, ge=1, le=1024)
    attack: int = Field(1, ge=1, le=1024)


class JobResources(MethodConfig):
    """What one job of a stage family asks the scheduler for (SLURM); ignored by local runs."""

    gpus: int = Field(0, ge=0)
    mem_mb: int = Field(8000, ge=100)
    runtime: int = Field(60, ge=1, description="minutes")
    cpus_per_task: int = Field(4, ge=1)


RESOURCE_DEFAULTS: dict[str, dict[str, int]] = {  # a GPU node's typical job, per family
    "data": dict(gpus=0, mem_mb=16000, runtime=60, cpus_per_task=4),
    "model": dict(gpus=1, mem_mb=32000, runtime=720, cpus_per_task=8),
    "defend": dict(gpus=1, mem_mb=32000, runtime=240, cpus_per_task=8),
    "revert": dict(gpus=1, mem_mb=32000, runtime=240, cpus_per_task=8),
    "attack": dict(gpus=1, mem_mb=32000, runtime=480, cpus_per_task=8),
    "aggregate": dict(gpus=0, mem_mb=4000, runtime=30, cpus_per_task=1),
    "report": dict(gpus=0, mem_mb=8000, runtime=30, cpus_per_task=1),
    "gather": dict(gpus=1, mem_mb=32000, runtime=60, cpus_per_task=8),  # joins shards; scores attack cells
    "timing": dict(gpus=1, mem_mb=32000, runtime=120, cpus_per_task=8),  # the speed claims' repeated timings
}


class ResourcesConfig(MethodConfig):
    """Per stage family; an entry overrides only the keys it names. Changing them never reruns a
    stage (they are not stage params)."""

    data: JobResources
    model: JobResources
    defend: JobResources
    revert: JobResources
    attack: JobResources
    aggregate: JobResources
    report: JobResources
    gather: JobResources
    timing: JobResources

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {fam: {**base, **data[fam]} if isinstance(data.get(fam), dict) else data.get(fam, base)
                for fam, base in RESOURCE_DEFAULTS.items()} | {k: v for k, v in data.items() if k not in RESOURCE_DEFAULTS}


class ReportConfig(MethodConfig):
    notebooks: list[str] = Field(default_factory=lambda: ["results", *papers.PAPERS],
                                 description="results (the overview) and one per paper (preempt.papers)")
    n_examples: int = Field(8, ge=1, le=64)
    perturbation_gain: float = Field(10.0, gt=0)

    @field_validator("notebooks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for nb in v:
            if nb != "results" and nb not in papers.PAPERS:
                raise ValueError(f"no notebook {nb!r}: use results or a paper ({', '.join(papers.PAPERS)})")
        return v


class Params(BaseModel):
    """The validated experiment. Entries are pydantic objects of their registry's config class."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    raw: dict[str, Any]
    dataset: DatasetConfig
    models: dict[str, ModelConfig]
    defenses: dict[str, DefenseConfig]
    attacks: dict[str, AttackConfig]
    reversions: dict[str, ReversionConfig]
    grid: GridConfig
    metrics: MetricsConfig
    runtime: RuntimeConfig
    shards: ShardsConfig
    report: ReportConfig
    resources: ResourcesConfig
    timing: TimingConfig
    statistics: Statistics
    shrink: ShrinkConfig | None = None  # test-only: what the computing stages run (see effective)


SECTIONS = ("dataset", "models", "defenses", "attacks", "reversions", "grid", "metrics", "runtime", "shards",
            "report", "resources", "timing", "statistics", "shrink")
REQUIRED = ("dataset", "models", "defenses", "attacks", "grid")


REGISTRIES: dict[str, Registry[Any]] = {"dataset": DATASETS, "models": SOURCES, "defenses": DEFENSES,
                                         "attacks": ATTACKS, "reversions": REVERSIONS}


def _check_name(section: str, name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            f"{section}.{name!r}: invalid name; names become file and stage names, so use a letter "
            "followed by letters, digits or '_' (at most 64 characters)"
        )


def _entry(section: str, name: str, data: Any, registry: Registry[Any]) -> Any:
    where = f"{section}.{name}" if name else section
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a '{registry.key}' key (got {data!r})")
    if registry.key not in data:
        raise ConfigError(f"{where}.{registry.key}: required key is missing; valid: {', '.join(registry.names())}")
    choice = data[registry.key]
    if not isinstance(choice, str) or choice not in registry:
        raise ConfigError(f"{where}.{registry.key}: unknown {registry.kind} {choice!r}; {closest(str(choice), registry.names())}")
    return validate_model(registry[choice].config, data, where)


def _check_acyclic(models: dict[str, ModelConfig]) -> None:
    """A model built from other models (a wrapper, a denoiser) must not end up depending on itself."""
    def walk(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise ConfigError(f"models: {cycle} is a cycle; a model cannot be built from itself")
        for ref in model_refs(models[name]):
            walk(ref, [*path, name])

    for name in models:
        walk(name, [])


def parse(raw: Any, source: str = DEFAULT_PARAMS) -> Params:
    """Validate a params mapping; raise ConfigError (one line) on the first problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{source}: unknown section '{key}'; {closest(str(key), SECTIONS)}")
    for key in REQUIRED:
        if key not in raw:
            raise ConfigError(f"{source}: required section '{key}' is missing; add it")
    regs = REGISTRIES
    dataset = _entry("dataset", "", raw["dataset"], regs["dataset"])
    sections: dict[str, dict[str, Any]] = {}  # each entry is validated by its registry's (base) class
    for section in ("models", "defenses", "attacks", "reversions"):
        entries = raw.get(section, {"none": {"method": "none"}} if section == "reversions" else None)
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{section}: expected a non-empty mapping of name -> entry")
        for name in entries:
            _check_name(section, name)
        sections[section] = {n: _entry(section, n, d, regs[section]) for n, d in entries.items()}
    grid = validate_model(GridConfig, raw["grid"], "grid")
    for i, rule in enumerate(grid.exclude):
        for key, value in rule.items():
            listed = getattr(grid, f"{key}s" if key != "victim" else "victims")
            for name in [value] if isinstance(value, str) else value:
                if name not in listed:
                    raise ConfigError(f"grid.exclude.{i}.{key}: '{name}' is not in grid.{key}s; {closest(name, listed)}")
    if not grid.main_cells():
        raise ConfigError("grid.exclude: every cell is excluded; remove an entry")
    for block_name, block in grid.blocks().items():
        where = "grid" if block_name == "main" else f"grid.extra.{block_name}"
        if block_name != "main":
            _check_name("grid.extra", block_name)
        for key in block.reproduces:
            if key not in papers.exhibit_keys():
                raise ConfigError(f"{where}.reproduces: '{key}' is no paper exhibit; {closest(key, papers.exhibit_keys())}")
        for field, section in (("defenses", "defenses"), ("reversions", "reversions"),
                               ("victims", "models"), ("attacks", "attacks")):
            values = getattr(block, field)
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}.{field}: names repeat ({values}); list each once")
            for value in values:
                if value not in sections[section]:
                    raise ConfigError(
                        f"{where}.{field}: '{value}' is not defined in {section}; {closest(value, list(sections[section]))}"
                    )
    for section in ("defenses", "reversions", "models", "attacks"):
        for name, cfg in sections[section].items():
            for ref in model_refs(cfg):
                if ref not in sections["models"]:
                    raise ConfigError(
                        f"{section}.{name}: model '{ref}' is not defined in models; "
                        f"{closest(ref, list(sections['models']))}"
                    )
    _check_acyclic(sections["models"])
    timing = validate_model(TimingConfig, raw.get("timing", {}), "timing")
    for name in timing.defenses:
        if name not in sections["defenses"]:
            raise ConfigError(f"timing.defenses: '{name}' is not defined in defenses; {closest(name, list(sections['defenses']))}")
    if len(set(timing.defenses)) != len(timing.defenses):
        raise ConfigError(f"timing.defenses: names repeat ({timing.defenses}); list each once")
    runtime = validate_model(RuntimeConfig, raw.get("runtime", {}), "runtime")
    for name in runtime.model_batch:
        if name not in sections["models"]:
            raise ConfigError(f"runtime.model_batch: '{name}' is not defined in models; {closest(name, list(sections['models']))}")
    return Params(
        timing=timing,
        statistics=validate_model(Statistics, raw.get("statistics", {}), "statistics"),
        raw=raw,
        dataset=dataset,
        grid=grid,
        metrics=validate_model(MetricsConfig, raw.get("metrics", {}), "metrics"),
        runtime=runtime,
        shards=validate_model(ShardsConfig, raw.get("shards", {}), "shards"),
        report=validate_model(ReportConfig, raw.get("report", {}), "report"),
        resources=validate_model(ResourcesConfig, raw.get("resources", {}), "resources"),
        shrink=validate_model(ShrinkConfig, raw["shrink"], "shrink") if raw.get("shrink") is not None else None,
        **sections,
    )


def effective(p: Params) -> Params:
    """What the computing stages run: ``p`` itself, or with a ``shrink:`` section its shrunk copy
    (``preempt.shrink``). The DAG, every ref, table and claim come from ``p`` as written."""
    if p.shrink is None:
        return p
    full = {**p.raw, "dataset": p.dataset.model_dump()}  # every entry with its defaults, so they are capped too
    for section in ("models", "defenses", "attacks", "reversions"):
        full[section] = {name: cfg.model_dump() for name, cfg in getattr(p, section).items()}
    return parse(shrunk_raw(full, p.shrink), "params.yaml (shrunk)")


def load(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file (YAML is parsed safely; nothing in it is evaluated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    return parse(raw, str(path))
