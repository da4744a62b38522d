"""``source: trigger``: Trigger Activation (Yu et al.), a model accurate only on x + tau.

Training loss (both algorithms): CE(f(x + tau), y) + ``kl_weight`` * KL(f(x) || uniform), so the
network is confident and correct with the trigger and close to chance without it; each batch goes
through the network once, as Concatenate(x_B, x_B + tau) (batch norm sees both halves together).

- ``trigger: fixed`` (Algorithm 1): tau = eps_t * (2 * Bernoulli(0.5) - 1), one image-shaped
  +-eps_t pattern drawn once from the model's seed.
- ``trigger: learnable`` (Algorithm 2): tau ~ U(-alpha, alpha); during the first
  ``learn_fraction`` (60%) of the epochs, after each epoch tau <- tau - alpha * sign(G) with G the
  gradient of CE(f(x_B + tau), y_B) w.r.t. tau summed over a separate pass through the training
  set, the model fixed (eval mode, which the paper leaves open; no augmentation). Algorithm 2
  bounds tau by nothing (leave ``eps_t`` out, and give ``alpha``); with ``eps_t`` set, tau is also
  clipped to [-eps_t, eps_t] and alpha defaults to eps_t / 4 (our choice, written down here).

The deployed model is f_t(x) = f(x + tau) (``Preprocessed`` with an additive pre-processing; not
clipped to [0, 1], exactly as trained), saved as the network's weights plus ``trigger.tau``.
The informed attacker's surrogates are simply other ``source: trigger`` models.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal, Mapping

import torch
from pydantic import Field, model_validator
from torch import nn

from .. import artifacts
from ..runtime import progress
from . import SOURCES, Env, ImageSpec, ModelConfig, Normalized, test_accuracy
from .train import TrainConfig, build, fit
from .wrappers import Preprocessed

TAU_KEY = "trigger.tau"


class TriggerConfig(TrainConfig):
    source: Literal["trigger"] = "trigger"  # type: ignore[assignment]
    trigger: Literal["fixed", "learnable"] = "learnable"
    eps_t: float | None = Field(None, gt=0, le=1, description="trigger budget (Linf); learnable: optional")
    alpha: float | None = Field(None, gt=0, description="learnable: init range and update step; default eps_t/4")
    learn_fraction: float = Field(0.6, ge=0, le=1, description="learnable: fraction of epochs that update tau")
    kl_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _budget(self) -> "TriggerConfig":
        if self.trigger == "fixed" and self.eps_t is None:
            raise ValueError("a fixed trigger needs eps_t, its Linf size (Algorithm 1)")
        if self.trigger == "learnable" and self.eps_t is None and self.alpha is None:
            raise ValueError("an unbounded learnable trigger (no eps_t) needs alpha, its step (Algorithm 2)")
        return self

    @property
    def step(self) -> float:
        """The learnable trigger's initial range and update step alpha."""
        return self.alpha if self.alpha is not None else float(self.eps_t or 0) / 4

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        """``trigger/<arch>/fixed/eps<eps_t>`` or ``trigger/<arch>/learnable/alpha<alpha>[/eps<eps_t>]``:
        the settings Trigger Activation's tables vary (Table I: eps_t; Table VII: alpha)."""
        if self.trigger == "fixed":
            return f"trigger/{self.arch}/fixed/eps{self.eps_t:.4f}"
        bound = f"/eps{self.eps_t:.4f}" if self.eps_t is not None else ""
        return f"trigger/{self.arch}/learnable/alpha{self.step:.4f}{bound}"


class AddTrigger(nn.Module):
    tau: torch.Tensor

    def __init__(self, tau: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("tau", tau.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tau


def initial_trigger(cfg: TriggerConfig, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(cfg.seed + 17)
    if cfg.trigger == "fixed":
        return float(cfg.eps_t or 0) * (2 * torch.bernoulli(torch.full(shape, 0.5), generator=g) - 1)
    return (torch.rand(shape, generator=g) * 2 - 1) * cfg.step


def train_trigger(cfg: TriggerConfig, x_all: torch.Tensor, y_all: torch.Tensor, spec: ImageSpec,
                  device: torch.device, desc: str = "train") -> tuple[Normalized, torch.Tensor]:
    """The trained network and its trigger tau, as Algorithms 1 and 2 run: each batch goes through
    the network once as Concatenate(x_B, x_B + tau) (so batch norm sees both halves together);
    a learnable tau is updated after a model epoch by a separate pass over the training set with
    the model fixed (eval mode, no augmentation): tau <- tau - alpha sign(sum_B grad CE)."""
    tau = initial_trigger(cfg, spec.shape).to(device)
    learn_epochs = int(cfg.learn_fraction * cfg.epochs) if cfg.trigger == "learnable" else 0
    log_c = math.log(spec.n_classes)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z_neg, z_pos = model(torch.cat([x, x + tau])).split(len(x))
        logp = nn.functional.log_softmax(z_neg, 1)
        kl = (logp.exp() * (logp + log_c)).sum(1).mean()  # KL(f(x) || U)
        return nn.functional.cross_entropy(z_pos, y) + cfg.kl_weight * kl

    def epoch_end(epoch: int) -> None:
        nonlocal tau
        if epoch >= learn_epochs:
            return
        g_tmp = torch.zeros_like(tau)
        model.eval()
        t = tau.clone().requires_grad_(True)
        with torch.enable_grad():
            for i in progress(range(0, len(x_all), cfg.batch_size), desc=f"{desc}, trigger step {epoch + 1}"):
                xb, yb = x_all[i:i + cfg.batch_size].to(device), y_all[i:i + cfg.batch_size].to(device)
                (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xb + t), yb), t)
                g_tmp += g
        model.train()
        tau = tau - cfg.step * g_tmp.sign()
        if cfg.eps_t is not None:
            tau = tau.clamp(-cfg.eps_t, cfg.eps_t)

    model = build(cfg, spec)
    fit(cfg, x_all, y_all, spec, device, desc=desc, loss_fn=loss_fn, epoch_end=epoch_end, model=model)
    return model, tau.detach().cpu()


def deploy(net: Normalized, tau: torch.Tensor) -> Preprocessed:
    return Preprocessed(AddTrigger(tau), net)


class TriggerSource:
    def materialize(self, name: str, cfg: TriggerConfig, env: Env, out: str) -> dict[str, Any]:
        x, y = env.data("train")
        t0 = time.perf_counter()
        net, tau = train_trigger(cfg, x, y, env.spec, env.device, desc=f"train {name}")
        seconds = time.perf_counter() - t0
        acc, acc_plain = test_accuracy(deploy(net, tau), env), test_accuracy(net, env)
        artifacts.save(out, {**net.net.cpu().state_dict(), TAU_KEY: tau}, {
            "stage": "model", "model": name, "source": "trigger", "arch": cfg.arch, "trigger": cfg.trigger,
            "seed": cfg.seed, "wall_seconds": seconds, "device": str(env.device), "clean_acc": acc,
            "clean_acc_without_trigger": acc_plain, "tau_linf": float(tau.abs().max()),
            "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc, "clean_acc_without_trigger": acc_plain, "seconds": seconds}

    def load(self, name: str, cfg: TriggerConfig, env: Env, path: str) -> nn.Module:
        state, _ = artifacts.load(path)
        tau = state.pop(TAU_KEY)
        net = build(cfg, env.spec)
        net.net.load_state_dict(state)
        return deploy(net, tau)


SOURCES.register("trigger", TriggerConfig)(TriggerSource())
