"""``python -m preempt ...``: the CLI (``preempt.cli``), entered under the driver lock when the
command changes the checkout (a stage, or ``use``; see ``preempt.recovery``).

Here the lock is taken before the CLI and torch are imported, in the first tenth of a second: a
stage that ``dvc repro`` starts beside a running Snakemake is refused before anything else
happens, so the window in which the two drivers could meet on one stage stays that short. (The
CLI takes the same lock again, re-entrantly, for the ``preempt`` console script.) Then the stage
runs in a warm server's child (``preempt.warm``) when it can, else here.
"""

from __future__ import annotations

import contextlib
import sys

from . import recovery, warm
from .errors import PreemptError, report

FREE = {"validate", "list", "dag", "prefetch", "slurm-profile"}  # tools that change no result


def command(argv: list[str]) -> str | None:
    """The subcommand: the first word that is neither an option nor ``--params``' value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--params":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


if __name__ == "__main__":
    name = command(sys.argv[1:])
    changes = name is not None and name not in FREE
    try:
        with recovery.stage_claim() if changes else contextlib.nullcontext():
            # a stage runs in a warm server's child when one can be had (preempt.warm: no imports
            # to pay again); the lock stays with this process, which the child dies with
            code = warm.run(sys.argv[1:], env={recovery.CLAIMED_ENV: "1"}) if changes else None
            if code is None:
                from .cli import main  # torch and the whole CLI: only once the lock is ours

                code = main()
    except PreemptError as err:
        code = report(err)
    sys.exit(code)
