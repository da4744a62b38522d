"""``source: smoothed``: randomized smoothing (Cohen, Rosenfeld and Kolter, 2019) of a base model.

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), deployed as a victim
(Moon et al. Sec. 3.6 and 4.3, Tables 5-7). The base model is usually trained with the ``gaussian``
recipe (Gaussian noise augmentation, same sigma). Two faces, by whether autograd is on:

- **prediction** (inference, no autograd: metrics, the labels a defense reads): Cohen et al.'s
  PREDICT, a vote over ``n`` noisy copies; the top class, unless a two-sided binomial test of its
  count against the runner-up's gives p > ``alpha``: then it abstains. The output has C + 1
  columns, the C vote shares and an *abstain* column that wins exactly when it abstains, so an
  abstention never counts as a correct prediction. ``alpha: null`` never abstains.
- **gradients** (autograd on: attacks, Bi-Level): the soft smoothed classifier of Salman et al.
  (2019) that Moon et al. robustify for: log of the mean softmax over ``grad_samples`` fresh noise
  draws (M = 5 in Moon et al.). PGD on it is the paper's randomized PGD (gradients through the
  noise). The abstain column is a constant -1e4 (no probability).

Noise is drawn from the model's own generator (seeded by ``seed``), fresh at every call, so the
victim is randomized: attack it with EOT or restarts. CERTIFY is ``attacks/certify.py``.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from ..registry import ModelName
from . import SOURCES, Env, ModelConfig, Receipt

ABSTAIN_LOGIT = -1e4


class SmoothedConfig(ModelConfig):
    """A randomized-smoothing victim around ``model`` (Cohen et al.'s PREDICT; Salman et al.'s soft
    classifier for gradients)."""

    source: Literal["smoothed"] = "smoothed"
    model: ModelName
    sigma: float = Field(gt=0, le=10, description="noise standard deviation (pixel scale [0, 1])")
    n: int = Field(100, ge=1, description="PREDICT: noise samples per vote")
    alpha: float | None = Field(0.001, gt=0, lt=1, description="PREDICT: abstain when the vote's p-value exceeds it")
    grad_samples: int = Field(5, ge=1, description="noise draws averaged in the soft classifier (gradients)")
    chunk_size: int = Field(10_000, ge=1, description="max noisy images per base-model pass")
    seed: int = 0

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        return f"smoothed[{self.sigma:g}]({models[self.model].ref(models)})"

    def adversarial(self, models: Mapping[str, ModelConfig]) -> bool | None:
        return models[self.model].adversarial(models)


def vote_counts(base: nn.Module, x: torch.Tensor, sigma: float, n: int, generator: torch.Generator,
                chunk_size: int = 10_000) -> torch.Tensor:
    """Per image, how many of ``n`` noisy copies x + N(0, sigma^2) the base model puts in each class."""
    counts: torch.Tensor | None = None
    per = max(1, chunk_size // max(len(x), 1))  # noise samples per pass, for all images at once
    with torch.inference_mode():
        for done in range(0, n, per):
            k = min(per, n - done)
            noisy = x.repeat(k, *([1] * (x.dim() - 1)))
            noisy = noisy + sigma * torch.randn(noisy.shape, generator=generator, device=x.device)
            logits = base(noisy)
            hits = nn.functional.one_hot(logits.argmax(1).view(k, len(x)), logits.shape[1]).sum(0)
            counts = hits if counts is None else counts + hits
    assert counts is not None
    return counts


def predict_vote(counts: torch.Tensor, alpha: float | None) -> torch.Tensor:
    """Cohen et al.'s PREDICT from vote counts: the top class, or -1 (abstain) when the two-sided
    binomial test of n_A against n_A + n_B (top two counts) at 1/2 has p-value > alpha."""
    top2 = counts.topk(2, dim=1)
    pred = top2.indices[:, 0].clone()
    if alpha is None:
        return pred
    # scipy.stats costs 1.5 s of imports, which every process that loads the model registry would
    # pay (each Snakefile parse, each stage): only the statistics here need it
    from scipy.stats import binomtest
    for i, (na, nb) in enumerate(top2.values.tolist()):
        if binomtest(int(na), int(na + nb), 0.5).pvalue > alpha:
            pred[i] = -1
    return pred


def certify(base: nn.Module, x: torch.Tensor, sigma: float, n0: int, n: int, alpha: float,
            generator: torch.Generator, chunk_size: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Cohen et al.'s CERTIFY, per image: (class or -1 = abstain, certified L2 radius).

    ``n0`` noise samples select the top class c_A; ``n`` fresh ones estimate its probability, whose
    one-sided (1 - alpha) Clopper-Pearson lower bound p_A comes from scipy's exact binomial
    interval (two-sided at 1 - 2 alpha, the lower end). p_A < 1/2 abstains with radius 0;
    otherwise the radius is sigma * Phi^-1(p_A)."""
    from scipy.stats import binomtest, norm  # see predict_vote

    guess = vote_counts(base, x, sigma, n0, generator, chunk_size).argmax(1)
    counts = vote_counts(base, x, sigma, n, generator, chunk_size)
    n_a = counts.gather(1, guess.view(-1, 1)).view(-1).tolist()
    pred = guess.clone()
    radius = torch.zeros(len(x), dtype=torch.float64)
    for i, k in enumerate(n_a):
        p_low = binomtest(int(k), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        if p_low < 0.5:
            pred[i] = -1
        else:
            radius[i] = sigma * float(norm.ppf(p_low)) if p_low < 1 else math.inf
    return pred, radius


class Smoothed(nn.Module):
    """The deployed smoothed classifier (see the module docstring for its two faces)."""

    def __init__(self, base: nn.Module, cfg: SmoothedConfig) -> None:
        super().__init__()
        self.base = base
        self.sigma, self.n, self.alpha = cfg.sigma, cfg.n, cfg.alpha
        self.grad_samples, self.chunk_size, self.seed = cfg.grad_samples, cfg.chunk_size, cfg.seed
        self._gen: torch.Generator | None = None

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """CERTIFY of this smoothed classifier (what the ``certify`` grid column calls)."""
        return certify(self.base, x, self.sigma, n0, n, alpha, generator, self.chunk_size)

    def generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device).manual_seed(self.seed)
        return self._gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = self.generator(x.device)
        if torch.is_grad_enabled():
            probs = torch.stack([self.base(x + self.sigma * torch.randn(x.shape, generator=gen, device=x.device))
                                 .softmax(1) for _ in range(self.grad_samples)]).mean(0)
            logp = probs.clamp_min(1e-12).log()
            return torch.cat([logp, logp.new_full((len(x), 1), ABSTAIN_LOGIT)], 1)
        counts = vote_counts(self.base, x, self.sigma, self.n, gen, self.chunk_size)
        pred = predict_vote(counts, self.alpha)
        scores = torch.cat([counts.float() / self.n, torch.full((len(x), 1), -1.0, device=x.device)], 1)
        scores[pred < 0, -1] = 2.0  # abstain wins
        return scores


def deploy(cfg: SmoothedConfig, env: Env) -> Smoothed:
    return Smoothed(env.model(cfg.model), cfg)


SOURCES.register("smoothed", SmoothedConfig)(
    Receipt("smoothed", deploy, lambda cfg: {"base": cfg.model, "sigma": cfg.sigma}))
