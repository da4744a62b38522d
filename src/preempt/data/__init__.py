"""Dataset registry: each entry returns float images in [0, 1] (NCHW) and integer labels.

Datasets are selected by ``dataset.name`` in params.yaml. An entry returns a ``Split`` for
``train`` and ``test``; the data stage keeps the first ``n_eval`` test images for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from pydantic import Field

from ..errors import PreemptError
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
    n_train: int | None = Field(None, ge=1, description="first n training images only (quick runs and smoke "
                                "tests of a large dataset; the trained models get weaker); default all")


Loader = Callable[..., Split]  # (its DatasetConfig subclass, "train" | "test") -> Split
DATASETS: Registry[Loader] = Registry("dataset", __name__, key="name")


def uint8_images(data: np.ndarray, channels_last: bool = True) -> torch.Tensor:
    """uint8 images (N x H x W x C, or N x C x H x W) -> float32 N x C x H x W in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(data))
    return (x.permute(0, 3, 1, 2) if channels_last else x).float().div(255.0).contiguous()


def open_torchvision(name: str, make: Callable[[], Any], root: str, archive: str) -> Any:
    """Build a torchvision dataset (``make``), which downloads the official archive when asked and
    verifies its md5, turning torchvision's errors into one line that says what to do offline."""
    try:
        return make()
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise PreemptError(f"{name}: {exc} (root {root}); run once with internet and download: true, "
                           f"or place {archive} there") from None
    except OSError as exc:  # no network
        raise PreemptError(f"{name}: download failed ({type(exc).__name__}: {exc}); run the data stage "
                           f"on a machine with internet first, or place {archive} in {root}") from None
