"""The paper notebooks' building blocks: exhibits, their tags in the experiment files, the
paper layouts, Eq. 14's maps, and the HTML export rendered by a real browser."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT
from preempt import config, papers
from preempt.errors import ConfigError
from preempt.papers import fast_preemption
from preempt.stages import report


def test_a_wrong_exhibit_tag_or_notebook_is_one_clear_error(params) -> None:
    raw = dict(params.raw)
    raw["grid"] = {**raw["grid"], "reproduces": ["mspd/table44"]}
    with pytest.raises(ConfigError) as err:
        config.parse(raw)
    assert "grid.reproduces: 'mspd/table44' is no paper exhibit; did you mean 'mspd/table4'" in str(err.value)
    raw = dict(params.raw)
    raw["report"] = {**raw["report"], "notebooks": ["results", "mspdd"]}
    with pytest.raises(ConfigError, match="no notebook 'mspdd'"):
        config.parse(raw)


def test_every_exhibit_is_produced_by_an_experiment_file_or_says_why_not() -> None:
    producers = report.producers()
    for key in papers.exhibit_keys():
        paper, id = key.split("/")
        assert producers[key] or papers.PAPERS[paper].exhibit(id).about, f"{key}: no experiment file tags it"
    # the embedded default and the CPU experiment between them cover every paper
    tagged = {k.split("/")[0] for k, files in producers.items() for f in files
              if f.endswith(("cifar10-cpu.yaml", "mspd-digits.yaml"))}
    default = {k.split("/")[0] for ks in config.load(ROOT / "params.yaml").grid.exhibits().values() for k in ks}
    assert default | tagged == set(papers.PAPERS)


def test_cells_are_selected_by_their_blocks_tags(tmp_path) -> None:
    df = pd.DataFrame({"reproduces": ["mspd/table4;fast_preemption/table1", "mspd/table5", None]})
    res = papers.Results(metrics=df, figures_dir=tmp_path)
    assert list(res.cells("mspd/table4").index) == [0] and res.cells("mspd/table7").empty


def test_trigger_tables_average_a_defense_over_its_target_architectures(tmp_path) -> None:
    """R_T^{S,A} (Eq. 7): one column per defense, the mean over its targets (two archs here)."""
    from preempt.papers import trigger

    rows = [{"defense": "none", "reversion": "none", "victim": f"{kind}_{arch}", "attack": attack,
             "victim_ref": ref.format(arch=arch), "attack_ref": f"transfer[s]/{attack}", "reproduces": "trigger/table1",
             "clean_acc": 90.0 + (arch == "b"), "robust_acc": base + (arch == "b") * 10}
            for kind, ref, base in (("std", "train/{arch}/standard", 10.0), ("fixed8", "trigger/{arch}/fixed/eps0.0314", 60.0))
            for arch in ("a", "b") for attack in ("pgd", "mifgsm")]
    res = papers.Results(metrics=pd.DataFrame(rows), figures_dir=tmp_path)
    shown = trigger.transfer(res, papers.PAPERS["trigger"].exhibit("table1"))
    assert shown is not None
    assert list(shown.table.columns) == ["train/*/standard", "trigger/*/fixed/eps0.0314"]
    assert shown.table.loc["pgd", "train/*/standard"] == 15.0 and shown.table.loc["Clean", "trigger/*/fixed/eps0.0314"] == 90.5
    assert "trigger/*/fixed/eps0.0314 = fixed8_a, fixed8_b" in (shown.note or "")
    assert trigger.kind("jpeg:50(train/vgg19/standard)") == "jpeg:50(train/*/standard)"


def protocol_cells() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two defenses on 200 images and two victims: one protects its labeller's errors (the RE
    breaks images 0-29), the other changes nothing; white-box restores 24 of the broken, black-box
    none and breaks 10 more, JPEG breaks 2."""
    rows, per = [], []
    n = 200
    for d, ref, broken in (("mspd", "mcgs/F1B1/N20/eta1/eps0.0314", 0), ("weak", "mcgs/F1B1/N20/eta1/eps0.0314+mislabel-weak", 30)):
        re_ = [0.0] * broken + [1.0] * (n - broken)
        for r in ("none", "jpeg", "white", "black"):
            rev = list(re_)
            if r == "white":
                rev[:min(broken, 24)] = [1.0] * min(broken, 24)
            if r == "black":
                rev[broken:broken + 10] = [0.0] * 10
            if r == "jpeg":
                rev[broken:broken + 2] = [0.0] * 2
            for v in ("v1", "v2"):
                acc = 100 * sum(rev) / n
                rows.append({"defense": d, "defense_ref": ref, "reversion": r, "victim": v, "attack": "clean",
                             "attack_ref": "none", "clean_acc": acc, "orig_acc": 100.0, "re_acc": 100 * sum(re_) / n,
                             "robust_acc": acc, "reproduces": "fast_preemption/table3"})
                per.append(pd.DataFrame({"defense": d, "reversion": r, "victim": v, "attack": "clean", "image": range(n),
                                         "orig": 1.0, "re": re_, "input": rev, "robust": rev, "robust_ball": rev}))
    return pd.DataFrame(rows), pd.concat(per, ignore_index=True)


def test_table3_has_the_papers_columns_in_order_and_the_per_image_counts(tmp_path) -> None:
    cells, outcomes = protocol_cells()
    res = papers.Results(metrics=cells, outcomes=outcomes, figures_dir=tmp_path)
    shown = fast_preemption.table3(res, papers.PAPERS["fast_preemption"].exhibit("table3"))
    assert shown is not None and shown.table is not None
    t = shown.table
    assert list(t.columns) == ["protocol", "Original", "Clean (RE)", "jpeg", "white", "black"]
    assert t.loc["weak", "protocol"] == "weak labeller" and t.loc["mspd", "protocol"] == "none"
    assert t.loc["weak", "white"] == 97.0 and t.loc["weak", "Original"] == 100.0
    (title, counts), = shown.extra
    row = counts.loc[("weak", "weak labeller", "v1", "white")]
    assert row["restored / broken by the defense"].startswith("24 / 30 (80% [")
    assert counts.loc[("weak", "weak labeller", "v1", "black")]["broken / kept by the defense"].startswith("10 / 170 ")
    assert counts.loc[("mspd", "none", "v1", "white")]["recovery"] == "drop too small to judge"
    assert counts.loc[("weak", "weak labeller", "v2", "white")]["recovery"].startswith("0.8 [")


def test_sweep_layout_and_figures_are_written_beside_their_data(tmp_path) -> None:
    rows = [{"defense": d, "defense_ref": ref, "reversion": "none", "victim": "v", "attack": "aa",
             "attack_ref": "autoattack/standard/Linf/0.0314", "clean_acc": c, "robust_acc": r, "sec_per_image": s,
             "reproduces": "fast_preemption/fig6;mspd/table13"}
            for d, ref, c, r, s in (("none", "none", 93.0, 70.0, 0.0), ("mspd", "mcgs/F1B1/N20/eta1/eps0.0314", 95.0, 85.0, 0.02),
                                    ("fp", "mcgs/F1B2/N20/eta0.7/eps0.0314", 95.5, 86.0, 0.04))]
    res = papers.Results(metrics=pd.DataFrame(rows), figures_dir=tmp_path / "figs")
    t = papers.by_defense(res, papers.PAPERS["mspd"].exhibit("table13")).table
    assert list(t.columns) == ["what ran", "clean", "aa", "sec/image"] and t.loc["fp", "aa"] == 86.0
    backbones = res.metrics.assign(backbone_ref=["none", "Gowal2021Improving_R18_ddpm_100m", "Standard"])
    t = papers.by_defense(papers.Results(metrics=backbones, figures_dir=tmp_path / "figs"),
                          papers.PAPERS["mspd"].exhibit("table13")).table  # Table XI's rows differ only there
    assert list(t.columns[:2]) == ["what ran", "backbone"] and t.loc["fp", "backbone"] == "Standard"
    shown = fast_preemption.fig6(res, papers.PAPERS["fast_preemption"].exhibit("fig6"))
    assert shown.figure.is_file() and shown.figure.with_suffix(".pdf").is_file()
    data = pd.read_csv(shown.csv)
    assert list(data["schedule"]) == ["none", "F1B1 N20", "F1B2 N20"] and list(data["robust_acc"]) == [70.0, 85.0, 86.0]


def test_moon_white_box_is_the_lowest_over_the_eps_sweep_per_attack(tmp_path) -> None:
    """Moon et al.'s white box (Alg. 4): per attack, the lowest accuracy over eps' after reconstruction."""
    from preempt.papers import moon

    rows = [{"defense": "bilevel", "reversion": "none", "victim": "adv", "attack": "pgd", "reproduces": "moon/table1",
             "attack_ref": "pgd-ce/Linf/0.0314/20", "clean_acc": 90.0, "robust_acc": 80.0, "robust_acc_ball": 80.0}]
    rows += [{"defense": "bilevel", "reversion": "reconstruct", "victim": "adv", "attack": f"{a}_rec{k}",
              "reproduces": "moon/table1", "attack_ref": f"{ref}/{eps:.4f}{tail}", "clean_acc": 90.0,
              "robust_acc": 0.0, "robust_acc_ball": base + k / 25}
             for a, ref, tail, base in (("pgd", "pgd-ce/Linf", "/20", 70.0), ("aa", "autoattack/standard/Linf", "", 60.0))
             for k, eps in ((25, 0.0078), (50, 0.0157), (100, 0.0314))]
    res = papers.Results(metrics=pd.DataFrame(rows), figures_dir=tmp_path)
    t = moon.grey_white(res, papers.PAPERS["moon"].exhibit("table1")).table
    assert t.loc[("adv", "bilevel"), ("White-box", "pgd-ce/Linf/20, min over eps'")] == 71.0
    assert t.loc[("adv", "bilevel"), ("White-box", "autoattack/standard/Linf, min over eps'")] == 61.0


def test_moon_fig3_compares_random_and_x_start_reconstructions_against_eps(tmp_path) -> None:
    """Moon et al.'s Fig. 3: per Bi-Level start, the distance of the reconstruction from the
    original in the defense's norm, eps dotted, and the share near the ball's boundary."""
    from preempt import artifacts
    from preempt.papers import moon

    refs = {"bilevel": "bilevel/Linf/eps0.1000/iter20/T10", "bilevel_xstart": "bilevel/Linf/eps0.1000/iter20/T10/x-start"}
    dist = {"bilevel": torch.tensor([0.1, 0.095, 0.1, 0.04]), "bilevel_xstart": torch.tensor([0.01, 0.02, 0.1, 0.0])}
    paths = {}
    for d, v in dist.items():
        path = tmp_path / f"{d}.pt"
        artifacts.save(path, {"x": torch.zeros(4, 1, 2, 2), "dist_linf": v, "dist_l2": 3 * v}, {"stage": "revert"})
        paths[f"{d}/reconstruct"] = path
    metrics = pd.DataFrame([{"defense": d, "defense_ref": r, "reproduces": "moon/fig3"} for d, r in refs.items()])
    res = papers.Results(metrics=metrics, figures_dir=tmp_path / "figs", paths={"revert": paths})
    shown = moon.fig3(res, papers.PAPERS["moon"].exhibit("fig3"))
    assert shown.figure.is_file()
    t = shown.table
    assert list(t.index) == ["bilevel (random start)", "bilevel_xstart (x start)"]
    assert list(t["at 0.9 eps or more (%)"]) == [75.0, 25.0] and t.loc["bilevel (random start)", "max"] == 0.1  # Linf, not L2
    assert "eps" in shown.note


def test_perturbation_maps_follow_eq_14() -> None:
    delta = torch.zeros(1, 3, 2, 2)
    delta[0, 0], delta[0, 1], delta[0, 2] = 1.0, 0.5, 0.0
    assert torch.allclose(papers.grey(delta), torch.full((1, 2, 2), 0.299 + 0.587 * 0.5))
    assert torch.equal(papers.grey(torch.ones(2, 1, 3, 3)), torch.ones(2, 3, 3))  # one channel passes through


def test_a_missing_exhibit_names_the_file_that_produces_it(tmp_path) -> None:
    e = papers.PAPERS["mspd"].exhibit("table15")
    empty = pd.DataFrame(columns=["defense", "defense_ref", "reversion", "victim", "attack", "attack_ref", "clean_acc",
                                  "robust_acc", "reproduces"])
    res = papers.Results(metrics=empty, figures_dir=tmp_path,
                         producers={e.key: ["config/cifar10.yaml"]})
    assert e.build(res, e) is None
    assert "python -m preempt use config/cifar10.yaml" in papers.missing(e, res)


def _png(color: tuple[int, int, int]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.bar([0, 1], [1, 2], color=[c / 255 for c in color])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def chromium() -> str:
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        if os.environ.get("PREEMPT_REQUIRE_BROWSER") == "1":  # set by .ci/run, which installs it
            pytest.fail("no headless Chromium although PREEMPT_REQUIRE_BROWSER=1 (Debian: apt-get install chromium)")
        pytest.skip("SKIPPED LOUDLY: no headless Chromium here (Debian: apt-get install chromium); "
                    "the HTML reports were not rendered by a browser")
    return exe


def screenshot(html_file, out) -> np.ndarray:
    from PIL import Image

    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=1000,800", html_file.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB"))


def test_the_html_export_renders_in_a_browser(tmp_path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A paper, reproduced"),
                nbformat.v4.new_code_cell("plot", outputs=[nbformat.v4.new_output(
                    "display_data", data={"image/png": _png((200, 30, 30)), "text/plain": "<Figure>"})])]
    src = tmp_path / "nb.ipynb"
    nbformat.write(nb, src)
    html = tmp_path / "nb.html"
    report.export_html(src, html)
    text = html.read_text()
    assert "A paper, reproduced" in text and "data:image/png;base64" in text  # one self-contained file
    pixels = screenshot(html, tmp_path / "shot.png")
    assert pixels.std() > 5  # not blank
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 100  # the embedded figure was drawn


def test_report_tables_show_three_significant_digits_not_run_and_coloured_verdicts() -> None:
    from preempt import plots

    df = pd.DataFrame({"verdict": ["holds", "fails", "not comparable: fewer steps"], "sec/image": [0.004123, 1411.0, np.nan],
                       "n": [500, 16, 3]})
    html = plots.readable(df).to_html()
    assert "nan" not in html.lower() and "not run" in html
    assert ">0.00412<" in html and ">1,411<" in html and ">500<" in html  # never 0.00, never 1.41e+03
    for verdict in ("holds", "fails"):
        assert plots.VERDICT_COLOURS[verdict] in html
    assert "#e8e8e8" in html  # not comparable: grey
    # every report notebook renders its tables this way
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert "readable_tables()" in nb.read_text(), nb.name


def test_two_report_kernels_never_share_a_socket_and_leave_nothing_behind(tmp_path, monkeypatch) -> None:
    """Two reports starting at once must not bind the same sockets. With TCP, jupyter_client picks
    "free" ports before the kernel binds them (CI saw 'Address already in use'); with its IPC
    default, both name them kernel-ipc-1... in the shared cwd (CI saw 'Invalid Signature'). Each
    report's manager puts its sockets in its own directory: the addresses two managers would bind
    differ, and a notebook run through one leaves nothing in the cwd or in its directory."""
    import nbformat
    import papermill as pm

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    managers = [report.ipc_kernel_manager(str(tmp_path / d))() for d in ("a", "b")]
    for m in managers:
        m.write_connection_file()
    addresses = [{f"{m.transport}://{m.ip}-{getattr(m, c + '_port')}" for c in ("shell", "iopub", "stdin", "control", "hb")}
                 for m in managers]
    for m in managers:
        m.cleanup_connection_file()
    assert all(m.transport == "ipc" for m in managers) and len(addresses[0]) == 5
    assert not addresses[0] & addresses[1], addresses
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(6 * 7)")]
    nbformat.write(nb, tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name=report.kernel_name(),
                        progress_bar=False, cwd=str(tmp_path), kernel_manager_class=report.ipc_kernel_manager(str(tmp_path / "a")))
    assert nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs[0]["text"] == "42\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "in.ipynb", "out.ipynb"]
    assert not list((tmp_path / "a").iterdir())
