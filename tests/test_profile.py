"""The SLURM profile is the user's: ./setup.sh installs it where `snakemake --profile slurm` looks
(the user config dir), and never overwrites one the user has."""

from __future__ import annotations

from pathlib import Path

import yaml

from preempt import slurm


def test_installs_where_snakemake_finds_profile_slurm_and_never_overwrites(tmp_path: Path, monkeypatch) -> None:
    from snakemake.cli import get_profile_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)  # no ./slurm here: the user's profile must be the one found
    msg = slurm.install_profile()
    path = tmp_path / "config" / "snakemake" / "slurm" / "config.yaml"
    assert str(path) in msg and "partition" in msg
    profile = yaml.safe_load(path.read_text())
    assert profile["executor"] == "slurm" and {"slurm_partition", "slurm_account"} <= set(profile["default-resources"])
    assert get_profile_dir("slurm") == (path.parent, path)  # Snakemake's own lookup of `--profile slurm`
    path.write_text("executor: slurm\ndefault-resources:\n  slurm_partition: mine\n")  # the user's edit
    assert "kept your existing" in slurm.install_profile()
    assert "mine" in path.read_text()
