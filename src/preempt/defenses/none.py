"""``none``: the undefended baseline (x_r = x)."""

from __future__ import annotations

from typing import Any, Literal

import torch

from . import DEFENSES, DefenseConfig


class NoneConfig(DefenseConfig):
    method: Literal["none"] = "none"


@DEFENSES.register("none", NoneConfig)
def none(x: torch.Tensor, **_: Any) -> torch.Tensor:
    return x.clone()
