"""``certify``: Cohen et al.'s CERTIFY on a smoothed victim (``source: smoothed``), as a grid column.

Certification is not an attack: it bounds every attack at once. The entry crafts nothing (its
examples are the inputs) and measures instead (``AttackConfig.measure``): per image the class and
the certified L2 radius (the victim's ``certify``: :func:`preempt.models.smoothed.certify`), then ``robust_acc`` = the
certified accuracy at radius ``eps`` (correct and radius >= eps; an abstention counts as wrong),
``cert_acc`` = the same at each of ``radii`` (JSON), ``cert_radius`` = the mean radius of the
correctly certified images (0 for the others), ``abstain`` = the share of abstentions; the
per-image ``radius`` and ``certified_class`` (-1: abstain) go into the cell's adv artifact. Moon et
al. (Table 7) use sigma 0.25 (CIFAR-10), 100,000 samples; Cohen et al. n0 = 100, alpha = 0.001.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import PreemptError
from . import ATTACKS, AttackConfig


class CertifyConfig(AttackConfig):
    method: Literal["certify"] = "certify"
    norm: Literal["L2"] = "L2"
    eps: float = Field(0.5, ge=0, le=100, description="radius at which robust_acc is the certified accuracy")
    n0: int = Field(100, ge=1, description="noise samples that select the class")
    n: int = Field(100_000, ge=1, description="noise samples that estimate its probability")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of the certificate")
    radii: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    def core_ref(self) -> str:
        return f"certify/L2/{self.eps:.4f}/n{self.n}"

    def measure(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> dict[str, Any]:
        # a certifiable victim (``models/smoothed.py``'s Smoothed) exposes certify(); found by that
        # method rather than by class, so attacks need not import the model sources
        found: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = next(
            (getattr(m, "certify") for m in model.modules() if callable(getattr(m, "certify", None))), None)
        if found is None:
            raise PreemptError("attack certify: the victim is not a smoothed classifier; use a model with "
                               "source: smoothed as the victim of certify cells")
        pred, radius = found(x, self.n0, self.n, self.alpha, generator)
        right = (pred == y.to(pred.device)).cpu()
        n = max(len(y), 1)

        def acc(r: float) -> float:
            return 100.0 * float((right & (radius >= r)).sum()) / n

        return {"robust_acc": acc(self.eps), "robust_acc_ball": acc(self.eps),
                "cert_acc": json.dumps({f"{r:g}": acc(r) for r in self.radii}),
                "cert_radius": float(torch.where(right, radius.clamp(max=1e6), 0.0).mean()) if len(y) else math.nan,
                "abstain": 100.0 * float((pred < 0).sum()) / n,
                "radius": radius.float(), "certified_class": pred}


@ATTACKS.register("certify", CertifyConfig)
def no_perturbation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **_: Any) -> torch.Tensor:
    return x.clone()
