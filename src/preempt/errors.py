"""The one exception type users see: a single line naming the problem and the fix."""


class PreemptError(Exception):
    """A user-facing error; the CLI prints ``str(err)`` as one line and exits with status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line


class ConfigError(PreemptError):
    """params.yaml (or an experiment file) is invalid."""
