"""JPEG compression of the robust example (torchvision's libjpeg), a classic input transform."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..registry import MethodConfig
from . import REVERSIONS


class JPEGConfig(MethodConfig):
    method: Literal["jpeg"] = "jpeg"
    quality: int = Field(75, ge=1, le=100)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip every image through JPEG at ``quality`` (uint8 quantisation included)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    out = [decode_jpeg(encode_jpeg(img, quality=quality)) for img in u8]
    return torch.stack(out).to(x.device, x.dtype) / 255.0


@REVERSIONS.register("jpeg", JPEGConfig)
def run(x_r: torch.Tensor, *, cfg: JPEGConfig, **_: Any) -> torch.Tensor:
    return jpeg(x_r, cfg.quality)
