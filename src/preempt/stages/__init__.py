"""Stage entry points: ``python -m preempt <stage> <key...>``, one module per stage family.

Each stage reads the validated params, refuses to run under a stale dvc.yaml, fixes threads and
determinism, then reads its declared inputs and writes its declared outputs (``preempt.paths``),
atomically. The stage layer is where models are loaded: it turns a name of params.yaml into a
frozen model on the stage's device and hands it to the methods, which never look up paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import nn

from .. import artifacts, config, dag, dvcfile, paths, runtime
from ..config import Params
from ..defenses import DefenseConfig, roles
from ..models import SOURCES, Env, ImageSpec, frozen
from ..registry import MethodConfig


@dataclass
class Context:
    """A stage's params and device. ``params`` is what the stage computes with; ``declared`` is the
    file as written, which every ref, table and claim comes from. They differ only under the
    test-only ``shrink:`` section (``preempt.shrink``), where ``params`` is its shrunk copy."""

    params: Params
    device: torch.device
    declared: Params

    @cached_property
    def env(self) -> Env:
        """What a model source may use: the image spec, the data splits, the other models (built
        once per stage: the spec comes from the data sidecar)."""
        return Env(spec=ImageSpec.of_meta(artifacts.load_meta(paths.data_path("test"))), device=self.device,
                   configs=self.params.models, data=_split, model=self._base_model, stored=_stored)

    def _deploy(self, name: str) -> nn.Module:
        cfg = self.params.models[name]
        return SOURCES[cfg.source].fn.load(name, cfg, self.env, paths.model_path(name))

    def _base_model(self, name: str) -> nn.Module:
        """A model another model is built from (a wrapper's base, a denoiser's target): frozen, on
        the device, without the runtime's GPU options (the outer model gets them)."""
        return frozen(self._deploy(name), self.device)

    def model(self, name: str) -> nn.Module:
        """Model ``name`` of the experiment from its stage output, frozen, on the stage's device,
        with the runtime's GPU options (``runtime.accelerate``). Each call loads a fresh copy."""
        return runtime.accelerate(self._base_model(name), self.params.runtime, self.device, self.env.spec.shape)

    def role_models(self, cfg: DefenseConfig, cache: dict[str, nn.Module] | None = None) -> dict[str, nn.Module]:
        """Role (``classifier``, ``backbone``, ...) -> model, for a defense; ``cache`` shares
        models between calls (a reversion re-running the defense)."""
        cache = {} if cache is None else cache
        out = {}
        for role, name in roles(cfg).items():
            if name not in cache:
                cache[name] = self.model(name)
            out[role] = cache[name]
        return out


def _split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data, _ = artifacts.load(paths.data_path(split))
    return data["x"], data["y"]


def _stored(name: str) -> dict[str, torch.Tensor]:
    state, _ = artifacts.load(paths.model_path(name))
    return state


def provenance(ctx: Context, stage: str, cfg: MethodConfig | list[MethodConfig], seconds: float,
               **extra: Any) -> dict[str, Any]:
    """The sidecar record of a stage output: what made it (``extra``: names, shard, seed...), the
    hash of the config(s) it depends on, its compute time and device."""
    dump = [c.model_dump() for c in cfg] if isinstance(cfg, list) else cfg.model_dump()
    return {"stage": stage, **extra, "params_hash": artifacts.params_hash(dump), "wall_seconds": seconds,
            "device": str(ctx.device)}


def context(params_file: str = paths.PARAMS_FILE, check: bool = True) -> Context:
    runtime.setup_logging()
    declared = config.load(params_file)
    if check:
        dvcfile.check_fresh(dag.build(declared))
    return of(declared)


def of(declared: Params, params: Params | None = None) -> Context:
    """The context of a stage of the experiment ``declared`` (threads, seeds and device set);
    ``params``: its ``config.effective`` copy, when the caller has it already (one per run)."""
    params = config.effective(declared) if params is None else params
    return Context(params, runtime.configure(params.runtime), declared)
