"""Attacks and reversions keep their budgets and do what their names say."""

from __future__ import annotations

import torch
from torch import nn

from preempt.attacks import ATTACKS, project, uniform_ball
from preempt.attacks.autoattack import AutoAttackConfig
from preempt.attacks.pgd import PGDConfig
from preempt.reversions import REVERSIONS
from preempt.reversions.jpeg import JPEGConfig
from preempt.runtime import generator


def acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def test_projection_linf_and_l2() -> None:
    c = torch.full((4, 1, 8, 8), 0.5)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert ((project(x, c, 0.1, "Linf") - c).abs() <= 0.1 + 1e-7).all()
    assert ((project(x, c, 0.3, "L2") - c).flatten(1).norm(dim=1) <= 0.3 + 1e-6).all()


def test_uniform_ball_is_inside_the_ball() -> None:
    g = generator(0)
    assert (uniform_ball(torch.Size([8, 1, 8, 8]), 0.2, "Linf", g).abs() <= 0.2).all()
    assert (uniform_ball(torch.Size([8, 1, 8, 8]), 0.2, "L2", g).flatten(1).norm(dim=1) <= 0.2 + 1e-6).all()


def test_pgd_stays_in_budget_and_fools_the_model(linear, images) -> None:
    y = linear(images).argmax(1)
    cfg = PGDConfig(eps=0.3, steps=20)
    adv = ATTACKS["pgd"].fn(linear, images, y, cfg=cfg, generator=generator(0))
    assert ((adv - images).abs().amax() <= 0.3 + 1e-6)
    assert adv.min() >= 0 and adv.max() <= 1
    assert acc(linear, adv, y) < acc(linear, images, y)


def test_autoattack_runs_pyautoattack_within_budget(linear, images) -> None:
    y = linear(images).argmax(1)
    cfg = AutoAttackConfig(eps=0.3, attacks=["apgd-ce"], n_iter=10)
    adv = ATTACKS["autoattack"].fn(linear, images, y, cfg=cfg, generator=generator(0))
    assert adv.shape == images.shape
    assert (adv - images).abs().amax() <= 0.3 + 1e-5
    assert acc(linear, adv, y) < 1.0


def test_autoattack_n_ex_limits_the_images(linear, images) -> None:
    y = linear(images).argmax(1)
    cfg = AutoAttackConfig(eps=0.1, attacks=["apgd-ce"], n_iter=5, n_ex=5)
    assert ATTACKS["autoattack"].fn(linear, images, y, cfg=cfg, generator=generator(0)).shape[0] == 5


def test_jpeg_reversion_changes_images_within_range(images) -> None:
    out = REVERSIONS["jpeg"].fn(images, cfg=JPEGConfig(quality=50), redefend=None, generator=None)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)


def test_none_reversion_is_identity(images) -> None:
    assert torch.equal(REVERSIONS["none"].fn(images), images)


def test_pgd_with_the_cw_loss_ascends_the_margin_inside_the_budget(linear, images) -> None:
    from preempt.attacks.pgd import pgd

    y = linear(images).argmax(1)

    def margin(x: torch.Tensor) -> torch.Tensor:
        z = linear(x)
        other = z.masked_fill(torch.nn.functional.one_hot(y, 10).bool(), float("-inf")).amax(1)
        return other - z.gather(1, y[:, None]).squeeze(1)

    adv = pgd(linear, images, y, eps=0.05, alpha=0.01, steps=10, loss="cw", generator=torch.Generator().manual_seed(0))
    assert (adv - images).abs().max() <= 0.05 + 1e-6
    assert (margin(adv) > margin(images)).all()


def test_ifgsm_family_stays_in_budget_and_differs_as_designed(linear, images) -> None:
    from preempt.attacks.ifgsm import diverse

    y = linear(images).argmax(1)
    out = {}
    for name in ("ifgsm", "mifgsm", "difgsm"):
        e = ATTACKS[name]
        adv = e.fn(linear, images, y, cfg=e.config(eps=0.05, steps=10), generator=generator(0))
        assert (adv - images).abs().max() <= 0.05 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert acc(linear, adv, y) < acc(linear, images, y)
        out[name] = adv
    assert ATTACKS["mifgsm"].config(eps=0.1).momentum == 1.0 and ATTACKS["difgsm"].config(eps=0.1).diversity_prob == 0.5
    # I-FGSM has no randomness; DI's input diversity is the only difference between DI and I
    again = ATTACKS["ifgsm"].fn(linear, images, y, cfg=ATTACKS["ifgsm"].config(eps=0.05, steps=10), generator=generator(9))
    assert torch.equal(again, out["ifgsm"])
    di0 = ATTACKS["difgsm"].fn(linear, images, y, cfg=ATTACKS["difgsm"].config(eps=0.05, steps=10, diversity_prob=0.0),
                               generator=generator(0))
    assert torch.equal(di0, out["ifgsm"]) and not torch.equal(out["difgsm"], out["ifgsm"])
    assert torch.equal(diverse(images, 0.0, 1.1, generator(0)), images)
    assert not torch.equal(diverse(images, 1.0, 1.5, generator(0)), images)


def test_cw_l2_is_bounded_by_its_radius_and_stronger_with_a_larger_one(linear, images) -> None:
    y = linear(images).argmax(1)
    e = ATTACKS["cw"]
    accs = []
    for eps in (0.1, 0.5, 2.0):
        adv = e.fn(linear, images, y, cfg=e.config(eps=eps, steps=50, binary_search_steps=4), generator=generator(0))
        assert (adv - images).flatten(1).norm(dim=1).max() <= eps + 1e-4
        accs.append(acc(linear, adv, y))
    assert accs[0] >= accs[1] >= accs[2] and accs[2] < 0.5 < accs[0]


def test_attack_entries_take_surrogates_bpda_and_threat_eps() -> None:
    from preempt.registry import model_refs

    cfg = ATTACKS["mifgsm"].config(eps=0.1, surrogates=["a", "b"], bpda=True, threat_eps=0.1)
    assert model_refs(cfg) == ["a", "b"]  # surrogates are DAG dependencies of the attack stage
