"""Input-transform reversions: each does what its name says, in [0, 1], shape-preserving."""

from __future__ import annotations

import torch

from preempt.reversions import REVERSIONS
from preempt.reversions.transforms import bitdepth, gaussian, resize_pad
from preempt.runtime import generator


def test_bitdepth_keeps_2_to_the_bits_levels() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = bitdepth(x, 2)
    levels = torch.unique(y) * 3
    assert len(levels) <= 4 and torch.allclose(levels, torch.round(levels), atol=1e-5)
    assert (y - x).abs().max() <= 1 / 6 + 1e-6  # rounding to the nearest level
    assert torch.equal(bitdepth(x, 8), torch.round(x * 255) / 255)


def test_gaussian_blur_smooths_and_keeps_the_mean() -> None:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = gaussian(x, 1.0)

    def roughness(z: torch.Tensor) -> float:
        return float((z[..., 1:, :] - z[..., :-1, :]).abs().mean() + (z[..., 1:] - z[..., :-1]).abs().mean())

    assert y.shape == x.shape and roughness(y) < 0.5 * roughness(x)
    assert abs(float(y.mean() - x.mean())) < 0.01
    assert gaussian(torch.rand(1, 1, 8, 8), 3.0).shape == (1, 1, 8, 8)  # window capped to the image


def test_resize_pad_is_random_seeded_and_shape_preserving() -> None:
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = resize_pad(x, 4, generator(1)), resize_pad(x, 4, generator(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, resize_pad(x, 4, generator(2)))
    assert not torch.allclose(a, x, atol=1e-3)


def test_transforms_are_registered_reversions() -> None:
    for name, extra in (("bitdepth", {"bits": 3}), ("gaussian", {"sigma": 0.5}), ("resize_pad", {"pad": 2})):
        entry = REVERSIONS[name]
        cfg = entry.config.model_validate({"method": name, **extra})
        x = torch.rand(2, 1, 8, 8)
        assert entry.fn(x, cfg=cfg, redefend=None, generator=generator(0)).shape == x.shape
