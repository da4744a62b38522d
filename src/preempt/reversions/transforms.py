"""Input transforms applied to robust examples before the attack (classic "purification"
baselines, used in the papers' reversion tables next to JPEG).

- ``bitdepth`` (Xu et al., feature squeezing): keep ``bits`` bits per channel,
  x -> round(x * (2^bits - 1)) / (2^bits - 1).
- ``gaussian``: Gaussian blur with ``sigma`` (kernel size 2*ceil(3*sigma)+1), torchvision's
  ``gaussian_blur`` with reflect padding.
- ``resize_pad`` (Xie et al., 2018, "random resizing and padding"): per image, resize to a
  random side r in [H, H + pad), zero-pad at a random offset to H + pad, then resize back to H so
  every victim sees its input size. Randomness comes from the stage's seeded generator.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from . import REVERSIONS, TransformConfig


class BitDepthConfig(TransformConfig):
    differentiable: ClassVar[bool] = False  # rounding: zero gradient almost everywhere
    method: Literal["bitdepth"] = "bitdepth"
    bits: int = Field(4, ge=1, le=8)


class GaussianConfig(TransformConfig):
    method: Literal["gaussian"] = "gaussian"
    sigma: float = Field(1.0, gt=0, le=10)


class ResizePadConfig(TransformConfig):
    randomized: ClassVar[bool] = True
    method: Literal["resize_pad"] = "resize_pad"
    pad: int = Field(4, ge=1, le=256, description="largest extra side in pixels (32 -> up to 36 on CIFAR-10)")


def bitdepth(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # the window must fit the image (odd)
    return gaussian_blur(x, [k, k], [sigma, sigma]).clamp(0, 1)


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


@REVERSIONS.register("bitdepth", BitDepthConfig)
def run_bitdepth(x_r: torch.Tensor, *, cfg: BitDepthConfig, **_: Any) -> torch.Tensor:
    return bitdepth(x_r, cfg.bits)


@REVERSIONS.register("gaussian", GaussianConfig)
def run_gaussian(x_r: torch.Tensor, *, cfg: GaussianConfig, **_: Any) -> torch.Tensor:
    return gaussian(x_r, cfg.sigma)


@REVERSIONS.register("resize_pad", ResizePadConfig)
def run_resize_pad(x_r: torch.Tensor, *, cfg: ResizePadConfig, generator: torch.Generator, **_: Any) -> torch.Tensor:
    return resize_pad(x_r, cfg.pad, generator)
