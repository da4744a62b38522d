"""Trigger Activation (Yu et al.): R_T^{S,A} per transfer attack, fixed vs learnable trigger, the
informed attacker, and accuracy with and without the trigger."""

from __future__ import annotations

from . import Exhibit, Paper, Results, Shown, attack_rows, register

P = "trigger"


def transfer(res: Results, e: Exhibit) -> Shown | None:
    """Rows: Clean, then each transfer attack; columns: victims (w/o trigger, AT, fixed and
    learnable trigger); values: robust accuracy = R_T^{S,A}, the mean over surrogates."""
    shown = attack_rows(res, e, columns="victim")
    if shown is None:
        return None
    refs = res.cells(e.key).groupby("victim", sort=False)["victim_ref"].first()
    return Shown(table=shown.table, note="Victims: " + "; ".join(f"{v} = {r}" for v, r in refs.items())
                 + ". Robust accuracy under a transfer attack is the mean over its surrogates (R_T^{S,A}).")


PAPER = register(Paper(P, "Trigger Activation", "Yu et al., Towards Model Resistant to Transferable Adversarial "
                       "Examples via Trigger Activation", (
    Exhibit(P, "table1", "Table I", "CIFAR-10: fixed trigger vs no defense and AT under transfer attacks", transfer),
    Exhibit(P, "table2", "Table II", "CIFAR-10: learnable trigger vs input-transformation defenses", transfer),
    Exhibit(P, "table3", "Table III", "CIFAR-100: learnable trigger vs input-transformation defenses", transfer),
    Exhibit(P, "table8", "Table VIII", "CIFAR-10: the informed attacker (surrogates trained with triggers)", transfer),
    Exhibit(P, "table9", "Table IX", "CIFAR-100: the informed attacker", transfer),
)))
