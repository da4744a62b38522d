"""The paper experiments (config/cifar10.yaml, config/imagenet.yaml) end to end, shrunk, on a CPU.

Each file is run as written plus the test-only ``shrink:`` section (``preempt.shrink``: 4 images,
one step, two samples, random-weight stand-ins for the zoo models) by ``python -m preempt inline``
(every stage in one process; the per-job DVC bookkeeping of ~800 jobs would take longer than the
whole suite). The dataset block points at data that is here: CIFAR-10's offline copy in
../shared, and for ImageNet a tiny synthetic validation folder in ILSVRC2012's real layout. What
must come out is what the GPU run produces: every output of the file's DAG, one metrics row per
cell with the refs of the file as written, every exhibit its grid reproduces shown in its paper's
notebook (not "not in this experiment"), and the HTML reports, marked as a shrunk run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import workspace
from conftest import ROOT
from preempt import config, dag, papers, paths
from preempt.stages.aggregate import describe
from preempt.stages.report import SHRUNK_BANNER

pytestmark = pytest.mark.pipeline
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"  # the offline copy (read in place, never copied)


def shrunk(name: str, tmp: Path) -> dict:
    raw = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    raw["shrink"] = {}  # the documented defaults: 4 images, 1 step, 2 samples, stand-ins
    if name == "cifar10":
        if not CIFAR.is_dir():
            pytest.skip(f"the offline CIFAR-10 copy {CIFAR} is absent")
        raw["dataset"].update(source="npz", root=str(CIFAR))
    else:
        raw["dataset"]["root"] = str(workspace.imagenet_folder(tmp / "imagenet-val", raw["shrink"].get("images", 4)))
    return raw


def notebook_text(path: Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for c in nb["cells"]:
        parts.append("".join(c["source"]) if c["cell_type"] == "markdown" else "")
        for o in c.get("outputs", []):
            assert o.get("output_type") != "error", f"{path.name}: {o.get('ename')}: {o.get('evalue')}"
            data = o.get("data", {})
            parts += ["".join(data.get("text/markdown", "")), "".join(data.get("text/html", "")), "".join(o.get("text", ""))]
    return "\n".join(parts)


@pytest.fixture(scope="module", params=["cifar10", "imagenet"])
def experiment(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    tmp = tmp_path_factory.mktemp(f"paper-{name}")
    (tmp / "ws").mkdir()
    ws = workspace.make(tmp / "ws", shrunk(name, tmp))
    workspace.run(["python", "-m", "preempt", "inline"], ws, timeout=1800, env={"PREEMPT_WARM": "0"})
    return name, ws


def test_every_output_of_the_dag_comes_out(experiment: tuple[str, Path]) -> None:
    name, ws = experiment
    declared = config.load(ws / "params.yaml")
    written = config.load(ROOT / "config" / f"{name}.yaml")
    stages = dag.build(declared)
    # the same DAG as the file as written (the shrink section only joins the computing stages' params)
    assert [(s.name, s.deps, s.all_outs()) for s in stages] == [(s.name, s.deps, s.all_outs()) for s in dag.build(written)]
    missing = [o for s in stages for o in s.all_outs() if not (ws / o).exists()]
    assert not missing, missing[:10]


def test_one_row_per_cell_with_the_refs_of_the_file_as_written(experiment: tuple[str, Path]) -> None:
    name, ws = experiment
    written = config.load(ROOT / "config" / f"{name}.yaml")
    df = pd.read_csv(ws / "results" / "metrics.csv")
    cells = written.grid.cells()
    assert len(df) == len(cells) and (df["n"] == 4).all()
    got = df.set_index(["defense", "reversion", "victim", "attack"])
    for d, r, v, a in cells:
        row = got.loc[(d, r, v, a)]
        for key, value in describe(written, d, v, a).items():
            assert row[key] == value or (pd.isna(row[key]) and value is None), (d, r, v, a, key)
    claims = pd.read_csv(ws / "results" / "claims.csv")
    assert len(claims) == len(yaml.safe_load((ws / "config" / "claims.yaml").read_text()))


def test_every_exhibit_the_grid_reproduces_is_shown_in_a_report_marked_shrunk(experiment: tuple[str, Path]) -> None:
    name, ws = experiment
    declared = config.load(ws / "params.yaml")
    keys = {k for ks in declared.grid.exhibits().values() for k in ks}
    assert keys
    for nb in declared.report.notebooks:
        text = notebook_text(ws / "reports" / f"{nb}.ipynb")
        assert text.lstrip().startswith(SHRUNK_BANNER)
        assert "Shrunk test run" in (ws / "reports" / f"{nb}.html").read_text()  # rendered: <strong>
        for e in (papers.PAPERS[nb].exhibits if nb in papers.PAPERS else ()):
            if e.key not in keys:
                continue
            head = f"### {e.label}: {e.title}"
            start = text.find(head)
            assert start >= 0, e.key
            end = text.find("### ", start + len(head))
            section = text[start:end if end > 0 else None]
            assert "*Not in this experiment.*" not in section and "*No experiment file" not in section, e.key
            if e.plot:
                assert (ws / "reports" / "figures" / nb / f"{e.id}.csv").is_file(), e.key


def test_the_shrunk_run_computed_at_toy_scale_offline(experiment: tuple[str, Path]) -> None:
    """What the computing stages saw: stand-ins instead of the zoo (no weight file was read), the
    capped counts, the CPU; the data stage read the folder it was pointed at."""
    from preempt import artifacts

    name, ws = experiment
    meta = artifacts.load_meta(str(ws / paths.data_path("test")))
    assert meta["image_shape"] == ([3, 32, 32] if name == "cifar10" else [3, 224, 224])
    declared = config.load(ws / "params.yaml")
    zoo = [n for n in dag.models_needed(declared) if declared.models[n].source == "robustbench"]
    assert zoo
    for n in zoo:
        assert artifacts.load_meta(str(ws / paths.model_path(n)))["stands_for"] == getattr(declared.models[n], "name")
    assert not (ws / "models").exists()  # RobustBench's model_dir: nothing was fetched or read
