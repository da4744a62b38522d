"""``source: transform``: a victim behind an input transform, T(P(x)) with P a registered transform.

Any reversion entry whose config is a ``TransformConfig`` (``jpeg``, ``bitdepth``, ``gaussian``,
``resize_pad``, ``diffpure``) can stand in front of any model of the experiment as a test-time
defense. Attacks differentiate through P, or use BPDA where P has no useful gradient (see
``models/wrappers.py``); randomized transforms are attacked with EOT.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Literal, Mapping

import torch
from pydantic import field_validator
from torch import nn

from .. import artifacts
from ..errors import ConfigError
from ..registry import ModelName, closest, validate_model
from ..reversions import REVERSIONS, TransformConfig
from . import SOURCES, Env, ModelConfig, test_accuracy
from .wrappers import Preprocessed, Transform


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
    """A victim behind an input transform (a test-time pre-processing defense): T(P(x))."""

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
