"""``python -m preempt list``: every name params.yaml can use, the file that implements it, and
what it is (the first line of its docstring). A name leads to one file: this is the index."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from .attacks import ATTACKS
from .data import DATASETS
from .defenses import DEFENSES
from .models import ARCHS, SOURCES
from .models.recipes import RECIPES
from .paths import module_file
from .registry import Entry, MethodConfig, Registry
from .reversions import REVERSIONS

# params.yaml key -> registry, in the order a reader meets them
REGISTRIES: list[tuple[str, Registry[Any]]] = [
    ("dataset.name", DATASETS), ("models.*.source", SOURCES), ("models.*.arch", ARCHS),
    ("models.*.recipe.method", RECIPES), ("defenses.*.method", DEFENSES), ("attacks.*.method", ATTACKS),
    ("reversions.*.method", REVERSIONS),
]


def summary(entry: Entry[Any]) -> str:
    """One line saying what the entry is: the first docstring line of its config class, else of its
    function (or source object), else of its module (the class's own docstring, not a base's)."""
    config = entry.config if entry.config is not MethodConfig else None
    for doc in (config.__doc__ if config else None, entry.fn.__doc__, sys.modules[entry.module].__doc__):
        if doc and doc.strip():
            return inspect.cleandoc(doc).splitlines()[0]
    return ""


def rows() -> list[tuple[str, str, str, str]]:
    """(params.yaml key, name, file, summary) of every registered entry."""
    return [(key, e.name, module_file(e.module), summary(e)) for key, reg in REGISTRIES for e in reg.entries()]


def render() -> str:
    """The index as text: one block per params.yaml key, one aligned line per name."""
    table = rows()
    lines: list[str] = []
    for key, reg in REGISTRIES:
        block = [r for r in table if r[0] == key]
        width, fwidth = (max(len(r[i]) for r in block) for i in (1, 2))
        lines += [f"{key}  ({reg.kind})", *(f"  {name:<{width}}  {file:<{fwidth}}  {doc}" for _, name, file, doc in block), ""]
    return "\n".join(lines)
