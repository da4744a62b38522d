"""Preemptive reversion: the adaptive attack on any preemptive defense.

The attacker re-runs the defense on the robust example with its own models and reflects the
result: x~ = clip(x_r - (defend(x_r) - x_r), 0, 1). White-box: the defender's backbone and
classifier (leave ``backbone`` unset: the defense's own models, whatever each defense uses); gray-box:
same architecture, other weights; black-box: another architecture. Which one a config entry is
follows from the models it names.

``reconstruct`` is Moon et al.'s adaptive attack on Bi-Level ("original-image reconstruction"):
the same dynamics with reversed direction, started at x_r (``reverse: true`` of the defense), so
x~ = defend_reversed(x_r). The attack that follows sweeps its budget eps' (attack entries with
``threat_eps`` = the defense's eps count an example robust when it leaves that ball of the
original).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from ..registry import ModelName
from . import REVERSIONS, ReversionConfig


class PreemptiveConfig(ReversionConfig):
    method: Literal["preemptive"] = "preemptive"
    backbone: ModelName | None = None  # None: the defender's own models (white-box)
    classifier: ModelName | None = None  # labels for the re-run; default: the attacker's backbone

    def uses_defense_models(self) -> bool:
        """True when the re-run uses the defender's own models (a DAG dependency on them)."""
        return self.backbone is None


class ReconstructConfig(PreemptiveConfig):
    method: Literal["reconstruct"] = "reconstruct"  # type: ignore[assignment]


def _roles(cfg: PreemptiveConfig) -> dict[str, str]:
    return {} if cfg.backbone is None else {"backbone": cfg.backbone, "classifier": cfg.classifier or cfg.backbone}


@REVERSIONS.register("reconstruct", ReconstructConfig)
def reconstruct(x_r: torch.Tensor, *, cfg: ReconstructConfig,
                redefend: Callable[..., torch.Tensor], **_: Any) -> torch.Tensor:
    return redefend(x_r, _roles(cfg), reverse=True).clamp(0.0, 1.0)


@REVERSIONS.register("preemptive", PreemptiveConfig)
def preemptive(x_r: torch.Tensor, *, cfg: PreemptiveConfig,
               redefend: Callable[..., torch.Tensor], **_: Any) -> torch.Tensor:
    x_def = redefend(x_r, _roles(cfg))
    return (x_r - (x_def - x_r)).clamp(0.0, 1.0)
