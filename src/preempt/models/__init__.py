"""Model zoo: architectures, model sources and the [0,1]-input wrapper every model goes through.

``models.<name>.source`` selects how a model comes to be (``train`` here; ``file`` and
``robustbench`` plug in the same way). Every model is wrapped so it takes images in [0, 1] and
normalizes inside, so defenses and attacks never see normalization.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Protocol

from pydantic import AfterValidator

import torch
from torch import nn

from ..registry import Registry

ArchFactory = Callable[[tuple[int, int, int], int], nn.Module]  # (C,H,W), n_classes -> module
ARCHS: Registry[ArchFactory] = Registry("architecture", "preempt.models", key="arch")


class Source(Protocol):
    """How a model comes to be: ``materialize`` writes the stage output, ``load`` reads it back."""

    def materialize(self, name: str, cfg: Any, params: Any, out: str, device: torch.device) -> dict[str, Any]: ...

    def load(self, name: str, cfg: Any, params: Any, path: str) -> nn.Module: ...


SOURCES: Registry[Any] = Registry("model source", "preempt.models", key="source")


def _known_arch(name: str) -> str:
    from ..registry import closest

    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; {closest(name, ARCHS.names())}")
    return name


ArchName = Annotated[str, AfterValidator(_known_arch)]  # a config field naming an ARCHS entry


class Normalized(nn.Module):
    """Takes images in [0, 1]; normalizes with the dataset's mean/std before the network."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def frozen(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Eval mode, no parameter gradients: models are fixed functions for defenses and attacks."""
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_accuracy(model: nn.Module, device: torch.device | str) -> float:
    """Clean accuracy (%) on the experiment's evaluation images: every model stage records it."""
    from .. import artifacts, metrics
    from ..dag import data_path

    test, _ = artifacts.load(data_path("test"))
    model = model.to(device).eval()
    return metrics.accuracy(metrics.predict(model, test["x"].to(device)), test["y"].to(device))


def save_weights(out: str, model: Normalized, meta: dict[str, Any]) -> None:
    """The stage output of a model whose weights the pipeline holds: the inner network's state."""
    from .. import artifacts

    artifacts.save(out, dict(model.net.cpu().state_dict()), {"stage": "model", **meta})


def load_weights(model: Normalized, path: str) -> Normalized:
    """Fill a freshly built model with the weights saved by :func:`save_weights`."""
    from .. import artifacts

    state, _ = artifacts.load(path)
    model.net.load_state_dict(state)
    return model


def load(name: str, params: Any, device: torch.device | str = "cpu") -> nn.Module:
    """Load model ``name`` of the experiment from its stage output, frozen, on ``device``."""
    from ..dag import model_path

    cfg = params.models[name]
    src = SOURCES[cfg.source].fn  # type: ignore[attr-defined]
    from ..runtime import accelerate

    return accelerate(frozen(src.load(name, cfg, params, model_path(name)), device), params.runtime, device)
