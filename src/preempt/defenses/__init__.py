"""Defense registry: preemptive defenses that turn an image x into a robust example x_r.

Uniform signature: ``defend(x, *, cfg, models, y_true, generator, label_shift, streams) -> x_r`` where
``models`` maps each model-reference field of ``cfg`` (``classifier``, ``backbone``, ...) to a
frozen model taking [0, 1] images. Preemptive reversion re-runs the same entry with other models
in those roles, so every defense is attackable by reversion without extra code.

``streams`` (optional, given by the defend stage) holds one random stream per image
(``runtime.ImageStreams``): a defense that draws per image through it gives the same REs whatever
the batch size; without it (tests, an attacker re-running the defense) it draws from ``generator``.
``trace`` (optional) collects per-iteration diagnostics of the defenses that keep them.
``label_shift`` (per image, 0 = keep) implements Fast Preemption's evaluation protocol for
reversion attacks (Sec. 4.3): a defense entry with ``mislabel`` protects a wrong label for a fixed
share of the images, see :class:`MislabelConfig`; the white-box attacker re-running the defense gets
the same shift, the others do not (``preempt.stages.revert``).
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping

import torch
from pydantic import Field, model_validator
from torch import nn

from ..registry import MethodConfig, Registry, is_model_ref
from ..runtime import ImageStreams

Defense = Callable[..., torch.Tensor]
DEFENSES: Registry[Defense] = Registry("defense", __name__)

LabelSource = Literal["classifier", "ground_truth", "backbone"]


class MislabelConfig(MethodConfig):
    """Fast Preemption's evaluation protocol for reversion attacks (Wang et al., Secs. 4.2-4.3).

    A drop of accuracy after a reversion may be reversion or plain distortion. So the defense
    protects some wrong labels: it pushes those images towards a wrong class and the REs' accuracy
    falls below the original. A reversion that really undoes the defense brings the accuracy back
    up towards the original; distortion pushes it further down. Two variants:

    - ``variant: weak_labeller`` (the paper's, Table 3): the wrong labels are the natural errors of
      a weaker labelling classifier, the defense's own ``classifier`` (e.g. a briefly trained
      one). Nothing else changes: the white-box attacker re-runs the defense with the defender's
      backbone and that same classifier; a gray/black-box one with its own models.
    - ``variant: synthetic``: exactly round(fraction * n_eval) images, drawn uniformly with
      ``seed`` over the evaluation set (the same images whatever the batching or sharding), get
      ``pick``: ``random`` = a class drawn uniformly from the other C - 1, ``next`` = (y + 1) mod C.
      The white-box attacker knows the settings, so its re-run applies the same shift to its own
      labels; a black-box attacker does not (``preempt.stages.revert``).
    """

    variant: Literal["synthetic", "weak_labeller"] = "synthetic"
    fraction: float | None = Field(None, gt=0, le=1, description="synthetic: the share of wrong labels")
    seed: int = 0
    pick: Literal["random", "next"] = "random"

    @model_validator(mode="after")
    def _variant(self) -> "MislabelConfig":
        if self.variant == "synthetic" and self.fraction is None:
            raise ValueError("the synthetic variant needs fraction (the share of wrong labels), e.g. 0.5")
        if self.variant == "weak_labeller" and self.fraction is not None:
            raise ValueError("the weak_labeller variant takes its wrong labels from the defense's classifier; "
                             "drop fraction (or use variant: synthetic)")
        return self

    def tag(self) -> str:
        """What the protocol adds to a defense's ref."""
        return "+mislabel-weak" if self.variant == "weak_labeller" else f"+mislabel{self.fraction:g}"

    def shifts(self, n: int, n_classes: int) -> torch.Tensor | None:
        """Per image of the evaluation set: 0 (label kept) or the class offset k in 1..C-1 that
        turns label y into (y + k) mod C; None for the weak labeller (its labels are its own)."""
        if self.variant == "weak_labeller" or self.fraction is None:
            return None
        gen = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(n, generator=gen)[:round(self.fraction * n)]
        offset = (torch.randint(1, max(n_classes, 2), (n,), generator=gen) if self.pick == "random"
                  else torch.ones(n, dtype=torch.long))
        out = torch.zeros(n, dtype=torch.long)
        out[chosen] = offset[chosen]
        return out


class DefenseConfig(MethodConfig):
    """Fields every defense has; ``ref`` says what ran, independently of the entry's name (the key
    that published numbers are matched on, see ``preempt.published``)."""

    method: str
    seed: int = 0
    mislabel: MislabelConfig | None = Field(None, description="Fast Preemption's evaluation protocol: wrong labels for a share of the images")

    def ref(self) -> str:
        return self.with_mislabel(self.method)

    def with_mislabel(self, ref: str) -> str:
        """``ref`` plus the evaluation protocol's mislabel share, if any (a different experiment)."""
        return ref if self.mislabel is None else f"{ref}{self.mislabel.tag()}"


def roles(cfg: MethodConfig) -> dict[str, str]:
    """Role -> model name for every model-reference field that is set."""
    return {k: getattr(cfg, k) for k, f in type(cfg).model_fields.items()
            if is_model_ref(f) and getattr(cfg, k) is not None}


def with_roles(cfg: DefenseConfig, overrides: Mapping[str, str]) -> DefenseConfig:
    """The same defense with other models in its roles (used by preemptive reversion)."""
    return cfg.model_copy(update={k: v for k, v in overrides.items() if k in roles(cfg)})


def labels(x: torch.Tensor, source: str, models: Mapping[str, nn.Module], y_true: torch.Tensor | None,
           label_shift: torch.Tensor | None = None, batch_size: int = 1024) -> torch.Tensor:
    """The labels a defense protects: the classifier's prediction on x (papers), or alternatives
    (MSPD's Table XII: ``classifier`` = decoupled, ``backbone`` = coupled, ``ground_truth``).

    Without ground truth (an attacker re-running the defense), ``ground_truth`` falls back to the
    classifier, which is what the attacker can compute. ``label_shift`` makes some of them wrong
    on purpose (:class:`MislabelConfig`).
    """
    truth = y_true if source == "ground_truth" else None
    if truth is not None and label_shift is None:
        return truth
    model = models["backbone" if source == "backbone" else "classifier"]
    with torch.inference_mode():
        logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    y = truth if truth is not None else logits.argmax(1)
    if label_shift is not None:
        y = (y + label_shift.to(y.device)) % logits.shape[1]
    return y.clone()  # clone: an inference-mode tensor cannot enter autograd


Trace = dict[str, list[torch.Tensor]]  # name -> one per-image tensor per iteration


def run(cfg: DefenseConfig, x: torch.Tensor, *, models: Mapping[str, nn.Module],
        y_true: torch.Tensor | None, generator: torch.Generator,
        label_shift: torch.Tensor | None = None, trace: Trace | None = None,
        streams: ImageStreams | None = None) -> torch.Tensor:
    """Dispatch to the registered defense named by ``cfg.method``. A defense that keeps
    diagnostics appends them to ``trace`` when one is given (Bi-Level: Moon et al.'s Figs. 4-5)."""
    return DEFENSES[cfg.method].fn(x, cfg=cfg, models=models, y_true=y_true, generator=generator,
                                   label_shift=label_shift, trace=trace, streams=streams)
