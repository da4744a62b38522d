"""``source: standin``: a small random-weight network standing in for a zoo model.

The ``shrink`` switch (``preempt.shrink``, test-only) puts one in place of every RobustBench model,
so that a paper experiment's whole DAG runs on a CPU in minutes: two strided 3x3 convolutions
(8 and 16 channels), average pooling to 2x2 and a linear layer, for any image size and number of
classes. The weights are drawn from a generator seeded by the zoo name, so every stage that loads
it gets the same network. Nothing is downloaded; its accuracy is chance level.

With ``arch: zoo`` (``shrink: {stand_in: zoo}``) it is the zoo entry's own architecture instead
(``robustbench.architecture``: WRN-94-16, Swin-L, ... at full width), with its initial weights
drawn on the stage's device from the same seed: the paper-scale compute of every stage, for a GPU
without internet. Those networks are too large to copy into the pipeline's cache per stage (1.4 GB
for WRN-94-16), so the stage output is a receipt and each loading stage draws them again.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from .. import artifacts
from . import SOURCES, Env, ImageSpec, ModelConfig, Normalized, load_weights, save_weights, test_accuracy
from .robustbench import architecture


FEATURE_LAYER = "net.features"  # its feature map, for a model built on its features (a JATP denoiser)


class StandInConfig(ModelConfig):
    source: Literal["standin"] = "standin"
    name: str  # the model it stands for (e.g. a RobustBench zoo name): seeds the weights
    arch: Literal["small", "zoo"] = Field("small", description="small: two convolutions; zoo: the zoo entry's own")
    dataset: Literal["cifar10", "cifar100", "imagenet"] = "cifar10"  # the zoo entry (arch: zoo)
    threat_model: Literal["Linf", "L2", "corruptions"] = "Linf"

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        return f"standin/{self.name}"


def _seed(cfg: StandInConfig) -> int:
    return int.from_bytes(hashlib.sha256(cfg.name.encode()).digest()[:8], "little")


def build_zoo(cfg: StandInConfig, device: torch.device) -> nn.Module:
    """The zoo architecture, its weights drawn on ``device`` (fast on a GPU) from the name's seed."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):  # the stage's RNG streams untouched
        torch.manual_seed(_seed(cfg))
        return architecture(cfg.dataset, cfg.threat_model, cfg.name).eval()


def build(cfg: StandInConfig, spec: ImageSpec) -> Normalized:
    seed = _seed(cfg)
    with torch.random.fork_rng(devices=[]):  # the stage's own RNG stream is left as it was
        torch.manual_seed(seed)
        net = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(spec.shape[0], 8, 3, stride=2, padding=1), relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 16, 3, stride=2, padding=1), features=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(2),
            flatten=nn.Flatten(), fc=nn.Linear(64, spec.n_classes)))
    return Normalized(net, spec.mean, spec.std)


class StandInSource:
    def materialize(self, name: str, cfg: StandInConfig, env: Env, out: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        if cfg.arch == "zoo":  # a receipt: the loading stages draw the same weights again
            net = build_zoo(cfg, env.device)
            acc = test_accuracy(net, env)
            artifacts.save(out, {}, {"stage": "model", "model": name, "source": "standin", "stands_for": cfg.name,
                                     "arch": "zoo", "n_params": sum(t.numel() for t in net.parameters()),
                                     "clean_acc": acc, "device": str(env.device),
                                     "wall_seconds": time.perf_counter() - t0,
                                     "params_hash": artifacts.params_hash(cfg.model_dump())})
            return {"clean_acc": acc}
        model = build(cfg, env.spec)
        acc = test_accuracy(model, env)
        save_weights(out, model, {"model": name, "source": "standin", "stands_for": cfg.name, "clean_acc": acc,
                                  "device": str(env.device), "wall_seconds": time.perf_counter() - t0,
                                  "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc}

    def load(self, name: str, cfg: StandInConfig, env: Env, path: str) -> nn.Module:
        if cfg.arch == "zoo":
            artifacts.load_meta(path)
            return build_zoo(cfg, env.device)
        return load_weights(build(cfg, env.spec), path)


SOURCES.register("standin", StandInConfig)(StandInSource())
