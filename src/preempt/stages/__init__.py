"""Stage entry points: ``python -m preempt <stage> <key...>``, one module per stage family.

Each stage reads the validated params, refuses to run under a stale dvc.yaml, fixes threads and
determinism, then reads its declared inputs and writes its declared outputs (paths from
``preempt.dag``), atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import config, dag, runtime
from ..config import Params


@dataclass
class Context:
    params: Params
    device: torch.device


def context(params_file: str = dag.PARAMS_FILE, check: bool = True) -> Context:
    runtime.setup_logging()
    params = config.load(params_file)
    if check:
        dag.check_fresh(dag.build(params))
    return Context(params, runtime.configure(params.runtime))
