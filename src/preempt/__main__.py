"""``python -m preempt ...``: the CLI (``preempt.cli``), entered under the driver lock when the
command changes the checkout (a stage, or ``use``; see ``preempt.recovery``).

Here the lock is taken before the CLI and torch are imported, in the first tenth of a second: a
stage that ``dvc repro`` starts beside a running Snakemake is refused before anything else
happens, so the window in which the two drivers could meet on one stage stays that short. (The
CLI takes the same lock again, re-entrantly, for the ``preempt`` console script.)
"""

from __future__ import annotations

import contextlib
import sys

from . import recovery
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
    try:
        with recovery.stage_claim() if name is not None and name not in FREE else contextlib.nullcontext():
            from .cli import main  # torch and the whole CLI: only once the lock is ours

            code = main()
    except PreemptError as err:
        code = report(err)
    sys.exit(code)
