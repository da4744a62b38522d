"""Where every file of the workflow lives: the only place a path is spelled.

Stages read and write these paths; ``preempt.dag`` declares them as the DAG's dependencies and
outputs. Methods (data, models, defenses, attacks, reversions, metrics) never look paths up:
the stages hand them tensors, models and file names.

Stage family -> what it writes (the README's table of outputs says the same):
``data`` -> results/data, ``model`` -> results/models, ``defend`` -> results/re (robust examples),
``revert`` -> results/inputs (the attacker's input), ``attack`` -> results/adv (adversarial
examples) and results/cells (metrics), ``gather`` -> results/re or results/adv + cells from
results/shards, ``timing`` -> results/timing (repeated timings of the defenses), ``aggregate`` ->
results/metrics.csv (+ outcomes, timing, claims), ``report`` -> reports/.
"""

from __future__ import annotations

from pathlib import Path

PARAMS_FILE = "params.yaml"
DVC_YAML = "dvc.yaml"  # data, models, the tables and reports; each defense's stages in its own file:
PIPELINES = Path("pipelines")  # pipelines/<defense>/dvc.yaml (see preempt.dvcfile)
DVC_LOCK = "dvc.lock"
RESULTS = Path("results")
REPORTS = Path("reports")
SRC = Path("src/preempt")
METRICS_CSV = str(RESULTS / "metrics.csv")
OUTCOMES_CSV = str(RESULTS / "outcomes.csv.gz")  # per cell and image: correct on orig/RE/input/after the attack
TIMING_CSV = str(RESULTS / "timing.csv")  # the timing block's repeats: defense, repeat, seconds per image
CLAIMS_CSV = str(RESULTS / "claims.csv")  # the papers' claims checked on the outcomes (preempt.claims)
CLAIMS_JSON = str(RESULTS / "claims.json")  # the same as DVC metrics: claim -> 1 holds / 0 inconclusive / -1 fails
SUMMARY_JSON = str(RESULTS / "summary.json")  # DVC metrics: per defense, means over the main table
CONFIG_DIR = "config"  # the experiment files (and published.csv, claims.yaml)
CLAIMS_FILE = "config/claims.yaml"  # the claims themselves
PUBLISHED_CSV = "config/published.csv"  # published numbers the report compares with (preempt.published)

Shard = tuple[int, int]  # (i, k): the i-th of k chunks of the evaluation images, 1-based


def data_path(split: str) -> str:
    return str(RESULTS / "data" / f"{split}.pt")


def model_path(name: str) -> str:
    return str(RESULTS / "models" / f"{name}.pt")


def re_path(defense: str) -> str:
    return str(RESULTS / "re" / f"{defense}.pt")


def shard_suffix(shard: Shard) -> str:
    return f"{shard[0]}of{shard[1]}"


def re_shard_path(defense: str, shard: Shard) -> str:
    return str(RESULTS / "shards" / "re" / defense / f"{shard_suffix(shard)}.pt")


def adv_shard_path(defense: str, reversion: str, victim: str, attack: str, shard: Shard) -> str:
    return str(RESULTS / "shards" / "adv" / defense / reversion / victim / attack / f"{shard_suffix(shard)}.pt")


def input_path(defense: str, reversion: str) -> str:
    return str(RESULTS / "inputs" / defense / f"{reversion}.pt")


def adv_path(defense: str, reversion: str, victim: str, attack: str) -> str:
    return str(RESULTS / "adv" / defense / reversion / victim / f"{attack}.pt")


def cell_path(defense: str, reversion: str, victim: str, attack: str) -> str:
    return str(RESULTS / "cells" / defense / reversion / victim / f"{attack}.json")


def timing_path(defense: str) -> str:
    return str(RESULTS / "timing" / f"{defense}.json")


def report_path(notebook: str) -> str:
    return str(REPORTS / f"{notebook}.ipynb")


def html_path(notebook: str) -> str:
    return str(REPORTS / f"{notebook}.html")


def figures_dir(notebook: str) -> str:
    return str(REPORTS / "figures" / notebook)


def notebook_path(notebook: str) -> str:
    return f"notebooks/{notebook}.ipynb"


def with_sidecar(path: str) -> list[str]:
    return [path, str(Path(path).with_suffix(".json"))]


def module_file(module: str) -> str:
    """Source file of a preempt module: a code dependency of the stages that run it."""
    rel = module.split(".", 1)[1].replace(".", "/") if "." in module else "__init__"
    f = SRC / f"{rel}.py"
    return str(f if f.exists() else SRC / rel / "__init__.py")


def pipeline_dvc_yaml(defense: str) -> str:
    """The dvc.yaml of one defense's stages (its REs, reversions and attack cells)."""
    return str(PIPELINES / defense / DVC_YAML)


def lock_of(dvc_yaml: str) -> str:
    """The dvc.lock DVC keeps beside a dvc.yaml."""
    return str(Path(dvc_yaml).with_name(DVC_LOCK))
