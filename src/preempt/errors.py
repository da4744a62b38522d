"""The one exception type users see: a single line naming the problem and the fix."""

import sys


class PreemptError(Exception):
    """A user-facing error; the CLI prints ``str(err)`` as one line and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line


class ConfigError(PreemptError):
    """params.yaml (or an experiment file) is invalid."""


def report(err: PreemptError) -> int:
    """Print ``err`` as the one line users see (``preempt: error: ...`` on stderr); returns the
    exit status every entry point (CLI, Snakefile, Snakemake preflight) stops with."""
    print(f"preempt: error: {err}", file=sys.stderr, flush=True)
    return 2
