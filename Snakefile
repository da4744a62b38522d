# preempt workflow for Snakemake. It only declares the DAG: every stage (command, inputs,
# outputs, params keys) comes from src/preempt/dag.py, the same list that generates dvc.yaml.
# Each job runs its stage *through DVC* (`dvc repro --single-item`), so DVC caches the outputs
# and records provenance in dvc.lock while Snakemake schedules (locally or on SLURM).
import sys

from preempt import config as preempt_config
from preempt import dag as preempt_dag
from preempt.errors import PreemptError

try:
    PARAMS = preempt_config.load(preempt_dag.PARAMS_FILE)  # validated before any job starts
except PreemptError as err:
    sys.stderr.write(f"preempt: error: {err}\n")
    sys.exit(2)

STAGES = preempt_dag.build(PARAMS)
preempt_dag.write_if_changed(preempt_dag.DVC_YAML, preempt_dag.dvc_yaml(STAGES))
preempt_dag.snapshot_params(STAGES, PARAMS.raw)


def stages(family):
    return [st for st in STAGES if st.family == family]


def inputs(st):
    """Declared file deps plus one snapshot file per params key (params changes rerun the job)."""
    return [*st.deps, *(preempt_dag.snapshot_path(k) for k in st.params)]


def outputs(st):
    return [*st.outs, *(directory(d) for d in st.dir_outs)]


def dvc_run(st):
    # --wait-for-lock: parallel jobs queue for DVC's repository lock instead of failing.
    return f"dvc --wait-for-lock --quiet repro --single-item {st.name}"


def gpus(family):
    """GPUs a job asks the scheduler for (config key gpus=0 turns them off, e.g. CPU clusters)."""
    return int(config.get("gpus", 1)) if family in ("model", "defend", "revert", "attack") else 0


rule all:
    default_target: True
    input:
        [o for st in STAGES if st.family in ("aggregate", "report") for o in st.all_outs()],


include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/defend.smk"
include: "workflow/rules/revert.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/report.smk"
