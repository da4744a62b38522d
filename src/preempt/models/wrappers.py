"""Victims behind a test-time defense: T(P(x)), with P an input transform or a trained denoiser.

``Preprocessed`` is the one deployed form of every pre-processing defense (JPEG, bit-depth,
Gaussian filter, random resize-and-pad, a JATP denoiser, DiffPure). Attacks see an ordinary
[0, 1] model, so a white-box attack differentiates through P (the adaptive attack of the JATP
paper). Two standard adaptive tools are switches, not separate code paths:

- BPDA (Athalye et al., 2018): the forward pass runs P, the backward pass treats P as the
  identity (``x + (P(x) - x).detach()``). Forced where P has no useful gradient (JPEG, rounding);
  an attack entry with ``bpda: true`` turns it on for differentiable P too (``bpda`` context).
- EOT: a randomized P draws fresh randomness on every call, so an attack that averages
  gradients over calls (PGD ``eot_iter``, AutoAttack ``version: rand``) is EOT.

``source: transform`` deploys a registered transform (a reversion entry whose config is a
``TransformConfig``) in front of another model of the experiment.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Literal, Mapping

import torch
from pydantic import field_validator
from torch import nn

from .. import artifacts
from ..errors import ConfigError
from ..registry import ModelName, closest, validate_model
from ..reversions import REVERSIONS, TransformConfig
from . import SOURCES, Env, ModelConfig, test_accuracy


class Preprocessed(nn.Module):
    """``model(pre(x))``; ``bpda`` makes the backward pass skip ``pre``."""

    def __init__(self, pre: nn.Module, model: nn.Module, differentiable: bool = True) -> None:
        super().__init__()
        self.pre = pre
        self.model = model
        self.differentiable = differentiable
        self.bpda = not differentiable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bpda:
            with torch.no_grad():
                z = self.pre(x)
            z = x + (z - x).detach()  # straight-through: forward P(x), gradient of the identity
        else:
            z = self.pre(x)
        return self.model(z)


@contextlib.contextmanager
def bpda(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Within the block, every pre-processing inside ``model`` is differentiated as the identity."""
    wrapped = [m for m in model.modules() if isinstance(m, Preprocessed)]
    before = [m.bpda for m in wrapped]
    for m in wrapped:
        m.bpda = m.bpda or on
    try:
        yield model
    finally:
        for m, b in zip(wrapped, before):
            m.bpda = b


class Transform(nn.Module):
    """A registered transform as a module; randomized ones draw from a private, seeded generator."""

    def __init__(self, fn: Callable[..., torch.Tensor], cfg: TransformConfig, seed: int) -> None:
        super().__init__()
        self.fn, self.cfg, self.seed = fn, cfg, seed
        self._gen: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(self.seed)
        return self.fn(x, cfg=self.cfg, generator=self._gen, redefend=None)


def transform_entry(spec: dict[str, Any]) -> tuple[Callable[..., torch.Tensor], TransformConfig]:
    """Validate ``{method: jpeg, quality: 75}`` against the transforms among the reversions."""
    names = [n for n in REVERSIONS.names() if issubclass(REVERSIONS[n].config, TransformConfig)]
    method = spec.get("method", "<missing>")
    if method not in names:
        raise ValueError(f"unknown transform {method!r}; {closest(str(method), names)}")
    entry = REVERSIONS[method]
    schema = entry.config
    assert issubclass(schema, TransformConfig)
    try:
        return entry.fn, validate_model(schema, spec, "transform")
    except ConfigError as err:
        raise ValueError(str(err)) from None


class TransformVictimConfig(ModelConfig):
    source: Literal["transform"] = "transform"
    model: ModelName
    transform: dict[str, Any]
    seed: int = 0

    @field_validator("transform")
    @classmethod
    def _transform(cls, v: dict[str, Any]) -> dict[str, Any]:
        return transform_entry(v)[1].model_dump()

    def code_modules(self) -> list[str]:
        return [REVERSIONS[self.transform["method"]].module]

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        return f"{self.transform['method']}({models[self.model].ref(models)})"


def deploy_transform(cfg: TransformVictimConfig, env: Env) -> Preprocessed:
    fn, tcfg = transform_entry(cfg.transform)
    return Preprocessed(Transform(fn, tcfg, cfg.seed), env.model(cfg.model), type(tcfg).differentiable)


class TransformSource:
    """The stage output is a receipt (the wrapper has no weights of its own) with its accuracy."""

    def materialize(self, name: str, cfg: TransformVictimConfig, env: Env, out: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        acc = test_accuracy(deploy_transform(cfg, env), env)
        artifacts.save(out, {}, {"stage": "model", "model": name, "source": "transform", "base": cfg.model,
                                 "transform": cfg.transform, "clean_acc": acc, "device": str(env.device),
                                 "wall_seconds": time.perf_counter() - t0,
                                 "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc}

    def load(self, name: str, cfg: TransformVictimConfig, env: Env, path: str) -> nn.Module:
        artifacts.load_meta(path)
        return deploy_transform(cfg, env)


SOURCES.register("transform", TransformVictimConfig)(TransformSource())
