"""``source: transform``: a victim behind an input transform, T(P(x)) with P a registered transform.

Any reversion entry whose config is a ``TransformConfig`` (``jpeg``, ``bitdepth``, ``gaussian``,
``resize_pad``, ``diffpure``) can stand in front of any model of the experiment as a test-time
defense. Attacks differentiate through P, or use BPDA where P has no useful gradient (see
``models/wrappers.py``); randomized transforms are attacked with EOT.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

import torch
from pydantic import field_validator

from ..errors import ConfigError
from ..registry import ModelName, closest, validate_model
from ..reversions import REVERSIONS, TransformConfig
from . import SOURCES, Env, ModelConfig, Receipt
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
        """``jpeg:75(<model ref>)``: the method and its numeric settings (JPEG 50 and 75 in front of
        one model are two victims), then the model it guards."""
        values = [f"{v:g}" for k, v in self.transform.items()
                  if k != "method" and isinstance(v, int | float) and not isinstance(v, bool)]
        return f"{':'.join([self.transform['method'], *values])}({models[self.model].ref(models)})"

    def adversarial(self, models: Mapping[str, ModelConfig]) -> bool | None:
        return models[self.model].adversarial(models)


def deploy_transform(cfg: TransformVictimConfig, env: Env) -> Preprocessed:
    fn, tcfg = transform_entry(cfg.transform)
    return Preprocessed(Transform(fn, tcfg, cfg.seed), env.model(cfg.model), type(tcfg).differentiable)


SOURCES.register("transform", TransformVictimConfig)(
    Receipt("transform", deploy_transform, lambda cfg: {"base": cfg.model, "transform": cfg.transform}))
