"""``reconstruct``: Moon et al.'s adaptive attack on Bi-Level, "original-image reconstruction".

The defense's own dynamics with reversed direction, started at x_r (``reverse: true`` of the
defense): x~ = defend_reversed(x_r), with the defender's models or the attacker's (as for
preemptive reversion). The attack that follows sweeps its budget eps' (attack entries with
``threat_eps`` = the defense's eps count an example robust when it leaves that ball of the
original).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

from . import REVERSIONS
from .preemptive import RedefendConfig, roles


class ReconstructConfig(RedefendConfig):
    """Moon et al.'s reconstruction: the defense's dynamics reversed, started at x_r."""

    method: Literal["reconstruct"] = "reconstruct"

    def code_modules(self) -> list[str]:
        return ["preempt.reversions.preemptive"]


@REVERSIONS.register("reconstruct", ReconstructConfig)
def reconstruct(x_r: torch.Tensor, *, cfg: ReconstructConfig,
                redefend: Callable[..., torch.Tensor], **_: Any) -> torch.Tensor:
    return redefend(x_r, roles(cfg), reverse=True).clamp(0.0, 1.0)
