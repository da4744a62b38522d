"""Reversion registry: what an adaptive attacker does to a robust example before attacking it.

Uniform signature: ``revert(x_r, *, cfg, redefend, generator) -> x_tilde`` where
``redefend(x, roles)`` re-runs the cell's defense on ``x`` with the given models in its roles
(role -> model name). ``none`` passes the RE through, so every grid cell has the same shape.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch

from ..registry import MethodConfig, Registry

Reversion = Callable[..., torch.Tensor]
REVERSIONS: Registry[Reversion] = Registry("reversion", __name__)


class ReversionConfig(MethodConfig):
    """Fields every reversion has."""

    method: str


class TransformConfig(ReversionConfig):
    """An input transform: usable as a reversion on REs *and* as a test-time defense in front of a
    victim (``models.<name>.source: transform``). ``differentiable`` says whether autograd gives a
    useful gradient through it (if not, attacks on the wrapped victim use BPDA's identity
    gradient); ``randomized`` whether each call draws fresh randomness (attack it with EOT)."""

    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
