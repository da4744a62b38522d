"""Stage ``model NAME``: train, fetch or verify one model of the zoo (by its ``source``)."""

from __future__ import annotations

from .. import dag
from ..models import SOURCES
from ..runtime import log
from . import Context


def run(ctx: Context, name: str) -> None:
    cfg = ctx.params.models[name]
    out = dag.model_path(name)
    log.info("model %s (source=%s) -> %s", name, cfg.source, out)  # type: ignore[attr-defined]
    info = SOURCES[cfg.source].fn.materialize(name, cfg, ctx.params, out, ctx.device)  # type: ignore[attr-defined]
    log.info("model %s ready: %s", name, ", ".join(f"{k}={v:.4g}" for k, v in info.items()))
