"""Defense registry: preemptive defenses that turn an image x into a robust example x_r.

Uniform signature: ``defend(x, *, cfg, models, y_true, generator) -> x_r`` where ``models`` maps
each model-reference field of ``cfg`` (``classifier``, ``backbone``, ...) to a frozen model
taking [0, 1] images. Preemptive reversion re-runs the same entry with other models in those
roles, so every defense is attackable by reversion without extra code.
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping

import torch
from torch import nn

from ..metrics import predict
from ..registry import MethodConfig, Registry, is_model_ref

Defense = Callable[..., torch.Tensor]
DEFENSES: Registry[Defense] = Registry("defense", __name__)

LabelSource = Literal["classifier", "ground_truth", "backbone"]


class DefenseConfig(MethodConfig):
    """Fields every defense has; ``ref`` says what ran, independently of the entry's name (the key
    that published numbers are matched on, see ``preempt.claims``)."""

    method: str
    seed: int = 0

    def ref(self) -> str:
        return self.method


def roles(cfg: MethodConfig) -> dict[str, str]:
    """Role -> model name for every model-reference field that is set."""
    return {k: getattr(cfg, k) for k, f in type(cfg).model_fields.items()
            if is_model_ref(f) and getattr(cfg, k) is not None}


def with_roles(cfg: DefenseConfig, overrides: Mapping[str, str]) -> DefenseConfig:
    """The same defense with other models in its roles (used by preemptive reversion)."""
    return cfg.model_copy(update={k: v for k, v in overrides.items() if k in roles(cfg)})


def labels(x: torch.Tensor, source: str, models: Mapping[str, nn.Module],
           y_true: torch.Tensor | None, batch_size: int = 1024) -> torch.Tensor:
    """The labels a defense protects: the classifier's prediction on x (papers), or alternatives.

    Without ground truth (an attacker re-running the defense), ``ground_truth`` falls back to the
    classifier, which is what the attacker can compute.
    """
    if source == "ground_truth" and y_true is not None:
        return y_true
    # clone: predictions come from inference mode, and inference tensors cannot enter autograd
    return predict(models["backbone" if source == "backbone" else "classifier"], x, batch_size).clone()


def run(cfg: DefenseConfig, x: torch.Tensor, *, models: Mapping[str, nn.Module],
        y_true: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Dispatch to the registered defense named by ``cfg.method``."""
    return DEFENSES[cfg.method].fn(x, cfg=cfg, models=models, y_true=y_true, generator=generator)
