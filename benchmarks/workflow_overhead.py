"""Workflow overhead on an up-to-date experiment: a no-op ``snakemake --cores 2`` and a no-op
``dvc repro``, in seconds (goal <= 5 each), and the number of jobs planned after editing one
parameter of one defense (must equal that defense's stages plus aggregate and report).

    python benchmarks/workflow_overhead.py [--workspace DIR]   # DIR: an up-to-date checkout (default: this one)
    python benchmarks/workflow_overhead.py --quick             # builds a small experiment in a temp dir first
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from _common import ROOT
from preempt import config, dag
from workspace import jobs_planned, make, run, small_params


def timed(cmd: list[str], cwd: Path, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(cmd, cwd)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def planned(cwd: Path) -> dict[str, int]:
    return {rule: n for rule, n in jobs_planned(cwd).items() if rule != "all"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=ROOT)
    ap.add_argument("--quick", action="store_true", help="run a small experiment in a temp dir, then measure")
    a = ap.parse_args()
    tmp = None
    if a.quick:
        tmp = tempfile.TemporaryDirectory(prefix="preempt-bench-")
        a.workspace = make(Path(tmp.name), small_params())
        t0 = time.perf_counter()
        run(["snakemake", "--cores", "2"], a.workspace)
        print(f"built a small experiment in {a.workspace} ({time.perf_counter() - t0:.0f} s)")
    ws = a.workspace
    if planned(ws):
        raise SystemExit(f"{ws} is not up to date: run `snakemake --cores 2` there first")
    p = config.load(ws / "params.yaml")
    stages = dag.build(p)
    print(f"{ws}: {len(stages)} stages, {len(p.grid.cells())} cells")
    t_smk = timed(["snakemake", "--cores", "2"], ws)
    t_dvc = timed(["dvc", "repro"], ws)
    print(f"no-op snakemake --cores 2: {t_smk:.2f} s")
    print(f"no-op dvc repro:           {t_dvc:.2f} s")

    defense = next(d for d in p.grid.names("defenses") if p.defenses[d].method == "mcgs")  # type: ignore[attr-defined]
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["defenses"][defense]["n_samples"] = raw["defenses"][defense].get("n_samples", 20) + 1
    expected = sum(1 for st in stages if st.args[:1] == (defense,)
                   or (st.family == "gather" and st.args[1:2] == (defense,))) + 1 + len(p.report.notebooks)
    with tempfile.TemporaryDirectory(prefix="preempt-edit-") as copy:
        # edit a copy (mtimes kept): in place, restoring the value would itself be an edit that
        # Snakemake must treat as one (it cannot know the outputs were not rebuilt meanwhile)
        shutil.copytree(ws, copy, symlinks=True, dirs_exist_ok=True)
        (Path(copy) / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        jobs = sum(planned(Path(copy)).values())
    print(f"after editing defenses.{defense}.n_samples: {jobs} jobs planned; "
          f"{defense}'s stages + aggregate + report = {expected}")
    print(f"no-op snakemake {t_smk:.2f} s, no-op dvc repro {t_dvc:.2f} s (goal <= 5); "
          f"rerun jobs {jobs} == expected {expected}: {jobs == expected}")


if __name__ == "__main__":
    main()
