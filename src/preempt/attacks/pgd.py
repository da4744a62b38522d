"""PGD (Madry et al., 2018): iterated signed-gradient ascent on a loss, projected.

``restarts: R`` runs R random starts and keeps, per image, the first example that fools the model
(its prediction; for a randomized victim, one draw of it): Moon et al.'s PGD-10 is ``restarts: 10``.
``loss: ce`` is Madry's PGD; ``loss: cw`` ascends Carlini & Wagner's margin
``max_{j != y} z_j - z_y`` instead (the "CW-Linf" attack of the robustness literature, e.g.
PGD-CW in the MSPD/Fast Preemption tables).

Written here rather than imported: the maintained AutoAttack does not ship plain PGD, and
torchattacks pins ``requests~=2.25`` which conflicts with DVC. It is short and pinned by tests.
"""

from __future__ import annotations

import torch
from typing import Literal

from pydantic import Field
from torch import nn

from . import ATTACKS, AttackConfig, Norm, eot_grad, input_grad, project, signed_step, uniform_ball


class PGDConfig(AttackConfig):
    method: str = "pgd"
    alpha: float | None = Field(None, gt=0, description="step size; default 2.5*eps/steps")
    steps: int = Field(10, ge=1)
    random_start: bool = True
    loss: Literal["ce", "cw"] = "ce"
    eot_iter: int = Field(1, ge=1, description="gradients averaged per step (EOT for randomized victims)")
    restarts: int = Field(1, ge=1, le=1000, description="random starts; an image keeps the first that fools")

    def core_ref(self) -> str:
        ref = f"pgd-{self.loss}/{self.norm}/{self.eps:.4f}/{self.steps}"
        return ref if self.restarts == 1 else f"{ref}x{self.restarts}"


def cw_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed CW margin (best other logit minus the true logit) w.r.t. the input."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(x)
        true = z.gather(1, y[:, None]).squeeze(1)
        other = z.masked_fill(nn.functional.one_hot(y, z.shape[1]).bool(), float("-inf")).amax(1)
        (grad,) = torch.autograd.grad((other - true).sum(), x)
    return grad


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        norm: Norm = "Linf", random_start: bool = True, generator: torch.Generator | None = None,
        loss: str = "ce", eot_iter: int = 1) -> torch.Tensor:
    """Untargeted PGD inside the eps-ball around ``x``."""
    grad_fn = cw_grad if loss == "cw" else input_grad
    adv = x.clone()
    if random_start and eps > 0:
        gen = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
        adv = project(x + uniform_ball(x.shape, eps, norm, gen, x.device), x, eps, norm)
    for _ in range(steps):
        adv = project(adv + signed_step(eot_grad(grad_fn, model, adv, y, eot_iter), alpha, norm), x, eps, norm)
    return adv.detach()


@ATTACKS.register("pgd", PGDConfig)
def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: PGDConfig,
        generator: torch.Generator) -> torch.Tensor:
    alpha = cfg.alpha if cfg.alpha is not None else 2.5 * cfg.eps / cfg.steps
    best = x.clone()
    left = torch.ones(len(x), dtype=torch.bool, device=x.device)  # not fooled yet
    for _ in range(cfg.restarts):
        adv = pgd(model, x[left], y[left], eps=cfg.eps, alpha=alpha, steps=cfg.steps, norm=cfg.norm,
                  random_start=cfg.random_start, generator=generator, loss=cfg.loss, eot_iter=cfg.eot_iter)
        best[left] = adv
        if cfg.restarts > 1:
            with torch.inference_mode():
                fooled = model(adv).argmax(1) != y[left]
            left[left.clone()] = ~fooled
            if not left.any():
                break
    return best
