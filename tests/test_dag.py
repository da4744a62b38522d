"""One DAG for both drivers: dvc.yaml is generated from it and the wiring is consistent."""

from __future__ import annotations

import json
import time

import yaml

from conftest import ROOT
from preempt import config, dag, dvcfile, paths, snapshots
from preempt.runtime import shard_range


def test_committed_dvc_yaml_is_fresh() -> None:
    default = config.load(ROOT / "params.yaml")  # the committed pipeline files are the default's
    files = dvcfile.dvc_files(dag.build(default))
    for path, text in files.items():
        assert (ROOT / path).read_text() == text, f"{path} is stale: run `python -m preempt dag --write`"
    assert {str(f.relative_to(ROOT)) for f in (ROOT / paths.PIPELINES).glob("*/dvc.yaml")} == set(files) - {"dvc.yaml"}


def test_one_pipeline_file_per_defense_and_dvc_addresses_its_stages(params) -> None:
    """Each defense's stages sit in pipelines/<defense>/dvc.yaml, which runs them from the root."""
    stages = dag.build(params)
    files = dvcfile.dvc_files(stages)
    defenses = {*params.grid.names("defenses"), *params.timing.defenses}  # a timed defense need not be in the grid
    assert set(files) == {"dvc.yaml", *(f"pipelines/{d}/dvc.yaml" for d in defenses)}
    for st in stages:
        doc = yaml.safe_load(files[st.dvc_file])["stages"]
        assert st.name in doc
        if st.family in ("defend", "revert", "attack", "gather", "timing"):
            assert st.dvc_file == f"pipelines/{st.defense}/dvc.yaml" and doc[st.name]["wdir"] == "../.."
            assert st.target == f"{st.dvc_file}:{st.name}"
        else:
            assert st.dvc_file == "dvc.yaml" and "wdir" not in doc[st.name] and st.target == st.name
    assert "plots" in yaml.safe_load(files["dvc.yaml"])  # the reports' plots stay at the root


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
    # editing one defense touches exactly: its RE stage, its reversions (attacks follow by file) and its timing
    assert {s.family for s in mcgs} == {"defend", "revert", "timing"}
    assert all("mcgs" in s.args for s in mcgs)


def test_dvc_yaml_declares_same_commands_paths_and_params(params) -> None:
    stages = dag.build(params)
    files = {path: yaml.safe_load(text)["stages"] for path, text in dvcfile.dvc_files(stages).items()}
    for st in stages:
        entry = files[st.dvc_file][st.name]
        assert entry["cmd"] == st.cmd
        assert entry["deps"] == list(st.deps)
        assert entry["outs"] + entry.get("metrics", []) == [*st.outs, *st.dir_outs, *st.metrics]
        assert entry["params"] == list(st.params)
    # DVC reads the claims and the summary as metrics, the figures' CSVs as plots
    doc = yaml.safe_load(dvcfile.dvc_files(stages)["dvc.yaml"])
    assert doc["stages"]["aggregate"]["metrics"] == [paths.CLAIMS_JSON, paths.SUMMARY_JSON]
    plotted = [next(iter(p)) for p in doc.get("plots", [])]
    assert all(p.startswith("reports/figures/") and p.endswith(".csv") for p in plotted)


def test_snapshots_are_dated_by_what_dvc_lock_recorded(tmp_path, monkeypatch) -> None:
    """A stage's snapshot is old (epoch) while its params equal dvc.lock's record, new otherwise,
    so an edit plans the stage and an edit reverted before anything ran plans nothing."""
    monkeypatch.chdir(tmp_path)
    st = dag.Stage("defend", ("mcgs",), (), ("defenses.mcgs", "runtime"), ("out",))
    other = dag.Stage("defend", ("none",), (), ("defenses.none",), ("out2",))
    (tmp_path / "params.yaml").write_text("defenses:\n  mcgs: {n_samples: 20, lr: 1e-3}\n  none: {method: none}\n"
                                          "runtime: {batch_size: 8}\n")
    snap = tmp_path / snapshots.snapshot_path(st)
    snapshots.write([st, other])  # no dvc.lock yet: never run, so newer than any output
    assert json.loads(snap.read_text()) == {"defenses.mcgs": {"n_samples": 20, "lr": 0.001}, "runtime": {"batch_size": 8}}
    assert snap.stat().st_mtime > time.time() - 60
    # what DVC writes after running both stages, each in its defense's dvc.lock (YAML 1.2 floats)
    (tmp_path / "pipelines" / "mcgs").mkdir(parents=True)
    (tmp_path / "pipelines" / "none").mkdir(parents=True)
    (tmp_path / "pipelines" / "mcgs" / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  defend-mcgs:\n    params:\n      params.yaml:\n        defenses.mcgs:\n"
        "          lr: 0.001\n          n_samples: 20\n        runtime:\n          batch_size: 8\n")
    (tmp_path / "pipelines" / "none" / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  defend-none:\n    params:\n      params.yaml:\n        defenses.none:\n"
        "          method: none\n")
    snapshots.write([st, other])
    assert snap.stat().st_mtime == snapshots.BUILT
    # an edit: new value, dated now; the untouched stage stays old
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text().replace("n_samples: 20", "n_samples: 10"))
    snapshots.write([st, other])
    assert snap.stat().st_mtime > time.time() - 60 and json.loads(snap.read_text())["defenses.mcgs"]["n_samples"] == 10
    assert (tmp_path / snapshots.snapshot_path(other)).stat().st_mtime == snapshots.BUILT
    # reverted before anything ran: the lock's values again, so old again
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text().replace("n_samples: 10", "n_samples: 20"))
    snapshots.write([st, other])
    assert snap.stat().st_mtime == snapshots.BUILT


def test_stale_dvc_yaml_is_refused(tmp_path, params, monkeypatch) -> None:
    import pytest

    from preempt.errors import PreemptError

    monkeypatch.chdir(tmp_path)
    stages = dag.build(params)
    assert dvcfile.write_all(stages) and not dvcfile.write_all(stages)
    dvcfile.check_fresh(stages)
    (tmp_path / "dvc.yaml").write_text(dvcfile.dvc_yaml([st for st in stages if st.dvc_file == "dvc.yaml"][:-1]))
    with pytest.raises(PreemptError, match="dvc.yaml out of date"):
        dvcfile.check_fresh(stages)
    dvcfile.write_all(stages)
    # a defense dropped from the grid: its pipeline file goes, and a leftover one is refused
    kept = [st for st in stages if st.defense != "mcgs"]
    assert "pipelines/mcgs/dvc.yaml" in dvcfile.write_all(kept) and not (tmp_path / "pipelines/mcgs/dvc.yaml").exists()
    dvcfile.check_fresh(kept)
    (tmp_path / "pipelines/mcgs/dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(PreemptError, match="pipelines/mcgs/dvc.yaml out of date"):
        dvcfile.check_fresh(kept)


def test_models_built_from_models_depend_on_them(params) -> None:
    """A wrapper (transform, JATP) reads its base model; a transfer attack its surrogates."""
    stages = {s.name: s for s in dag.build(params)}
    order = list(stages)
    jatp = stages["model-victim_jatp"]
    assert paths.model_path("victim_resnet_at") in jatp.deps
    assert order.index("model-victim_resnet_at") < order.index("model-victim_jatp")
    reuse = stages["model-victim_jatp_mlp"]  # cross-model transfer of one trained denoiser
    assert {paths.model_path("victim_jatp"), paths.model_path("victim_mlp_at")} <= set(reuse.deps)
    transfer = stages["attack-none-none-victim_trigger-mifgsm"]
    assert {paths.model_path("classifier"), paths.model_path("surrogate")} <= set(transfer.deps)
    informed = stages["attack-none-none-victim_trigger-mifgsm_informed"]
    assert paths.model_path("surrogate_trigger") in informed.deps


def test_grid_tables_label_each_cell(params) -> None:
    tables = params.grid.tables()
    assert tables[("mcgs", "none", "victim_mlp", "pgd")] == ["main"]
    assert "ablation" in tables[("abl_f100", "none", "victim_resnet_at", "autoattack")]
    assert set(tables[("mcgs", "none", "victim_resnet_at", "autoattack")]) >= {"main", "ablation"}


def test_shard_ranges_tile_the_images_in_whole_batches() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.integers(0, 2000), st.integers(1, 300), st.integers(1, 40))
    def check(n: int, bs: int, k: int) -> None:
        ranges = [shard_range(n, bs, (i, k)) for i in range(1, k + 1)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        for (lo, hi), (lo2, _) in zip(ranges, ranges[1:]):
            assert lo <= hi == lo2
        assert all(lo % bs == 0 for lo, _ in ranges)  # a shard starts at a batch boundary
        sizes = [-(-(hi - lo) // bs) for lo, hi in ranges]
        assert max(sizes) - min(sizes) <= 1  # batches spread as evenly as possible

    check()
    assert shard_range(40, 10, None) == (0, 40)


def test_sharded_stages_and_their_gathers(params) -> None:
    from preempt import config

    raw = {**params.raw, "shards": {"defend": 3, "attack": 2}}
    stages = dag.build(config.parse(raw))
    by_name = {s.name: s for s in stages}
    d = by_name["defend-mcgs-2of3"]
    assert d.cmd == "python -m preempt defend --shard 2/3 mcgs" and d.rule == "defend__mcgs__2of3"
    assert d.outs[0] == "results/shards/re/mcgs/2of3.pt"
    g = by_name["gather-re-mcgs"]
    assert {f"results/shards/re/mcgs/{i}of3.pt" for i in (1, 2, 3)} <= set(g.deps)
    assert g.outs[0] == paths.re_path("mcgs")
    cell = ("mcgs", "none", "victim_mlp", "autoattack")
    scored = by_name["gather-adv-" + "-".join(cell)]
    assert paths.cell_path(*cell) in scored.outs and f"attacks.{cell[3]}" in scored.params
    assert not any(s.family == "attack" and s.shard is None for s in stages)
    assert len([s for s in stages if s.family == "attack"]) == 2 * len(params.grid.cells())
    test_every_artifact_dep_is_made_by_an_earlier_stage(config.parse(raw))


def test_artifact_deps_are_data_files_not_sidecars(params) -> None:
    for st in dag.build(params):
        if st.family != "data":
            sidecars = [d for d in st.deps if d.endswith(".json") and d.removesuffix(".json") + ".pt" in st.deps
                        or d.startswith(("results/models", "results/re", "results/inputs", "results/data"))
                        and d.endswith(".json")]
            assert not sidecars, st.name


def test_a_file_without_reversions_declares_no_param_dvc_cannot_read(tmp_path) -> None:
    """The implicit reversion 'none' is not in params.yaml, so no stage may list it as a DVC param."""
    from preempt import config, dag

    raw = yaml.safe_load((ROOT / "config" / "mspd-digits.yaml").read_text())
    assert "reversions" not in raw
    for st in dag.build(config.parse(raw)):
        assert "reversions.none" not in st.params


def test_the_c_yaml_emitter_writes_what_the_python_one_writes(params, monkeypatch) -> None:
    """Pipeline files are rendered with libyaml where PyYAML has it: a machine without it must
    write the same text, or its copies would look stale."""
    stages = dag.build(params)
    fast = dvcfile.dvc_files(stages)
    monkeypatch.setattr(dvcfile, "DUMPER", yaml.SafeDumper)
    assert dvcfile.dvc_files(stages) == fast
