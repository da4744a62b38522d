"""The one shim around a third-party package: make ``robustbench`` 1.1.1 importable and its zoo buildable.

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

3. Its XCiT entries (``Debenedetti2022Light_XCiT-S12/M12/L12``, CIFAR-10, CIFAR-100, ImageNet)
   ask timm for ``debenedetti2020light_xcit_<s|m|l>_<dataset>_linf``, a name timm never
   registered; timm has ``debenedetti2022light_xcit_<s12|m12|l12>_<dataset>_linf`` (fixed upstream
   after 1.1.1). Without a fix the model stage dies with "Unknown model" after the weights
   downloaded. :func:`fix_xcit_names` points those zoo entries at timm's registered names (the
   weights file is the same); ``tests/test_zoo.py`` fails once robustbench's own names work, so
   the fix can be removed.
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from types import ModuleType
from typing import Any, Callable


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
        rb = importlib.import_module("robustbench")
        fix_xcit_names()
        return rb


XCIT_ORIGINAL: dict[tuple[str, str, str], Callable[[], Any]] = {}  # the replaced factories (tests call them)


def xcit_timm_name(name: str, dataset: str) -> str:
    """timm's registered name of a RobustBench XCiT entry, e.g. ``debenedetti2022light_xcit_l12_cifar10_linf``."""
    return f"{name.lower().replace('-', '_')}_{dataset}_linf"


def fix_xcit_names() -> None:
    """Point robustbench 1.1.1's XCiT zoo entries at the names timm registers (item 3 above)."""
    import timm
    from robustbench.model_zoo import model_dicts

    for dataset, threats in model_dicts.items():
        for threat, zoo in threats.items():
            for name, entry in zoo.items():
                key = (dataset.value, threat.value, name)
                if not name.startswith("Debenedetti2022Light_XCiT") or key in XCIT_ORIGINAL:
                    continue
                good = xcit_timm_name(name, dataset.value)
                if timm.is_model(good):
                    XCIT_ORIGINAL[key] = entry["model"]
                    entry["model"] = functools.partial(timm.create_model, good, pretrained=True)
