"""Stage ``report NOTEBOOK``: execute ``notebooks/NOTEBOOK.ipynb`` with papermill into reports/,
then export it to one self-contained HTML file (nbconvert) that a reader opens in a browser.

``results`` is the overview; every other notebook is one paper (``preempt.papers``), showing its
claims, its tables and figures in the paper's layout, and ours beside the published numbers.
The executed notebook, its HTML and its figures are written under temporary names and renamed on
success, so a failed notebook leaves no report that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .. import dag, papers, paths
from ..artifacts import atomic_path
from ..config import load as load_params
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


def ipc_kernel_manager(directory: str) -> type:
    """The notebook kernel's manager, talking over IPC sockets in ``directory`` (the report's own
    private temporary directory) instead of localhost TCP ports. jupyter_client picks free TCP
    ports before the kernel binds them, so two reports starting at once (two local jobs, two test
    workers) could pick the same port and one kernel died ("Address already in use"; seen in CI).
    Its IPC default is no better: sockets named ``kernel-ipc-1`` ... in the working directory,
    numbered by which files exist yet, so two reports of one checkout bound the same sockets and
    read each other's messages ("Invalid Signature"; seen in CI). A directory of its own per report
    makes the names unique. Imported here: jupyter_client is only needed by the report stage."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return os.path.join(directory, "kernel")

    return IPCKernelManager


def producers() -> dict[str, list[str]]:
    """Exhibit key -> the experiment files under config/ whose grid reproduces it (what a paper
    notebook names for an exhibit the current experiment lacks)."""
    out: dict[str, list[str]] = {k: [] for k in papers.exhibit_keys()}
    for f in dag.experiment_files():
        for key in dict.fromkeys(k for ks in load_params(f).grid.exhibits().values() for k in ks):
            out[key].append(f)
    return out


def parameters(ctx: Context, notebook: str, figures: Path) -> dict[str, Any]:
    """What papermill injects: absolute paths (the kernel's cwd is the project root anyway)."""
    r = ctx.params.report  # a shrunk run shows as many examples as it has images
    inputs = dag.report_inputs(ctx.declared, notebook)
    absolute = {k: ({n: os.path.abspath(v) for n, v in v.items()} if isinstance(v, dict) else os.path.abspath(v))
                for k, v in inputs.items()}
    base = {"metrics_csv": os.path.abspath(paths.METRICS_CSV), "published_csv": os.path.abspath(paths.PUBLISHED_CSV),
            "figures_dir": str(figures.resolve()), "n_examples": r.n_examples, "perturbation_gain": r.perturbation_gain}
    if notebook == "results":
        return {**base, "data_path": absolute["data"], "re_paths": absolute["re"]}
    return {**base, "claims_csv": os.path.abspath(paths.CLAIMS_CSV), "outcomes_csv": os.path.abspath(paths.OUTCOMES_CSV),
            "artifact_paths": absolute,
            "producers": producers(), "params_file": paths.PARAMS_FILE}


SHRUNK_BANNER = ("**Shrunk test run** (params.yaml `shrink:`, see `preempt.shrink`): every stage, cell and "
                 "exhibit of this experiment, computed at toy scale with random-weight stand-ins for the zoo "
                 "models. The numbers below mean nothing; they only show that the pipeline runs.")


def shrunk_banner(text: str) -> str:
    """The executed notebook (JSON text) with :data:`SHRUNK_BANNER` as its first cell."""
    import nbformat

    nb = nbformat.reads(text, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(SHRUNK_BANNER))
    return nbformat.writes(nb)


def export_html(notebook: Path, out: Path) -> None:
    """One self-contained HTML file for a reader: figures embedded, the code cells' inputs left out
    (the executed notebook beside it keeps them)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True, exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    out.write_text(body, encoding="utf-8")


def run(ctx: Context, notebook: str) -> None:
    import papermill as pm

    src = paths.notebook_path(notebook)
    out, html, figs = Path(paths.report_path(notebook)), Path(paths.html_path(notebook)), Path(paths.figures_dir(notebook))
    figs.parent.mkdir(parents=True, exist_ok=True)
    tmp_figs = Path(tempfile.mkdtemp(prefix=f".{figs.name}.", dir=figs.parent))
    os.environ.setdefault("MPLBACKEND", "Agg")
    log.info("executing %s with papermill -> %s and %s (figures in %s)", src, out, html, figs)
    try:
        # the kernel's sockets: in the node's temp dir (a Unix socket path has at most ~107 bytes)
        with atomic_path(out) as tmp_nb, atomic_path(html) as tmp_html, \
                tempfile.TemporaryDirectory(prefix="preempt-kernel-") as sockets:
            pm.execute_notebook(src, str(tmp_nb), parameters=parameters(ctx, notebook, tmp_figs),
                                kernel_name=kernel_name(), progress_bar=False, cwd=os.getcwd(),
                                kernel_manager_class=ipc_kernel_manager(sockets))
            # point the notebook's figure paths at their final place before it is published
            text = tmp_nb.read_text().replace(str(tmp_figs.resolve()), str(figs.resolve()))
            tmp_nb.write_text(shrunk_banner(text) if ctx.declared.shrink is not None else text)
            export_html(tmp_nb, tmp_html)
            for f in (tmp_nb, tmp_html):
                f.chmod(0o644)  # readable by the team (mkstemp makes files private)
            if figs.exists():
                shutil.rmtree(figs)
            tmp_figs.chmod(0o755)  # mkdtemp makes it private
            os.replace(tmp_figs, figs)
    finally:
        if tmp_figs.exists():
            shutil.rmtree(tmp_figs)
    log.info("report %s (+ %s): %d figures", out, html, len(list(figs.glob("*.png"))))
