"""The CLI behind ``python -m preempt <stage> [key...]`` (entered through ``preempt.__main__``):
run one stage; plus the ``inline`` driver and the ``dag``, ``validate``, ``list``, ``prefetch``,
``use``, ``claims``, ``coverage`` and ``slurm-profile`` tools."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import pandas as pd
import torch

from . import catalog, claims, config, coverage, dag, dvcfile, prefetch, recovery, slurm
from .artifacts import write_text
from .errors import ConfigError, PreemptError, report
from .paths import CLAIMS_CSV, DVC_YAML, PARAMS_FILE, PIPELINES
from .defenses import roles as defense_roles
from .registry import closest
from .runtime import log, setup_logging
from .stages import Context, context, of as stage_context

STAGE_ARGS = {
    "data": [],
    "model": ["name"],
    "defend": ["defense"],
    "revert": ["defense", "reversion"],
    "attack": ["defense", "reversion", "victim", "attack"],
    "timing": ["defense"],
    "aggregate": [],
    "report": ["notebook"],
    "gather": ["kind", "names"],
}
SHARDED = ("defend", "attack")  # stages that take --shard I/K


def _shard(text: str) -> tuple[int, int]:
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/K such as 2/4, got {text!r}") from None
    if not 1 <= i <= k:
        raise argparse.ArgumentTypeError(f"shard {text}: need 1 <= I <= K")
    return i, k


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m preempt", description=__doc__)
    ap.add_argument("--params", default=PARAMS_FILE, help="experiment file (default: params.yaml)")
    sub = ap.add_subparsers(dest="command", required=True)
    for stage, names in STAGE_ARGS.items():
        sp = sub.add_parser(stage, help=f"run the {stage} stage")
        for n in names:
            sp.add_argument(n, nargs="+") if n == "names" else sp.add_argument(n)
        if stage in SHARDED:
            sp.add_argument("--shard", type=_shard, default=None, metavar="I/K",
                            help="run only the I-th of K chunks of the images (joined by `gather`)")
    dp = sub.add_parser("dag", help="print or (re)write the DVC pipeline files (dvc.yaml, pipelines/*/dvc.yaml) from params.yaml")
    dp.add_argument("--write", action="store_true", help="write the files that changed")
    dp.add_argument("--check", action="store_true", help="fail if any is stale")
    sub.add_parser("inline", help="run every stage of the DAG in this one process, in order, recording nothing "
                                  "in DVC: for a `shrink:` smoke run of an experiment file (real runs: snakemake)")
    sub.add_parser("validate", help="validate params.yaml and exit")
    sub.add_parser("list", help="every name params.yaml can use, with its file and what it is")
    pf = sub.add_parser("prefetch", help="download datasets and zoo weights (run where there is internet)")
    pf.add_argument("--check", action="store_true", help="download nothing; fail if anything is missing")
    up = sub.add_parser("use", help="make an experiment file (e.g. config/cifar10.yaml) the active params.yaml")
    up.add_argument("experiment")
    sub.add_parser("slurm-profile", help="install the SLURM profile as your Snakemake profile 'slurm' "
                                         "(never overwrites one); ./setup.sh runs it")
    cp = sub.add_parser("claims", help="print results/claims.csv as a Markdown table (verdict, estimate, interval, n, p)")
    cp.add_argument("csv", nargs="?", default=CLAIMS_CSV)
    cov = sub.add_parser("coverage", help="which published numbers the experiment file(s) will reproduce, from "
                                          "the DAG alone (no run): per paper and exhibit, and why each keyed one is not")
    cov.add_argument("experiments", nargs="*", help="experiment files (default: --params, i.e. params.yaml)")
    cov.add_argument("--published", default="config/published.csv")
    cov.add_argument("--summary", action="store_true", help="the per-exhibit counts only")
    return ap


def _stage(args: argparse.Namespace) -> None:
    with recovery.stage_claim():  # one driver per checkout (re-entrant: `python -m` took it already)
        _run_stage(args)


# a stage argument -> the params.yaml section its value must name
SECTION = {"name": "models", "defense": "defenses", "reversion": "reversions", "victim": "models", "attack": "attacks"}


def _run_stage(args: argparse.Namespace) -> None:
    ctx = context(args.params)
    for arg, section in SECTION.items():  # one line for a name the experiment lacks, before any compute
        value = getattr(args, arg, None) if arg in STAGE_ARGS[args.command] else None
        entries = list(getattr(ctx.params, section))
        if value is not None and value not in entries:
            raise ConfigError(f"{args.command}: {args.params} has no {section} entry {value!r}; {closest(value, entries)}")
    values = [v for n in STAGE_ARGS[args.command] for v in
              (getattr(args, n) if n == "names" else [getattr(args, n)])]
    _call(ctx, args.command, values, args.shard if args.command in SHARDED else None)


def _call(ctx: Context, command: str, values: list[str], shard: tuple[int, int] | None) -> None:
    mod = importlib.import_module(f"preempt.stages.{command}")
    try:
        if command in SHARDED:
            mod.run(ctx, *values, shard=shard)
        else:
            mod.run(ctx, *values)
    except torch.OutOfMemoryError as err:  # a CUDA traceback says nothing about which knob to turn
        raise PreemptError(out_of_memory(command, values, ctx.params, ctx.device, err)) from None


def _inline(args: argparse.Namespace) -> None:
    """Every stage, in the DAG's order, each as its command would run it (threads and seeds set
    afresh, the same stage code), but in this process: no interpreter, DVC or scheduler per job.
    A paper experiment's 800 stages at toy scale take minutes instead of an hour of per-job
    overhead. Nothing is skipped and nothing is recorded in dvc.lock; real runs use snakemake or
    dvc repro."""
    with recovery.stage_claim():
        setup_logging()
        declared = config.load(args.params)
        stages = dag.build(declared)
        dvcfile.check_fresh(stages)
        prefetch.check(declared)  # every external file in place, before any compute
        params = config.effective(declared)  # once: each stage's context only sets threads and seeds afresh
        for i, st in enumerate(stages, 1):
            log.info("inline %d/%d: %s", i, len(stages), st.cmd)
            _call(stage_context(declared, params), st.family, list(st.args), st.shard)
        log.info("inline: %d stages done%s", len(stages), " (shrunk: see params.yaml shrink)" if declared.shrink else "")


def out_of_memory(command: str, values: list[str], p: config.Params, device: torch.device, err: BaseException) -> str:
    """The one line for a device out of memory: the stage, its models and the params.yaml knob."""
    stage = " ".join([command, *values])
    rt = p.runtime
    models: list[str] = []
    if command == "model":
        models = values[:1]
        batch = getattr(p.models[values[0]], "batch_size", None)
        knobs = ([f"models.{values[0]}.batch_size (now {batch})"] if batch is not None
                 else [f"runtime.batch_size (now {rt.batch_size})"])
    else:
        cfg = p.defenses[values[0]] if command in ("defend", "timing", "revert") else None
        if cfg is not None:
            models = list(dict.fromkeys(defense_roles(cfg).values()))
        elif command == "attack":
            models = [values[2], *p.attacks[values[3]].surrogates]
        knobs = [f"runtime.model_batch.{m} (now {rt.model_batch.get(m, 'unset')})" for m in models]
        knobs.append(f"runtime.batch_size (now {rt.batch_size})")
        if cfg is not None and command != "revert":  # the stages that size their passes to the device
            knobs.append(f"runtime.memory_fraction (now {rt.memory_fraction})")
            if hasattr(cfg, "chunk_size"):
                knobs.append(f"defenses.{values[0]}.chunk_size (now {getattr(cfg, 'chunk_size')})")
    what = str(err).splitlines()[0] if str(err) else "out of memory"
    return (f"{stage}: {device} out of memory ({what[:120]}) with model(s) {', '.join(models) or '-'}; "
            f"lower {' or '.join(knobs)} in params.yaml and rerun")


def _dag(args: argparse.Namespace) -> None:
    stages = dag.build(config.load(args.params))
    if args.check:
        dvcfile.check_fresh(stages)
    elif args.write:
        touched = dvcfile.write_all(stages)
        n_files = len({DVC_YAML, *(st.dvc_file for st in stages)})
        print(f"{len(stages)} stages in {n_files} files ({DVC_YAML} and {PIPELINES}/<defense>/{DVC_YAML}): "
              + (f"updated {', '.join(touched)}" if touched else "up to date"))
    else:
        for path, text in dvcfile.dvc_files(stages).items():
            sys.stdout.write(f"# ---- {path}\n{text}")


def _validate(args: argparse.Namespace) -> None:
    g = config.load(args.params).grid
    print(f"{args.params}: valid ({len(g.names('defenses'))} defenses, {len(g.names('reversions'))} reversions, "
          f"{len(g.names('victims'))} victims, {len(g.names('attacks'))} attacks; {len(g.cells())} cells "
          f"in {len(g.blocks())} table(s))")


def _use(args: argparse.Namespace) -> None:
    with recovery.stage_claim():  # not while a driver runs the experiment it would replace
        _use_experiment(args)


def _use_experiment(args: argparse.Namespace) -> None:
    p = config.load(args.experiment)  # refuse an invalid experiment before touching params.yaml
    text = Path(args.experiment).read_text()
    write_text(PARAMS_FILE, f"# active experiment: copied from {args.experiment} by "
               f"`python -m preempt use`; edit here for ablations\n{text}")
    print(f"{PARAMS_FILE} <- {args.experiment} ({len(dag.build(p))} stages); "
          "run `snakemake --cores N` (or `dvc repro`)")


def _claims(args: argparse.Namespace) -> None:
    if not Path(args.csv).is_file():
        raise PreemptError(f"{args.csv}: no claims file; run the pipeline first (snakemake --cores 2)")
    print(claims.markdown(pd.read_csv(args.csv)), end="")


def _coverage(args: argparse.Namespace) -> None:
    files = args.experiments or [args.params]
    table = coverage.coverage({f: config.load(f) for f in files}, args.published)
    print(f"{len(table)} published numbers; against {', '.join(files)}:\n")
    print(coverage.markdown(table, details=not args.summary), end="")


def _prefetch(args: argparse.Namespace) -> None:
    setup_logging()
    prefetch.run(config.load(args.params), check_only=args.check)


COMMANDS = {"dag": _dag, "inline": _inline, "validate": _validate, "use": _use, "prefetch": _prefetch, "claims": _claims,
            "coverage": _coverage,
            "list": lambda _: print(catalog.render(), end=""),
            "slurm-profile": lambda _: print(slurm.install_profile())}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        (_stage if args.command in STAGE_ARGS else COMMANDS[args.command])(args)
    except PreemptError as err:
        return report(err)
    return 0

