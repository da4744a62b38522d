"""``source: robustbench``: a model of the RobustBench zoo, via ``robustbench.load_model``.

Weights are fetched only by ``python -m preempt prefetch`` (run it where there is internet, e.g.
a cluster's login node). The model stage itself never downloads: it first checks that every weight
file is in place and otherwise stops, before any compute, with one line naming the model and the
path to put the file at. Where the files live is RobustBench's own layout:

- ``model_dir/<dataset>/<threat_model>/<name>.pt`` (ensembles: ``<name>.pt_m0.pt``, ``_m1``, ...);
- models that RobustBench 1.1.1 serves through timm (e.g. ``Debenedetti2022Light_XCiT-L12``):
  timm's download cache, ``$TORCH_HOME/hub/checkpoints/<file>``.

The stage output is a *receipt* (no tensors; the sidecar records each weight file's sha256 and
the clean accuracy), so multi-GB checkpoints are not copied into the pipeline's cache; loading
later refuses a weight file whose sha256 differs from the receipt. robustbench loads checkpoints
with ``torch.load``'s default, which is ``weights_only=True`` since torch 2.6 (pinned in tests).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import pickle
import re
import time
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from pydantic import Field, model_validator
from torch import nn

from .. import artifacts
from ..compat import import_robustbench
from ..errors import PreemptError
from ..registry import closest
from . import SOURCES, Env, ModelConfig, test_accuracy


class RobustBenchConfig(ModelConfig):
    source: Literal["robustbench"] = "robustbench"
    name: str
    dataset: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"
    threat_model: Literal["Linf", "L2", "corruptions"] = "Linf"
    model_dir: str = Field("models", description="RobustBench's model_dir ($VARS and ~ expanded)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="optional pin of the weight file")

    @model_validator(mode="after")
    def _known(self) -> "RobustBenchConfig":
        zoo = zoo_names(self.dataset, self.threat_model)
        if self.name not in zoo:
            raise ValueError(f"'{self.name}' is not in RobustBench's {self.dataset}/{self.threat_model} zoo; "
                             f"{closest(self.name, list(zoo))}")
        return self

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        return self.name

    def adversarial(self, models: Mapping[str, ModelConfig]) -> bool | None:
        return self.threat_model != "corruptions" and self.name != "Standard"  # the Linf/L2 leaderboards

    def external(self, name: str, fetch: bool) -> str | None:
        files = fetch_weights(name, self) if fetch else check_present(name, self)
        return ", ".join(map(str, files)) or "no weight file needed"


def _zoo_fingerprint() -> str | None:
    """The installed robustbench's version and its model_zoo files (names, sizes, mtimes), found
    without importing it; None when it is not installed."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted((Path(spec.submodule_search_locations[0]) / "model_zoo").glob("*.py"))
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps([importlib.metadata.version("robustbench"), stats]).encode()).hexdigest()[:16]


def zoo_names(dataset: str, threat_model: str) -> list[str]:
    """The names of a zoo leaderboard, to validate params.yaml. Importing robustbench costs about
    4 s (timm, torchvision), which every Snakemake parse would pay (two per SLURM job, of hundreds),
    so the names are cached per installed robustbench (``_zoo_fingerprint``) in
    ``$XDG_CACHE_HOME/preempt`` (default ``~/.cache``); an unreadable cache is rebuilt, an
    unwritable one skipped. Building or loading a model still imports robustbench."""
    key = _zoo_fingerprint()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "preempt" / f"robustbench-zoo-{key}.json"
    board = f"{dataset}/{threat_model}"
    if key is not None:
        try:
            return list(json.loads(cache.read_text())[board])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    import_robustbench()
    from robustbench.model_zoo import model_dicts

    boards = {f"{d.value}/{t.value}": sorted(per) for d, per_threat in model_dicts.items() for t, per in per_threat.items()}
    if key is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            artifacts.write_text(cache, json.dumps(boards, indent=1) + "\n")
        except OSError:
            pass
    return boards.get(board, [])


def zoo_entries(dataset: str, threat_model: str) -> dict[str, Any]:
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]


def architecture(dataset: str, threat_model: str, name: str) -> nn.Module:
    """The zoo entry's network with its initial (random) weights, built offline: its own factory,
    or, where that factory downloads weights in its constructor (``pretrained=True``: timm models,
    torchvision's ResNet-50), the same architecture without them (and without the normalising
    wrapper such a factory may add: a random-weight network's compute, not its accuracy, is the
    point). Takes [0, 1] images like ``robustbench.load_model``'s model. For smoke runs at full
    width (``shrink: {stand_in: zoo}``) and the zoo test."""
    import timm  # imported here, like torchvision: 4 s that model-config validation must not pay

    factory = zoo_entries(dataset, threat_model)[name]["model"]
    if isinstance(factory, functools.partial) and factory.func is timm.create_model:  # compat.fix_xcit_names
        return timm.create_model(factory.args[0], pretrained=False)
    src = inspect.getsource(factory)
    if "pretrained=True" not in src:
        return factory()
    if "resnet50(pretrained=True)" in src:
        from torchvision.models import resnet50  # imported here: see weight_files

        return resnet50(weights=None)
    timm_name = re.search(r"create_model\(\s*'([^']+)'", src)
    if timm_name is None:
        raise PreemptError(f"RobustBench's '{name}' downloads weights in its constructor in a way preempt "
                           "cannot build without them; use shrink.stand_in: true (small stand-ins)")
    return timm.create_model(timm_name.group(1), pretrained=False)


def _timm_name(cfg: RobustBenchConfig) -> str:
    return f"{cfg.name.lower().replace('-', '_')}_{cfg.dataset}_{cfg.threat_model.lower()}"


def weight_files(cfg: RobustBenchConfig) -> list[Path]:
    """Every file ``robustbench.load_model`` reads for this model (empty: no weights needed)."""
    import timm

    if timm.is_model(_timm_name(cfg)):
        url = timm.models.get_pretrained_cfg(_timm_name(cfg)).url
        return [Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)]
    entry = zoo_entries(cfg.dataset, cfg.threat_model)[cfg.name]
    base = artifacts.user_path(cfg.model_dir) / cfg.dataset / cfg.threat_model / f"{cfg.name}.pt"
    if isinstance(entry["gdrive_id"], list):
        return [Path(f"{base}_m{i}.pt") for i in range(len(entry["gdrive_id"]))]
    if cfg.dataset == "imagenet" and cfg.name == "Standard_R50":  # torchvision's weights, fetched in its constructor
        # imported here: torchvision costs 1.6 s to import, which every process that loads the
        # model sources (each Snakemake parse and stage) would otherwise pay
        from torchvision.models import ResNet50_Weights

        return [Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ResNet50_Weights.IMAGENET1K_V1.url)]
    return [base]


def check_present(name: str, cfg: RobustBenchConfig) -> list[Path]:
    """The weight files, or one clear error for the first missing one (before any compute)."""
    files = weight_files(cfg)
    for f in files:
        if not f.is_file():
            raise PreemptError(f"models.{name}: RobustBench weights of '{cfg.name}' not found at {f}; run "
                               "`python -m preempt prefetch` where there is internet (e.g. the login node), "
                               "or place the file there")
    return files


def fetch_weights(name: str, cfg: RobustBenchConfig) -> list[Path]:
    """Download (if absent) through robustbench itself; used by ``python -m preempt prefetch``."""
    _load(cfg)
    return check_present(name, cfg)


def _load(cfg: RobustBenchConfig) -> nn.Module:
    """``robustbench.load_model``. It calls ``torch.load`` with torch's default, which is
    ``weights_only=True`` since torch 2.6 (pyproject pins torch>=2.6), so pickled code is refused."""
    rb = import_robustbench()
    try:
        return rb.load_model(cfg.name, model_dir=str(artifacts.user_path(cfg.model_dir)),
                             dataset=cfg.dataset, threat_model=cfg.threat_model).eval()
    except pickle.UnpicklingError as exc:  # torch.load's weights_only=True default refused it
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "pickled objects"
        raise PreemptError(f"RobustBench weights of '{cfg.name}' refused: not a plain weights file ({first}); "
                           "delete it and fetch it again with `python -m preempt prefetch`") from None


class RobustBenchSource:
    def materialize(self, name: str, cfg: RobustBenchConfig, env: Env, out: str) -> dict[str, Any]:
        files = check_present(name, cfg)
        digests = {str(f): artifacts.sha256(f) for f in files}
        if cfg.sha256 is not None and files and digests[str(files[0])] != cfg.sha256:
            raise PreemptError(f"{files[0]}: sha256 {digests[str(files[0])]} does not match models.{name}.sha256 "
                               f"{cfg.sha256}; the file is corrupted or another checkpoint; fetch it again")
        t0 = time.perf_counter()
        acc = test_accuracy(_load(cfg), env)
        artifacts.save(out, {}, {
            "stage": "model", "model": name, "source": "robustbench", "zoo_name": cfg.name,
            "weight_files": digests, "clean_acc": acc, "wall_seconds": time.perf_counter() - t0,
            "device": str(env.device), "params_hash": artifacts.params_hash(cfg.model_dump()),
        })
        return {"clean_acc": acc}

    def load(self, name: str, cfg: RobustBenchConfig, env: Env, path: str) -> nn.Module:
        _, meta = artifacts.load(path)
        for f in check_present(name, cfg):
            if artifacts.sha256(f) != meta["weight_files"].get(str(f)):
                raise PreemptError(f"{f}: changed since the model stage recorded it; rerun the model stage "
                                   f"(dvc repro model-{name})")
        return _load(cfg)


SOURCES.register("robustbench", RobustBenchConfig)(RobustBenchSource())
