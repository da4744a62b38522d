"""The SLURM profile: ``snakemake --cores 8 --profile slurm`` on a cluster.

Snakemake's convention: the cluster profile (executor, partition, account, status command)
belongs to the *user* (``--profile NAME`` is looked up in the working directory, then in
``~/.config/snakemake/NAME``), while per-rule resources belong to the workflow (here: params.yaml's
``resources`` section, read by the Snakefile) and workflow-wide settings to
``workflow/profiles/default``, which Snakemake reads in addition to ``--profile``.

So ``./setup.sh`` runs ``python -m preempt slurm-profile``, which copies the template
``workflow/slurm-profile.yaml`` to ``<user config dir>/snakemake/slurm/config.yaml`` (the directory
Snakemake itself searches, via platformdirs: ``$XDG_CONFIG_HOME`` or ``~/.config``) when no profile
of that name exists, and never overwrites one. The user sets their partition and account there.
"""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_config_dir

from .artifacts import write_text
from .errors import PreemptError

TEMPLATE = Path(__file__).resolve().parents[2] / "workflow" / "slurm-profile.yaml"
NAME = "slurm"


def profile_dir() -> Path:
    """Where ``snakemake --profile slurm`` finds the user's profile (Snakemake's own search path)."""
    return Path(user_config_dir("snakemake", "snakemake")) / NAME


def install_profile(template: Path = TEMPLATE) -> str:
    """Install the template as the user's ``slurm`` profile unless one exists; say what happened."""
    dest = profile_dir()
    if dest.exists():
        return (f"SLURM profile: kept your existing {dest} (not overwritten); "
                f"the template it would have got is {template}")
    if not template.is_file():
        raise PreemptError(f"SLURM profile template {template} not found; run from a preempt checkout")
    write_text(dest / "config.yaml", template.read_text())
    return (f"SLURM profile: installed {dest / 'config.yaml'}; set your cluster's partition and account "
            "there, then run `snakemake --cores 8 --profile slurm`")
