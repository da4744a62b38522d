#!/usr/bin/env bash
# One set-up command: installs preempt (editable) with every dependency into the active Python
# environment, and registers the Jupyter kernel that papermill runs the report notebooks with.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
"$PY" -m pip install --upgrade-strategy only-if-needed -e ".[dev]"
"$PY" -m ipykernel install --sys-prefix --name preempt --display-name "preempt (Python 3)"
# DVC and git: the workflow records provenance in dvc.lock, which needs a git work tree.
[ -d .git ] || git init -q
"$PY" -m preempt dag --write >/dev/null
# Your Snakemake profile 'slurm' (for `snakemake --cores 8 --profile slurm`): installed from
# workflow/slurm-profile.yaml only where you have none; it says where it is.
"$PY" -m preempt slurm-profile
echo "preempt is set up: run 'snakemake --cores 2' (or 'dvc repro')."
