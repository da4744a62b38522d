"""MCGS (Fast Preemption / MSPD) and preemptive reversion: the behaviour the papers rely on."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from conftest import Linear
from preempt.defenses import mcgs as M
from preempt.reversions.preemptive import PreemptiveConfig, preemptive
from preempt.runtime import ImageStreams, generator


def cfg(**kw) -> M.MCGSConfig:
    base = dict(classifier="c", backbone="b", eps=0.1, n_samples=8, schedule="F1B1")
    return M.MCGSConfig(**{**base, **kw})


def ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(nn.functional.cross_entropy(model(x), y))


def test_parse_schedule() -> None:
    assert M.parse_schedule("F1B1") == [1, -1]
    assert M.parse_schedule("F1B2") == [1, -1, -1]
    assert M.parse_schedule("F0B3") == [-1, -1, -1]
    assert M.parse_schedule("F2B0") == [1, 1]
    for bad in ("", "F", "B1F", "X1", "F0B0", "f1b1", "F1 B1"):
        with pytest.raises(ValueError):
            M.parse_schedule(bad)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 0.5), eta=st.floats(0.1, 2.0),
       schedule=st.sampled_from(["F1B1", "F1B2", "F0B3", "F2B0", "F1B1F1B1"]),
       norm=st.sampled_from(["Linf", "L2"]))
def test_res_stay_in_eps_ball_and_box(seed: int, eps: float, eta: float, schedule: str, norm: str) -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(6) % 10
    c = cfg(eps=eps, eta=eta, schedule=schedule, norm=norm, n_samples=4)
    xr = M.cascade(x, y, Linear(seed), c, generator(seed))
    assert xr.min() >= 0 and xr.max() <= 1
    d = (xr - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()


def test_fixed_seed_gives_bit_identical_res(linear: nn.Module, images: torch.Tensor) -> None:
    y = torch.arange(16) % 10
    a = M.cascade(images, y, linear, cfg(seed=3), generator(3))
    b = M.cascade(images, y, linear, cfg(seed=3), generator(3))
    c = M.cascade(images, y, linear, cfg(seed=4), generator(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_chunking_does_not_change_the_result(linear: nn.Module, images: torch.Tensor) -> None:
    y = torch.arange(16) % 10
    a = M.cascade(images, y, linear, cfg(chunk_size=10_000), generator(0))
    b = M.cascade(images, y, linear, cfg(chunk_size=7), generator(0))
    assert torch.allclose(a, b, atol=1e-6)


def test_per_image_streams_make_res_independent_of_the_batch_size(linear: nn.Module, images: torch.Tensor) -> None:
    """The defend stage's batch size is a speed knob: with one stream per image, batches of 16, 5
    and 1 (the per-image loop) give the same REs (up to the kernels' float batch dependence)."""
    y = torch.arange(16) % 10

    def batched(bs: int) -> torch.Tensor:
        return torch.cat([M.cascade(images[i:i + bs], y[i:i + bs], linear, cfg(), generator(0), ImageStreams(0, range(i, min(i + bs, 16))))
                          for i in range(0, 16, bs)])

    whole = batched(16)
    for bs in (5, 1):
        assert torch.allclose(whole, batched(bs), atol=1e-6)
    # the streams are what makes it so: one batch generator gives each batch size other starts
    per_batch = torch.cat([M.cascade(images[i:i + 5], y[i:i + 5], linear, cfg(), generator(0)) for i in range(0, 16, 5)])
    assert not torch.allclose(whole, per_batch, atol=1e-3)
    # and an image's stream is its own: another seed, other REs
    assert not torch.allclose(whole, M.cascade(images, y, linear, cfg(), generator(0), ImageStreams(1, range(16))), atol=1e-3)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), schedule=st.sampled_from(["F1B0", "F2B0", "F0B1", "F1B1"]))
def test_steps_lower_the_backbone_loss(seed: int, schedule: str) -> None:
    model = Linear(seed)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    y = model(x).argmax(1)
    xr = M.cascade(x, y, model, cfg(schedule=schedule, eps=0.05, n_samples=16), generator(seed))
    assert ce(model, xr, y) < ce(model, x, y)


def test_more_forward_steps_lower_the_loss_further(linear: nn.Module, images: torch.Tensor) -> None:
    y = linear(images).argmax(1)
    one = M.cascade(images, y, linear, cfg(schedule="F1B0", eta=0.5), generator(0))
    three = M.cascade(images, y, linear, cfg(schedule="F3B0", eta=0.5), generator(0))
    assert ce(linear, three, y) < ce(linear, one, y) < ce(linear, images, y)


def test_white_box_reversion_moves_res_back_toward_originals(linear: nn.Module, images: torch.Tensor) -> None:
    c = cfg(n_samples=16)
    models = {"classifier": linear, "backbone": linear}
    xr = M.mcgs(images, cfg=c, models=models, y_true=None, generator=generator(0))

    def redefend(x: torch.Tensor, roles: dict[str, str]) -> torch.Tensor:
        assert roles == {"backbone": "b", "classifier": "c"}
        return M.mcgs(x, cfg=c, models=models, y_true=None, generator=generator(1))

    xt = preemptive(xr, cfg=PreemptiveConfig(backbone="b", classifier="c"), redefend=redefend)
    before = (xr - images).flatten(1).norm(dim=1).mean()
    after = (xt - images).flatten(1).norm(dim=1).mean()
    assert after < 0.5 * before
    assert xt.min() >= 0 and xt.max() <= 1


def test_labels_come_from_the_classifier_not_the_truth(images: torch.Tensor) -> None:
    clf, bb = Linear(0), Linear(1)
    truth = (clf(images).argmax(1) + 1) % 10  # deliberately wrong "ground truth"
    c = cfg(eps=0.05)
    a = M.mcgs(images, cfg=c, models={"classifier": clf, "backbone": bb}, y_true=truth, generator=generator(0))
    b = M.cascade(images, clf(images).argmax(1), bb, c, generator(0))
    assert torch.equal(a, b)
    gt = M.mcgs(images, cfg=cfg(eps=0.05, label_source="ground_truth"), models={"classifier": clf, "backbone": bb},
                y_true=truth, generator=generator(0))
    assert torch.equal(gt, M.cascade(images, truth, bb, c, generator(0)))


def test_ablation_schedules_of_fast_preemption_parse() -> None:
    """F100-B0, F0-B100, F10-B90, Alternate, F1-B2, F0-B3 (Fast Preemption's ablation)."""
    assert M.parse_schedule("F100") == [1] * 100
    assert M.parse_schedule("B100") == [-1] * 100
    assert M.parse_schedule("F10B90") == [1] * 10 + [-1] * 90
    assert M.parse_schedule("(F1B1)x50") == [1, -1] * 50
    assert M.parse_schedule("F1(F1B2)x2") == [1, 1, -1, -1, 1, -1, -1]
    for bad in ("(F1B1)", "(F1B1)x", "(X1)x2", "(F1B1)x50000"):
        with pytest.raises(ValueError):
            M.parse_schedule(bad)


def test_unadv_is_projected_descent_and_reverse_ascends(linear: nn.Module, images: torch.Tensor) -> None:
    """UnAdv (forward only, one start, no random start) lowers the loss step by step; the same
    dynamics reversed (the reconstruction attack) raise it."""
    y = linear(images).argmax(1)
    unadv = cfg(schedule="F10", n_samples=1, random_start=False, alpha=0.025, eta=1.0)
    down = M.cascade(images, y, linear, unadv, generator(0))
    up = M.cascade(images, y, linear, unadv.model_copy(update={"reverse": True}), generator(0))
    assert ce(linear, down, y) < ce(linear, images, y) < ce(linear, up, y)
    # no randomness at all: the same REs whatever the generator
    assert torch.equal(down, M.cascade(images, y, linear, unadv, generator(99)))
