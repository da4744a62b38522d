"""MCGS: the forward/backward cascade with gradient smoothing of Fast Preemption and MSPD.

One implementation covers both papers. With labels y = f_c(x) from the labelling classifier and
the adversarially trained backbone f_b, the schedule (e.g. ``F1B1`` = MSPD, ``F1B2`` = Fast
Preemption) runs steps in order:

- forward (F): from N random starts s_i = x_r + U(-eps, eps), one FGSM step *down* the CE loss of
  f_b w.r.t. y, a_i = P_{x_r}(s_i - alpha*sign(grad)); x_r <- P(x_r + eta*(mean_i a_i - x_r));
- backward (B): the same FGSM step *up* the loss (an attack), then subtract its perturbation:
  x_r <- P(x_r - eta*(mean_i a_i - x_r)).

P is the projection onto the eps-ball around the ORIGINAL image, then onto [0, 1]; P_{x_r} keeps
each single-step attack inside the eps-ball around the current iterate. alpha (the FGSM step)
defaults to eps. The N starts of all images are batched passes, not a loop: ``chunk_size`` samples
(images x starts) per pass, by default the per-device rule of ``runtime.auto_chunk`` (on a CPU, a
cache-sized pass is faster per sample than one huge pass; on a GPU, the opposite). Given
``streams`` (the defend stage), each image draws its starts from its own stream, so REs do not
depend on the batch size or the chunk beyond the kernels' own batch dependence.

Schedules are runs of F/B steps, and ``(...)xK`` repeats a group: Fast Preemption's ablations
F100-B0 = ``F100``, F0-B100 = ``B100``, F10-B90 = ``F10B90``, Alternate = ``(F1B1)x50``, F1-B2 =
``F1B2``, F0-B3 = ``B3``. UnAdv (Salman et al., 2021; the forward-only baseline) is ``F<k>`` with
``n_samples: 1`` and ``random_start: false``: plain projected signed-gradient descent on the loss.
``reverse: true`` moves each step the other way (up the loss: both F and B steps move *down*, so
swapping F and B would not reverse anything): the original-image reconstruction of Moon et al.'s
adaptive attack, run by the ``reconstruct`` reversion.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Mapping

import torch
from pydantic import Field, PositiveInt, field_validator
from torch import nn

from ..attacks import Norm, input_grad, project, signed_step, uniform_ball
from ..registry import ModelName
from ..runtime import ImageStreams, auto_chunk
from . import DEFENSES, DefenseConfig, LabelSource, labels

SCHEDULE_RE = re.compile(r"^(?:[FB]\d{1,4})+$")
GROUP_RE = re.compile(r"\(((?:[FB]\d{1,4})+)\)x(\d{1,4})(?!\d)")
MAX_STEPS = 100_000


def parse_schedule(schedule: str) -> list[int]:
    """'F1B2' -> [+1, -1, -1]: +1 = forward (descend), -1 = backward (ascend, then subtract);
    '(F1B1)x2' -> [+1, -1, +1, -1]."""
    flat = GROUP_RE.sub(lambda m: m.group(1) * int(m.group(2)), schedule)
    if not SCHEDULE_RE.match(flat):
        raise ValueError(f"malformed schedule {schedule!r}; use F/B steps like 'F1B1', 'F1B2', 'B3', '(F1B1)x50'")
    if sum(int(c) for c in re.findall(r"\d+", flat)) > MAX_STEPS:
        raise ValueError(f"schedule {schedule!r} has more than {MAX_STEPS} steps")
    steps: list[int] = []
    for kind, count in re.findall(r"([FB])(\d+)", flat):
        steps += [1 if kind == "F" else -1] * int(count)
    if not steps:
        raise ValueError(f"schedule {schedule!r} has no step; use at least one F or B step")
    return steps


class MCGSConfig(DefenseConfig):
    method: Literal["mcgs"] = "mcgs"
    classifier: ModelName
    backbone: ModelName
    schedule: str = "F1B1"
    n_samples: int = Field(20, ge=1, le=10_000)
    eta: float = Field(1.0, gt=0, le=10)
    eps: float = Field(ge=0, le=1)
    alpha: float | None = Field(None, gt=0, description="FGSM step size; default eps")
    norm: Literal["Linf", "L2"] = "Linf"
    label_source: LabelSource = "classifier"
    random_start: bool = Field(True, description="each of the N FGSM steps starts at a random point of the ball")
    reverse: bool = Field(False, description="flip every step (reconstruction attack)")
    chunk_size: PositiveInt | Literal["auto"] = Field(
        "auto", description="samples (N x images) per backbone pass; auto = runtime.auto_chunk's per-device rule")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        parse_schedule(v)
        return v

    def ref(self) -> str:
        labels = "" if self.label_source == "classifier" else f"/labels-{self.label_source}"
        return self.with_mislabel(f"mcgs/{self.schedule}/N{self.n_samples}/eta{self.eta:g}/eps{self.eps:.4f}{labels}")


def smoothed_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                  n: int, norm: Norm, ascend: bool, generator: torch.Generator, chunk_size: int | Literal["auto"],
                  random_start: bool = True, streams: ImageStreams | None = None) -> torch.Tensor:
    """Mean over N random starts of a one-step FGSM (ascending or descending) around ``x``."""
    b = x.shape[0]
    if chunk_size == "auto":
        chunk_size = auto_chunk(x.device, x.shape[1:])
    starts = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])  # start k of image i at k*b + i
    if random_start:
        if streams is not None:  # (n, b, ...): image i's n starts from its own stream
            noise = streams.draw(lambda g: uniform_ball(torch.Size((n, *x.shape[1:])), eps, norm, g, x.device))
        else:
            noise = uniform_ball(starts.shape, eps, norm, generator, x.device)
        starts = (starts + noise.reshape(starts.shape)).clamp(0, 1)
    centers = x.repeat(n, *([1] * (x.dim() - 1)))
    targets = y.repeat(n)
    out = torch.empty_like(starts)
    sign = 1.0 if ascend else -1.0
    for i in range(0, n * b, chunk_size):
        s, c = starts[i:i + chunk_size], centers[i:i + chunk_size]
        g = input_grad(model, s, targets[i:i + chunk_size])
        out[i:i + chunk_size] = project(s + sign * signed_step(g, alpha, norm), c, eps, norm)
    return out.view(n, b, *x.shape[1:]).mean(0)


def cascade(x: torch.Tensor, y: torch.Tensor, backbone: nn.Module, cfg: MCGSConfig,
            generator: torch.Generator, streams: ImageStreams | None = None) -> torch.Tensor:
    x0 = x.detach()
    xr = x0.clone()
    alpha = cfg.alpha if cfg.alpha is not None else cfg.eps
    flip = -1.0 if cfg.reverse else 1.0  # reversed: each step moves the other way (up the loss)
    for direction in parse_schedule(cfg.schedule):
        avg = smoothed_fgsm(backbone, xr, y, eps=cfg.eps, alpha=alpha, n=cfg.n_samples, norm=cfg.norm,
                            ascend=direction < 0, generator=generator, chunk_size=cfg.chunk_size,
                            random_start=cfg.random_start, streams=streams)
        xr = project(xr + flip * direction * cfg.eta * (avg - xr), x0, cfg.eps, cfg.norm)
    return xr.detach()


@DEFENSES.register("mcgs", MCGSConfig)
def mcgs(x: torch.Tensor, *, cfg: MCGSConfig, models: Mapping[str, nn.Module],
         y_true: torch.Tensor | None, generator: torch.Generator, label_shift: torch.Tensor | None = None,
         streams: ImageStreams | None = None, **_: Any) -> torch.Tensor:
    y = labels(x, cfg.label_source, models, y_true, label_shift)
    return cascade(x, y, models["backbone"], cfg, generator, streams)
