"""Trigger Activation (Yu et al.): R_T^{S,A} per transfer attack, fixed vs learnable trigger, the
informed attacker, and accuracy with and without the trigger."""

from __future__ import annotations

import re

import pandas as pd

from . import Exhibit, Paper, Results, Shown, attack_rows, register

P = "trigger"
# the architecture in a trained model's ref (train/<arch>/..., trigger/<arch>/..., also inside a wrapper)
ARCH_IN_REF = re.compile(r"\b(train|trigger)/[^/()\[\],]+/")


def kind(victim_ref: str) -> str:
    """A victim's defense with its architecture left out: the column the paper averages its
    target models into (``trigger/resnet18/fixed/eps0.0039`` -> ``trigger/*/fixed/eps0.0039``)."""
    return ARCH_IN_REF.sub(r"\1/*/", victim_ref)


def transfer(res: Results, e: Exhibit) -> Shown | None:
    """Rows: Clean, then each transfer attack; columns: the victims' defenses (w/o trigger, AT,
    fixed and learnable trigger, input transforms); values: robust accuracy = R_T^{S,A}, the mean
    over surrogates and over the targets of one defense (their architectures)."""
    cells = res.cells(e.key)
    if cells.empty:
        return None
    cells = cells.assign(targets=cells["victim_ref"].astype(str).map(kind))
    shown = attack_rows(res, e, columns="targets", cells=cells)
    if shown is None:
        return None
    members = cells.groupby("targets", sort=False)["victim"].agg(lambda v: ", ".join(pd.unique(v)))
    return Shown(table=shown.table, note="Columns (their victims): " + "; ".join(f"{k} = {v}" for k, v in members.items())
                 + ". Robust accuracy under a transfer attack is the mean over its surrogates and the column's"
                 " targets (R_T^{S,A}).")


PAPER = register(Paper(P, "Trigger Activation", "Yu et al., Towards Model Resistant to Transferable Adversarial "
                       "Examples via Trigger Activation", (
    Exhibit(P, "table1", "Table I", "CIFAR-10: fixed trigger vs no defense and AT under transfer attacks", transfer),
    Exhibit(P, "table2", "Table II", "CIFAR-10: learnable trigger vs input-transformation defenses", transfer),
    Exhibit(P, "table3", "Table III", "CIFAR-100: learnable trigger vs input-transformation defenses", transfer),
    Exhibit(P, "table7", "Table VII", "CIFAR-10: the learnable trigger's step size alpha", transfer),
    Exhibit(P, "table8", "Table VIII", "CIFAR-10: the informed attacker (surrogates trained with triggers)", transfer),
    Exhibit(P, "table9", "Table IX", "CIFAR-100: the informed attacker", transfer),
)))
