"""Input-transform reversions: each does what its name says, in [0, 1], shape-preserving."""

from __future__ import annotations

import torch

from preempt.reversions import REVERSIONS
from preempt.reversions.bitdepth import bitdepth
from preempt.reversions.gaussian import gaussian
from preempt.reversions.resize_pad import resize_pad
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


def _tiny_ddpm(folder) -> None:
    """A randomly initialised diffusers UNet saved the way google/ddpm-cifar10-32 is (no download)."""
    from diffusers import UNet2DModel

    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=4).save_pretrained(str(folder))


def test_diffpure_purifies_with_a_user_provided_score_model(tmp_path) -> None:
    from preempt.artifacts import sha256
    from preempt.reversions.diffpure import WEIGHTS

    _tiny_ddpm(tmp_path)
    entry = REVERSIONS["diffpure"]
    cfg = entry.config(checkpoint=str(tmp_path), t_star=0.02, sha256=sha256(tmp_path / WEIGHTS))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = entry.fn(x, cfg=cfg, generator=generator(0))
    b = entry.fn(x, cfg=cfg, generator=generator(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, b)  # randomized: attack it with EOT
    assert torch.equal(a, entry.fn(x, cfg=cfg, generator=generator(0)))  # but seeded


def test_diffpure_without_or_with_a_wrong_checkpoint_is_one_clear_line(tmp_path) -> None:
    import pytest

    from preempt.errors import PreemptError

    entry = REVERSIONS["diffpure"]
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(PreemptError, match=r"no score model at .*missing.*huggingface-cli download"):
        entry.fn(x, cfg=entry.config(checkpoint=str(tmp_path / "missing")), generator=generator(0))
    _tiny_ddpm(tmp_path)
    with pytest.raises(PreemptError, match="does not match its sha256"):
        entry.fn(x, cfg=entry.config(checkpoint=str(tmp_path), sha256="0" * 64), generator=generator(0))
