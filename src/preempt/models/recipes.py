"""Training recipes: how each minibatch is turned into the inputs the model is trained on.

``standard`` trains on clean images; ``gaussian`` on Gaussian-noise-augmented ones (the base
model of randomized smoothing, Cohen et al. 2019); ``pgd_at`` is Madry et al.'s PGD adversarial training;
``fgsm_at`` is Wong et al.'s "fast" adversarial training (FGSM from a random start, step
1.25*eps); ``preemptive_at`` is Moon et al.'s preemptively robust training (their Algorithm 2);
``trades`` (Zhang et al., 2019) and ``mart`` (Wang et al., 2020) train on a loss of the clean and
the adversarial example together (JATP's target models).
Adversarial inputs are crafted with the model in eval mode (BatchNorm statistics are
not updated by attack iterations), then the update runs in train mode on the recipe's
:meth:`RecipeConfig.loss` (cross-entropy on the crafted inputs, unless the recipe says otherwise).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..attacks import input_grad, project, signed_step, uniform_ball
from ..attacks.pgd import pgd
from ..defenses.bilevel import BiLevelConfig, robustify
from ..registry import MethodConfig, Registry

Recipe = Callable[..., torch.Tensor]
RECIPES: Registry[Recipe] = Registry("training recipe", "preempt.models")


class RecipeConfig(MethodConfig):
    """A recipe's fields; ``loss`` is the training loss of a batch (model in train mode)."""

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the crafted inputs ``x_in`` (``x``: the clean batch)."""
        return F.cross_entropy(model(x_in), y)

    @classmethod
    def own_loss(cls) -> bool:
        """Whether the recipe trains on a loss of its own (a source with its own loss cannot use it)."""
        return cls.loss is not RecipeConfig.loss


class StandardRecipe(RecipeConfig):
    method: Literal["standard"] = "standard"


class GaussianRecipe(RecipeConfig):
    """Gaussian noise augmentation (Cohen, Rosenfeld and Kolter, 2019): every training image gets
    fresh N(0, sigma^2) noise, not clipped to [0, 1] (as in their code), so the base model learns
    to classify the noisy copies the smoothed classifier votes over."""

    method: Literal["gaussian"] = "gaussian"
    sigma: float = Field(gt=0, le=10)


class PGDRecipe(RecipeConfig):
    method: Literal["pgd_at"] = "pgd_at"
    eps: float = Field(ge=0, le=1)
    steps: int = Field(7, ge=1)
    alpha: float | None = Field(None, gt=0, description="default 2.5*eps/steps")
    norm: Literal["Linf", "L2"] = "Linf"


class FGSMRecipe(RecipeConfig):
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


class PreemptiveATRecipe(RecipeConfig):
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


class _RegularizedRecipe(RecipeConfig):
    """The fields TRADES and MART share: the inner attack's Linf budget, steps and step size, and
    the weight of the regulariser (both papers' CIFAR-10 settings by default, but eps)."""

    eps: float = Field(ge=0, le=1)
    steps: int = Field(10, ge=1)
    alpha: float = Field(0.007, gt=0)
    beta: float = Field(6.0, ge=0)


class TRADESRecipe(_RegularizedRecipe):
    """TRADES (Zhang et al., 2019): CE(f(x), y) + ``beta`` KL(f(x) || f(x')), where x' maximises
    that KL divergence within the eps ball: ``steps`` signed-gradient steps of ``alpha`` from
    x + 0.001 N(0, 1), each projected and clipped to [0, 1], as in the authors' CIFAR-10 code
    (eps 8/255 = 0.031, alpha 0.007, 10 steps, beta 6)."""

    method: Literal["trades"] = "trades"

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits, y) + self.beta * _kl(model(x_in), logits)


class MARTRecipe(_RegularizedRecipe):
    """MART (Wang et al., 2020): the boosted cross-entropy of the adversarial example, plus
    ``beta`` KL(f(x) || f(x')) weighted per image by 1 - f_y(x) (misclassified clean examples
    count more). x': PGD on the cross-entropy from x + 0.001 N(0, 1) (eps 8/255, alpha 0.007,
    10 steps, beta 6: JATP's MART target, lambda = 6)."""

    method: Literal["mart"] = "mart"

    def loss(self, model: nn.Module, x: torch.Tensor, x_in: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, logits_adv = model(x), model(x_in)
        weight = 1.0000001 - logits.softmax(1).gather(1, y[:, None]).squeeze(1)
        return (boosted_cross_entropy(logits_adv, y) + self.beta * _kl_per_image(logits_adv, logits) * weight).mean()


def _kl_per_image(logits_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(logits) || softmax(logits_adv)) of each image, in log-softmax form (exact and
    finite; MART's code takes the log of the softmax plus 1e-12)."""
    return F.kl_div(logits_adv.log_softmax(1), logits.softmax(1), reduction="none").sum(1)


def _kl(logits_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The KL divergence of :func:`_kl_per_image`, averaged over the batch (TRADES)."""
    return _kl_per_image(logits_adv, logits).mean()


def boosted_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MART's boosted cross-entropy (JATP Eq. 7), per example: -log t_y - log(1 - max_{k != y} t_k).

    log(1 - t_k) is computed as the log-sum-exp of the other classes' log-probabilities, which
    stays finite when t_k -> 1 (the naive log(1 - t_k) does not; MART's code adds 1e-4 instead)."""
    logp = logits.log_softmax(1)
    true = logp.gather(1, y[:, None])
    runner_up = logp.scatter(1, y[:, None], float("-inf")).argmax(1, keepdim=True)
    log_one_minus = logp.scatter(1, runner_up, float("-inf")).logsumexp(1)
    return -true.squeeze(1) - log_one_minus


def _ascend(model: nn.Module, x: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor], eps: float,
            alpha: float, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Signed-gradient ascent on ``objective(x')`` from x + 0.001 N(0, 1) within the Linf eps ball."""
    x_adv = x + 0.001 * torch.randn(x.shape, generator=generator, device=x.device)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        grad, = torch.autograd.grad(objective(x_adv), x_adv)
        x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps, "Linf")
    return x_adv.detach()


@RECIPES.register("trades", TRADESRecipe)
def trades(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: TRADESRecipe,
           generator: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        clean = model(x)
    return _ascend(model, x, lambda xa: _kl(model(xa), clean), cfg.eps, cfg.alpha, cfg.steps, generator)


@RECIPES.register("mart", MARTRecipe)
def mart(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: MARTRecipe,
         generator: torch.Generator) -> torch.Tensor:
    return _ascend(model, x, lambda xa: F.cross_entropy(model(xa), y), cfg.eps, cfg.alpha, cfg.steps, generator)
