"""``none``: no attack; the cell measures the victim on the attacker's input as it is.

Fast Preemption's evaluation protocol for reversions (Sec. 4.3) compares *clean* accuracies
(original, robust example, reverted robust example), so its cells need no attack: with this one,
``robust_acc`` equals ``clean_acc`` and the cell costs one prediction.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from . import ATTACKS, AttackConfig


class NoAttackConfig(AttackConfig):
    method: Literal["none"] = "none"
    eps: float = Field(0.0, ge=0, le=1)

    def core_ref(self) -> str:
        return "none"


@ATTACKS.register("none", NoAttackConfig)
def none(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **_: Any) -> torch.Tensor:
    return x.clone()
