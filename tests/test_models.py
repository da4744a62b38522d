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


@pytest.mark.parametrize("method,extra", [("pgd_at", {"eps": 0.1, "steps": 3}), ("fgsm_at", {"eps": 0.1}),
                                          ("trades", {"eps": 0.1, "steps": 3, "alpha": 0.04}),
                                          ("mart", {"eps": 0.1, "steps": 3, "alpha": 0.04})])
def test_adversarial_recipes_stay_in_budget(method: str, extra: dict, linear, images) -> None:
    entry = RECIPES[method]
    cfg = entry.config.model_validate({"method": method, **extra})
    y = linear(images).argmax(1)
    x_adv = entry.fn(linear, images, y, cfg=cfg, generator=generator(0))
    assert (x_adv - images).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(linear(x_adv), y) > loss(linear(images), y)


def test_trades_and_mart_train_on_the_clean_and_the_adversarial_example_together(linear, images) -> None:
    """TRADES: CE(f(x)) + beta KL(f(x) || f(x')); MART: mean of BCE(f(x')) + beta KL * (1 - f_y(x)).
    Checked against the formulas written out here, and: x' = x leaves TRADES's plain CE."""
    F = torch.nn.functional
    y = torch.arange(16) % 10
    x_adv = (images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    logits, logits_adv = linear(images), linear(x_adv)
    p, p_adv = logits.softmax(1), logits_adv.softmax(1)
    kl = (p * (p.log() - p_adv.log())).sum(1)
    trades = RECIPES["trades"].config.model_validate({"method": "trades", "eps": 0.1})
    assert torch.allclose(trades.loss(linear, images, x_adv, y), F.cross_entropy(logits, y) + 6.0 * kl.mean(), atol=1e-5)
    assert torch.allclose(trades.loss(linear, images, images, y), F.cross_entropy(logits, y), atol=1e-6)
    mart = RECIPES["mart"].config.model_validate({"method": "mart", "eps": 0.1, "beta": 2.0})
    runner_up = p_adv.masked_fill(F.one_hot(y, 10).bool(), -1).amax(1)
    bce = -p_adv.gather(1, y[:, None]).squeeze(1).log() - (1 - runner_up).log()
    want = (bce + 2.0 * kl * (1 - p.gather(1, y[:, None]).squeeze(1))).mean()
    assert torch.allclose(mart.loss(linear, images, x_adv, y), want, atol=1e-4)
    assert RECIPES["trades"].config.own_loss() and not RECIPES["pgd_at"].config.own_loss()


def test_a_source_with_its_own_loss_refuses_a_recipe_with_its_own_loss() -> None:
    from preempt.errors import ConfigError
    spec = ImageSpec((1, 8, 8), 10, (0.5,), (0.25,))
    cfg = TrainConfig(arch="mlp", epochs=1, recipe={"method": "trades", "eps": 0.1})
    with pytest.raises(ConfigError, match="trains on a loss of its own"):
        fit(cfg, torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), spec, torch.device("cpu"),
            loss_fn=lambda m, x, y: m(x).sum())


def test_random_crop_takes_a_window_of_the_zero_padded_image() -> None:
    from preempt.models.train import random_crop
    x = torch.rand(64, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    out = random_crop(x, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(64):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 6])]
        assert hits, f"image {i} is no window of its padded copy"
        offsets.update(hits)
    assert len(offsets) > 10  # offsets are drawn, not fixed
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_lr_milestones_divide_the_step_size_after_those_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ImageSpec((1, 8, 8), 10, (0.5,), (0.25,))
    cfg = TrainConfig(arch="mlp", epochs=4, batch_size=8, optimizer="sgd", lr=0.1, lr_schedule="multistep",
                      lr_milestones=[1, 3])
    net = Normalized(ARCHS["mlp"].fn((1, 8, 8), 10), (0.5,), (0.25,))
    opt_lrs = []
    orig = torch.optim.SGD.step

    def step(self, *a, **k):  # the lr each update ran with
        opt_lrs.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    fit(cfg, torch.rand(16, 1, 8, 8), torch.arange(16) % 10, spec, torch.device("cpu"), model=net)
    assert [round(v, 6) for v in opt_lrs] == [0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001]


@pytest.mark.parametrize("arch,millions", [("resnet18", 11.2), ("resnet50", 23.5)])
def test_cifar_resnet18_and_50_are_robustbenchs(arch: str, millions: float) -> None:
    """JATP's targets and Trigger Activation's RN-18/RN-50: RobustBench's CIFAR ResNets."""
    net = ARCHS[arch].fn((3, 32, 32), 10)
    assert type(net).__module__ == "robustbench.model_zoo.architectures.resnet"
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == millions
    assert net.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="3x32x32"):
        ARCHS[arch].fn((1, 8, 8), 10)


@pytest.mark.parametrize("arch,millions", [("vgg19", 20.0), ("mobilenet_v2", 2.2), ("densenet121", 7.0)])
def test_trigger_activations_other_cifar_architectures_are_torchvisions(arch: str, millions: float) -> None:
    """Trigger Activation's VGG-19, MobileNet-V2 and DenseNet-121: torchvision's networks in their
    CIFAR form (their sizes), so a 32x32 image still has spatial extent before the pooling (no
    ImageNet stem that would shrink it to 1x1)."""
    net = ARCHS[arch].fn((3, 32, 32), 10).eval()
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == millions
    seen: list[int] = []
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    last.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert seen[0] >= 2, f"{arch}: the last convolution sees {seen[0]}x{seen[0]}"
    with pytest.raises(ValueError, match="3-channel images of at least 32x32"):
        ARCHS[arch].fn((1, 8, 8), 10)


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


def test_a_moved_jatp_denoiser_names_the_target_that_trained_it() -> None:
    """JATP's Table 2 moves the P trained against TRADES in front of other targets: the ref says so,
    so its published numbers cannot match a P trained against the new target itself."""
    from preempt import config
    p = config.load(Path(__file__).resolve().parents[1] / "config" / "jatp-cifar10.yaml")
    assert p.models["jatp_trades"].ref(p.models) == "jatp(train/resnet18/trades)"
    assert p.models["jatp_on_mart"].ref(p.models) == "jatp[from train/resnet18/trades](train/resnet18/mart)"
