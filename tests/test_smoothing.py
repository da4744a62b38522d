"""Randomized smoothing (Cohen et al. 2019) as Moon et al. use it: the Gaussian recipe, the smoothed
victim's PREDICT with abstention and its soft gradients, CERTIFY, and PGD with restarts on it."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import norm
from torch import nn

from conftest import Linear
from preempt.attacks import ATTACKS
from preempt.attacks.certify import CertifyConfig
from preempt.errors import PreemptError
from preempt.models.recipes import GaussianRecipe, gaussian
from preempt.models.smoothed import Smoothed, SmoothedConfig, certify, predict_vote, vote_counts
from preempt.runtime import generator


class Threshold(nn.Module):
    """Class 0 when the first pixel exceeds t, else class 1: a linear base classifier whose smoothed
    version has the exact L2 radius |x_0 - t| (Cohen et al., Sec. 3.3)."""

    def __init__(self, t: float = 0.5) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.flatten(1)[:, 0] - self.t) * 1e3
        return torch.stack([s, -s], 1)


def images(first: list[float]) -> torch.Tensor:
    x = torch.full((len(first), 1, 4, 4), 0.5)
    x[:, 0, 0, 0] = torch.tensor(first)
    return x


def test_gaussian_recipe_adds_unclipped_noise_of_sigma() -> None:
    x = torch.full((64, 1, 8, 8), 0.5)
    out = gaussian(Linear(0), x, torch.zeros(64, dtype=torch.long), cfg=GaussianRecipe(sigma=0.25), generator=generator(0))
    noise = out - x
    assert abs(float(noise.std()) - 0.25) < 0.01 and abs(float(noise.mean())) < 0.01
    assert out.min() < 0 or out.max() > 1  # not clipped


def test_vote_counts_sum_to_n_and_follow_the_noise() -> None:
    x = images([0.9, 0.5, 0.1])
    counts = vote_counts(Threshold(), x, 0.1, 1000, generator(0), chunk_size=700)
    assert counts.shape == (3, 2) and counts.sum(1).tolist() == [1000] * 3
    assert counts[0, 0] > 990 and counts[2, 1] > 990 and 400 < counts[1, 0] < 600


def test_predict_abstains_on_a_split_vote_only() -> None:
    counts = torch.tensor([[100, 0], [52, 48], [0, 100], [60, 40]])
    assert predict_vote(counts, 0.001).tolist() == [0, -1, 1, -1]
    assert predict_vote(counts, 0.5).tolist() == [0, -1, 1, 0]
    assert predict_vote(counts, None).tolist() == [0, 0, 1, 0]


def test_certified_radius_grows_with_the_margin_and_is_zero_when_abstaining() -> None:
    first = [0.5, 0.6, 0.7, 0.8, 0.9, 0.3]
    pred, radius = certify(Threshold(), images(first), 0.25, 100, 5000, 0.001, generator(0))
    assert pred[0] == -1 and radius[0] == 0  # on the boundary: p_A = 1/2, abstain
    r = radius[1:5].tolist()
    assert pred[1:5].tolist() == [0] * 4 and r == sorted(r) and r[0] > 0
    exact = [abs(v - 0.5) for v in first]
    assert all(got <= e + 1e-6 for got, e in zip(radius.tolist(), exact))  # a lower bound...
    assert radius[3] > 0.8 * exact[3]  # ...and a tight one with 5000 samples
    assert pred[5] == 1 and radius[5] > 0
    # the radius is sigma * Phi^-1 of the Clopper-Pearson bound: with all votes for c_A it is finite
    _, full = certify(Threshold(), images([0.99]), 0.1, 10, 100, 0.001, generator(0))
    assert full[0] == pytest.approx(0.1 * norm.ppf(0.001 ** (1 / 100)), rel=1e-4)


def test_smoothed_victim_predicts_with_an_abstain_column_and_has_soft_gradients() -> None:
    model = Smoothed(Threshold(), SmoothedConfig(model="base", sigma=0.25, n=200, alpha=0.001)).eval()
    x = images([0.9, 0.5, 0.1])
    with torch.inference_mode():
        scores = model(x)
    assert scores.shape == (3, 3) and scores.argmax(1).tolist() == [0, 2, 1]  # 2 = abstain
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    assert out.shape == (3, 3) and torch.allclose(out[:, :2].exp().sum(1), torch.ones(3), atol=1e-5)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(out, torch.tensor([0, 0, 0])), xg)
    assert g.abs().sum() > 0


def test_certify_column_reports_certified_accuracy_at_eps() -> None:
    model = Smoothed(Threshold(), SmoothedConfig(model="base", sigma=0.25))
    cfg = CertifyConfig(eps=0.15, n0=50, n=2000, radii=[0.0, 0.15, 0.3])
    x = images([0.9, 0.6, 0.5, 0.45, 0.1])
    y = torch.tensor([0, 0, 0, 1, 0])  # radii about 0.4, 0.1, abstain, 0.05; the last certified but wrong
    out = cfg.measure(model, x, y, generator(0))
    per_r = json.loads(out["cert_acc"])
    assert per_r["0"] == pytest.approx(60.0) and per_r["0.15"] == pytest.approx(20.0) and per_r["0.3"] == pytest.approx(20.0)
    assert out["robust_acc"] == per_r["0.15"] and out["abstain"] == pytest.approx(20.0)
    assert out["certified_class"].tolist() == [0, 0, -1, 1, 1] and out["radius"][2] == 0
    assert out["radius"][0] > out["radius"][1] > 0
    assert torch.equal(ATTACKS["certify"].fn(model, x, y, cfg=cfg, generator=generator(0)), x)
    with pytest.raises(PreemptError, match="source: smoothed"):
        cfg.measure(Threshold(), x, y, generator(0))


def test_pgd_restarts_only_help_the_attacker() -> None:
    from preempt.attacks.pgd import PGDConfig

    model = Linear(5)
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = model(x).argmax(1)
    one = PGDConfig(eps=0.05, steps=3, alpha=0.02)
    many = one.model_copy(update={"restarts": 5})
    fooled = {k: int((model(ATTACKS["pgd"].fn(model, x, y, cfg=c, generator=generator(0))).argmax(1) != y).sum())
              for k, c in (("one", one), ("many", many))}
    assert fooled["many"] >= fooled["one"] and many.ref().endswith("x5")
