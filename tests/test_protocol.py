"""Fast Preemption's evaluation protocol for reversions (Sec. 4.3) and MSPD's Table XI columns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import Linear
from preempt import metrics
from preempt.attacks import ATTACKS
from preempt.defenses import DEFENSES, MislabelConfig, labels, run
from preempt.defenses.mcgs import MCGSConfig
from preempt.runtime import generator


def test_mislabel_shifts_pick_exactly_the_fraction_with_other_classes() -> None:
    m = MislabelConfig(fraction=0.3, seed=4)
    s = m.shifts(1000, 10)
    assert int((s != 0).sum()) == 300
    assert s.min() >= 0 and s.max() <= 9
    assert len(set(s[s != 0].tolist())) == 9  # every other class can be drawn
    assert torch.equal(s, m.shifts(1000, 10))  # a function of the seed only: shards slice the same draw
    assert not torch.equal(s, MislabelConfig(fraction=0.3, seed=5).shifts(1000, 10))
    nxt = MislabelConfig(fraction=0.5, pick="next").shifts(10, 3)
    assert set(nxt.tolist()) == {0, 1} and int(nxt.sum()) == 5


def test_labels_are_shifted_only_where_asked() -> None:
    model = Linear(0)
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    shift = torch.zeros(20, dtype=torch.long)
    shift[:5] = torch.arange(1, 6)
    got = labels(x, "classifier", {"classifier": model, "backbone": model}, None, shift)
    assert torch.equal(got[5:], y[5:])
    assert torch.equal(got[:5], (y[:5] + shift[:5]) % 10) and (got[:5] != y[:5]).all()
    truth = torch.arange(20) % 10
    got = labels(x, "ground_truth", {"classifier": model, "backbone": model}, truth, shift)
    assert torch.equal(got, (truth + shift) % 10)


@pytest.mark.parametrize("fraction", [0.2, 0.5])
def test_mislabel_lowers_the_REs_accuracy_by_about_the_fraction(fraction: float) -> None:
    """The defining behaviour: the defense protects the wrong labels, so the victim (here the
    backbone itself) loses about ``fraction`` of its accuracy on the REs, and none without it."""
    model = Linear(3)
    n = 200
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = metrics.predict(model, x)  # the victim is right on every original image
    models = {"classifier": model, "backbone": model}
    base = MCGSConfig(classifier="c", backbone="b", eps=0.5, n_samples=4)
    mis = base.model_copy(update={"mislabel": MislabelConfig(fraction=fraction, seed=0)})
    shift = mis.mislabel.shifts(n, 10)
    x_r = run(mis, x, models=models, y_true=y, generator=generator(0), label_shift=shift)
    acc_re = metrics.accuracy(metrics.predict(model, x_r), y)
    assert 100 * (1 - fraction) - 5 <= acc_re <= 100 * (1 - fraction) + 1e-3
    assert metrics.accuracy(metrics.predict(model, run(base, x, models=models, y_true=y, generator=generator(0))), y) == 100


def test_recovery_share() -> None:
    assert metrics.recovery(90, 80, 90) == 1
    assert metrics.recovery(90, 80, 85) == 0.5
    assert metrics.recovery(90, 80, 70) == -1  # distortion: further down
    assert math.isnan(metrics.recovery(90, 90, 85))


def test_gradient_similarity() -> None:
    a, b = Linear(0), Linear(1)
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.arange(7)
    assert torch.allclose(metrics.gradient_similarity(a, a, x, y, batch_size=3), torch.ones(7), atol=1e-5)

    class Neg(nn.Module):  # logits of the other model reversed: CE gradient direction changes
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return 2 * a(z)

    sim_ab = metrics.gradient_similarity(a, b, x, y)
    assert sim_ab.shape == (7,) and (sim_ab.abs() <= 1 + 1e-6).all() and sim_ab.mean() < 0.9
    assert (metrics.gradient_similarity(a, Neg(), x, y) > 0.5).all()  # same direction, other scale


def test_cross_entropy_per_image() -> None:
    a = Linear(0)
    x = torch.rand(5, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4])
    ce = metrics.cross_entropy(a, x, y, batch_size=2)
    assert torch.allclose(ce, nn.functional.cross_entropy(a(x), y, reduction="none"))


def test_none_attack_returns_the_input() -> None:
    entry = ATTACKS["none"]
    x = torch.rand(3, 1, 8, 8)
    out = entry.fn(Linear(0), x, torch.zeros(3, dtype=torch.long), cfg=entry.config(), generator=generator(0))
    assert torch.equal(out, x) and out is not x
    assert entry.config().ref() == "none"


def test_every_defense_takes_the_label_shift() -> None:
    """The uniform signature: every registered defense accepts ``label_shift``."""
    import inspect

    for name in DEFENSES.names():
        params = inspect.signature(DEFENSES[name].fn).parameters
        assert "label_shift" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()), name


def _reflect(cfg: MCGSConfig, x_r: torch.Tensor, models: dict, shift: torch.Tensor | None) -> torch.Tensor:
    """Preemptive reversion (Fast Preemption Eq. 13) with the given models and label shift."""
    x_def = run(cfg, x_r, models=models, y_true=None, generator=generator(1), label_shift=shift)
    return (x_r - (x_def - x_r)).clamp(0, 1)


def _labeller(mix: float) -> Linear:
    """The victim's linear map plus ``mix`` times another: a labeller that agrees with it on most
    images (mix 0.2: 84%) or on fewer (mix 0.6: 64%, a weaker labeller), distinct from the backbone."""
    m = Linear(3)
    m.w.data += mix * Linear(4).w.data
    return m


@pytest.mark.parametrize("variant", ["weak_labeller", "synthetic"])
def test_white_box_reversion_restores_broken_images_and_black_box_less(variant: str) -> None:
    """The protocol on a tiny model: the defense protects wrong labels (a weaker labeller's
    errors, or shifted ones), breaking images; the white-box attacker, re-running it with the
    defender's labeller (and shift), restores a measurable share of them; a black-box attacker with
    its own backbone and labels restores fewer."""
    victim = Linear(3)
    n = 300
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = metrics.predict(victim, x)  # the victim is right on every original image
    mislabel = (MislabelConfig(variant="weak_labeller") if variant == "weak_labeller"
                else MislabelConfig(fraction=0.3, seed=0))
    labeller = _labeller(0.6 if variant == "weak_labeller" else 0.2)
    cfg = MCGSConfig(classifier="c", backbone="b", eps=0.05, n_samples=4, mislabel=mislabel)
    shift = mislabel.shifts(n, 10)
    defender = {"classifier": labeller, "backbone": victim}
    x_r = run(cfg, x, models=defender, y_true=None, generator=generator(0), label_shift=shift)
    broken = metrics.predict(victim, x_r) != y
    assert broken.sum() >= 30  # the drop is clearly non-zero
    white = metrics.predict(victim, _reflect(cfg, x_r, defender, shift)) == y
    other = Linear(5)
    black = metrics.predict(victim, _reflect(cfg, x_r, {"classifier": other, "backbone": other}, None)) == y
    restored_white, restored_black = int(white[broken].sum()), int(black[broken].sum())
    assert restored_white >= int(broken.sum()) / 3, (restored_white, int(broken.sum()))
    assert restored_white > restored_black + 10, (restored_white, restored_black)
    if variant == "synthetic":  # without the shift, the re-run on a shifted image the RE did not break
        # protects the true label, and the reflection pushes away from it: lower accuracy overall
        blind = metrics.predict(victim, _reflect(cfg, x_r, defender, None)) == y
        assert int(blind.sum()) < int(white.sum()), (int(blind.sum()), int(white.sum()))


def test_the_weak_labeller_variant_has_no_shift_and_its_own_ref() -> None:
    weak = MCGSConfig(classifier="c", backbone="b", eps=0.1, mislabel=MislabelConfig(variant="weak_labeller"))
    assert weak.mislabel is not None and weak.mislabel.shifts(100, 10) is None
    assert weak.ref().endswith("+mislabel-weak")
    assert MCGSConfig(classifier="c", backbone="b", eps=0.1, mislabel=MislabelConfig(fraction=0.5)).ref().endswith("+mislabel0.5")
    with pytest.raises(ValueError, match="needs fraction"):
        MislabelConfig()
    with pytest.raises(ValueError, match="drop fraction"):
        MislabelConfig(variant="weak_labeller", fraction=0.2)
