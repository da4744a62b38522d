"""Table of bad inputs: each gets exactly one ``preempt: error:`` line naming the problem (and the
fix), exit status 2, before any compute: no file under results/ is created or changed.

Every case runs the real CLI entry point (``preempt.cli.main``) in a scratch project whose
data stage has run; config cases run ``validate`` or the stage that would use the value, file
cases the stage that would read the file. ``test_config.py`` pins the wording of many more.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from preempt import artifacts
from preempt.cli import main
from preempt.models import ARCHS

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_params(**edits: Any) -> Callable[[Path], dict]:
    """Set keys (``a__b`` is ``a.b``) of the shipped params."""
    def apply(ws: Path) -> dict:
        raw = copy.deepcopy(BASE)
        for dotted, value in edits.items():
            node = raw
            *parents, last = dotted.split("__")
            for k in parents:
                node = node[k]
            node[last] = resolve(value, ws)
        return raw
    return apply


def resolve(value: Any, ws: Path) -> Any:
    """Values may be functions of the scratch project (paths, checksums), also inside mappings."""
    if callable(value):
        return value(ws)
    if isinstance(value, dict):
        return {k: resolve(v, ws) for k, v in value.items()}
    return value


def mlp_checkpoint(ws: Path, extra: dict | None = None) -> Path:
    net = ARCHS["mlp"].fn((1, 8, 8), 10)  # type: ignore[attr-defined]
    path = ws / "weights.pt"
    torch.save({"state_dict": net.state_dict(), **(extra or {})}, path)
    return path


def file_model(sha: Callable[[Path], str], extra: dict | None = None) -> Callable[[Path], dict]:
    def entry(ws: Path) -> dict:
        path = mlp_checkpoint(ws, extra)
        return {"source": "file", "path": str(path), "sha256": sha(path), "arch": "mlp"}
    return entry


def corrupt(rel: str, how: str) -> Callable[[Path], None]:
    def apply(ws: Path) -> None:
        f = ws / rel
        if how == "truncate":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        elif how == "delete":
            f.unlink()
        else:
            f.write_bytes(b"not a tensor file")
    return apply


def cifar_files(how: str) -> Callable[[Path], str]:
    """A dataset root whose npz files are a corrupted download or a truncated copy."""
    def root(ws: Path) -> str:
        d = ws / "cifar"
        d.mkdir(exist_ok=True)
        for name in ("cifar10_jpeg_train.npz", "cifar10_jpeg_test.npz", "cifar10_test_first1000.npz"):
            np.savez(d / name, data=np.zeros((10, 3072), np.uint8), labels=np.zeros(10, np.int64))
            if how == "truncate":
                (d / name).write_bytes((d / name).read_bytes()[:100])
        return str(d)
    return root


# id, params (None: shipped), extra setup, CLI args, words the error line must contain
CASES: list[tuple[str, Any, Any, list[str], list[str]]] = [
    ("unknown defense", with_params(defenses__mcgs__method="mcgz"), None, ["validate"], ["defenses.mcgs.method", "mcgs"]),
    ("unknown attack", with_params(attacks__pgd__method="pdg"), None, ["validate"], ["attacks.pgd.method", "pgd"]),
    ("unknown model source", with_params(models__classifier__source="trian"), None, ["validate"], ["models.classifier.source", "train"]),
    ("unknown architecture", with_params(models__classifier__arch="resnet1000"), None, ["validate"], ["models.classifier.arch"]),
    ("unknown dataset", with_params(dataset__name="cifar1000"), None, ["validate"], ["dataset.name", "cifar100"]),
    ("unknown model in a role", with_params(defenses__mcgs__backbone="backbon"), None, ["validate"], ["backbon", "backbone"]),
    ("unknown victim in the grid", with_params(grid__victims=["victim_nope"]), None, ["validate"], ["grid.victims", "victim_nope"]),
    ("eps out of range", with_params(defenses__mcgs__eps=8), None, ["validate"], ["defenses.mcgs.eps", "1"]),
    ("negative attack eps", with_params(attacks__pgd__eps=-0.1), None, ["validate"], ["attacks.pgd.eps"]),
    ("n_samples 0", with_params(defenses__mcgs__n_samples=0), None, ["validate"], ["defenses.mcgs.n_samples"]),
    ("n_eval 0", with_params(dataset__n_eval=0), None, ["validate"], ["dataset.n_eval"]),
    ("malformed schedule", with_params(defenses__mcgs__schedule="F1X1"), None, ["validate"], ["schedule", "F1B1"]),
    ("wrong type", with_params(runtime__batch_size="big"), None, ["validate"], ["runtime.batch_size"]),
    ("misspelt key", with_params(defenses__mcgs__n_sampels=3), None, ["validate"], ["n_sampels", "n_samples"]),
    ("unknown section", with_params(grids={}), None, ["validate"], ["grids", "grid"]),
    ("path traversal in a name", with_params(defenses={"../evil": {"method": "none"}}), None, ["validate"], ["invalid name"]),
    ("zero shards", with_params(shards={"defend": 0}), None, ["validate"], ["shards.defend"]),
    ("bad shard argument", None, None, ["defend", "--shard", "3/2", "none"], None),
    ("missing params file", None, None, ["--params", "nope.yaml", "validate"], ["nope.yaml", "not found"]),
    ("python object in YAML", "raw:dataset: !!python/object/apply:os.system ['echo pwned']\n", None, ["validate"], ["not valid YAML"]),
    ("missing weight file (offline)", with_params(models__victim_mlp=lambda ws: {
        "source": "file", "path": str(ws / "nope.th"), "sha256": "0" * 64, "arch": "mlp"}), None,
     ["model", "victim_mlp"], ["nope.th", "not found"]),
    ("weight checksum mismatch", with_params(models__victim_mlp=file_model(lambda p: "0" * 64)), None,
     ["model", "victim_mlp"], ["does not match"]),
    ("checkpoint with a pickled object", with_params(models__victim_mlp=file_model(
        artifacts.sha256, {"obj": Path("/")})), None, ["model", "victim_mlp"], ["refused to load"]),
    ("corrupted dataset download", with_params(dataset={"name": "cifar10", "source": "npz", "root": cifar_files("garbage"),
                                                        "n_eval": 10}), None, ["data"], ["md5"]),
    ("truncated dataset file", with_params(dataset={"name": "cifar10", "source": "npz", "root": cifar_files("truncate"),
                                                    "n_eval": 10}), None, ["data"], ["truncated"]),
    ("dataset absent offline", with_params(dataset={"name": "cifar10", "source": "torchvision", "download": False,
                                                    "root": lambda ws: str(ws / "empty"), "n_eval": 10}), None, ["data"], ["cifar"]),
    ("corrupted artifact", None, corrupt("results/data/test.pt", "garbage"), ["defend", "none"], ["results/data/test.pt"]),
    ("truncated artifact", None, corrupt("results/data/test.pt", "truncate"), ["defend", "none"], ["results/data/test.pt"]),
    ("artifact without its sidecar", None, corrupt("results/data/test.json", "delete"), ["defend", "none"], ["results/data/test"]),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A scratch project with the shipped params and the data stage's outputs."""
    from workspace import make

    ws = make(tmp_path_factory.mktemp("bad"), BASE)
    cwd = Path.cwd()
    try:
        import os

        os.chdir(ws)
        assert main(["data"]) == 0
    finally:
        os.chdir(cwd)
    return ws


def snapshot(ws: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in (ws / "results").rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_exit_2_before_compute(case, project: Path, tmp_path: Path,
                                                               monkeypatch, capsys) -> None:
    _, params, setup, argv, words = case
    ws = tmp_path / "ws"
    shutil.copytree(project, ws, symlinks=True)
    monkeypatch.chdir(ws)
    if isinstance(params, str):
        (ws / "params.yaml").write_text(params.removeprefix("raw:"))
    elif params is not None:
        (ws / "params.yaml").write_text(yaml.safe_dump(params(ws), sort_keys=False))
        if argv[0] not in ("validate", "--params"):
            assert main(["dag", "--write"]) == 0  # a valid experiment: its stage is what must refuse
    if setup:
        setup(ws)
    capsys.readouterr()
    before = snapshot(ws)
    if words is None:  # argparse usage errors: exit status 2 and one error line, too
        with pytest.raises(SystemExit) as exc:
            main(argv)
        rc, err = exc.value.code, capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if "error:" in ln]
    else:
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("preempt: error:")]
        assert all(w in lines[0] for w in words), lines
    assert rc == 2
    assert len(lines) == 1, err
    assert snapshot(ws) == before  # nothing computed, nothing half-written
    assert not (ws / "pwned").exists()


def test_the_table_covers_at_least_twenty_inputs() -> None:
    assert len(CASES) >= 20


def test_a_device_out_of_memory_is_one_line_naming_the_stage_models_and_knob(monkeypatch, capsys) -> None:
    """A simulated budget: the stage's work raises what torch raises when the GPU is full."""
    import torch

    from preempt import cli
    from preempt.stages import defend

    def full(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")

    monkeypatch.setattr(defend, "run", full)
    assert cli.main(["defend", "mcgs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("preempt: error: defend mcgs: ")
    assert "out of memory" in err[0] and "classifier, backbone" in err[0]
    assert "runtime.batch_size (now 500)" in err[0] and "defenses.mcgs.chunk_size (now auto)" in err[0]
    assert "runtime.model_batch.classifier (now unset)" in err[0] and "runtime.memory_fraction (now 0.8)" in err[0]
    from preempt.stages import attack
    monkeypatch.setattr(attack, "run", full)
    assert cli.main(["attack", "none", "none", "victim_mlp", "pgd"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "with model(s) victim_mlp;" in err[0]
    assert "runtime.model_batch.victim_mlp (now unset) or runtime.batch_size (now 500)" in err[0]
