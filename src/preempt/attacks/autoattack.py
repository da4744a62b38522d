"""AutoAttack (Croce & Hein, 2020) through the maintained ``pyautoattack`` package.

``version: standard`` sets AutoAttack's standard hyper-parameters (APGD-CE, APGD-T with 9 target
classes, FAB-T, Square 5000 queries); ``attacks`` then selects a subset of those sub-attacks so
the embedded default stays fast (documented deviation: fewer sub-attacks = weaker attack), and
``n_iter`` / ``n_queries`` / ``n_target_classes`` may lower the budgets for CPU runs.
``version: rand`` is AutoAttack for randomized defenses (APGD-CE and APGD-DLR with EOT over 20
samples; ``eot_iter`` changes it). ``n_ex`` limits how many
images of the cell are attacked (the first n_ex), as in RobustBench.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import ConfigError
from . import ATTACKS, AttackConfig

SubAttack = Literal["apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab"]


class AutoAttackConfig(AttackConfig):
    method: str = "autoattack"
    version: Literal["standard", "plus", "rand"] = "standard"
    attacks: list[SubAttack] | None = Field(None, min_length=1, description="subset of the version's sub-attacks")
    n_iter: int | None = Field(None, ge=1, description="APGD iterations (standard: 100)")
    n_queries: int | None = Field(None, ge=1, description="Square queries (standard: 5000)")
    n_target_classes: int | None = Field(None, ge=1, le=999, description="APGD-T/FAB-T targets (standard: 9)")
    eot_iter: int | None = Field(None, ge=1, description="EOT samples per APGD gradient (rand: 20)")
    batch_size: int = Field(500, ge=1)

    def core_ref(self) -> str:
        """``autoattack/<version>/<norm>/<eps>``, then whatever departs from the version's own
        settings (a sub-attack subset, fewer iterations or queries), so a reduced AutoAttack never
        matches a published full one."""
        knobs = [("+".join(self.attacks) if self.attacks else ""),
                 *(f"{k}{v}" for k, v in (("it", self.n_iter), ("q", self.n_queries), ("t", self.n_target_classes),
                                          ("eot", self.eot_iter)) if v is not None)]
        return "/".join([f"autoattack/{self.version}/{self.norm}/{self.eps:.4f}", *filter(None, knobs)])


def build(model: nn.Module, cfg: AutoAttackConfig, device: torch.device | str) -> Any:
    """A pyautoattack.AutoAttack configured by ``cfg`` (the one place its knobs are set)."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm=cfg.norm, eps=cfg.eps, version=cfg.version, seed=cfg.seed, device=device)
    if cfg.attacks is not None:
        unknown = [a for a in cfg.attacks if a not in aa.attacks_to_run]
        if unknown:
            raise ConfigError(f"attacks: {unknown} are not part of AutoAttack '{cfg.version}' ({aa.attacks_to_run})")
        aa.attacks_to_run = list(cfg.attacks)
    if cfg.n_iter is not None:
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = cfg.n_iter
    if cfg.n_target_classes is not None:
        aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = cfg.n_target_classes
    if cfg.eot_iter is not None:
        aa.apgd.eot_iter = cfg.eot_iter
    if cfg.n_queries is not None:
        aa.square.n_queries = cfg.n_queries
    aa.verbose = logging.getLogger("preempt").isEnabledFor(logging.DEBUG)
    return aa


@ATTACKS.register("autoattack", AutoAttackConfig)
def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, cfg: AutoAttackConfig,
        generator: torch.Generator) -> torch.Tensor:
    aa = build(model, cfg, x.device)
    n = x.shape[0] if cfg.n_ex is None else min(cfg.n_ex, x.shape[0])
    x_adv, _ = aa.run_standard_evaluation(x[:n], y[:n], batch_size=cfg.batch_size)
    return x_adv.detach()
