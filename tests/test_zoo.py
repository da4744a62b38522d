"""Model sources beyond training: the RobustBench zoo (real load_model, offline) and checkpoints
on disk (source: file), plus the prefetch step. No mock of robustbench anywhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from preempt import artifacts, config
from preempt.errors import ConfigError, PreemptError
from preempt.models import Env, ImageSpec

AKAMASTER = ROOT.parent / "shared" / "weights" / "akamaster-resnet-cifar10"
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
R20_SHA = "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"


def env_of(x: torch.Tensor, y: torch.Tensor) -> Env:
    """What the model stage hands a source, for CIFAR-10 images ``x``, labels ``y`` (no other models)."""
    from preempt.data.cifar10 import CLASSES, MEAN, STD

    spec = ImageSpec((3, 32, 32), len(CLASSES), MEAN, STD)

    def no_model(name: str) -> torch.nn.Module:
        raise AssertionError(f"this source must not read model {name}")

    return Env(spec=spec, device=torch.device("cpu"), configs={}, data=lambda split: (x, y), model=no_model,
               stored=no_model)


def test_robustbench_imports_through_the_documented_alias() -> None:
    from preempt.compat import import_robustbench

    rb = import_robustbench()
    import pyautoattack

    assert sys.modules["autoattack"] is pyautoattack and hasattr(rb, "load_model")
    from robustbench.eval import benchmark  # the module that needs `autoattack` imports

    assert callable(benchmark)


def test_zoo_names_are_robustbenchs_and_cached_per_installation(tmp_path: Path, monkeypatch) -> None:
    """Validating params.yaml reads the zoo's names from a cache keyed by the installed robustbench
    (not a 4 s import per Snakemake parse); the names are robustbench's own, every leaderboard, and
    a corrupted cache is rebuilt, not trusted."""
    from preempt.models import robustbench as rb

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    names = rb.zoo_names("cifar10", "Linf")
    (cache,) = (tmp_path / "preempt").glob("robustbench-zoo-*.json")
    for dataset, threat in (("cifar10", "Linf"), ("cifar10", "L2"), ("cifar100", "Linf"), ("imagenet", "Linf")):
        assert rb.zoo_names(dataset, threat) == sorted(rb.zoo_entries(dataset, threat)), (dataset, threat)
    assert "Wong2020Fast" in names and "Debenedetti2022Light_XCiT-L12" in names
    cache.write_text('{"cifar10/Linf": ["Nobody2099"]}')  # the cache is what validation reads
    assert rb.zoo_names("cifar10", "Linf") == ["Nobody2099"]
    cache.write_text("{not json")
    assert rb.zoo_names("cifar10", "Linf") == names and "Nobody2099" not in cache.read_text()
    monkeypatch.setattr(rb, "_zoo_fingerprint", lambda: "another-install")  # robustbench upgraded
    assert rb.zoo_names("cifar10", "Linf") == names
    assert (tmp_path / "preempt" / "robustbench-zoo-another-install.json").exists()
    with pytest.raises(ValueError, match="'Wong2020Fasst' is not in RobustBench's cifar10/Linf zoo.*Wong2020Fast"):
        rb.RobustBenchConfig(name="Wong2020Fasst")


@pytest.fixture
def zoo_dir(tmp_path: Path) -> Path:
    """A model_dir holding randomly initialised weights of a real zoo architecture (Wong2020Fast,
    PreActResNet-18), in RobustBench's own layout."""
    from preempt.models.robustbench import zoo_entries

    torch.manual_seed(0)
    net = zoo_entries("cifar10", "Linf")["Wong2020Fast"]["model"]()
    (tmp_path / "zoo" / "cifar10" / "Linf").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "zoo" / "cifar10" / "Linf" / "Wong2020Fast.pt")
    return tmp_path / "zoo"


def test_robustbench_source_loads_offline_and_pins_the_file(zoo_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from preempt.models.robustbench import RobustBenchConfig, RobustBenchSource

    monkeypatch.chdir(tmp_path)
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    env = env_of(x, y)
    cfg = RobustBenchConfig(name="Wong2020Fast", model_dir=str(zoo_dir))
    info = RobustBenchSource().materialize("victim", cfg, env, "results/models/victim.pt")
    assert 0 <= info["clean_acc"] <= 100
    meta = artifacts.load_meta("results/models/victim.pt")
    assert meta["zoo_name"] == "Wong2020Fast" and len(meta["weight_files"]) == 1
    model = RobustBenchSource().load("victim", cfg, env, "results/models/victim.pt")
    ref = torch.load(zoo_dir / "cifar10" / "Linf" / "Wong2020Fast.pt", weights_only=True)
    assert torch.equal(model.state_dict()["conv1.weight"], ref["conv1.weight"])  # the file's weights
    assert model(x).shape == (8, 10)
    # a weight file swapped after the model stage is refused
    torch.save({k: v + 1 for k, v in ref.items()}, zoo_dir / "cifar10" / "Linf" / "Wong2020Fast.pt")
    with pytest.raises(PreemptError, match="changed since the model stage"):
        RobustBenchSource().load("victim", cfg, env, "results/models/victim.pt")


def test_missing_zoo_weights_fail_before_compute_naming_the_path(tmp_path: Path) -> None:
    from preempt.models.robustbench import RobustBenchConfig, check_present

    cfg = RobustBenchConfig(name="Wong2020Fast", model_dir=str(tmp_path))
    with pytest.raises(PreemptError) as err:
        check_present("victim", cfg)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt") in msg and "prefetch" in msg


def test_zoo_checkpoint_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    from preempt.models.robustbench import RobustBenchConfig, _load

    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    torch.save({"state_dict": {}, "evil": Path("/")}, tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt")
    with pytest.raises(PreemptError, match="refused"):
        _load(RobustBenchConfig(name="Wong2020Fast", model_dir=str(tmp_path)))


def test_weight_locations_follow_robustbench(tmp_path: Path) -> None:
    from preempt.models.robustbench import RobustBenchConfig, weight_files

    ens = weight_files(RobustBenchConfig(name="Chen2020Adversarial", model_dir=str(tmp_path)))
    assert [p.name for p in ens] == [f"Chen2020Adversarial.pt_m{i}.pt" for i in range(3)]
    timm_hosted = weight_files(RobustBenchConfig(name="Debenedetti2022Light_XCiT-L12", model_dir=str(tmp_path)))
    assert timm_hosted[0].parent == Path(torch.hub.get_dir()) / "checkpoints"


def test_unknown_zoo_name_is_one_line_with_a_suggestion(params) -> None:
    raw = dict(params.raw)
    raw["models"] = {**raw["models"], "victim_mlp": {"source": "robustbench", "name": "Wong2020Fas"}}
    with pytest.raises(ConfigError) as err:
        config.parse(raw)
    assert "did you mean 'Wong2020Fast'" in str(err.value) and "\n" not in str(err.value)


# ---- source: file ------------------------------------------------------------------------------
@pytest.mark.skipif(not (AKAMASTER.is_dir() and CIFAR.is_dir()), reason="offline copies in ../shared absent")
def test_file_source_loads_a_real_checkpoint_and_measures_it(tmp_path: Path, monkeypatch) -> None:
    from preempt.data.cifar10 import Cifar10Config, cifar10
    from preempt.models.file import FileConfig, FileSource

    test = cifar10(Cifar10Config(source="npz", root=str(CIFAR)), "test")
    monkeypatch.chdir(tmp_path)
    cfg = FileConfig(path=str(AKAMASTER / "akamaster_resnet20-12fca82f.th"), sha256=R20_SHA, arch="resnet20",
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    info = FileSource().materialize("r20", cfg, env_of(test.x[:500], test.y[:500]), "results/models/r20.pt")
    assert info["clean_acc"] > 85.0  # the README's check: about 91% on the first test images


@pytest.mark.skipif(not AKAMASTER.is_dir(), reason="offline weights absent")
def test_file_source_checks_presence_checksum_and_content(tmp_path: Path) -> None:
    from preempt.models.file import FileConfig, read_checkpoint

    src = AKAMASTER / "akamaster_resnet20-12fca82f.th"
    with pytest.raises(PreemptError, match="not found; place the checkpoint there"):
        read_checkpoint(FileConfig(path=str(tmp_path / "nope.th"), sha256=R20_SHA, arch="resnet20"))
    with pytest.raises(PreemptError, match="does not match the expected"):
        read_checkpoint(FileConfig(path=str(src), sha256="0" * 64, arch="resnet20"))
    evil = tmp_path / "evil.th"
    torch.save({"state_dict": {}, "obj": Path("/")}, evil)
    with pytest.raises(PreemptError, match="refused to load"):
        read_checkpoint(FileConfig(path=str(evil), sha256=artifacts.sha256(evil), arch="resnet20"))
    state = read_checkpoint(FileConfig(path=str(src), sha256=R20_SHA, arch="resnet20"))
    assert not any(k.startswith("module.") for k in state)


def test_prefetch_check_names_the_missing_weight(tmp_path: Path) -> None:
    import subprocess

    raw = config.load(ROOT / "params.yaml").raw
    raw = {**raw, "models": {**raw["models"], "victim_mlp": {"source": "robustbench", "name": "Wong2020Fast",
                                                            "model_dir": str(tmp_path)}}}
    import yaml

    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "preempt", "--params", str(tmp_path / "p.yaml"), "prefetch", "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("preempt: error")]
    assert len(err) == 1 and "Wong2020Fast.pt" in err[0]


def test_an_imagenet_zoo_model_of_config_imagenet_loads_offline(tmp_path: Path) -> None:
    """MSPD's ImageNet backbone (ViT-S + ConvStem): random weights, RobustBench's loader, a forward."""
    from preempt.models.robustbench import RobustBenchConfig, _load, weight_files, zoo_entries

    name = "Singh2023Revisiting_ViT-S-ConvStem"
    cfg = RobustBenchConfig(name=name, dataset="imagenet", model_dir=str(tmp_path))
    assert name in (ROOT / "config" / "imagenet.yaml").read_text()
    torch.manual_seed(0)
    net = zoo_entries("imagenet", "Linf")[name]["model"]()
    target = weight_files(cfg)[0]
    target.parent.mkdir(parents=True)
    torch.save(net.state_dict(), target)
    model = _load(cfg)
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


# --- every RobustBench model an experiment names builds (architecture, random weights, offline) ---

def _zoo_of_experiments() -> list[tuple[str, str, str]]:
    out = set()
    for f in [ROOT / "params.yaml", *sorted((ROOT / "config").glob("*.yaml"))]:
        if f.name == "claims.yaml":
            continue
        for m in config.load(f).models.values():
            if m.source == "robustbench":
                out.add((m.dataset, m.threat_model, m.name))
    return sorted(out)


@pytest.mark.pipeline  # slow: the paper-scale networks (WRN-94-16, Swin-L, ...) are built on the CPU
@pytest.mark.parametrize("dataset,threat,name", _zoo_of_experiments())
def test_every_zoo_model_an_experiment_names_builds_and_runs(dataset, threat, name) -> None:
    from preempt.models.robustbench import architecture

    side, classes = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet": (224, 1000)}[dataset]
    torch.manual_seed(0)
    net = architecture(dataset, threat, name).eval()  # what shrink's stand_in: zoo runs
    with torch.inference_mode():
        out = net(torch.rand(1, 3, side, side))
    assert out.shape == (1, classes) and torch.isfinite(out).all()


def test_robustbench_still_misnames_its_xcit_models_in_timm() -> None:
    """compat.fix_xcit_names works around robustbench 1.1.1 asking timm for names it never
    registered. When this test fails, robustbench's own factory works: delete the fix."""
    from preempt.compat import XCIT_ORIGINAL, import_robustbench

    import_robustbench()
    assert len(XCIT_ORIGINAL) == 9  # S12, M12, L12 on CIFAR-10, CIFAR-100 and ImageNet
    with pytest.raises(RuntimeError, match="Unknown model"):
        XCIT_ORIGINAL[("cifar10", "Linf", "Debenedetti2022Light_XCiT-L12")]()


@pytest.mark.parametrize("name,dataset,threat", [("Standard_R50", "imagenet", "Linf"),
                                                  ("Tian2022Deeper_DeiT-B", "imagenet", "corruptions")])
def test_models_that_download_in_their_constructor_are_checked_before_any_compute(
        name, dataset, threat, tmp_path, monkeypatch) -> None:
    """Offline, without the prefetch step: one line naming the model and the prefetch command,
    not a download traceback from inside the constructor."""
    from preempt.models.robustbench import RobustBenchConfig, check_present

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = RobustBenchConfig(name=name, dataset=dataset, threat_model=threat, model_dir=str(tmp_path / "zoo"))
    with pytest.raises(PreemptError, match=rf"models.victim: RobustBench weights of '{name}' not found at .*"
                                           r"python -m preempt prefetch"):
        check_present("victim", cfg)
