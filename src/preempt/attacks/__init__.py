"""Attack registry with one uniform interface (after torchattacks' ``Attack``).

Every entry is ``attack(model, x, y, *, cfg, generator) -> x_adv``: ``model`` takes images in
[0, 1], ``x`` is the input the attacker receives (the RE, or the reverted RE), and the budget
``cfg.eps`` is measured from ``x``. Results are clipped to [0, 1].
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import torch
from pydantic import Field, model_validator
from torch import nn

from ..registry import MethodConfig, ModelName, Registry

Attack = Callable[..., torch.Tensor]
ATTACKS: Registry[Attack] = Registry("attack", __name__)

Norm = Literal["Linf", "L2"]


class AttackConfig(MethodConfig):
    """Fields every attack has. ``surrogates`` makes it a transfer attack: the adversarial examples
    are crafted on each surrogate (white-box) and evaluated on the cell's victim; ``robust_acc``
    is then the mean over surrogates (R_T^{S,A} of Trigger Activation is its mean over victims).
    ``bpda`` differentiates every pre-processing defense of the attacked model as the identity.
    ``threat_eps`` counts an example robust when the attack lands farther than it from the true
    original (Moon et al.'s metric for attacks that start from a reconstruction)."""

    method: str
    eps: float = Field(ge=0, le=100, description="budget in the attack's norm (Linf: at most 1)")
    norm: Norm = "Linf"
    seed: int = 0
    surrogates: list[ModelName] = Field(default_factory=list)
    bpda: bool = False
    threat_eps: float | None = Field(None, gt=0, le=100, description="in the attack's norm")
    n_ex: int | None = Field(None, ge=1, description="attack only the first n_ex images of the cell")

    @model_validator(mode="after")
    def _linf_budget(self) -> "AttackConfig":
        for name in ("eps", "threat_eps"):
            value = getattr(self, name)
            if self.norm == "Linf" and value is not None and value > 1:
                raise ValueError(f"{name} {value} exceeds 1, the whole pixel range, for an Linf attack")
        return self

    def measure(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> dict[str, Any]:
        """Columns an attack adds to its cell by measuring the victim directly, overriding the
        scored ones (``certify`` reports certified accuracy as ``robust_acc``); tensor values are
        per-image results, saved in the cell's adv artifact instead. None by default."""
        return {}

    def core_ref(self) -> str:
        """What the attack itself is (its method, norm, budget and the knobs that define it)."""
        return f"{self.method}/{self.norm}/{self.eps:.4f}"

    def ref(self, surrogate_refs: Sequence[str] | None = None) -> str:
        """What ran, independently of the entry's name: e.g. ``autoattack/standard/Linf/0.0314``,
        ``pgd-ce/Linf/0.0314/20``, ``transfer[train/resnet18/standard,...]/mifgsm/Linf/0.1000``
        (the key that published numbers are matched on, see ``preempt.published``). A transfer
        attack names its surrogates by ``surrogate_refs`` (the models' own refs), or by their entry
        names where the caller has no models at hand; sorted, since the result (the mean over
        surrogates) does not depend on their order."""
        ref = self.core_ref()
        if self.bpda:
            ref = f"bpda+{ref}"
        if not self.surrogates:
            return ref
        names = sorted(surrogate_refs if surrogate_refs is not None else self.surrogates)
        return f"transfer[{','.join(names)}]/{ref}"


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def project(x: torch.Tensor, center: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project onto the eps-ball around ``center`` (per image), then onto the image box [0, 1]."""
    delta = x - center
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    return (center + delta).clamp(0.0, 1.0)


def uniform_ball(shape: torch.Size, eps: float, norm: Norm, generator: torch.Generator,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Random perturbations in the eps-ball: U(-eps, eps) per pixel (Linf) or uniform in the L2 ball."""
    if norm == "Linf":
        return (torch.rand(shape, generator=generator, device=device) * 2 - 1) * eps
    d = torch.randn(shape, generator=generator, device=device)
    n = d[0].numel()
    r = torch.rand((shape[0],), generator=generator, device=device) ** (1.0 / n)
    return d / _flat_norm(d) * (eps * r).view(-1, *([1] * (len(shape) - 1)))


def signed_step(grad: torch.Tensor, step: float, norm: Norm) -> torch.Tensor:
    """The steepest-ascent step of size ``step``: sign (Linf) or normalized gradient (L2)."""
    if norm == "Linf":
        return step * grad.sign()
    return step * grad / _flat_norm(grad)


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy w.r.t. the input (one forward + one backward pass)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def eot_grad(grad_fn: Callable[..., torch.Tensor], model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             eot_iter: int = 1) -> torch.Tensor:
    """Expectation over Transformation: the mean gradient over ``eot_iter`` calls of a randomized
    model (each call draws fresh randomness); one call for a deterministic model."""
    g = grad_fn(model, x, y)
    for _ in range(eot_iter - 1):
        g = g + grad_fn(model, x, y)
    return g / eot_iter
