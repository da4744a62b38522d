"""``source: file``: a checkpoint on disk (path + sha256 + architecture), e.g. third-party weights.

The stage checks that the file exists and matches its sha256 *before* reading it, loads it with
``torch.load(weights_only=True)`` (a checkpoint that pickles objects is refused), takes
``state_dict_key`` out of it if set, strips ``strip_prefix`` (``module.`` from DataParallel),
loads it strictly into the named architecture, and caches the weights as a pipeline artifact.
``mean``/``std`` are the normalization the checkpoint was trained with (default: the dataset's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from pydantic import Field
from torch import nn

from .. import artifacts
from ..errors import PreemptError
from . import ARCHS, SOURCES, ArchName, Env, ImageSpec, ModelConfig, Normalized, load_weights, save_weights, test_accuracy


class FileConfig(ModelConfig):
    source: Literal["file"] = "file"
    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex digest of the file")
    arch: ArchName
    state_dict_key: str | None = "state_dict"
    strip_prefix: str = "module."
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def code_modules(self) -> list[str]:
        return [ARCHS[self.arch].module]

    def ref(self, models: Mapping[str, ModelConfig]) -> str:
        return Path(self.path).name

    def external(self, name: str, fetch: bool) -> str | None:
        read_checkpoint(self)
        return f"{self.path} (sha256 ok)"


def read_checkpoint(cfg: FileConfig) -> dict[str, torch.Tensor]:
    """The verified state dict of ``cfg.path``; one clear error for each way it can be wrong."""
    path = artifacts.user_path(cfg.path)
    if not path.is_file():
        raise PreemptError(f"model file {path} not found; place the checkpoint there (sha256 {cfg.sha256})")
    digest = artifacts.sha256(path)
    if digest != cfg.sha256:
        raise PreemptError(f"{path}: sha256 {digest} does not match the expected {cfg.sha256}; "
                           "the file is corrupted or a different checkpoint; fetch it again")
    ckpt = safe_load(path)
    if cfg.state_dict_key is not None:
        if not isinstance(ckpt, dict) or cfg.state_dict_key not in ckpt:
            raise PreemptError(f"{path}: no '{cfg.state_dict_key}' entry; set state_dict_key (null for a bare state dict)")
        ckpt = ckpt[cfg.state_dict_key]
    return {k.removeprefix(cfg.strip_prefix): v for k, v in ckpt.items()}


def safe_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``; a checkpoint that needs arbitrary unpickling is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError and friends: refuse, one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreemptError(f"{path}: refused to load: not a plain weights file ({first[:160]}); "
                           "only tensors/containers are accepted (torch.load weights_only=True)") from None


def _build(cfg: FileConfig, spec: ImageSpec) -> Normalized:
    net = ARCHS[cfg.arch].fn(spec.shape, spec.n_classes)
    return Normalized(net, cfg.mean or spec.mean, cfg.std or spec.std)


class FileSource:
    def materialize(self, name: str, cfg: FileConfig, env: Env, out: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        state = read_checkpoint(cfg)
        model = _build(cfg, env.spec)
        try:
            model.net.load_state_dict(state)
        except RuntimeError as exc:
            raise PreemptError(f"models.{name}: checkpoint does not fit architecture '{cfg.arch}' "
                               f"({str(exc).splitlines()[0]}); check arch, state_dict_key and strip_prefix") from None
        acc = test_accuracy(model, env)
        save_weights(out, model, {
            "model": name, "source": "file", "arch": cfg.arch, "file_sha256": cfg.sha256, "clean_acc": acc,
            "wall_seconds": time.perf_counter() - t0, "device": str(env.device),
            "params_hash": artifacts.params_hash(cfg.model_dump())})
        return {"clean_acc": acc}

    def load(self, name: str, cfg: FileConfig, env: Env, path: str) -> nn.Module:
        return load_weights(_build(cfg, env.spec), path)


SOURCES.register("file", FileConfig)(FileSource())
