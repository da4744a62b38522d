"""``none``: no reversion; the attacker attacks the robust example as released (every grid cell
then has the same shape: an input, a victim, an attack)."""

from __future__ import annotations

from typing import Any, Literal

import torch

from . import REVERSIONS, ReversionConfig


class NoReversion(ReversionConfig):
    """No reversion: the attacker attacks the robust example as released."""

    method: Literal["none"] = "none"


@REVERSIONS.register("none", NoReversion)
def none(x_r: torch.Tensor, **_: Any) -> torch.Tensor:
    return x_r.clone()
