"""Scratch copies of the project for tests and benchmarks: the tracked files, another params.yaml,
a fresh git repository (DVC needs one), dvc.yaml generated; plus the shrunken embedded default
that the pipeline tests, fault tests and ``--quick`` benchmarks run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from preempt.data.imagenet import subset

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["sec_per_image", "attack_sec_per_image"]  # the metrics columns that differ between identical runs


def run(cmd: list[str], cwd: Path, ok: bool = True, timeout: float = 1800,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command quietly (no progress bars); with ``ok``, fail with its output's tail."""
    env = {**os.environ, "PREEMPT_PROGRESS": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def make(dest: Path, params: dict[str, Any], dag: bool = True, root: Path = ROOT) -> Path:
    """Copy the project's files (tracked and untracked-not-ignored, without provenance) to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (root / f).is_file() and Path(f).name != "dvc.lock":  # a fresh workspace has no provenance yet
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dest / f)
    write_params(dest, params)
    run(["git", "init", "-q"], dest)
    if dag:
        run(["python", "-m", "preempt", "dag", "--write"], dest)  # the documented step before `dvc repro`
    return dest


def job_stats(out: str) -> dict[str, int]:
    """Rule -> job count from the "Job stats:" table Snakemake prints before it runs (or dry-runs)
    anything; empty when there is nothing to do."""
    if "Nothing to be done" in out or "Job stats:" not in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+(\d+)\s*$", table, re.M)}


def jobs_planned(cwd: Path) -> dict[str, int]:
    """Rule -> job count that `snakemake -n` plans (empty when there is nothing to do)."""
    return job_stats(run(["snakemake", "-n", "--cores", "2"], cwd).stdout)


def edit_params(cwd: Path, key: str, value: Any) -> Any:
    """Change one value of params.yaml, as a user does in an editor (only that line changes);
    returns the value it had."""
    path = cwd / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    old, node[last] = node[last], value
    before = path.read_text().splitlines()
    after = yaml.safe_dump(raw, sort_keys=False).splitlines()
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after)) == 1, key
    path.write_text("\n".join(after) + "\n")
    return old


def slurm_profile(config_home: Path, **settings: Any) -> dict[str, str]:
    """A user's Snakemake ``slurm`` profile under ``config_home`` (their ~/.config): installed as
    ./setup.sh installs it (``python -m preempt slurm-profile``), then edited as a user edits it for
    their cluster (``settings``: profile keys; ``default-resources`` entries are merged). Returns the
    environment under which ``snakemake --profile slurm`` finds it."""
    env = {"XDG_CONFIG_HOME": str(config_home)}
    run(["python", "-m", "preempt", "slurm-profile"], ROOT, env=env)
    path = config_home / "snakemake" / "slurm" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    resources = {**profile.get("default-resources", {}), **settings.pop("default-resources", {})}
    path.write_text(yaml.safe_dump({**profile, **settings, "default-resources": resources}, sort_keys=False))
    return env


def write_params(dest: Path, params: dict[str, Any]) -> None:
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def default_params(root: Path = ROOT) -> dict[str, Any]:
    return yaml.safe_load((root / "params.yaml").read_text())


def tiny_params(root: Path = ROOT, n_eval: int = 40) -> dict[str, Any]:
    """The embedded default shrunk to minutes: 40 images, 2 epochs, MCGS and no defense, PGD and a
    short AutoAttack, 3 reversions, 2 victims (24 cells)."""
    raw = default_params(root)
    raw["dataset"]["n_eval"] = n_eval
    keep = ["classifier", "backbone", "victim_mlp", "victim_mlp_at"]
    raw["models"] = {k: raw["models"][k] for k in keep}
    for m in raw["models"].values():
        m["epochs"] = 2
        if m["recipe"]["method"] == "pgd_at":
            m["recipe"]["steps"] = 2
    raw["defenses"] = {k: raw["defenses"][k] for k in ("none", "mcgs")}
    raw["attacks"] = {k: raw["attacks"][k] for k in ("pgd", "autoattack")}
    raw["defenses"]["mcgs"]["n_samples"] = 4
    raw["reversions"] = {k: raw["reversions"][k] for k in ("none", "white", "jpeg")}
    raw["attacks"]["pgd"]["steps"] = 3
    raw["attacks"]["autoattack"].update(attacks=["apgd-ce"], n_iter=5)
    raw["grid"] = {"defenses": ["none", "mcgs"], "reversions": ["none", "white", "jpeg"],
                   "victims": ["victim_mlp", "victim_mlp_at"], "attacks": ["pgd", "autoattack"],
                   "reproduces": ["fast_preemption/table1", "fast_preemption/fig4"]}
    raw["report"]["n_examples"] = 4
    raw["report"]["notebooks"] = ["results", "fast_preemption"]  # all six run in test_methods_pipeline
    raw["timing"] = {"defenses": ["mcgs"], "images": 4, "repeats": 3}
    raw["statistics"] = {**raw.get("statistics", {}), "resamples": 1000}
    return raw


def small_params(root: Path = ROOT) -> dict[str, Any]:
    """Even smaller (8 cells), in several batches so that sharding has something to split:
    40 images in batches of 10, MCGS and no defense, no/white-box reversion, one victim."""
    raw = tiny_params(root)
    raw["runtime"]["batch_size"] = 10
    raw["reversions"] = {k: raw["reversions"][k] for k in ("none", "white")}
    # the defender's own models named explicitly (the same run): the edit test changes one of them
    raw["reversions"]["white"] = {"method": "preemptive", "backbone": "backbone", "classifier": "classifier"}
    raw["grid"].update(reversions=["none", "white"], victims=["victim_mlp_at"])
    raw["models"] = {k: raw["models"][k] for k in ("classifier", "backbone", "victim_mlp_at")}
    raw["report"]["notebooks"] = ["results"]  # the edit, fault and SLURM tests need one report
    return raw


def imagenet_folder(root: Path, n: int) -> Path:
    """The first ``n`` images of RobustBench's ImageNet list as random JPEGs, at their real paths
    (root/<wnid>/ILSVRC2012_val_*.JPEG), non-square so that the resize-and-crop runs for real."""
    rng = np.random.default_rng(0)
    for rel in subset()[:n]:
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(f, "JPEG")
    return root
