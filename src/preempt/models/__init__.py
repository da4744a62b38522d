"""Model zoo: architectures, model sources and the [0,1]-input wrapper every model goes through.

``models.<name>.source`` selects how a model comes to be (``train``, ``file``, ``robustbench``,
``trigger``, ``jatp``, ``transform``: one module each). Every model is wrapped so it takes images in
[0, 1] and normalizes inside, so defenses and attacks never see normalization.

A source never looks up pipeline paths: the model stage hands it an :class:`Env` (the image
spec, the data splits, the other models of the experiment) and the file to write or read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Mapping, Protocol

import torch
from pydantic import AfterValidator
from torch import nn

from .. import artifacts, metrics
from ..registry import MethodConfig, Registry, closest

ArchFactory = Callable[[tuple[int, int, int], int], nn.Module]  # (C,H,W), n_classes -> module
ARCHS: Registry[ArchFactory] = Registry("architecture", "preempt.models", key="arch")


class ModelConfig(MethodConfig):
    """Fields every model entry has; ``ref`` says what the model is, independently of its name in
    params.yaml (the key that published numbers are matched on, see ``preempt.published``)."""

    source: str

    def ref(self, models: Mapping[str, "ModelConfig"]) -> str:
        return self.source

    def adversarial(self, models: Mapping[str, "ModelConfig"]) -> bool | None:
        """Whether the model was adversarially trained (claims such as "on every adversarially
        trained victim" select by it); None where the source cannot tell."""
        return None

    def external(self, name: str, fetch: bool) -> str | None:
        """Files from outside the pipeline this model reads (zoo weights, a checkpoint): check them
        (``fetch``: download what is absent, where the source can) and say what is in place, or
        raise one clear error. None: the model needs nothing external."""
        return None


@dataclass(frozen=True)
class ImageSpec:
    """What building a model needs to know about the data (from the data stage's sidecar)."""

    shape: tuple[int, int, int]
    n_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of_meta(cls, meta: Mapping[str, Any]) -> "ImageSpec":
        c, h, w = meta["image_shape"]
        return cls((int(c), int(h), int(w)), len(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]))


@dataclass(frozen=True)
class Env:
    """What the model stage gives a source: it never looks up pipeline paths itself.

    ``data(split)`` -> (images, labels) of ``train`` or ``test`` (the evaluation images);
    ``model(name)`` -> another model of the experiment, deployed and frozen on ``device`` (the base
    of a wrapper, the target of a denoiser); ``stored(name)`` -> the tensors another model's stage
    saved (a denoiser reused by ``denoiser_from``); ``configs`` -> every model entry."""

    spec: ImageSpec
    device: torch.device
    configs: Mapping[str, ModelConfig]
    data: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    model: Callable[[str], nn.Module]
    stored: Callable[[str], dict[str, torch.Tensor]]


class Source(Protocol):
    """How a model comes to be: ``materialize`` writes the stage output ``out`` and returns what to
    log; ``load`` builds the deployed model from it."""

    def materialize(self, name: str, cfg: Any, env: Env, out: str) -> dict[str, Any]: ...

    def load(self, name: str, cfg: Any, env: Env, path: str) -> nn.Module: ...


SOURCES: Registry[Source] = Registry("model source", "preempt.models", key="source")


def _known_arch(name: str) -> str:
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; {closest(name, ARCHS.names())}")
    return name


ArchName = Annotated[str, AfterValidator(_known_arch)]  # a config field naming an ARCHS entry


class Normalized(nn.Module):
    """Takes images in [0, 1]; normalizes with the dataset's mean/std before the network."""

    mean: torch.Tensor
    std: torch.Tensor

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


def test_accuracy(model: nn.Module, env: Env) -> float:
    """Clean accuracy (%) on the experiment's evaluation images: every model stage records it."""
    x, y = env.data("test")
    model = model.to(env.device).eval()
    return metrics.accuracy(metrics.predict(model, x.to(env.device)), y.to(env.device))


class Receipt:
    """A source whose model has no weights of its own (a wrapper around other models: an input
    transform, randomized smoothing): the stage output is a receipt recording what it wraps
    (``describe``) and its clean accuracy; ``deploy`` builds the model from the models it wraps."""

    def __init__(self, source: str, deploy: Callable[[Any, Env], nn.Module],
                 describe: Callable[[Any], dict[str, Any]]) -> None:
        self.source, self.deploy, self.describe = source, deploy, describe
        self.__module__ = deploy.__module__  # the registry's (and the DAG's) file for this source

    def materialize(self, name: str, cfg: Any, env: Env, out: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        acc = test_accuracy(self.deploy(cfg, env), env)
        artifacts.save(out, {}, {"stage": "model", "model": name, "source": self.source, **self.describe(cfg),
                                 "clean_acc": acc, "device": str(env.device),
                                 "wall_seconds": time.perf_counter() - t0,
                                 "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc}

    def load(self, name: str, cfg: Any, env: Env, path: str) -> nn.Module:
        artifacts.load_meta(path)
        return self.deploy(cfg, env)


def save_weights(out: str, model: Normalized, meta: dict[str, Any]) -> None:
    """The stage output of a model whose weights the pipeline holds: the inner network's state."""
    artifacts.save(out, dict(model.net.cpu().state_dict()), {"stage": "model", **meta})


def load_weights(model: Normalized, path: str) -> Normalized:
    """Fill a freshly built model with the weights saved by :func:`save_weights`."""
    state, _ = artifacts.load(path)
    model.net.load_state_dict(state)
    return model
