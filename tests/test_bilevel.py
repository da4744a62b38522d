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
