"""Where a finished Snakemake run's wall time went, per stage family: jobs, the jobs' own wall
seconds (start to finish, as Snakemake logged them), the stages' compute (``wall_seconds`` in each
output's sidecar, timed inside the stage) and the difference, the per-job cost of getting there
(DVC, process start, the warm server's fork, Snakemake's scheduling).

    python benchmarks/job_breakdown.py [WORKSPACE] [--log .snakemake/log/<run>.snakemake.log]

WORKSPACE is a project copy that ran ``snakemake``; by default its newest Snakemake log is read.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def parse(log: Path) -> tuple[dict[str, dict], str]:
    """jobid -> {rule, outputs, start, end} from a Snakemake log; and its 'Elapsed time'."""
    jobs: dict[str, dict] = {}
    stamp, rule, outputs, elapsed = None, None, [], ""
    for line in log.read_text().splitlines():
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
        elif m := re.match(r"^(?:local)?rule (\S+):$", line):
            rule, outputs = m.group(1), []
        elif line.strip().startswith("output:") and rule:
            outputs = [o.strip() for o in line.split(":", 1)[1].split(",")]
        elif (m := re.match(r"^\s+jobid: (\d+)$", line)) and rule:
            jobs[m.group(1)] = {"rule": rule, "outputs": outputs, "start": stamp}
            rule = None
        elif (m := re.match(r"^Finished jobid: (\d+)", line)) and m.group(1) in jobs:
            jobs[m.group(1)]["end"] = stamp
        elif line.startswith("Elapsed time:"):
            elapsed = line.split(":", 1)[1].strip()
    return jobs, elapsed


def compute_seconds(ws: Path, outputs: list[str]) -> float | None:
    """The stage's own clock: the largest ``wall_seconds`` among its outputs' sidecars (None: the
    stage writes no timed sidecar: data, tables, reports)."""
    best = None
    for o in outputs:
        side = ws / Path(o).with_suffix(".json")
        if side.is_file():
            try:
                sec = json.loads(side.read_text()).get("wall_seconds")
            except ValueError:
                continue
            if isinstance(sec, (int, float)):
                best = max(best or 0.0, float(sec))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", nargs="?", default=".")
    ap.add_argument("--log", help="a Snakemake log (default: the workspace's newest)")
    a = ap.parse_args()
    ws = Path(a.workspace)
    log = Path(a.log) if a.log else max((ws / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    jobs, elapsed = parse(log)
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0])
    for job in jobs.values():
        if "end" not in job or job["rule"] == "all":
            continue
        row = rows[job["rule"].split("__")[0]]
        sec = compute_seconds(ws, job["outputs"])
        row[0] += 1
        row[1] += (job["end"] - job["start"]).total_seconds()
        if sec is not None:
            row[2] += sec
            row[3] += 1
    print(f"{log}\n{'family':10s} {'jobs':>5s} {'job s':>8s} {'stage s':>8s} {'per-job cost s':>15s}")
    timed = [0, 0.0, 0.0]
    for fam, (n, job_s, stage_s, n_timed) in rows.items():
        if n_timed == n:
            print(f"{fam:10s} {n:5.0f} {job_s:8.0f} {stage_s:8.0f} {(job_s - stage_s) / n:15.1f}")
            timed = [timed[0] + n, timed[1] + job_s, timed[2] + stage_s]
        else:
            print(f"{fam:10s} {n:5.0f} {job_s:8.0f} {'-':>8s} {'-':>15s}  (no timed sidecar)")
    n, job_s, stage_s = timed
    print(f"{'timed':10s} {n:5.0f} {job_s:8.0f} {stage_s:8.0f} {(job_s - stage_s) / max(n, 1):15.1f}")
    print(f"wall (Snakemake's 'Elapsed time'): {elapsed}")


if __name__ == "__main__":
    main()
