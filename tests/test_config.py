"""Config validation: every bad input gets one line naming the key and the fix, before compute."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest
import yaml

from conftest import ALL_METHODS, ROOT
from preempt import config
from preempt.errors import ConfigError

BASE = yaml.safe_load(ALL_METHODS.read_text())  # every method, so every entry kind is exercised


def edit(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return raw


DELETE = object()

CASES = [
    ("defenses.mcgs.n_sample", 20, "defenses.mcgs.n_sample: unknown key; did you mean 'n_samples'"),
    ("defenses.mcgs.method", "mgcs", "did you mean 'mcgs'"),
    ("defenses.mcgs.eps", -0.1, "defenses.mcgs.eps: Input should be greater than or equal to 0"),
    ("defenses.mcgs.n_samples", 0, "defenses.mcgs.n_samples: Input should be greater than or equal to 1"),
    ("defenses.mcgs.schedule", "F1X2", "malformed schedule 'F1X2'"),
    ("defenses.mcgs.schedule", "F0B0", "has no step"),
    ("defenses.mcgs.label_source", "truth", "defenses.mcgs.label_source"),
    ("defenses.mcgs.backbone", "backbon", "model 'backbon' is not defined in models; did you mean 'backbone'"),
    ("defenses.mcgs.eta", "fast", "defenses.mcgs.eta: Input should be a valid number"),
    ("attacks.pgd.method", "pdg", "did you mean 'pgd'"),
    ("attacks.pgd.eps", 2.0, "attacks.pgd: eps 2.0 exceeds 1, the whole pixel range, for an Linf attack"),
    ("attacks.autoattack.attacks", ["apgd-xx"], "attacks.autoattack.attacks.0"),
    ("reversions.jpeg.quality", 0, "reversions.jpeg.quality"),
    ("reversions.black.backbone", "nosuchmodel", "model 'nosuchmodel' is not defined"),
    ("models.backbone.arch", "resnet9", "unknown architecture 'resnet9'; did you mean 'resnet8'"),
    ("models.backbone.recipe", {"method": "pgd-at", "eps": 0.1}, "unknown training recipe 'pgd-at'; did you mean 'pgd_at'"),
    ("models.backbone.recipe", {"method": "pgd_at", "eps": 0.1, "stepz": 3}, "recipe.stepz: unknown key; did you mean 'steps'"),
    ("models.backbone.source", "zoo", "models.backbone.source: unknown model source 'zoo'"),
    ("models.backbone.epochs", 0, "models.backbone.epochs"),
    ("dataset.name", "digitz", "did you mean 'digits'"),
    ("dataset.n_eval", -1, "dataset.n_eval"),
    ("grid.victims", ["victim_mlpp"], "grid.victims: 'victim_mlpp' is not defined in models; did you mean 'victim_mlp'"),
    ("grid.defenses", ["none", "none"], "grid.defenses: names repeat"),
    ("grid.attacks", [], "grid.attacks"),
    ("grid.defense", ["none"], "grid.defense: unknown key; did you mean 'defenses'"),
    ("runtime.num_threads", 0, "runtime.num_threads"),
    ("runtime.device", "tpu", "runtime.device"),
    ("metrics.ssim_kernel_size", 1, "metrics.ssim_kernel_size"),
    ("metrics.ssim_kernel_size", 8, "odd size; use 7 or 9"),
    ("defenz", {}, "unknown section 'defenz'; did you mean 'defenses'"),
    ("grid", DELETE, "required section 'grid' is missing"),
    ("attacks.mifgsm.surrogates", ["surrogat"], "attacks.mifgsm: model 'surrogat' is not defined in models; did you mean 'surrogate'"),
    ("attacks.mifgsm.momentum", -1, "attacks.mifgsm.momentum"),
    ("models.victim_jpeg.transform", {"method": "jpg"}, "unknown transform 'jpg'; did you mean 'jpeg'"),
    ("models.victim_jpeg.transform", {"method": "jpeg", "quality": 0}, "transform.quality"),
    ("models.victim_jpeg.model", "victim_jpeg", "models: victim_jpeg -> victim_jpeg is a cycle"),
    ("models.victim_jatp.target", "victim_jatp_mlp", "is a cycle"),
    ("models.victim_trigger.trigger", "random", "models.victim_trigger.trigger"),
    ("models.victim_trigger.eps_t", 2, "models.victim_trigger.eps_t"),
    ("defenses.abl_alternate.schedule", "(F1B1)", "malformed schedule '(F1B1)'"),
    ("defenses.bilevel.max_iter", 0, "defenses.bilevel.max_iter"),
    ("grid.extra.ablation.victims", ["victim_resnet"], "grid.extra.ablation.victims: 'victim_resnet' is not defined in models; did you mean"),
    ("grid.extra.ablation.attack", ["pgd"], "grid.extra.ablation.attack: unknown key; did you mean 'attacks'"),
    ("grid.extra", {"../x": {"defenses": ["none"], "victims": ["victim_mlp"], "attacks": ["pgd"]}}, "grid.extra.'../x': invalid name"),
]


@pytest.mark.parametrize("path,value,expected", CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_bad_params_give_one_clear_line(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse(edit(path, value))
    msg = str(exc.value)
    assert expected in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["../evil", "a/b", "x y", "", "1abc", "a" * 65])
def test_names_that_would_escape_or_break_paths_are_refused(name: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["defenses"][name] = {"method": "none"}
    with pytest.raises(ConfigError, match="invalid name"):
        config.parse(raw)


def test_shipped_params_are_valid(params) -> None:
    assert params.grid.defenses[:2] == ["none", "mcgs"]
    assert {"bilevel", "unadv", "fast_preemption"} <= set(params.grid.defenses)
    assert params.defenses["mcgs"].n_samples == 20


def test_cli_reports_one_line_and_exit_status_2(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(edit("defenses.mcgs.n_samples", 0)))
    proc = subprocess.run([sys.executable, "-m", "preempt", "--params", str(bad), "validate"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("preempt: error: defenses.mcgs.n_samples")


def test_yaml_is_never_evaluated(tmp_path) -> None:
    evil = tmp_path / "params.yaml"
    evil.write_text("dataset: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(evil)
    assert not (tmp_path / "pwned").exists()


def test_validating_params_does_not_import_torchvision() -> None:
    """Every Snakemake parse and stage process validates params.yaml; torchvision costs 1.6-2.4 s
    to import (it loads torch._dynamo), so the model sources and archs import it only to build.
    (An experiment with RobustBench entries imports robustbench, and with it timm and torchvision,
    to check the zoo names.)"""
    code = ("import sys; from preempt import config; config.load('params.yaml'); "
            "[config.load(f) for f in ('config/trigger-cifar10.yaml', 'config/jatp-cifar10.yaml')]; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
