"""JPEG compression of the robust example (Pillow's libjpeg), a classic input transform.

Pillow rather than torchvision.io: torchvision 0.29 deprecated its image codecs."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from . import REVERSIONS, TransformConfig


class JPEGConfig(TransformConfig):
    differentiable: ClassVar[bool] = False  # libjpeg outside autograd: attacked through BPDA
    method: Literal["jpeg"] = "jpeg"
    quality: int = Field(75, ge=1, le=100)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip every image through JPEG at ``quality`` (uint8 quantisation included)."""
    import io

    import numpy as np
    from PIL import Image

    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in u8:
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=quality)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out.append(dec.reshape(img.shape))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


@REVERSIONS.register("jpeg", JPEGConfig)
def run(x_r: torch.Tensor, *, cfg: JPEGConfig, **_: Any) -> torch.Tensor:
    return jpeg(x_r, cfg.quality)
