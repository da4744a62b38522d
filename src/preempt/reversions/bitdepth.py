"""``bitdepth``: bit-depth reduction (Xu et al., 2018, feature squeezing), an input transform.

Keeps ``bits`` bits per channel: x -> round(x * (2^bits - 1)) / (2^bits - 1). Rounding has a zero
gradient almost everywhere, so a victim behind it is attacked through BPDA.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from . import REVERSIONS, TransformConfig


class BitDepthConfig(TransformConfig):
    """Bit-depth reduction (feature squeezing): keep ``bits`` bits per channel."""

    differentiable: ClassVar[bool] = False  # rounding: zero gradient almost everywhere
    method: Literal["bitdepth"] = "bitdepth"
    bits: int = Field(4, ge=1, le=8)


def bitdepth(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


@REVERSIONS.register("bitdepth", BitDepthConfig)
def run(x_r: torch.Tensor, *, cfg: BitDepthConfig, **_: Any) -> torch.Tensor:
    return bitdepth(x_r, cfg.bits)
