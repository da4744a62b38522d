"""``gaussian``: Gaussian blur of the image, an input transform (a classic purification baseline).

Blur with ``sigma`` and kernel size 2*ceil(3*sigma)+1 (capped to fit the image), torchvision's
``gaussian_blur`` with reflect padding.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field

from . import REVERSIONS, TransformConfig


class GaussianConfig(TransformConfig):
    """Gaussian blur with standard deviation ``sigma`` (pixels)."""

    method: Literal["gaussian"] = "gaussian"
    sigma: float = Field(1.0, gt=0, le=10)


def gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur  # lazily: torchvision takes a while to import

    k = 2 * math.ceil(3 * sigma) + 1
    k = min(k, 2 * ((min(x.shape[-2:]) - 1) // 2) + 1)  # the window must fit the image (odd)
    return gaussian_blur(x, [k, k], [sigma, sigma]).clamp(0, 1)


@REVERSIONS.register("gaussian", GaussianConfig)
def run(x_r: torch.Tensor, *, cfg: GaussianConfig, **_: Any) -> torch.Tensor:
    return gaussian(x_r, cfg.sigma)
