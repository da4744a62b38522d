"""The one shim around a third-party package: make ``robustbench`` 1.1.1 importable.

robustbench 1.1.1 (the newest on PyPI) does two things at import time that fail today:

1. ``robustbench.loaders`` does ``import pkg_resources``, which setuptools removed in 81; the
   project pins ``setuptools<81`` (pyproject.toml), so nothing is patched for it here.
2. ``robustbench.eval`` does ``from autoattack import AutoAttack`` and
   ``from autoattack.state import EvaluationState``: the *unmaintained* GitHub-only AutoAttack.
   Its maintained successor on PyPI, ``pyautoattack``, ships the same modules under another name,
   so we register it as ``autoattack`` (and ``autoattack.state``) in ``sys.modules`` before the
   first robustbench import. Nothing else is changed; only robustbench's ``eval`` module (which we
   do not use: our AutoAttack stage calls pyautoattack itself) touches the alias.

A real ``autoattack`` package, if one is installed, is left alone.
``tests/test_zoo.py`` pins this: robustbench imports, and ``autoattack`` is pyautoattack.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType


def alias_autoattack() -> None:
    """Register pyautoattack as ``autoattack`` unless a module of that name is importable."""
    if "autoattack" in sys.modules:
        return
    try:
        importlib.import_module("autoattack")
        return
    except ImportError:
        pass
    import pyautoattack
    import pyautoattack.state

    sys.modules["autoattack"] = pyautoattack
    sys.modules["autoattack.state"] = pyautoattack.state


def import_robustbench() -> ModuleType:
    """``robustbench`` itself, importable (see the module docstring for why this is needed)."""
    alias_autoattack()
    with warnings.catch_warnings():  # pkg_resources' deprecation notice on every import
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.interface, used by timm
        return importlib.import_module("robustbench")
