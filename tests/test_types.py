"""The package type-checks: mypy (with pydantic's plugin) over src/preempt, configured in
pyproject.toml ([tool.mypy]; unused ``# type: ignore`` comments are errors too)."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_mypy_finds_no_type_errors() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert "No module named mypy" not in proc.stderr, "mypy is not installed: run ./setup.sh (the dev extra)"
    assert proc.returncode == 0, f"mypy found type errors:\n{proc.stdout[-5000:]}{proc.stderr[-2000:]}"
