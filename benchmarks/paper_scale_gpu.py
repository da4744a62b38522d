"""The paper experiments at full width on a GPU without internet (issue 29, item 6): seconds per
image of MSPD (F1B1, N = 20) on the paper's CIFAR-10 backbone against the 0.02 s/image MSPD
reports, then the shrunk paper experiments run whole with the zoo's real architectures.

Weights cannot be downloaded on such a machine, and timings depend on shapes, not on weight
values, so every RobustBench model is its own architecture with random weights
(``shrink: {stand_in: zoo}``, ``preempt.models.standin``). Everything runs through the pipeline
itself, in scratch copies of the project (``tests/workspace.py``):

1. **Timing** (``config/cifar10.yaml``'s ``timing`` block: MSPD, Fast Preemption and Bi-Level on
   the PreActResNet-18 backbone ``Gowal2021Improving_R18_ddpm_100m`` with the ResNeXt labelling
   classifier): ``snakemake results/timing/<defense>.json`` with no count capped, for each
   ``--timing-images`` (one batch of that many images, 1 warm-up and ``repeats`` timed runs).
   Printed per defense: mean s/image over the repeats with a 95 % t-interval (n = repeats). MSPD's
   0.02 s/image is from an A100 with an unstated batch, so the comparison is printed as "not
   comparable" unless the device is an A100, and then only for the batch the paper implies (1).
2. **Full width**: ``python -m preempt inline`` of ``config/imagenet.yaml`` (random JPEGs at the
   ILSVRC2012 paths) and of ``config/cifar10.yaml`` (needs the CIFAR-10 train split: the 136 MB
   npz; skipped with a line saying so when absent) shrunk as the test suite shrinks them (4
   images, 1 step, 2 samples), with the zoo architectures: every stage, notebook and report at the
   papers' model sizes. Printed: wall seconds and the number of stages.

Output: the tables on stdout and ``<out>/paper_scale_gpu.md`` (plus each timing JSON).

    python benchmarks/paper_scale_gpu.py [--out DIR] [--timing-images 1,64] [--defenses mspd] [--skip-full]
        [--only imagenet] [--device cuda]

CIFAR-10 comes from ``--cifar`` (default ``../shared/data/cifar10`` or ``./shared/data/cifar10``).
On the ``device`` tool's machine (only the checkout travels, 64 MiB), make ``shared`` in the
checkout a link to ``../shared`` (ignored in ``.git/info/exclude``) and carry the two test files
through it: ``carry: [shared/data/cifar10/cifar10_jpeg_test.npz,
shared/data/cifar10/cifar10_test_first1000.npz]``; the train split does not fit, so the CIFAR-10
full-width run is skipped there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from scipy import stats as sstats

from _common import ROOT
from preempt import config, paths, shrink, stats
from workspace import edit_params, imagenet_folder, make, run

PAPER_SEC = 0.02  # MSPD, abstract and Table IX: s/image on CIFAR-10, NVIDIA A100
TRAIN_NPZ = "cifar10_jpeg_train.npz"
TEST_NPZ = ("cifar10_jpeg_test.npz", "cifar10_test_first1000.npz")


def experiment(name: str, shrink: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    raw["dataset"].update(dataset)
    raw["shrink"] = shrink
    return raw


def uncapped(name: str, defenses: list[str]) -> dict[str, int]:
    """shrink caps that leave these defenses' counts as written (defaults included): the largest."""
    written = config.load(ROOT / "config" / f"{name}.yaml")
    dumped = [written.defenses[d].model_dump() for d in defenses]

    def largest(keys: frozenset[str]) -> int:
        return max([1] + [v for d in dumped for k, v in d.items() if k in keys and isinstance(v, int)])

    return {"steps": largest(shrink.STEPS), "samples": largest(shrink.SAMPLES)}


def interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of the repeats."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, float("nan"), float("nan")
    half = sstats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / len(xs) ** 0.5
    return m, m - half, m + half


def timing(cifar: Path, device: str, images: list[int], defenses: list[str] | None, tmp: Path,
           out: Path) -> list[str]:
    defenses = defenses or yaml.safe_load((ROOT / "config" / "cifar10.yaml").read_text())["timing"]["defenses"]
    raw = experiment("cifar10", {"stand_in": "zoo", "device": device, "images": max(images),
                                 **uncapped("cifar10", defenses)}, {"source": "npz", "root": str(cifar)})
    ws = make(tmp / "timing", raw, dag=False)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    lines = [f"**Timing** ({gpu}; `config/cifar10.yaml`'s timing block, zoo architectures with random weights, "
             "no count capped; mean s/image over the repeats, 95 % t-interval)", "",
             "| defense | images per batch | repeats | s/image | 95 % interval | vs MSPD's 0.02 s/image (A100) |",
             "|---|---|---|---|---|---|"]
    for n in images:
        edit_params(ws, "timing.images", n)
        targets = [f"results/timing/{d}.json" for d in defenses]
        t0 = time.perf_counter()
        run(["snakemake", "--cores", "2", *targets], ws, timeout=3600)
        print(f"timing at {n} images per batch: {time.perf_counter() - t0:.0f} s", flush=True)
        for d in defenses:
            rec = json.loads((ws / "results" / "timing" / f"{d}.json").read_text())
            (out / f"timing-{d}-{n}.json").write_text(json.dumps(rec, indent=1))
            m, lo, hi = interval(rec["sec_per_image"])
            verdict = "—"
            if rec["defense_ref"].startswith("mcgs") and "F1B1" in rec["defense_ref"]:
                verdict = ("not comparable: a CPU, not the paper's A100" if device == "cpu" else
                           "not comparable: another GPU than the paper's A100" if "A100" not in gpu else
                           "not comparable: the paper's batch is unstated" if n != 1 else
                           f"{stats.verdict(lo, hi, 'below', PAPER_SEC)} (below {PAPER_SEC})")
            lines.append(f"| {d} (`{rec['defense_ref']}`) | {rec['images']} | {rec['repeats']} | {m:.3g} | "
                         f"[{lo:.3g}, {hi:.3g}] | {verdict} |")
    return lines


def full_width(name: str, dataset: dict[str, Any], device: str, tmp: Path) -> str:
    raw = experiment(name, {"stand_in": "zoo", "device": device}, dataset)
    ws = make(tmp / f"full-{name}", raw)
    t0 = time.perf_counter()
    proc = run(["python", "-m", "preempt", "inline"], ws, ok=False, timeout=3600, env={"PREEMPT_WARM": "0"})
    wall = time.perf_counter() - t0
    done = re.search(r"inline: (\d+) stages done", proc.stderr + proc.stdout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return f"| `config/{name}.yaml` | failed (rc {proc.returncode}) after {wall:.0f} s: {tail[0][:200]} |"
    reports = sorted((ws / paths.REPORTS).glob("*.html"))
    return (f"| `config/{name}.yaml` | {wall:.0f} s, {done.group(1) if done else '?'} stages, "
            f"{len(reports)} HTML reports |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--timing-images", default="1,64", help="images per timed batch, comma-separated (<= 64)")
    ap.add_argument("--defenses", default=None, help="comma-separated (default: the file's timing block)")
    ap.add_argument("--cifar", type=Path, default=None, help="the CIFAR-10 npz folder")
    ap.add_argument("--skip-full", action="store_true", help="the timing only")
    ap.add_argument("--only", choices=["cifar10", "imagenet"], default=None, help="one full-width run only")
    a = ap.parse_args()
    cifar = a.cifar or next((p for p in (ROOT.parent / "shared" / "data" / "cifar10", ROOT / "shared" / "data" / "cifar10")
                             if (p / TEST_NPZ[0]).is_file()), None)
    if cifar is None or not all((cifar / f).is_file() for f in TEST_NPZ):
        raise SystemExit(f"CIFAR-10's test npz files {', '.join(TEST_NPZ)} not found; pass --cifar DIR")
    a.out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Paper experiments at full width ({time.strftime('%Y-%m-%d')}, torch {torch.__version__})", ""]
    with tempfile.TemporaryDirectory(prefix="preempt-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        lines += timing(cifar, a.device, [int(n) for n in a.timing_images.split(",")],
                        a.defenses.split(",") if a.defenses else None, tmp, a.out)
        print("\n".join(lines), flush=True)
        if not a.skip_full:
            full = ["", "**Full width** (shrunk: 4 images, 1 step, 2 samples; zoo architectures, random weights; "
                        "`python -m preempt inline`)", "", "| experiment | result |", "|---|---|"]
            if a.only in (None, "imagenet"):
                folder = imagenet_folder(tmp / "imagenet-val", 4)
                full.append(full_width("imagenet", {"root": str(folder)}, a.device, tmp))
                print(full[-1], flush=True)
            if a.only in (None, "cifar10"):
                if (cifar / TRAIN_NPZ).is_file():
                    full.append(full_width("cifar10", {"source": "npz", "root": str(cifar)}, a.device, tmp))
                else:
                    full.append(f"| `config/cifar10.yaml` | skipped: its train split ({cifar / TRAIN_NPZ}) is absent |")
                print(full[-1], flush=True)
            lines += full
    (a.out / "paper_scale_gpu.md").write_text("\n".join(lines) + "\n")
    print(f"-> {a.out / 'paper_scale_gpu.md'}")


if __name__ == "__main__":
    main()
