"""Bi-Level (Moon et al. 2022): the RE lowers the loss the inner attacker can reach, in budget."""

from __future__ import annotations

import pytest
import torch

from preempt.defenses import DEFENSES
from preempt.defenses.bilevel import BiLevelConfig, inner_attack, robustify
from preempt.runtime import generator


@pytest.mark.parametrize("norm,eps,lr", [("Linf", 0.1, None), ("L2", 0.5, 0.05)])
def test_bilevel_res_lower_the_inner_attack_loss_within_budget(linear, images, norm, eps, lr) -> None:
    y = linear(images).argmax(1)
    cfg = BiLevelConfig(classifier="c", backbone="b", eps=eps, max_iter=20, inner_steps=5, norm=norm, lr=lr)
    xr = robustify(images, y, linear, cfg, generator(0))
    dist = (xr - images).abs().amax((1, 2, 3)) if norm == "Linf" else (xr - images).flatten(1).norm(dim=1)
    assert (dist <= eps + 1e-5).all() and xr.min() >= 0 and xr.max() <= 1

    def worst_case_loss(z: torch.Tensor) -> float:
        delta = inner_attack(linear, z, y, cfg, generator(123))  # a fresh attacker, other random starts
        return float(torch.nn.functional.cross_entropy(linear((z + delta).clamp(0, 1)), y))

    assert worst_case_loss(xr) < 0.5 * worst_case_loss(images)


def test_bilevel_is_a_registered_defense_with_the_paper_defaults() -> None:
    cfg = DEFENSES["bilevel"].config.model_validate({"method": "bilevel", "classifier": "c", "backbone": "b",
                                                      "eps": 8 / 255})
    assert (cfg.max_iter, cfg.inner_steps, cfg.n_samples, cfg.inner_alpha, cfg.lr) == (100, 20, 1, None, None)


def test_reverse_dynamics_raise_the_worst_case_loss(linear, images) -> None:
    """Moon et al.'s reconstruction runs the same optimisation the other way from x_r."""
    y = linear(images).argmax(1)
    cfg = BiLevelConfig(classifier="c", backbone="b", eps=0.1, max_iter=10, inner_steps=5)
    xr = robustify(images, y, linear, cfg, generator(0))
    rec = robustify(xr, y, linear, cfg.model_copy(update={"reverse": True}), generator(1))

    def worst(z: torch.Tensor) -> float:
        delta = inner_attack(linear, z, y, cfg, generator(5))
        return float(torch.nn.functional.cross_entropy(linear((z + delta).clamp(0, 1)), y))

    assert worst(rec) > 2 * worst(xr)
    assert (rec - xr).abs().max() <= 0.1 + 1e-5


def test_reconstruct_reversion_reruns_the_defense_reversed() -> None:
    from preempt.reversions import REVERSIONS

    calls = []

    def redefend(x, roles, **updates):
        calls.append((roles, updates))
        return x + 0.5

    cfg = REVERSIONS["reconstruct"].config(backbone="surrogate")
    out = REVERSIONS["reconstruct"].fn(torch.full((1, 1, 2, 2), 0.25), cfg=cfg, redefend=redefend, generator=None)
    assert calls == [({"backbone": "surrogate", "classifier": "surrogate"}, {"reverse": True})]
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 0.75))


def test_preemptively_robust_training_inputs_stay_within_both_budgets(linear, images) -> None:
    """Algorithm 2: robustify (eps), then attack from there (eps): at most 2 eps from x."""
    from preempt.models.recipes import RECIPES

    y = linear(images).argmax(1)
    entry = RECIPES["preemptive_at"]
    x_in = entry.fn(linear, images, y, cfg=entry.config(eps=0.05, outer_iters=2, steps=3), generator=generator(0))
    assert (x_in - images).abs().max() <= 0.1 + 1e-5
    assert float(torch.nn.functional.cross_entropy(linear(x_in), y)) > float(torch.nn.functional.cross_entropy(linear(images), y))


def test_bilevel_runs_with_labels_predicted_in_inference_mode(linear, images) -> None:
    """The registered entry labels x with the classifier (inference mode) before autograd runs."""
    entry = DEFENSES["bilevel"]
    cfg = entry.config(classifier="c", backbone="b", eps=0.1, max_iter=2, inner_steps=2)
    xr = entry.fn(images, cfg=cfg, models={"classifier": linear, "backbone": linear}, y_true=None, generator=generator(0))
    assert xr.shape == images.shape


@pytest.mark.parametrize("norm,eps,lr", [("Linf", 0.1, None), ("L2", 0.5, 0.05)])
def test_trace_records_moon_figs_4_and_5_without_changing_the_res(linear, images, norm, eps, lr) -> None:
    """Per image and outer iteration: the update-gradient norm (Fig. 5) and the inner attack's loss;
    after the loop, the worst-case loss of the final RE (Fig. 4's h~(x_r))."""
    y = linear(images).argmax(1)
    cfg = BiLevelConfig(classifier="c", backbone="b", eps=eps, max_iter=7, inner_steps=3, norm=norm, lr=lr)
    plain = robustify(images, y, linear, cfg, generator(0))
    trace: dict[str, list[torch.Tensor]] = {}
    traced = robustify(images, y, linear, cfg, generator(0), trace)
    assert torch.equal(plain, traced)
    assert len(trace["grad_norm"]) == len(trace["loss"]) == 7 and len(trace["final_loss"]) == 1
    assert all(g.shape == (len(images),) and (g >= 0).all() for g in trace["grad_norm"])
    assert float(trace["grad_norm"][0].min()) > 0
    first, final = trace["loss"][0], trace["final_loss"][0]
    assert float(final.mean()) < float(first.mean())  # the robustification lowered the worst case


def test_the_registered_defense_fills_the_stage_trace(linear, images) -> None:
    from preempt.defenses import run

    cfg = BiLevelConfig(classifier="c", backbone="b", eps=0.1, max_iter=3, inner_steps=2)
    trace: dict[str, list[torch.Tensor]] = {}
    run(cfg, images, models={"classifier": linear, "backbone": linear}, y_true=None, generator=generator(0), trace=trace)
    assert {k: len(v) for k, v in trace.items()} == {"grad_norm": 3, "loss": 3, "final_loss": 1}
