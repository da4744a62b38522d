"""The test-only ``shrink:`` switch (preempt.shrink): what the computing stages see is capped and
zoo-free, while the DAG, the cells and every ref stay those of the file as written."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import ROOT
from preempt import config, dag
from preempt.errors import ConfigError
from preempt.models import ImageSpec
from preempt.models.standin import StandInConfig, build
from preempt.stages.aggregate import describe


def with_shrink(name: str, **shrink) -> config.Params:
    raw = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    return config.parse({**raw, "shrink": shrink})


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_the_computing_stages_see_capped_counts_and_stand_ins(name: str) -> None:
    p = config.effective(with_shrink(name))
    assert p.dataset.n_eval == 4 and p.runtime.device == "cpu" and p.runtime.num_threads == 1
    assert {m.source for m in p.models.values()}.isdisjoint({"robustbench"})
    for d in p.defenses.values():
        if d.method == "mcgs":
            assert getattr(d, "n_samples") <= 2
        if d.method == "bilevel":  # the defaults (100 x 20) are capped too, not only the keys written
            assert getattr(d, "max_iter") == 1 and getattr(d, "inner_steps") == 1
    for a in p.attacks.values():
        if a.method == "autoattack":
            assert getattr(a, "n_iter") == 1 and getattr(a, "n_queries") == 1 and getattr(a, "n_target_classes") <= 2
        if hasattr(a, "steps"):
            assert getattr(a, "steps") == 1
        if a.method == "certify":
            assert getattr(a, "n") <= 2 and getattr(a, "n0") <= 2
    for m in p.models.values():
        assert getattr(m, "epochs", 1) == 1 and getattr(m, "n", 1) <= 2


def test_mcgs_schedules_are_kept_and_other_caps_follow_the_section() -> None:
    written = config.load(ROOT / "config" / "cifar10.yaml")
    p = config.effective(with_shrink("cifar10", images=8, steps=3, samples=5, stand_in=False))
    assert p.dataset.n_eval == 8 and getattr(p.defenses["mspd"], "n_samples") == 5
    assert getattr(p.attacks["pgd"], "steps") == 3
    assert getattr(p.defenses["abl_f100"], "schedule") == getattr(written.defenses["abl_f100"], "schedule")
    assert p.models["backbone"].source == "robustbench"  # stand_in: false keeps the zoo


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_the_dag_cells_and_refs_are_those_of_the_file_as_written(name: str) -> None:
    written, declared = config.load(ROOT / "config" / f"{name}.yaml"), with_shrink(name)
    a, b = dag.build(written), dag.build(declared)
    assert [(s.name, s.deps, s.all_outs()) for s in a] == [(s.name, s.deps, s.all_outs()) for s in b]
    for s_written, s in zip(a, b):  # the section is a param of exactly the stages it changes
        assert s.params == ((*s_written.params, "shrink") if s.family in dag.SHRUNK else s_written.params)
    assert declared.grid.cells() == written.grid.cells()
    for d, _, v, at in written.grid.cells():
        assert describe(declared, d, v, at) == describe(written, d, v, at)


def test_a_bad_shrink_key_or_value_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^shrink.*imags") as err:
        with_shrink("cifar10", imags=4)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^shrink\.images"):
        with_shrink("cifar10", images=0)


def test_a_stand_in_is_seeded_by_its_zoo_name_for_any_image_size() -> None:
    spec = ImageSpec((3, 224, 224), 1000, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    x = torch.rand(2, 3, 224, 224)
    state = torch.get_rng_state()
    one, again = build(StandInConfig(name="Swin-L"), spec), build(StandInConfig(name="Swin-L"), spec)
    other = build(StandInConfig(name="ResNet-50"), spec)
    assert torch.equal(torch.get_rng_state(), state)  # the stage's own RNG stream is untouched
    assert one(x).shape == (2, 1000) and torch.equal(one(x), again(x)) and not torch.equal(one(x), other(x))


def test_stand_in_zoo_keeps_each_zoo_architecture_and_can_run_on_cuda() -> None:
    """``stand_in: zoo`` (the full-width smoke run of benchmarks/paper_scale_gpu.py): every zoo
    entry becomes its own architecture with random weights, on the section's device."""
    written = config.load(ROOT / "config" / "cifar10.yaml")
    p = config.effective(with_shrink("cifar10", stand_in="zoo", device="cuda"))
    assert p.runtime.device == "cuda" and p.runtime.num_threads == written.runtime.num_threads
    for name, m in written.models.items():
        if m.source == "robustbench":
            s = p.models[name]
            assert (s.source, getattr(s, "arch"), getattr(s, "dataset"), getattr(s, "threat_model")) == \
                ("standin", "zoo", m.dataset, m.threat_model)
        if m.source == "jatp":  # the zoo target's own layer, as written (not the small stand-in's)
            assert getattr(p.models[name], "feature_layer") == getattr(m, "feature_layer")


def test_a_zoo_stand_in_is_the_zoo_network_with_seeded_weights_and_a_receipt(tmp_path) -> None:
    from preempt import artifacts
    from preempt.models import Env
    from preempt.models.robustbench import architecture
    from preempt.models.standin import StandInSource

    cfg = StandInConfig(name="Wong2020Fast", arch="zoo")  # a PreActResNet-18, cheap on a CPU
    spec = ImageSpec((3, 32, 32), 10, (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    x = torch.rand(4, 3, 32, 32)
    env = Env(spec=spec, device=torch.device("cpu"), configs={}, data=lambda split: (x, torch.zeros(4, dtype=torch.long)),
              model=lambda n: None, stored=lambda n: None)
    state = torch.get_rng_state()
    out = str(tmp_path / "model.pt")
    StandInSource().materialize("backbone", cfg, env, out)
    tensors, meta = artifacts.load(out)
    assert tensors == {} and meta["arch"] == "zoo"  # a receipt: no 45 MB (or 1.4 GB) copy of random weights
    one, again = StandInSource().load("backbone", cfg, env, out), StandInSource().load("backbone", cfg, env, out)
    assert torch.equal(torch.get_rng_state(), state)
    assert type(one) is type(architecture("cifar10", "Linf", "Wong2020Fast"))
    assert meta["n_params"] == sum(t.numel() for t in one.parameters()) > 10_000_000
    with torch.inference_mode():
        assert one(x).shape == (4, 10) and torch.equal(one(x), again(x))
