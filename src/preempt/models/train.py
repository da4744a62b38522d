"""``source: train``: the pipeline trains the model itself and caches it as a stage output."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Literal, Mapping

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import nn

from .. import artifacts
from ..errors import ConfigError, PreemptError
from ..registry import MethodConfig, closest, validate_model
from ..runtime import generator, log, progress
from . import (ARCHS, SOURCES, ArchName, Env, ImageSpec, ModelConfig, Normalized, load_weights, save_weights,
               test_accuracy)
from .recipes import RECIPES, RecipeConfig


class OptimConfig(MethodConfig):
    """How a network is optimised (shared by every source that trains one)."""

    recipe: dict[str, Any] = Field(default_factory=lambda: {"method": "standard"})
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only")
    # cosine decays the step size to 0 over the run: what makes few-epoch (fast) adversarial
    # training converge (Wong et al. use a cyclic schedule for the same reason). multistep: x0.1
    # at each of lr_milestones (epochs), by default at 50% and 83% of the epochs (JATP's schedule).
    lr_schedule: Literal["constant", "cosine", "multistep"] = "constant"
    lr_milestones: list[PositiveInt] | None = Field(None, description="multistep: the epochs after which the lr is "
                                                             "divided by 10 (default: 50% and 83% of epochs)")
    # hflip: random horizontal flips of each training image (natural images; not for digits);
    # crop: zero-pad 4 pixels, then a random crop back to the image size (the CIFAR standard).
    augment: list[Literal["hflip", "crop"]] = Field(default_factory=list)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0

    def code_modules(self) -> list[str]:
        return [RECIPES[self.recipe["method"]].module]

    @field_validator("recipe")
    @classmethod
    def _recipe(cls, v: dict[str, Any]) -> dict[str, Any]:
        method = v.get("method", "<missing>")
        if method not in RECIPES:
            raise ValueError(f"unknown training recipe {method!r}; {closest(str(method), RECIPES.names())}")
        try:
            return validate_model(RECIPES[method].config, v, "recipe").model_dump()
        except ConfigError as err:
            raise ValueError(str(err)) from None


class TrainConfig(OptimConfig, ModelConfig):
    source: Literal["train"] = "train"
    arch: ArchName

    def code_modules(self) -> list[str]:
        return [ARCHS[self.arch].module, *super().code_modules()]

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        return f"train/{self.arch}/{self.recipe['method']}"

    def adversarial(self, models: Mapping[str, ModelConfig]) -> bool | None:
        return "eps" in self.recipe  # a recipe trained against a perturbation budget


def build(cfg: TrainConfig, spec: ImageSpec) -> Normalized:
    """The wrapped, randomly initialised network for ``cfg`` (init is seeded by ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    return Normalized(ARCHS[cfg.arch].fn(spec.shape, spec.n_classes), spec.mean, spec.std)


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image zero-padded by ``pad`` pixels, then cropped back to its size at a random offset
    (torchvision's ``RandomCrop(size, padding=pad)``, per image, drawn from ``gen``)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n x 1 x h x 1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n x 1 x 1 x w
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]


Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def fit(cfg: OptimConfig, x_all: torch.Tensor, y_all: torch.Tensor, spec: ImageSpec, device: torch.device,
        desc: str = "train", loss_fn: Loss | None = None,
        epoch_end: Callable[[int], None] | None = None, model: nn.Module | None = None) -> nn.Module:
    """Minibatch Adam over ``cfg.epochs``; each batch is transformed by the recipe first.

    The batch loss is the recipe's (``RecipeConfig.loss``: cross-entropy on the crafted inputs, or
    TRADES's and MART's own). Sources that train differently reuse this loop through ``loss_fn`` (the
    batch loss on the crafted inputs, model in train mode; then the recipe must not have a loss of its own), ``epoch_end`` (called after each epoch, e.g. a trigger update) and ``model``
    (a pre-built network, e.g. a denoiser in front of a frozen target)."""
    if model is None:
        if not isinstance(cfg, TrainConfig):
            raise TypeError("fit: a config without an architecture needs a pre-built model")
        model = build(cfg, spec)
    model = model.to(device)
    recipe = RECIPES[cfg.recipe["method"]]
    rcfg = recipe.config.model_validate(cfg.recipe)
    assert isinstance(rcfg, RecipeConfig), f"recipe {recipe.name}: its config must derive RecipeConfig"
    if loss_fn is not None and rcfg.own_loss():
        raise ConfigError(f"{desc}: recipe {cfg.recipe['method']!r} trains on a loss of its own, and this source "
                          "trains on its own loss; use a recipe that crafts inputs only (e.g. pgd_at)")
    trainable = [q for q in model.parameters() if q.requires_grad]
    opt = (torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
           if cfg.optimizer == "sgd" else torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay))
    steps_per_epoch = -(-len(y_all) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if cfg.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    elif cfg.lr_schedule == "multistep":
        milestones = ([e * steps_per_epoch for e in cfg.lr_milestones] if cfg.lr_milestones is not None
                      else [int(0.5 * total_steps), int(0.83 * total_steps)])
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, 0.1)
    gen = generator(cfg.seed + 1)
    x_all, y_all = x_all.to(device), y_all.to(device)
    if len(y_all) == 0:
        raise PreemptError("the dataset has no training split, so models cannot be trained on it; "
                           "use source: robustbench or source: file for this dataset")
    for epoch in progress(range(cfg.epochs), desc=desc):
        total, seen = 0.0, 0
        order = torch.randperm(len(y_all), generator=gen).to(device)
        # a bar per epoch over its batches as well: one epoch can take half an hour (JATP on a CPU)
        for i in progress(range(0, len(order), cfg.batch_size), desc=f"{desc}, epoch {epoch + 1}/{cfg.epochs}"):
            idx = order[i:i + cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            if "crop" in cfg.augment:
                x = random_crop(x, 4, gen)
            if "hflip" in cfg.augment:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            model.eval()
            x_in = recipe.fn(model, x, y, cfg=rcfg, generator=gen)
            model.train()
            loss = rcfg.loss(model, x, x_in.detach(), y) if loss_fn is None else loss_fn(model, x_in.detach(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            value = float(loss.detach())
            # stop at the first step that would make the weights NaN (a finite loss can still have
            # a non-finite gradient), rather than fail later with a message about NaN inputs
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, float("inf")))
            if not (math.isfinite(value) and math.isfinite(grad_norm)):
                raise PreemptError(f"{desc}: training diverged at epoch {epoch + 1}, batch {i // cfg.batch_size + 1} "
                                   f"(loss {value}, gradient norm {grad_norm}); lower its lr in params.yaml")
            opt.step()
            if sched is not None:
                sched.step()
            total, seen = total + value * len(idx), seen + len(idx)
        log.info("%s: epoch %d/%d, training loss %.4f", desc, epoch + 1, cfg.epochs, total / max(seen, 1))
        if epoch_end is not None:
            epoch_end(epoch)
    return model.eval()


class TrainSource:
    def materialize(self, name: str, cfg: TrainConfig, env: Env, out: str) -> dict[str, Any]:
        x, y = env.data("train")
        t0 = time.perf_counter()
        model = build(cfg, env.spec)
        fit(cfg, x, y, env.spec, env.device, desc=f"train {name}", model=model)
        seconds = time.perf_counter() - t0
        acc = test_accuracy(model, env)
        save_weights(out, model, {
            "model": name, "arch": cfg.arch, "recipe": cfg.recipe, "seed": cfg.seed, "wall_seconds": seconds,
            "device": str(env.device), "clean_acc": acc, "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc, "seconds": seconds}

    def load(self, name: str, cfg: TrainConfig, env: Env, path: str) -> nn.Module:
        return load_weights(build(cfg, env.spec), path)


SOURCES.register("train", TrainConfig)(TrainSource())
