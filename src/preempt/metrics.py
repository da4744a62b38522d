"""Per-cell metrics: accuracy, SSIM, LPIPS, Lp distances (library implementations where they exist)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .attacks import input_grad

_LPIPS_WEIGHTS = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"),
                  "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((pred == y).float().mean()) if len(y) else float("nan")


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-image cross-entropy of ``model`` on (x, y): MSPD's Table XI robustness proxy."""
    with torch.inference_mode():
        return torch.cat([nn.functional.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size], reduction="none")
                          for i in range(0, len(x), batch_size)])


def gradient_similarity(a: nn.Module, b: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        batch_size: int = 100) -> torch.Tensor:
    """Per-image cosine similarity of the two models' input gradients of the cross-entropy at
    (x, y): MSPD's gradient alignment (Lemma 1, Table XI), taken at the clean image with its true
    label, gradients flattened per image. A model compared with itself gives 1."""
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        ga, gb = (input_grad(model, xb, yb).flatten(1) for model in (a, b))
        out.append(nn.functional.cosine_similarity(ga, gb, dim=1, eps=1e-12))
    return torch.cat(out) if out else x.new_zeros(0)


def recovery(original: float, defended: float, reverted: float) -> float:
    """Share of the defense's accuracy change that a reversion undoes (Fast Preemption, Sec. 4.3):
    1 = back to the original accuracy, 0 = no change, < 0 = further away (under the mislabel
    protocol, where the defense lowered accuracy: distortion, not reversion). NaN when the
    defense did not change the accuracy."""
    if original == defended:
        return float("nan")
    return (reverted - defended) / (original - defended)


def distances(x: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Mean per-image Linf and L2 distance of ``x`` to ``ref`` (pixel scale [0, 1])."""
    d = (x - ref).flatten(1)
    return {"linf": float(d.abs().amax(1).mean()), "l2": float(d.norm(dim=1).mean())}


def ssim(x: torch.Tensor, ref: torch.Tensor, kernel_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (torchmetrics); the Gaussian window is capped at the image side (odd)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(x.shape[-2:])
    k = min(kernel_size, side if side % 2 else side - 1)
    value = structural_similarity_index_measure(x.float(), ref.float(), data_range=1.0, kernel_size=k, sigma=sigma)
    assert isinstance(value, torch.Tensor)  # a tuple only with return_full_image/return_contrast_sensitivity
    return float(value)


def lpips_weights_file(net: str) -> Path:
    import torchvision.models as tvm

    weights = getattr(tvm, _LPIPS_WEIGHTS[net][1]).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def lpips(x: torch.Tensor, ref: torch.Tensor, net: Literal["alex", "vgg", "squeeze"] = "alex") -> tuple[float | None, str]:
    """LPIPS (torchmetrics) when the ImageNet backbone weights are on disk; else (None, why).

    torchmetrics ships LPIPS' linear heads but the backbone comes from torchvision's download,
    which offline machines do not have: we never trigger that download from a stage.
    """
    weights = lpips_weights_file(net)
    if not weights.is_file():
        return None, f"LPIPS needs torchvision's {net} ImageNet weights at {weights}; absent (offline)"
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
    a, b = x.float(), ref.float()
    if a.shape[1] == 1:
        a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
    if min(a.shape[-2:]) < 32:  # the backbones need some spatial extent
        a = nn.functional.interpolate(a, size=32, mode="bilinear", align_corners=False)
        b = nn.functional.interpolate(b, size=32, mode="bilinear", align_corners=False)
    return float(metric(a, b)), ""
