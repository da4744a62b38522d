"""Name -> implementation registries (defenses, attacks, reversions, datasets, architectures...).

Modelled on RobustBench's zoo and torchattacks' uniform interface: every entry is looked up by the
name that ``params.yaml`` uses and comes with a pydantic config class that validates its
parameters. Adding a method = one new module that calls ``REGISTRY.register`` + one params entry;
the package ``__init__`` imports every module of the package so nothing else needs editing.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

F = TypeVar("F")
M = TypeVar("M", bound=BaseModel)


class MethodConfig(BaseModel):
    """Base of every entry's config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def code_modules(self) -> list[str]:
        """Extra modules (beyond the registry entry's) whose code this entry runs."""
        return []

    def uses_defense_models(self) -> bool:
        """True for a reversion that re-runs the defense with the defender's own models (so those
        models are DAG dependencies of its stage)."""
        return False


class ModelRef(str):
    """Marker used in ``Annotated[str, ModelRef]``: the field names an entry of ``models``."""


ModelName = Annotated[str, ModelRef]  # a config field naming an entry of params.yaml's ``models``


def _refers(annotation: Any) -> bool:
    if ModelRef in getattr(annotation, "__metadata__", ()):
        return True
    return any(_refers(arg) for arg in get_args(annotation))


def is_model_ref(field: Any) -> bool:
    """Whether a pydantic field names models: ``ModelName``, ``ModelName | None`` or
    ``list[ModelName]`` (pydantic keeps Annotated metadata only outside a Union, so look inside)."""
    return ModelRef in field.metadata or _refers(field.annotation)


def model_refs(cfg: BaseModel) -> list[str]:
    """Model names an entry depends on, in field order (drives the DAG's dependencies)."""
    refs: list[str] = []
    for name, field in type(cfg).model_fields.items():
        if is_model_ref(field):
            value = getattr(cfg, name)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if v is not None and v not in refs:
                    refs.append(v)
    return refs


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' Did you mean X?' for the nearest valid name, or the list of valid names."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    return "valid: " + ", ".join(sorted(choices)) if choices else "none are defined"


@dataclass(frozen=True)
class Entry(Generic[F]):
    name: str
    fn: F
    config: type[MethodConfig]
    module: str  # the source module: a code dependency of the stages that use this entry


class Registry(Generic[F]):
    """A named family of implementations, e.g. ``DEFENSES['mcgs']``."""

    def __init__(self, kind: str, package: str, key: str = "method") -> None:
        self.kind = kind
        self.key = key  # the params.yaml field that selects the entry
        self._package = package
        self._entries: dict[str, Entry[F]] = {}
        self._loaded = False

    def register(self, name: str, config: type[MethodConfig] = MethodConfig) -> Callable[[F], F]:
        """Decorator (or call on an object) adding ``name``; ``config`` validates its params.yaml entry
        (the base ``MethodConfig`` accepts no keys: entries without parameters, e.g. architectures)."""
        def deco(fn: F) -> F:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' registered twice")
            # a functools.partial reports functools as its module: use the wrapped function's
            module = getattr(getattr(fn, "func", None), "__module__", None) or getattr(fn, "__module__", "")
            self._entries[name] = Entry(name, fn, config, str(module))
            return fn

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            pkg = importlib.import_module(self._package)
            for mod in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self._package}.{mod.name}")

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __getitem__(self, name: str) -> Entry[F]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}': {closest(name, self.names())}"
            ) from None

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def entries(self) -> list[Entry[F]]:
        """Every entry, sorted by name (``python -m preempt list`` prints them)."""
        self._load()
        return [self._entries[n] for n in sorted(self._entries)]


def _fmt_loc(prefix: str, loc: tuple[Any, ...]) -> str:
    return ".".join([prefix, *(str(p) for p in loc)])


def validate_model(cls: type[M], data: Any, where: str) -> M:
    """Validate ``data`` with ``cls``; turn the first pydantic error into one clear line that names
    the key (``where`` is its place in params.yaml) and the fix."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        path = _fmt_loc(where, loc)
        if err["type"] == "extra_forbidden":
            owner: Any = cls
            for part in loc[:-1]:  # walk nested models (and dicts/lists of them) to the level of the key
                if get_origin(owner) in (dict, list):
                    owner = get_args(owner)[-1]
                    continue
                fld = getattr(owner, "model_fields", {}).get(part)
                owner = getattr(fld, "annotation", None) if fld else None
            valid = list(getattr(owner, "model_fields", {}) or {})
            raise ConfigError(f"{path}: unknown key; {closest(str(loc[-1]), valid)}") from None
        if err["type"] == "missing":
            raise ConfigError(f"{path}: required key is missing; add it") from None
        got = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {msg} (got {got!r})") from None
