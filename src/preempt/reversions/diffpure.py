"""DiffPure (Nie et al., ICML 2022) with a user-provided DDPM score model, through ``diffusers``.

Purification diffuses the image to time t* and runs the reverse process back to 0:
x' = 2x - 1, x_t = sqrt(abar_t) x' + sqrt(1 - abar_t) z with t = round(t_star * T), then the
DDPM ancestral steps t-1, ..., 0 (``DDPMScheduler.step``), and back to [0, 1]. This is DiffPure's
VP-SDE discretised as DDPM (the paper's default t* = 0.1 on CIFAR-10). It is randomized: attack
it with EOT (and BPDA, since the full gradient through 100 UNet calls is memory-bound).

``checkpoint`` is a diffusers model folder (``config.json`` + ``diffusion_pytorch_model.safetensors``,
optionally ``scheduler_config.json``), e.g. ``google/ddpm-cifar10-32`` fetched on a machine with
internet (``huggingface-cli download google/ddpm-cifar10-32 --local-dir DIR``). Only safetensors
weights are read (no pickle); ``sha256`` pins the weights file. Nothing is downloaded here: without
the folder, the stage stops with one line before any compute.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from .. import artifacts
from ..errors import PreemptError
from . import REVERSIONS, TransformConfig

WEIGHTS = "diffusion_pytorch_model.safetensors"


class DiffPureConfig(TransformConfig):
    randomized: ClassVar[bool] = True
    method: Literal["diffpure"] = "diffpure"
    checkpoint: str = Field(description="a diffusers DDPM folder (config.json + safetensors weights)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    t_star: float = Field(0.1, gt=0, le=1, description="diffusion time, as a fraction of the schedule")


@functools.lru_cache(maxsize=2)
def score_model(checkpoint: str, sha256: str | None) -> tuple[Any, Any]:
    """(UNet, scheduler) from a local folder, checked before it is read."""
    folder = artifacts.user_path(checkpoint)
    weights = Path(folder) / WEIGHTS
    if not weights.is_file():
        raise PreemptError(f"DiffPure: no score model at {folder} (expected {WEIGHTS} and config.json); "
                           "download one, e.g. `huggingface-cli download google/ddpm-cifar10-32 --local-dir DIR`, "
                           "and set checkpoint: DIR")
    if sha256 is not None and artifacts.sha256(weights) != sha256:
        raise PreemptError(f"DiffPure: {weights} does not match its sha256 in params.yaml; the download is "
                           "corrupted or another model: fetch it again")
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(str(folder), use_safetensors=True, low_cpu_mem_usage=False).eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    has_sched = (Path(folder) / "scheduler_config.json").is_file()
    sched = DDPMScheduler.from_pretrained(str(folder)) if has_sched else DDPMScheduler()
    return unet, sched


def purify(x: torch.Tensor, cfg: DiffPureConfig, generator: torch.Generator) -> torch.Tensor:
    unet, sched = score_model(cfg.checkpoint, cfg.sha256)
    unet = unet.to(x.device)
    n_steps = sched.config.num_train_timesteps
    t = max(1, round(cfg.t_star * n_steps))
    abar = sched.alphas_cumprod.to(x.device, x.dtype)[t - 1]
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
    sample = abar.sqrt() * (2 * x - 1) + (1 - abar).sqrt() * noise
    sched.set_timesteps(n_steps)  # every step of the chain, from t-1 down to 0
    for s in range(t - 1, -1, -1):
        eps = unet(sample, s).sample
        sample = sched.step(eps, s, sample, generator=generator).prev_sample
    return ((sample + 1) / 2).clamp(0, 1)


@REVERSIONS.register("diffpure", DiffPureConfig)
def run(x_r: torch.Tensor, *, cfg: DiffPureConfig, generator: torch.Generator, **_: Any) -> torch.Tensor:
    return purify(x_r, cfg, generator)
