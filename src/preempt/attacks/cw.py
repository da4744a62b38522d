"""Carlini & Wagner's L2 attack (2017) through Foolbox 3 (``L2CarliniWagnerAttack``).

CW-L2 is a minimum-norm attack: it searches the smallest perturbation that flips the label
(Adam on the tanh-reparameterised image, binary search over the trade-off constant c). At a
fixed budget the result is Foolbox's ``clipped`` output: the perturbation projected onto the L2
ball of radius ``eps``, so robust accuracy at eps is comparable with PGD-L2 and AutoAttack-L2.
``eps`` is an L2 radius on the [0, 1] scale. Foolbox rather than our own code: it is the
reference implementation the robustness literature cites; torchattacks pins an old ``requests``
that conflicts with DVC. The Linf "CW" of the papers' tables is PGD with ``loss: cw``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from . import ATTACKS, AttackConfig


class CWConfig(AttackConfig):
    method: Literal["cw"] = "cw"
    norm: Literal["L2"] = "L2"
    eps: float = Field(ge=0, le=100, description="L2 radius the result is projected to")
    binary_search_steps: int = Field(9, ge=1)
    steps: int = Field(10000, ge=1, description="Adam steps per binary-search step")
    stepsize: float = Field(0.01, gt=0)
    confidence: float = Field(0.0, ge=0, description="kappa")
    initial_const: float = Field(1e-3, gt=0)
    abort_early: bool = True


@ATTACKS.register("cw", CWConfig)
def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: CWConfig,
        generator: torch.Generator) -> torch.Tensor:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1), device=x.device)
    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=cfg.binary_search_steps, steps=cfg.steps, stepsize=cfg.stepsize,
        confidence=cfg.confidence, initial_const=cfg.initial_const, abort_early=cfg.abort_early)
    with torch.enable_grad():
        _, clipped, _ = attack(fmodel, x.detach().clone(), y.clone(), epsilons=cfg.eps)
    return clipped.detach().clamp(0, 1)
