"""Stage ``report NOTEBOOK``: execute ``notebooks/NOTEBOOK.ipynb`` with papermill into reports/.

The executed notebook and its PNG figures are written under temporary names and renamed on
success, so a failed notebook leaves no report that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .. import paths
from ..artifacts import atomic_path
from ..errors import PreemptError
from ..runtime import log
from . import Context

KERNEL = "preempt"


def kernel_name() -> str:
    from jupyter_client.kernelspec import find_kernel_specs

    specs = find_kernel_specs()
    if KERNEL in specs:
        return KERNEL
    if "python3" in specs:
        return "python3"
    raise PreemptError("no Jupyter kernel 'preempt' (or 'python3') is installed; run ./setup.sh")


def run(ctx: Context, notebook: str) -> None:
    import papermill as pm

    src = paths.notebook_path(notebook)
    out, figs = Path(paths.report_path(notebook)), Path(paths.figures_dir(notebook))
    figs.parent.mkdir(parents=True, exist_ok=True)
    tmp_figs = Path(tempfile.mkdtemp(prefix=f".{figs.name}.", dir=figs.parent))
    os.environ.setdefault("MPLBACKEND", "Agg")
    r = ctx.params.report
    parameters = {
        "metrics_csv": os.path.abspath(paths.METRICS_CSV), "published_csv": os.path.abspath(paths.PUBLISHED_CSV),
        "figures_dir": str(tmp_figs.resolve()),
        "data_path": os.path.abspath(paths.data_path("test")),
        "re_paths": {d: os.path.abspath(paths.re_path(d)) for d in ctx.params.grid.names("defenses")},
        "n_examples": r.n_examples, "perturbation_gain": r.perturbation_gain,
    }
    log.info("executing %s with papermill -> %s (figures in %s)", src, out, figs)
    try:
        with atomic_path(out) as tmp_nb:
            pm.execute_notebook(src, str(tmp_nb), parameters=parameters, kernel_name=kernel_name(),
                                progress_bar=False, cwd=os.getcwd())
            # point the notebook's figure paths at their final place before it is published
            text = tmp_nb.read_text().replace(str(tmp_figs.resolve()), str(figs.resolve()))
            tmp_nb.write_text(text)
            if figs.exists():
                shutil.rmtree(figs)
            tmp_figs.chmod(0o755)  # mkdtemp makes it private
            os.replace(tmp_figs, figs)
    finally:
        if tmp_figs.exists():
            shutil.rmtree(tmp_figs)
    log.info("report %s: %d figures", out, len(list(figs.glob("*.png"))))
