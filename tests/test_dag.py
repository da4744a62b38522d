"""One DAG for both drivers: dvc.yaml is generated from it and the wiring is consistent."""

from __future__ import annotations

import json
import os
import time

import yaml

from conftest import ROOT
from preempt import dag


def test_committed_dvc_yaml_is_fresh(params) -> None:
    assert (ROOT / "dvc.yaml").read_text() == dag.dvc_yaml(dag.build(params)), \
        "dvc.yaml is stale: run `python -m preempt dag --write`"


def test_every_artifact_dep_is_made_by_an_earlier_stage(params) -> None:
    made: set[str] = set()
    for st in dag.build(params):
        for d in st.deps:
            if d.startswith(("results/", "reports/")):
                assert d in made, f"{st.name} needs {d} before any stage makes it"
        made.update(st.all_outs())
    names = [st.name for st in dag.build(params)]
    assert len(names) == len(set(names))


def test_grid_cells_and_their_params(params) -> None:
    stages = dag.build(params)
    g = params.grid
    cells = [s for s in stages if s.family == "attack"]
    assert len(cells) == len(g.cells()) == len(set(g.cells()))
    assert set(g.main_cells()) <= set(g.product()) and set(g.main_cells()) <= set(g.cells())
    assert ("mcgs", "white", "victim_mlp", "pgd") not in g.main_cells()  # grid.exclude
    assert ("mcgs", "white", "victim_mlp", "autoattack") in g.main_cells()
    for block in g.extra.values():
        assert set(block.product()) <= set(g.cells())
    mcgs = [s for s in stages if "defenses.mcgs" in s.params]
    # editing one defense touches exactly: its RE stage and its reversions (attacks follow by file)
    assert {s.family for s in mcgs} == {"defend", "revert"}
    assert all("mcgs" in s.args for s in mcgs)


def test_dvc_yaml_declares_same_commands_paths_and_params(params) -> None:
    stages = dag.build(params)
    doc = yaml.safe_load(dag.dvc_yaml(stages))["stages"]
    for st in stages:
        entry = doc[st.name]
        assert entry["cmd"] == st.cmd
        assert entry["deps"] == list(st.deps)
        assert entry["outs"] == st.all_outs()
        assert entry["params"] == list(st.params)


def test_snapshots_are_dated_to_the_params_edit(tmp_path, params, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("x: 1\n")
    edit_time = time.time() - 100
    os.utime("params.yaml", (edit_time, edit_time))
    st = dag.Stage("defend", ("mcgs",), (), ("defenses.mcgs",), ("out",))
    raw = {"defenses": {"mcgs": {"n_samples": 20}}}
    dag.snapshot_params([st], raw)
    snap = tmp_path / dag.snapshot_path("defenses.mcgs")
    assert json.loads(snap.read_text()) == {"n_samples": 20}
    assert abs(snap.stat().st_mtime - edit_time) < 1
    # unchanged value: file untouched even if params.yaml is touched again
    os.utime("params.yaml", None)
    dag.snapshot_params([st], raw)
    assert abs(snap.stat().st_mtime - edit_time) < 1
    # changed value: rewritten, dated to params.yaml's (new) mtime
    raw["defenses"]["mcgs"]["n_samples"] = 10
    dag.snapshot_params([st], raw)
    assert abs(snap.stat().st_mtime - os.stat("params.yaml").st_mtime) < 1


def test_stale_dvc_yaml_is_refused(tmp_path, params, monkeypatch) -> None:
    import pytest

    from preempt.errors import PreemptError

    monkeypatch.chdir(tmp_path)
    stages = dag.build(params)
    (tmp_path / "dvc.yaml").write_text(dag.dvc_yaml(stages))
    dag.check_fresh(stages)
    (tmp_path / "dvc.yaml").write_text(dag.dvc_yaml(stages[:-1]))
    with pytest.raises(PreemptError, match="out of date"):
        dag.check_fresh(stages)


def test_models_built_from_models_depend_on_them(params) -> None:
    """A wrapper (transform, JATP) reads its base model; a transfer attack its surrogates."""
    stages = {s.name: s for s in dag.build(params)}
    order = list(stages)
    jatp = stages["model-victim_jatp"]
    assert dag.model_path("victim_resnet_at") in jatp.deps
    assert order.index("model-victim_resnet_at") < order.index("model-victim_jatp")
    reuse = stages["model-victim_jatp_mlp"]  # cross-model transfer of one trained denoiser
    assert {dag.model_path("victim_jatp"), dag.model_path("victim_mlp_at")} <= set(reuse.deps)
    transfer = stages["attack-none-none-victim_trigger-mifgsm"]
    assert {dag.model_path("classifier"), dag.model_path("surrogate")} <= set(transfer.deps)
    informed = stages["attack-none-none-victim_trigger-mifgsm_informed"]
    assert dag.model_path("surrogate_trigger") in informed.deps


def test_grid_tables_label_each_cell(params) -> None:
    tables = params.grid.tables()
    assert tables[("mcgs", "none", "victim_mlp", "pgd")] == ["main"]
    assert "ablation" in tables[("abl_f100", "none", "victim_resnet_at", "autoattack")]
    assert set(tables[("mcgs", "none", "victim_resnet_at", "autoattack")]) >= {"main", "ablation"}
