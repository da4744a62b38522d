"""Stage ``model NAME``: train, fetch or verify one model of the experiment (by its ``source``)."""

from __future__ import annotations

from .. import paths
from ..models import SOURCES
from ..runtime import log
from . import Context


def run(ctx: Context, name: str) -> None:
    cfg = ctx.params.models[name]
    out = paths.model_path(name)
    log.info("model %s (source=%s) -> %s", name, cfg.source, out)
    info = SOURCES[cfg.source].fn.materialize(name, cfg, ctx.env, out)
    log.info("model %s ready: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in info.items()))
