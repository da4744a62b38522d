"""``source: train``: the pipeline trains the model itself and caches it as a stage output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from .. import artifacts
from ..errors import ConfigError, PreemptError
from ..registry import MethodConfig, closest
from . import ARCHS, SOURCES, ArchName, Normalized, load_weights, save_weights, test_accuracy
from .recipes import RECIPES


class TrainConfig(MethodConfig):
    source: Literal["train"] = "train"
    arch: ArchName
    recipe: dict[str, Any] = Field(default_factory=lambda: {"method": "standard"})
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    # cosine decays the Adam step size to 0 over the run: what makes few-epoch (fast) adversarial
    # training converge (Wong et al. use a cyclic schedule for the same reason).
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # hflip: random horizontal flips of each training image (natural images; not for digits).
    augment: list[Literal["hflip"]] = Field(default_factory=list)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    def code_modules(self) -> list[str]:
        return [ARCHS[self.arch].module, RECIPES[self.recipe["method"]].module]

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: dict[str, Any]) -> dict[str, Any]:
        from ..config import validate_model

        method = v.get("method", "<missing>")
        if method not in RECIPES:
            raise ValueError(f"unknown training recipe {method!r}; {closest(str(method), RECIPES.names())}")
        try:
            return validate_model(RECIPES[method].config, v, "recipe").model_dump()
        except ConfigError as err:
            raise ValueError(str(err)) from None


@dataclass(frozen=True)
class ImageSpec:
    """What building a model needs to know about the data, read from the data sidecar."""

    shape: tuple[int, int, int]
    n_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, data_artifact: str) -> "ImageSpec":
        meta = artifacts.load_meta(data_artifact)
        return cls(tuple(meta["image_shape"]), len(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]))  # type: ignore[arg-type]


def build(cfg: TrainConfig, spec: ImageSpec) -> nn.Module:
    """The wrapped, randomly initialised network for ``cfg`` (init is seeded by ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    return Normalized(ARCHS[cfg.arch].fn(spec.shape, spec.n_classes), spec.mean, spec.std)


def fit(cfg: TrainConfig, x_all: torch.Tensor, y_all: torch.Tensor, spec: ImageSpec, device: torch.device,
        desc: str = "train") -> nn.Module:
    """Minibatch Adam over ``cfg.epochs``; each batch is transformed by the recipe first."""
    from ..runtime import generator, progress

    model = build(cfg, spec).to(device)
    recipe = RECIPES[cfg.recipe["method"]]
    rcfg = recipe.config.model_validate(cfg.recipe)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(y_all) // cfg.batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
             if cfg.lr_schedule == "cosine" else None)
    gen = generator(cfg.seed + 1)
    x_all, y_all = x_all.to(device), y_all.to(device)
    if len(y_all) == 0:
        raise PreemptError("the dataset has no training split, so models cannot be trained on it; "
                           "use source: robustbench or source: file for this dataset")
    from ..runtime import log

    for epoch in progress(range(cfg.epochs), desc=desc):
        total, seen = 0.0, 0
        order = torch.randperm(len(y_all), generator=gen).to(device)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            if "hflip" in cfg.augment:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            model.eval()
            x_in = recipe.fn(model, x, y, cfg=rcfg, generator=gen)
            model.train()
            loss = nn.functional.cross_entropy(model(x_in.detach()), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total, seen = total + float(loss.detach()) * len(idx), seen + len(idx)
        log.info("%s: epoch %d/%d, training loss %.4f", desc, epoch + 1, cfg.epochs, total / max(seen, 1))
    return model.eval()


class TrainSource:
    @staticmethod
    def materialize(name: str, cfg: TrainConfig, params: Any, out: str, device: torch.device) -> dict[str, Any]:
        from ..dag import data_path

        train, _ = artifacts.load(data_path("train"))
        t0 = time.perf_counter()
        model = fit(cfg, train["x"], train["y"], ImageSpec.of(data_path("train")), device, desc=f"train {name}")
        seconds = time.perf_counter() - t0
        acc = test_accuracy(model, device)
        save_weights(out, model, {
            "model": name, "arch": cfg.arch, "recipe": cfg.recipe, "seed": cfg.seed, "wall_seconds": seconds,
            "device": str(device), "clean_acc": acc, "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc, "seconds": seconds}

    @staticmethod
    def load(name: str, cfg: TrainConfig, params: Any, path: str) -> nn.Module:
        from ..dag import data_path

        return load_weights(build(cfg, ImageSpec.of(data_path("test"))), path)


SOURCES.register("train", TrainConfig)(TrainSource)  # type: ignore[arg-type]
