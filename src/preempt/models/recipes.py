"""Training recipes: how each minibatch is turned into the inputs the model is trained on.

``standard`` trains on clean images; ``gaussian`` on Gaussian-noise-augmented ones (the base
model of randomized smoothing, Cohen et al. 2019); ``pgd_at`` is Madry et al.'s PGD adversarial training;
``fgsm_at`` is Wong et al.'s "fast" adversarial training (FGSM from a random start, step
1.25*eps); ``preemptive_at`` is Moon et al.'s preemptively robust training (their Algorithm 2).
Adversarial inputs are crafted with the model in eval mode (BatchNorm statistics are
not updated by attack iterations), then the update runs in train mode.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from pydantic import Field
from torch import nn

from ..attacks import input_grad, project, signed_step, uniform_ball
from ..attacks.pgd import pgd
from ..defenses.bilevel import BiLevelConfig, robustify
from ..registry import MethodConfig, Registry

Recipe = Callable[..., torch.Tensor]
RECIPES: Registry[Recipe] = Registry("training recipe", "preempt.models")


class StandardRecipe(MethodConfig):
    method: Literal["standard"] = "standard"


class GaussianRecipe(MethodConfig):
    """Gaussian noise augmentation (Cohen, Rosenfeld and Kolter, 2019): every training image gets
    fresh N(0, sigma^2) noise, not clipped to [0, 1] (as in their code), so the base model learns
    to classify the noisy copies the smoothed classifier votes over."""

    method: Literal["gaussian"] = "gaussian"
    sigma: float = Field(gt=0, le=10)


class PGDRecipe(MethodConfig):
    method: Literal["pgd_at"] = "pgd_at"
    eps: float = Field(ge=0, le=1)
    steps: int = Field(7, ge=1)
    alpha: float | None = Field(None, gt=0, description="default 2.5*eps/steps")
    norm: Literal["Linf", "L2"] = "Linf"


class FGSMRecipe(MethodConfig):
    method: Literal["fgsm_at"] = "fgsm_at"
    eps: float = Field(ge=0, le=1)
    alpha: float | None = Field(None, gt=0, description="default 1.25*eps")
    norm: Literal["Linf", "L2"] = "Linf"


@RECIPES.register("standard", StandardRecipe)
def standard(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: StandardRecipe,
             generator: torch.Generator) -> torch.Tensor:
    """Standard training on clean images."""
    return x


@RECIPES.register("gaussian", GaussianRecipe)
def gaussian(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: GaussianRecipe,
             generator: torch.Generator) -> torch.Tensor:
    return x + cfg.sigma * torch.randn(x.shape, generator=generator, device=x.device)


@RECIPES.register("pgd_at", PGDRecipe)
def pgd_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: PGDRecipe,
           generator: torch.Generator) -> torch.Tensor:
    """PGD adversarial training (Madry et al., 2018): train on PGD-``steps`` examples."""
    alpha = cfg.alpha if cfg.alpha is not None else 2.5 * cfg.eps / cfg.steps
    return pgd(model, x, y, eps=cfg.eps, alpha=alpha, steps=cfg.steps, norm=cfg.norm, generator=generator)


@RECIPES.register("fgsm_at", FGSMRecipe)
def fgsm_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: FGSMRecipe,
            generator: torch.Generator) -> torch.Tensor:
    """Fast adversarial training (Wong et al., 2020): FGSM from a random start, step 1.25 eps."""
    alpha = cfg.alpha if cfg.alpha is not None else 1.25 * cfg.eps
    start = project(x + uniform_ball(x.shape, cfg.eps, cfg.norm, generator, x.device), x, cfg.eps, cfg.norm)
    return project(start + signed_step(input_grad(model, start, y), alpha, cfg.norm), x, cfg.eps, cfg.norm)


class PreemptiveATRecipe(MethodConfig):
    """Preemptively robust training (Moon et al., 2022, Algorithm 2): PGD from Bi-Level REs.

    Train on the worst case *after* preemptive robustification, so the deployed model suits the defense. Per batch: x_r = Bi-Level
    robustification of x (ground-truth labels, ``outer_iters`` outer steps; 100 at test time, a few
    in training as in adversarial training's short inner loops), then PGD-``steps`` from x_r with
    budget ``attack_eps`` (default eps); the update uses that adversarial example."""

    method: Literal["preemptive_at"] = "preemptive_at"
    eps: float = Field(ge=0, le=1)
    attack_eps: float | None = Field(None, gt=0, le=1)
    outer_iters: int = Field(5, ge=1)
    steps: int = Field(7, ge=1)
    norm: Literal["Linf", "L2"] = "Linf"


@RECIPES.register("preemptive_at", PreemptiveATRecipe)
def preemptive_at(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: PreemptiveATRecipe,
                  generator: torch.Generator) -> torch.Tensor:
    attack_eps = cfg.attack_eps if cfg.attack_eps is not None else cfg.eps
    # roles name the model being trained: robustify only reads the numbers of the config
    bl = BiLevelConfig(classifier="self", backbone="self", eps=cfg.eps, attack_eps=attack_eps,
                       max_iter=cfg.outer_iters, inner_steps=cfg.steps, norm=cfg.norm)
    xr = robustify(x, y, model, bl, generator)
    return pgd(model, xr, y, eps=attack_eps, alpha=2.5 * attack_eps / cfg.steps, steps=cfg.steps, norm=cfg.norm,
               generator=generator)
