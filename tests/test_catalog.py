"""``python -m preempt list``: every registry name, the one file that implements it, and a summary."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT
from preempt import catalog
from preempt.config import REGISTRIES


def test_every_name_params_yaml_can_use_is_listed_with_its_file_and_a_summary() -> None:
    rows = catalog.rows()
    listed = {(key, name) for key, name, _, _ in rows}
    for key, reg in catalog.REGISTRIES:
        assert {(key, n) for n in reg.names()} <= listed
    for section, reg in REGISTRIES.items():  # every section the schema dispatches on is indexed
        assert any(reg is r for _, r in catalog.REGISTRIES), section
    for key, name, file, summary in rows:
        assert (ROOT / file).is_file(), (key, name, file)
        assert summary and "\n" not in summary, (key, name)


def test_list_prints_the_index() -> None:
    out = subprocess.run([sys.executable, "-m", "preempt", "list"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert "defenses.*.method" in out and "src/preempt/defenses/mcgs.py" in out
    assert "src/preempt/models/robustbench.py" in out and "src/preempt/reversions/reconstruct.py" in out


def test_every_registered_name_leads_to_its_own_module() -> None:
    """A name in params.yaml leads to one file: the module that registered it, never the package's
    __init__ (the DAG makes that file a code dependency of the name's stages)."""
    from preempt.config import REGISTRIES

    for section, registry in REGISTRIES.items():
        for name in registry.names():
            module = registry[name].module
            assert module.startswith("preempt.") and module.count(".") >= 2, (section, name, module)
