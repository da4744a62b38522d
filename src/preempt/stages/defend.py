"""Stage ``defend [--shard I/K] DEFENSE``: robust examples x_r for the evaluation images, timed.

The RE artifact holds ``x`` and ``y``, and each diagnostic the defense traced as
``trace_<name>`` (images x iterations; Bi-Level: ``trace_grad_norm``, ``trace_loss``,
``trace_final_loss``, for Moon et al.'s Figs. 4-5).

Each image draws from its own seeded random stream (``runtime.ImageStreams``; MCGS's random
starts, Bi-Level's start and inner-attack starts), and each batch of ``runtime.batch_size`` images
from its own seeded generator (``runtime.batch_generator``, for a defense that draws per batch), so
a shard (images of whole batches, ``runtime.shard_range``) computes exactly what the unsharded
stage computes for those images, and for MCGS and Bi-Level the batch size changes the REs only
through the kernels' own batch dependence.
``gather re`` joins the shards.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import torch
from torch import nn

from .. import artifacts, defenses, paths
from ..paths import Shard
from ..runtime import DeviceBatch, ImageStreams, batch_generator, log, progress, shard_range
from . import Context, provenance


def record(ctx: Context, name: str, seconds: float, n: int, **extra: Any) -> dict[str, Any]:
    """The sidecar of a defense's robust examples (whole, a shard, or gathered shards)."""
    cfg = ctx.params.defenses[name]
    return provenance(ctx, "defend", cfg, seconds, defense=name, method=cfg.method, seed=cfg.seed, n=n,
                      sec_per_image=seconds / max(n, 1), **extra)


def backbone_params(models: Mapping[str, nn.Module]) -> int | None:
    """Parameters of the model the defense computes on (MSPD's Table XI compares backbones by size)."""
    return sum(t.numel() for t in models["backbone"].parameters()) if "backbone" in models else None


def compute(cfg: defenses.DefenseConfig, x: torch.Tensor, y: torch.Tensor, models: Mapping[str, nn.Module], *,
            lo: int, batch_size: int, device: torch.device, shift: torch.Tensor | None = None,
            desc: str = "defend", passes: DeviceBatch | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REs of images ``lo..lo+len(x)`` of the evaluation set, batch by batch, each batch and image
    with its own seeded randomness (the module docstring), and the traced diagnostics; returns when
    the device is done (a GPU is synchronised), so that the caller's clock measures the work.

    ``passes`` says how many images of a batch go through the device at once (sized to a GPU's
    memory by a probe pass, :class:`~preempt.runtime.DeviceBatch`; default: the whole batch). A
    pass that runs the device out of memory is retried in halves (down to one image, then the
    error goes up to the CLI's one line); the smaller size is kept for the rest of the stage.
    Per-image streams make MCGS's and Bi-Level's REs the same whatever the sizes."""
    parts = [x[:0]]
    traces: list[dict[str, torch.Tensor]] = []
    dev = passes if passes is not None else DeviceBatch(batch_size, device)
    for i in progress(range(0, len(x), batch_size), desc=desc, total=-(-len(x) // batch_size)):
        gen = batch_generator(cfg.seed, lo + i, device)
        j, end = i, min(i + batch_size, len(x))
        while j < end:
            k = dev.next(end - j)
            trace: defenses.Trace = {}
            streams = ImageStreams(cfg.seed, range(lo + j, lo + j + k), device)
            try:
                out = dev.run(k, lambda: defenses.run(
                    cfg, x[j:j + k], models=models, y_true=y[j:j + k], generator=gen,
                    label_shift=None if shift is None else shift[j:j + k], trace=trace, streams=streams), desc)
            except torch.OutOfMemoryError:
                if k == 1:
                    raise
                log.warning("%s: %s out of memory on %d images; going on in passes of %d", desc, device, k, dev.halve(k))
                continue
            parts.append(out)
            traces.append({f"trace_{n}": torch.stack(v, 1) for n, v in trace.items()})  # image x iteration
            j += k
    if device.type == "cuda":
        torch.cuda.synchronize()
    diag = {k: torch.cat([t[k] for t in traces]) for k in traces[0]} if traces else {}
    return torch.cat(parts), diag


def passes(ctx: Context, cfg: defenses.DefenseConfig, batch_size: int) -> DeviceBatch:
    """The device passes of a defense stage: at most a batch, or the smallest ``runtime.model_batch``
    of its models, sized to a GPU's free memory (``runtime.memory_fraction``)."""
    rt = ctx.params.runtime
    return DeviceBatch(rt.model_cap(batch_size, defenses.roles(cfg).values()), ctx.device, rt.memory_fraction)


def run(ctx: Context, name: str, shard: Shard | None = None) -> None:
    cfg = ctx.params.defenses[name]
    data, _ = artifacts.load(paths.data_path("test"))
    bs = ctx.params.runtime.batch(ctx.device, data["x"].shape[1:])
    lo, hi = shard_range(len(data["x"]), bs, shard)
    x, y = data["x"][lo:hi].to(ctx.device), data["y"][lo:hi].to(ctx.device)
    models = ctx.role_models(cfg)
    shifts = cfg.mislabel.shifts(len(data["x"]), ctx.env.spec.n_classes) if cfg.mislabel else None
    shift = None if shifts is None else shifts[lo:hi]
    where = f" (shard {paths.shard_suffix(shard)}: images {lo}-{hi})" if shard else ""
    log.info("defense %s (%s) on %d images%s, batch %d%s", name, cfg.method, len(x), where, bs,
             f", {int((shift != 0).sum())} of them with a wrong label (mislabel protocol)" if shift is not None else "")
    t0 = time.perf_counter()
    x_r, diag = compute(cfg, x, y, models, lo=lo, batch_size=bs, device=ctx.device, shift=shift, desc=f"defend {name}",
                         passes=passes(ctx, cfg, bs))
    seconds = time.perf_counter() - t0
    out = paths.re_shard_path(name, shard) if shard else paths.re_path(name)
    artifacts.save(out, {"x": x_r, "y": y, **diag}, record(ctx, name, seconds, len(x), shard=list(shard) if shard else None,
                                                    range=[lo, hi], mislabeled=None if shift is None else int((shift != 0).sum()),
                                                    backbone_params=backbone_params(models)))
    log.info("defense %s: %.4f s/image, max |x_r - x| = %.4f -> %s", name, seconds / max(len(x), 1),
             float((x_r - x).abs().max()) if len(x) else 0.0, out)
