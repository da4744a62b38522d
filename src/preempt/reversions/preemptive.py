"""Preemptive reversion: the adaptive attack on any preemptive defense.

The attacker re-runs the defense on the robust example with its own models and reflects the
result: x~ = clip(x_r - (defend(x_r) - x_r), 0, 1). White-box: the defender's backbone and
classifier (leave ``backbone`` unset: the defense's own models, whatever each defense uses); gray-box:
same architecture, other weights; black-box: another architecture. Which one a config entry is
follows from the models it names.

Moon et al.'s reconstruction attack (``reconstruct``) re-runs the defense too: see reconstruct.py.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from ..registry import ModelName
from . import REVERSIONS, ReversionConfig


class RedefendConfig(ReversionConfig):
    """Fields of the reversions that re-run the defense (this one and ``reconstruct``)."""

    backbone: ModelName | None = None  # None: the defender's own models (white-box)
    classifier: ModelName | None = None  # labels for the re-run; default: the attacker's backbone

    def uses_defense_models(self) -> bool:
        """True when the re-run uses the defender's own models (a DAG dependency on them)."""
        return self.backbone is None


class PreemptiveConfig(RedefendConfig):
    """Preemptive reversion: re-run the defense on x_r with the attacker's models and reflect."""

    method: Literal["preemptive"] = "preemptive"


def roles(cfg: RedefendConfig) -> dict[str, str]:
    """The models the re-run uses: {} (the defender's own) or the attacker's backbone and labeller."""
    return {} if cfg.backbone is None else {"backbone": cfg.backbone, "classifier": cfg.classifier or cfg.backbone}


@REVERSIONS.register("preemptive", PreemptiveConfig)
def preemptive(x_r: torch.Tensor, *, cfg: PreemptiveConfig,
               redefend: Callable[..., torch.Tensor], **_: Any) -> torch.Tensor:
    x_def = redefend(x_r, roles(cfg))
    return (x_r - (x_def - x_r)).clamp(0.0, 1.0)
