"""Dataset registry: each entry returns float images in [0, 1] (NCHW) and integer labels.

Datasets are selected by ``dataset.name`` in params.yaml. An entry returns a ``Split`` for
``train`` and ``test``; the data stage keeps the first ``n_eval`` test images for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import Field

from ..registry import MethodConfig, Registry


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32, N x C x H x W, in [0, 1]
    y: torch.Tensor  # int64, N
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per-channel normalization applied inside every model wrapper
    std: tuple[float, ...]


class DatasetConfig(MethodConfig):
    name: str
    n_eval: int = Field(500, ge=1, description="first n test images that are defended and attacked")


Loader = Callable[..., Split]  # (its DatasetConfig subclass, "train" | "test") -> Split
DATASETS: Registry[Loader] = Registry("dataset", __name__, key="name")
