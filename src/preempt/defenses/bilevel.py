"""Bi-Level preemptive robustification (Moon et al., "Preemptive Image Robustification for
Protecting Users against Man-in-the-Middle Adversarial Attacks", AAAI 2022).

The defender looks for x_r in the eps-ball around x that minimises the loss of the *worst case*
an attacker can reach from it:

    min_{x_r in B(x, eps)}  CE(f(x_r + delta*(x_r)), y),   delta* = PGD_T(f, x_r, y)  (inner attack)

with y = f_c(x) (the classifier's prediction, as in the paper). Each of ``max_iter`` outer steps
runs the inner attack (T steps of PGD with step alpha = eps/4 from a random start, averaged over
``n_samples`` starts; 1 in the paper) and uses the first-order gradient: the gradient of the CE at
the inner adversarial example, taken w.r.t. x_r with delta* held fixed (no second-order terms).

Linf: x_r = lo + (hi - lo) * (tanh(w) + 1) / 2 with lo/hi the box [x - eps, x + eps] cut to
[0, 1], so every iterate is feasible; w is updated by RMSProp (lr 0.1). L2: projected gradient
descent on x_r (lr 0.001 in the paper's CIFAR-10 setting) onto the L2 ball and [0, 1].
The defender's model is the ``backbone`` role (the paper robustifies for the deployed model),
the labels come from the ``classifier`` role, so preemptive reversion applies unchanged.
``reverse: true`` maximises the same objective from the given image: the original-image
reconstruction that Moon et al.'s adaptive attack runs from x_r (the ``reconstruct`` reversion).

With a ``trace``, each outer iteration records per image the L2 norm of the update gradient
dCE/dx_r (``grad_norm``, Moon et al.'s Fig. 5) and the CE at the inner adversarial example
(``loss``); after the last one, ``final_loss`` is the CE of a fresh inner attack on the final x_r,
the estimate of h~(x_r) = max over the ball of the loss that Fig. 4 histograms. Tracing costs
one inner attack after the loop, and leaves x_r unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from ..attacks import project
from ..attacks.pgd import pgd
from ..registry import ModelName
from . import DEFENSES, DefenseConfig, LabelSource, Trace, labels


class BiLevelConfig(DefenseConfig):
    """Bi-Level preemptive robustification (Moon et al., 2022): min over x_r of the inner attack's loss."""

    method: Literal["bilevel"] = "bilevel"
    classifier: ModelName
    backbone: ModelName
    eps: float = Field(ge=0, le=1, description="the defender's budget around x")
    attack_eps: float | None = Field(None, gt=0, le=1, description="the inner attacker's budget; default eps")
    max_iter: int = Field(100, ge=1, description="outer iterations (MAXITER)")
    inner_steps: int = Field(20, ge=1, description="T, PGD steps of the inner attack")
    inner_alpha: float | None = Field(None, gt=0, description="inner PGD step; default eps/4")
    n_samples: int = Field(1, ge=1, le=1000, description="inner random starts averaged per outer step")
    lr: float | None = Field(None, gt=0, description="outer step: default 0.1 (Linf, RMSProp on w), 0.001 (L2)")
    norm: Literal["Linf", "L2"] = "Linf"
    label_source: LabelSource = "classifier"
    reverse: bool = Field(False, description="maximise instead (the reconstruction attack's dynamics)")

    def ref(self) -> str:
        return self.with_mislabel(f"bilevel/{self.norm}/eps{self.eps:.4f}/iter{self.max_iter}/T{self.inner_steps}")


def inner_attack(model: nn.Module, xr: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """The inner adversary's perturbation delta* of x_r (mean over ``n_samples`` random starts)."""
    eps = cfg.attack_eps if cfg.attack_eps is not None else cfg.eps
    alpha = cfg.inner_alpha if cfg.inner_alpha is not None else eps / 4
    deltas = [pgd(model, xr, y, eps=eps, alpha=alpha, steps=cfg.inner_steps, norm=cfg.norm, generator=generator) - xr
              for _ in range(cfg.n_samples)]
    return torch.stack(deltas).mean(0).detach()


def loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image CE and its input gradient, one forward and one backward pass (the gradient is
    bit-identical to ``input_grad``'s)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = nn.functional.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach(), grad


def outer_grad(model: nn.Module, xr: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig,
               generator: torch.Generator, trace: Trace | None = None) -> torch.Tensor:
    """First-order gradient of CE(f(x_r + delta*), y) w.r.t. x_r, delta* fixed."""
    delta = inner_attack(model, xr, y, cfg, generator)
    losses, grad = loss_grad(model, (xr + delta).clamp(0, 1), y)
    if trace is not None:
        trace.setdefault("grad_norm", []).append(grad.flatten(1).norm(dim=1))
        trace.setdefault("loss", []).append(losses)
    return grad


def _final(model: nn.Module, xr: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig,
           generator: torch.Generator, trace: Trace | None) -> torch.Tensor:
    if trace is not None:
        trace["final_loss"] = [loss_grad(model, (xr + inner_attack(model, xr, y, cfg, generator)).clamp(0, 1), y)[0]]
    return xr


def robustify(x: torch.Tensor, y: torch.Tensor, model: nn.Module, cfg: BiLevelConfig,
              generator: torch.Generator, trace: Trace | None = None) -> torch.Tensor:
    x0 = x.detach()
    if cfg.norm == "L2":
        xr = x0.clone()
        lr = cfg.lr if cfg.lr is not None else 1e-3
        for _ in range(cfg.max_iter):
            sign = 1.0 if cfg.reverse else -1.0
            xr = project(xr + sign * lr * outer_grad(model, xr, y, cfg, generator, trace), x0, cfg.eps, "L2")
        return _final(model, xr.detach(), y, cfg, generator, trace)
    lo, hi = (x0 - cfg.eps).clamp(0, 1), (x0 + cfg.eps).clamp(0, 1)
    span = (hi - lo).clamp_min(1e-12)
    u = ((x0 - lo) / span).clamp(1e-6, 1 - 1e-6)
    w = torch.atanh(2 * u - 1).requires_grad_(True)  # starts at x_r = x
    opt = torch.optim.RMSprop([w], lr=cfg.lr if cfg.lr is not None else 0.1)

    def decode(w_: torch.Tensor) -> torch.Tensor:
        return lo + span * (torch.tanh(w_) + 1) / 2

    for _ in range(cfg.max_iter):
        with torch.no_grad():
            g_x = outer_grad(model, decode(w), y, cfg, generator, trace)
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            decode(w).backward(-g_x if cfg.reverse else g_x)  # chain rule through the tanh reparameterisation
        opt.step()
    return _final(model, decode(w).detach(), y, cfg, generator, trace)


@DEFENSES.register("bilevel", BiLevelConfig)
def bilevel(x: torch.Tensor, *, cfg: BiLevelConfig, models: Mapping[str, nn.Module],
            y_true: torch.Tensor | None, generator: torch.Generator, label_shift: torch.Tensor | None = None,
            trace: Trace | None = None, **_: Any) -> torch.Tensor:
    y = labels(x, cfg.label_source, models, y_true, label_shift)
    return robustify(x, y, models["backbone"], cfg, generator, trace)
