"""Bi-Level preemptive robustification (Moon et al., "Preemptive Image Robustification for
Protecting Users against Man-in-the-Middle Adversarial Attacks", AAAI 2022).

The defender looks for x_r in the eps-ball around x that minimises the loss of the *worst case*
an attacker can reach from it:

    min_{x_r in B(x, eps)}  CE(f(x_r + delta*(x_r)), y),   delta* = PGD_T(f, x_r, y)  (inner attack)

with y = f_c(x) (the classifier's prediction, as in the paper). As in Algorithm 1 and the
authors' code (snu-mllab/preemptive-robustification, ``defenses/preempt_robust_{linf,l2}.py``):

- ``start: random`` (default): x_r starts at a uniform draw in the ball (U(-eps, eps) per pixel,
  clipped to [0, 1]; L2: U(-1/2, 1/2) per pixel rescaled to norm eps, the authors' ``renorm``).
  Moon et al.'s Sec. 3.7 / Fig. 3: this start is what makes the reconstruction attack fail.
  ``start: original`` starts at x (Algorithm 1's other option).
- each of ``max_iter`` outer steps runs ``n_samples`` inner attacks (T steps of PGD, alpha =
  eps/4, each from its own random start) and averages their N *gradients* w.r.t. x_r.
- ``update: unrolled`` (default, the authors' code, which gave the paper's numbers): the gradient
  flows back through the inner PGD's projections and clipping to x_r, each step's sign(gradient)
  held constant (``create_graph=False``: Sec. 3.4's "no second-order terms"), so a pixel whose
  iterate sits on the [0, 1] box gets no gradient. ``update: fixed_delta`` holds delta* fixed
  and takes the gradient at x_r + delta* (Danskin's first-order form; cheaper to reason about,
  no masking): the project's implementation before the fidelity fix, kept as a variant.
- Linf: the authors' tanh map, x_r = lo + (hi - lo) * (tanh(w) + 1) / 2 with lo/hi the box
  [x - eps, x + eps] cut to [0, 1], started at w = atanh(1.999 * (u - 1/2)), u the start's place in
  the box; w is updated by RMSProp (lr 0.1). L2: gradient descent on x_r (lr 0.001 in the paper's
  CIFAR-10 setting) projected onto the L2 ball and [0, 1].

Randomness: with ``streams`` (the defend stage), every draw of image j (its start, every inner
attack's start) comes from image j's own stream, so REs do not depend on the batch size or shard.
The defender's model is the ``backbone`` role (the paper robustifies for the deployed model), the
labels come from the ``classifier`` role, so preemptive reversion applies unchanged.
``reverse: true`` maximises the same objective starting at the given image (the authors'
``rec=True``): the original-image reconstruction that Moon et al.'s adaptive attack runs from x_r
(the ``reconstruct`` reversion).

With a ``trace``, each outer iteration records per image the L2 norm of the update gradient
dCE/dx_r (``grad_norm``, Moon et al.'s Fig. 5) and the mean CE at the inner adversarial examples
(``loss``); after the last one, ``final_loss`` is the CE of a fresh inner attack on the final x_r,
the estimate of h~(x_r) = max over the ball of the loss that Fig. 4 histograms. Tracing costs
one inner attack after the loop, and leaves x_r unchanged.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from ..attacks import input_grad, project, signed_step
from ..registry import ModelName
from ..runtime import ImageStreams
from . import DEFENSES, DefenseConfig, LabelSource, Trace, labels

TANH_SCALE = 1.999  # the authors' encoding keeps atanh finite at the box's faces: atanh(1.999 (u - 1/2))


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
    n_samples: int = Field(1, ge=1, le=1000, description="N inner attacks per outer step, their gradients averaged")
    lr: float | None = Field(None, gt=0, description="outer step: default 0.1 (Linf, RMSProp on w), 0.001 (L2)")
    norm: Literal["Linf", "L2"] = "Linf"
    start: Literal["random", "original"] = Field(
        "random", description="x_r's start: a uniform draw in the ball (the authors' code) or x itself")
    update: Literal["unrolled", "fixed_delta"] = Field(
        "unrolled", description="update gradient: through the inner PGD's projections (the authors' code) or delta* fixed")
    label_source: LabelSource = "classifier"
    reverse: bool = Field(False, description="maximise instead, from the given image (the reconstruction attack)")

    def ref(self) -> str:
        """The paper's algorithm keeps the plain ref (the key of the published numbers); every
        other variant adds what differs."""
        ref = f"bilevel/{self.norm}/eps{self.eps:.4f}/iter{self.max_iter}/T{self.inner_steps}"
        if self.n_samples != 1:
            ref += f"/N{self.n_samples}"
        if self.lr is not None and self.lr != (0.1 if self.norm == "Linf" else 1e-3):
            ref += f"/lr{self.lr:g}"
        if self.start == "original":
            ref += "/x-start"
        if self.update == "fixed_delta":
            ref += "/fixed-delta"
        return self.with_mislabel(ref)


def start_noise(shape: torch.Size, eps: float, norm: str, generator: torch.Generator,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """The authors' random start, one row per image: U(-eps, eps) per pixel (Linf); for L2,
    U(-1/2, 1/2) per pixel scaled down to norm eps where it is longer (``renorm(maxnorm=eps)``)."""
    d = torch.rand(shape, generator=generator, device=device)
    if norm == "Linf":
        return (d * 2 - 1) * eps
    d = d - 0.5
    length = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (len(shape) - 1)))
    return d * (eps / length).clamp(max=1.0)


def draw(x: torch.Tensor, k: int, eps: float, norm: str, generator: torch.Generator,
         streams: ImageStreams | None) -> torch.Tensor:
    """``k`` start perturbations per image, shape (k, *x.shape): from each image's own stream when
    given (batch- and shard-independent), else from the batch's generator."""
    if streams is not None:
        return streams.draw(lambda g: start_noise(torch.Size((k, *x.shape[1:])), eps, norm, g, x.device))
    return start_noise(torch.Size((k * len(x), *x.shape[1:])), eps, norm, generator, x.device).view(k, *x.shape)


def inner_attack(model: nn.Module, xr: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig,
                 noise: torch.Tensor) -> torch.Tensor:
    """The inner adversary's example from x_r (PGD_T from x_r + ``noise``). Each step's gradient is
    a constant, the projections are not: with x_r requiring grad, the result carries the
    authors' first-order graph back to x_r."""
    eps = cfg.attack_eps if cfg.attack_eps is not None else cfg.eps
    alpha = cfg.inner_alpha if cfg.inner_alpha is not None else eps / 4
    adv = project(xr + noise, xr, eps, cfg.norm)
    for _ in range(cfg.inner_steps):
        adv = project(adv + signed_step(input_grad(model, adv, y), alpha, cfg.norm), xr, eps, cfg.norm)
    return adv


def loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image CE and its input gradient, one forward and one backward pass."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        losses = nn.functional.cross_entropy(model(x), y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach(), grad


def outer_grad(model: nn.Module, xr: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig,
               noise: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
    """Algorithm 1's update direction: the mean over the N inner attacks (``noise[n]``: attack n's
    start) of d CE(f(x^a_n), y) / d x_r."""
    total, loss_sum = torch.zeros_like(xr), torch.zeros(len(xr), device=xr.device)
    for n in range(cfg.n_samples):
        if cfg.update == "unrolled":
            with torch.enable_grad():
                xr_ = xr.detach().requires_grad_(True)
                adv = inner_attack(model, xr_, y, cfg, noise[n])
                losses, g_adv = loss_grad(model, adv, y)
                (grad,) = torch.autograd.grad(adv, xr_, grad_outputs=g_adv)
        else:  # delta* = x^a - x_r held fixed: the gradient at x^a
            with torch.no_grad():
                adv = inner_attack(model, xr.detach(), y, cfg, noise[n])
            losses, grad = loss_grad(model, adv, y)
        total += grad
        loss_sum += losses
    grad = total / cfg.n_samples
    if trace is not None:
        trace.setdefault("grad_norm", []).append(grad.flatten(1).norm(dim=1))
        trace.setdefault("loss", []).append(loss_sum / cfg.n_samples)
    return grad


def _final(model: nn.Module, xr: torch.Tensor, y: torch.Tensor, cfg: BiLevelConfig, attack_eps: float,
           generator: torch.Generator, streams: ImageStreams | None, trace: Trace | None) -> torch.Tensor:
    if trace is not None:
        adv = inner_attack(model, xr, y, cfg, draw(xr, 1, attack_eps, cfg.norm, generator, streams)[0])
        trace["final_loss"] = [loss_grad(model, adv, y)[0]]
    return xr


def encode(x: torch.Tensor, lo: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """[lo, hi] -> R, the authors' map: atanh(1.999 (u - 1/2)) with u = (x - lo) / (hi - lo)."""
    return torch.atanh(((x - lo) / span - 0.5) * TANH_SCALE)


def decode(w: torch.Tensor, lo: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """R -> [lo, hi]: lo + (tanh(w) + 1) / 2 * (hi - lo); every iterate is feasible."""
    return lo + (torch.tanh(w) + 1) / 2 * span


def initial(x: torch.Tensor, cfg: BiLevelConfig, generator: torch.Generator,
            streams: ImageStreams | None = None) -> torch.Tensor:
    """Where x_r starts: a uniform draw in the ball around x (``start: random``, clipped to [0, 1])
    or x; the reconstruction (``reverse``) always starts at the image it is given."""
    if cfg.start == "original" or cfg.reverse:
        return x.detach()
    return project(x + draw(x, 1, cfg.eps, cfg.norm, generator, streams)[0], x, cfg.eps, cfg.norm).detach()


def robustify(x: torch.Tensor, y: torch.Tensor, model: nn.Module, cfg: BiLevelConfig,
              generator: torch.Generator, trace: Trace | None = None,
              streams: ImageStreams | None = None) -> torch.Tensor:
    x0 = x.detach()
    attack_eps = cfg.attack_eps if cfg.attack_eps is not None else cfg.eps
    start = initial(x0, cfg, generator, streams)

    def step_grad(xr: torch.Tensor) -> torch.Tensor:
        return outer_grad(model, xr, y, cfg, draw(xr, cfg.n_samples, attack_eps, cfg.norm, generator, streams), trace)

    if cfg.norm == "L2":
        xr = start.clone()
        lr = cfg.lr if cfg.lr is not None else 1e-3
        sign = 1.0 if cfg.reverse else -1.0
        for _ in range(cfg.max_iter):
            xr = project(xr + sign * lr * step_grad(xr), x0, cfg.eps, "L2")
        return _final(model, xr.detach(), y, cfg, attack_eps, generator, streams, trace)
    lo, hi = (x0 - cfg.eps).clamp(0, 1), (x0 + cfg.eps).clamp(0, 1)
    span = (hi - lo).clamp_min(1e-12)
    w = encode(start, lo, span).requires_grad_(True)
    opt = torch.optim.RMSprop([w], lr=cfg.lr if cfg.lr is not None else 0.1)
    for _ in range(cfg.max_iter):
        with torch.no_grad():
            g_x = step_grad(decode(w, lo, span))
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            decode(w, lo, span).backward(-g_x if cfg.reverse else g_x)  # chain rule through the tanh map
        opt.step()
    return _final(model, decode(w, lo, span).detach(), y, cfg, attack_eps, generator, streams, trace)


@DEFENSES.register("bilevel", BiLevelConfig)
def bilevel(x: torch.Tensor, *, cfg: BiLevelConfig, models: Mapping[str, nn.Module],
            y_true: torch.Tensor | None, generator: torch.Generator, label_shift: torch.Tensor | None = None,
            trace: Trace | None = None, streams: ImageStreams | None = None, **_: Any) -> torch.Tensor:
    y = labels(x, cfg.label_source, models, y_true, label_shift)
    return robustify(x, y, models["backbone"], cfg, generator, trace, streams)
