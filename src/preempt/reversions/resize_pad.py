"""``resize_pad``: random resizing and padding (Xie et al., 2018), a randomized input transform.

Per image: resize to a random side r in [H, H + pad), zero-pad at a random offset to H + pad,
then resize back to H so every victim sees its input size. Randomness comes from the stage's
seeded generator; a victim behind it is attacked with EOT. DI-FGSM's input diversity reuses it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from . import REVERSIONS, TransformConfig


class ResizePadConfig(TransformConfig):
    """Random resizing and padding by up to ``pad`` pixels, back to the input size."""

    randomized: ClassVar[bool] = True
    method: Literal["resize_pad"] = "resize_pad"
    pad: int = Field(4, ge=1, le=256, description="largest extra side in pixels (32 -> up to 36 on CIFAR-10)")


def resize_pad(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    sizes = torch.randint(0, pad, (n,), generator=generator, device=generator.device).tolist()
    for i, extra in enumerate(sizes):  # per image: each gets its own random size and offset
        rh, rw = h + extra, w + extra
        img = F.interpolate(x[i:i + 1], size=(rh, rw), mode="bilinear", align_corners=False)
        top = int(torch.randint(0, h + pad - rh + 1, (1,), generator=generator, device=generator.device))
        left = int(torch.randint(0, w + pad - rw + 1, (1,), generator=generator, device=generator.device))
        canvas = F.pad(img, (left, w + pad - rw - left, top, h + pad - rh - top))
        out[i:i + 1] = F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False)
    return out.clamp(0, 1)


@REVERSIONS.register("resize_pad", ResizePadConfig)
def run(x_r: torch.Tensor, *, cfg: ResizePadConfig, generator: torch.Generator, **_: Any) -> torch.Tensor:
    return resize_pad(x_r, cfg.pad, generator)
