"""The test-only ``shrink`` switch: an experiment file's whole DAG at toy scale, on a CPU.

A paper experiment (``config/cifar10.yaml``, ``config/imagenet.yaml``) needs a GPU cluster. With a
``shrink:`` section in params.yaml, every stage still runs, for the same cells, refs, tables,
figures and notebooks (the DAG and every ref are computed from the file *as written*), but the
stages that compute (data, model, defend, revert, attack, gather, timing, report: ``dag.SHRUNK``)
see a shrunk copy of it:

- the first ``images`` evaluation images and the first ``train_images`` training images;
- every iteration count (attack steps, APGD iterations, Square queries, Bi-Level outer and inner
  steps, training epochs, AT steps, ...) capped at ``steps``, every sample count (MCGS's and
  Bi-Level's N, EOT, restarts, APGD-T targets, smoothing votes, CERTIFY's n0 and n) at ``samples``;
  MCGS schedules (``F1B1``, ``F100``) are kept as written: they are what the cells are about;
- each RobustBench model replaced by a small random-weight network of the same interface
  (``source: standin``, seeded by the zoo name), because the zoo's paper-scale architectures are
  too slow on a CPU (measured: one forward and backward pass of 4 CIFAR images through a
  random-weight WRN-94-16 takes 5.1 to 5.5 s on 2 threads, and 98 cells of config/cifar10.yaml
  attack it: hours). That every zoo architecture builds and runs is pinned
  separately (tests/test_zoo.py); this switch checks the pipeline around them. ``stand_in: zoo``
  puts the zoo entry's own architecture there instead, with random weights (``source: standin,
  arch: zoo``): the paper-scale compute without the weights, for a GPU machine without internet
  (``benchmarks/paper_scale_gpu.py``); ``stand_in: false`` keeps the zoo models themselves;
- ``device`` (the CPU, one thread; or ``cuda``, the file's own threads).

Its numbers mean nothing; the reports say "shrunk run" on top. It exists so that the test suite
runs the paper experiments end to end (tests/test_paper_experiments.py), and so that a user can
smoke-test an edited experiment file before spending GPU days (README, *Smoke-testing an
experiment file*). The section is a stage param of every computing stage: adding or removing it reruns them.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field

from .models.standin import FEATURE_LAYER
from .registry import MethodConfig

STEPS = frozenset({"steps", "n_iter", "n_queries", "max_iter", "inner_steps", "epochs", "outer_iters",
                   "attack_steps", "binary_search_steps"})
SAMPLES = frozenset({"n_samples", "eot_iter", "restarts", "n_target_classes", "n", "n0", "grad_samples"})
# AutoAttack's counts default to its version's own (None = standard's 100 iterations, 5000 queries,
# 9 targets; rand's 20 EOT samples): set, so that they are capped too
AUTOATTACK_COUNTS = {"n_iter": "steps", "n_queries": "steps", "n_target_classes": "samples", "eot_iter": "samples"}


class ShrinkConfig(MethodConfig):
    """params.yaml ``shrink:`` (test-only; see the module's docstring)."""

    images: int = Field(4, ge=1, le=64, description="evaluation images (dataset.n_eval, timing.images)")
    train_images: int = Field(64, ge=1, description="training images (dataset.n_train, JATP's train_images)")
    steps: int = Field(1, ge=1, description="cap on every iteration count")
    samples: int = Field(2, ge=1, description="cap on every sample count")
    stand_in: Literal[True, False, "zoo"] = Field(
        True, description="RobustBench models -> small random-weight networks (true), their own "
                          "architectures with random weights (zoo), or kept (false; weights needed)")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cpu: one thread; cuda: the file's own threads")


def _cap(node: Any, cfg: ShrinkConfig) -> Any:
    """Every int under a STEPS or SAMPLES key of a nested mapping, capped (lists are kept)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if isinstance(value, int) and not isinstance(value, bool) and key in STEPS | SAMPLES:
            value = min(value, cfg.steps if key in STEPS else cfg.samples)
        out[key] = _cap(value, cfg)
    return out


def shrunk_raw(raw: dict[str, Any], cfg: ShrinkConfig) -> dict[str, Any]:
    """The params mapping the computing stages run: ``raw`` (its entries dumped with their defaults,
    see ``preempt.config.effective``) with the caps applied; a new mapping."""
    raw = copy.deepcopy(raw)
    raw.pop("shrink", None)
    ds = raw["dataset"]
    ds["n_eval"] = min(int(ds.get("n_eval", cfg.images)), cfg.images)
    ds["n_train"] = min(int(ds.get("n_train") or cfg.train_images), cfg.train_images)
    models = {}
    for name, m in raw["models"].items():
        if cfg.stand_in == "zoo" and m.get("source") == "robustbench":
            m = {"source": "standin", "name": m["name"], "arch": "zoo", "dataset": m.get("dataset", "cifar10"),
                 "threat_model": m.get("threat_model", "Linf")}
        elif cfg.stand_in is True and m.get("source") == "robustbench":
            m = {"source": "standin", "name": m["name"]}
        if m.get("source") == "jatp":
            if cfg.stand_in is True and raw["models"].get(m.get("target"), {}).get("source") == "robustbench":
                m["feature_layer"] = FEATURE_LAYER  # the zoo target's layer is the stand-in's features
            m["train_images"] = min(int(m.get("train_images") or cfg.train_images), cfg.train_images)
        models[name] = _cap(m, cfg)
    raw["models"] = models
    for section in ("defenses", "attacks", "reversions"):
        entries = {}
        for name, e in raw.get(section, {}).items():
            if section == "attacks" and e.get("method") == "autoattack":
                e = {**e, **{k: getattr(cfg, cap) for k, cap in AUTOATTACK_COUNTS.items() if e.get(k) is None}}
            entries[name] = _cap(e, cfg)
        if entries:
            raw[section] = entries
    if "timing" in raw:
        raw["timing"] = {**raw["timing"], "images": min(int(raw["timing"].get("images", cfg.images)), cfg.images)}
    metrics = raw.get("metrics") or {}
    raw["metrics"] = {**metrics, "grad_sim_images": min(int(metrics.get("grad_sim_images", 100)), cfg.images)}
    report = raw.get("report") or {}
    raw["report"] = {**report, "n_examples": min(int(report.get("n_examples", 8)), cfg.images)}
    cpu = {"num_threads": 1} if cfg.device == "cpu" else {}
    raw["runtime"] = {**(raw.get("runtime") or {}), "device": cfg.device, **cpu}
    return raw
