"""The iterative FGSM family used for transfer attacks: I-FGSM, MI-FGSM, DI-FGSM.

- I-FGSM (Kurakin et al., 2017): ``steps`` signed-gradient steps of ``alpha = eps/steps`` from the
  clean input (no random start), projected to the eps-ball and [0, 1].
- MI-FGSM (Dong et al., 2018): momentum over L1-normalised gradients,
  g <- mu*g + grad/||grad||_1, step alpha*sign(g); ``momentum`` mu = 1.0 as in the paper.
- DI-FGSM (Xie et al., 2019, "DI^2-FGSM"): with probability ``diversity_prob`` (0.5) each image
  is randomly resized and zero-padded before the gradient (the same random resize-and-pad as the
  ``resize_pad`` transform, up to ``resize_rate`` x the side, back to the victim's size). Adding
  ``momentum: 1.0`` gives M-DI^2-FGSM.

All three are one function with different defaults; each is its own registry name so that
params.yaml says what ran. Used with ``surrogates: [...]`` they are transfer attacks (the
attack stage crafts on each surrogate and evaluates on the victim).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..reversions.resize_pad import resize_pad
from . import ATTACKS, AttackConfig, project, signed_step


class IFGSMConfig(AttackConfig):
    """I-FGSM (Kurakin et al., 2017): iterated signed-gradient steps from the clean input."""

    method: Literal["ifgsm", "mifgsm", "difgsm"] = "ifgsm"
    steps: int = Field(20, ge=1)
    alpha: float | None = Field(None, gt=0, description="step size; default eps/steps")
    momentum: float = Field(0.0, ge=0, description="mu of MI-FGSM (1.0 in the paper)")
    diversity_prob: float = Field(0.0, ge=0, le=1, description="p of DI-FGSM (0.5 in the paper)")
    resize_rate: float = Field(1.1, gt=1, le=2, description="DI: largest resized side / image side")


class MIFGSMConfig(IFGSMConfig):
    """MI-FGSM (Dong et al., 2018): I-FGSM with momentum over L1-normalised gradients."""

    method: Literal["mifgsm"] = "mifgsm"
    momentum: float = Field(1.0, ge=0)


class DIFGSMConfig(IFGSMConfig):
    """DI-FGSM (Xie et al., 2019): I-FGSM on randomly resized-and-padded inputs."""

    method: Literal["difgsm"] = "difgsm"
    diversity_prob: float = Field(0.5, ge=0, le=1)


def diverse(x: torch.Tensor, prob: float, rate: float, generator: torch.Generator) -> torch.Tensor:
    """DI's input diversity: a random resize-and-pad of each image with probability ``prob``."""
    if prob <= 0:
        return x
    pad = max(1, int(round(x.shape[-1] * (rate - 1))))
    keep = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) >= prob
    return torch.where(keep.view(-1, *([1] * (x.dim() - 1))), x, resize_pad(x, pad, generator))


def ifgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: IFGSMConfig,
          generator: torch.Generator) -> torch.Tensor:
    alpha = cfg.alpha if cfg.alpha is not None else cfg.eps / cfg.steps
    adv, g = x.clone(), torch.zeros_like(x)
    for _ in range(cfg.steps):
        xg = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(diverse(xg, cfg.diversity_prob, cfg.resize_rate, generator)),
                                               y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xg)
        if cfg.momentum > 0:
            g = cfg.momentum * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            grad = g
        adv = project(adv + signed_step(grad, alpha, cfg.norm), x, cfg.eps, cfg.norm)
    return adv.detach()


for _name, _cfg in (("ifgsm", IFGSMConfig), ("mifgsm", MIFGSMConfig), ("difgsm", DIFGSMConfig)):
    ATTACKS.register(_name, _cfg)(
        lambda model, x, y, *, cfg, generator: ifgsm(model, x, y, cfg, generator))
