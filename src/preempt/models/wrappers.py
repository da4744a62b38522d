"""Victims behind a test-time defense: T(P(x)), with P an input transform or a trained denoiser.

``Preprocessed`` is the one deployed form of every pre-processing defense (JPEG, bit-depth,
Gaussian filter, random resize-and-pad, a JATP denoiser, DiffPure). Attacks see an ordinary
[0, 1] model, so a white-box attack differentiates through P (the adaptive attack of the JATP
paper). Two standard adaptive tools are switches, not separate code paths:

- BPDA (Athalye et al., 2018): the forward pass runs P, the backward pass treats P as the
  identity (``x + (P(x) - x).detach()``). Forced where P has no useful gradient (JPEG, rounding);
  an attack entry with ``bpda: true`` turns it on for differentiable P too (``bpda`` context).
- EOT: a randomized P draws fresh randomness on every call, so an attack that averages
  gradients over calls (PGD ``eot_iter``, AutoAttack ``version: rand``) is EOT.

``source: transform`` (``models/transform.py``) deploys a registered transform in front of
another model of the experiment; Trigger Activation and JATP deploy through ``Preprocessed`` too.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn

from ..reversions import TransformConfig


class Preprocessed(nn.Module):
    """``model(pre(x))``; ``bpda`` makes the backward pass skip ``pre``."""

    def __init__(self, pre: nn.Module, model: nn.Module, differentiable: bool = True) -> None:
        super().__init__()
        self.pre = pre
        self.model = model
        self.differentiable = differentiable
        self.bpda = not differentiable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bpda:
            with torch.no_grad():
                z = self.pre(x)
            z = x + (z - x).detach()  # straight-through: forward P(x), gradient of the identity
        else:
            z = self.pre(x)
        return self.model(z)


@contextlib.contextmanager
def bpda(model: nn.Module, on: bool = True) -> Iterator[nn.Module]:
    """Within the block, every pre-processing inside ``model`` is differentiated as the identity."""
    wrapped = [m for m in model.modules() if isinstance(m, Preprocessed)]
    before = [m.bpda for m in wrapped]
    for m in wrapped:
        m.bpda = m.bpda or on
    try:
        yield model
    finally:
        for m, b in zip(wrapped, before):
            m.bpda = b


class Transform(nn.Module):
    """A registered transform as a module; randomized ones draw from a private, seeded generator."""

    def __init__(self, fn: Callable[..., torch.Tensor], cfg: TransformConfig, seed: int) -> None:
        super().__init__()
        self.fn, self.cfg, self.seed = fn, cfg, seed
        self._gen: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._gen is None or self._gen.device != x.device:
            self._gen = torch.Generator(device=x.device).manual_seed(self.seed)
        return self.fn(x, cfg=self.cfg, generator=self._gen, redefend=None)
