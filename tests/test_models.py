"""Architectures, training recipes and the [0,1] wrapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preempt.data import DATASETS
from preempt.errors import PreemptError
from preempt.models import ARCHS, Normalized
from preempt.models.recipes import RECIPES
from preempt.metrics import accuracy, predict
from preempt.models import ImageSpec
from preempt.models.train import TrainConfig, fit
from preempt.runtime import generator

AKAMASTER = Path(__file__).resolve().parents[2] / "shared" / "weights" / "akamaster-resnet-cifar10"


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet8", "resnet20"])
def test_architectures_map_images_to_logits(arch: str) -> None:
    net = ARCHS[arch].fn((1, 8, 8), 10)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_wrn34_10_is_robustbenchs_wide_resnet_at_moon_et_als_size() -> None:
    """Moon et al.'s CIFAR-10 victims (config/moon-cifar10.yaml): WRN-34-10, 46.2M parameters."""
    net = ARCHS["wrn34_10"].fn((3, 32, 32), 10)
    assert type(net).__module__ == "robustbench.model_zoo.architectures.wide_resnet"
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 46.2
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="3-channel"):
        ARCHS["wrn34_10"].fn((1, 8, 8), 10)


@pytest.mark.skipif(not AKAMASTER.is_dir(), reason="offline akamaster weights not present")
def test_resnet20_matches_the_akamaster_checkpoint_keys() -> None:
    ckpt = torch.load(AKAMASTER / "akamaster_resnet20-12fca82f.th", map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    net = ARCHS["resnet20"].fn((3, 32, 32), 10)
    net.load_state_dict(state)  # strict: every name and shape must match


def test_normalized_wrapper_normalizes_inside() -> None:
    inner = torch.nn.Identity()
    model = Normalized(inner, (0.5,), (0.25,))
    assert torch.allclose(model(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize("method,extra", [("pgd_at", {"eps": 0.1, "steps": 3}), ("fgsm_at", {"eps": 0.1})])
def test_adversarial_recipes_stay_in_budget(method: str, extra: dict, linear, images) -> None:
    entry = RECIPES[method]
    cfg = entry.config.model_validate({"method": method, **extra})
    y = linear(images).argmax(1)
    x_adv = entry.fn(linear, images, y, cfg=cfg, generator=generator(0))
    assert (x_adv - images).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(linear(x_adv), y) > loss(linear(images), y)


def test_a_diverging_training_stops_with_one_line_at_the_step_it_diverges() -> None:
    ds = DATASETS["digits"]
    train = ds.fn(ds.config(name="digits"), "train")
    spec = ImageSpec(tuple(train.x.shape[1:]), 10, train.mean, train.std)
    x = train.x[:64] * 1e30  # activations overflow: inf loss, NaN gradients on the first step
    with pytest.raises(PreemptError, match=r"train digits-mlp: training diverged at epoch 1, batch 1 .*lower its lr"):
        fit(TrainConfig(arch="mlp", epochs=1), x, train.y[:64], spec, torch.device("cpu"), desc="train digits-mlp")


def test_training_learns_the_digits() -> None:
    ds = DATASETS["digits"]
    cfg_ds = ds.config(name="digits")
    train, test = ds.fn(cfg_ds, "train"), ds.fn(cfg_ds, "test")
    spec = ImageSpec(tuple(train.x.shape[1:]), 10, train.mean, train.std)
    cfg = TrainConfig(arch="mlp", epochs=3)
    model = fit(cfg, train.x, train.y, spec, torch.device("cpu"))
    assert accuracy(predict(model, test.x), test.y) > 85.0
