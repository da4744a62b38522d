"""Datasets beyond the embedded default: CIFAR-10 (offline npz copy and torchvision) and ImageNet."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from preempt.errors import PreemptError

CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason="offline CIFAR-10 copy in ../shared absent")


def test_official_order_inverts_a_class_sorted_file() -> None:
    from preempt.data.cifar10 import official_order

    official = np.array([3, 1, 3, 0, 1, 3, 2, 0, 0, 1])
    sorted_file = np.sort(official, kind="stable")  # sorted by class, then by rank within class
    idx = official_order(sorted_file, official)
    assert np.array_equal(sorted_file[idx], official)
    assert sorted(idx.tolist()) == list(range(len(official)))


@needs_cifar
def test_cifar10_npz_gives_the_official_test_order_and_exact_first_images() -> None:
    from preempt.data.cifar10 import Cifar10Config, _npz, cifar10

    test = cifar10(Cifar10Config(source="npz", root=str(CIFAR)), "test")
    exact = _npz(CIFAR, "cifar10_test_first1000.npz")
    assert test.x.shape == (10000, 3, 32, 32) and test.x.dtype == torch.float32
    assert torch.equal(test.y, torch.from_numpy(exact["all_test_labels"].astype(np.int64)))
    first = torch.from_numpy(exact["data"].reshape(1000, 3, 32, 32)).float() / 255
    assert torch.equal(test.x[:1000], first)  # lossless where the copy is lossless


@needs_cifar
def test_cifar10_npz_root_from_an_environment_variable(monkeypatch) -> None:
    from preempt.data.cifar10 import Cifar10Config, _npz

    monkeypatch.setenv("PREEMPT_TEST_CIFAR", str(CIFAR))
    from preempt.artifacts import user_path

    assert user_path("$PREEMPT_TEST_CIFAR") == CIFAR
    assert len(_npz(user_path(Cifar10Config(source="npz", root="$PREEMPT_TEST_CIFAR").root),
                    "cifar10_test_first1000.npz")["labels"]) == 1000


@needs_cifar
def test_corrupted_or_missing_npz_is_one_clear_line(tmp_path: Path) -> None:
    from preempt.data.cifar10 import Cifar10Config, cifar10

    with pytest.raises(PreemptError, match="not found; point dataset.root"):
        cifar10(Cifar10Config(source="npz", root=str(tmp_path)), "train")
    os.symlink(CIFAR / "cifar10_jpeg_test.npz", tmp_path / "cifar10_jpeg_test.npz")
    data = (CIFAR / "cifar10_test_first1000.npz").read_bytes()
    (tmp_path / "cifar10_test_first1000.npz").write_bytes(data[: len(data) // 2])  # truncated copy
    with pytest.raises(PreemptError) as err:
        cifar10(Cifar10Config(source="npz", root=str(tmp_path)), "test")
    assert "md5" in str(err.value) and "truncated" in str(err.value) and "\n" not in str(err.value)


def test_torchvision_cifar10_offline_without_the_archive_says_what_to_do(tmp_path: Path) -> None:
    from preempt.data.cifar10 import Cifar10Config, cifar10

    with pytest.raises(PreemptError) as err:
        cifar10(Cifar10Config(source="torchvision", root=str(tmp_path), download=False), "test")
    assert "cifar-10-python.tar.gz" in str(err.value) and "\n" not in str(err.value)


def test_torchvision_cifar10_rejects_a_corrupted_download(tmp_path: Path) -> None:
    """torchvision's real integrity check (md5 of each batch file) runs on data we made."""
    import pickle

    from preempt.data.cifar10 import Cifar10Config, cifar10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    fake = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps(fake))
    with pytest.raises(PreemptError, match="corrupted"):
        cifar10(Cifar10Config(source="torchvision", root=str(tmp_path), download=False), "test")


def make_imagenet(root: Path, n: int) -> None:
    from PIL import Image

    from preempt.data.imagenet import subset

    rng = np.random.default_rng(0)
    for rel in subset()[:n]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(root / rel)


def test_imagenet_reads_the_fixed_subset_in_order(tmp_path: Path) -> None:
    from preempt.data.imagenet import ImageNetConfig, class_index, imagenet, subset

    make_imagenet(tmp_path, 3)
    split = imagenet(ImageNetConfig(root=str(tmp_path), n_eval=3), "test")
    assert split.x.shape == (3, 3, 224, 224) and 0 <= float(split.x.min()) and float(split.x.max()) <= 1
    assert split.y.tolist() == [class_index()[rel.split("/")[0]] for rel in subset()[:3]]
    assert len(subset()) == 5000 and len(split.classes) == 1000
    assert imagenet(ImageNetConfig(root=str(tmp_path), n_eval=3), "train").x.shape[0] == 0


def test_imagenet_absent_or_incomplete_is_one_clear_line(tmp_path: Path) -> None:
    from preempt.data.imagenet import ImageNetConfig, imagenet

    with pytest.raises(PreemptError, match="image-net.org"):
        imagenet(ImageNetConfig(root=str(tmp_path / "missing"), n_eval=2), "test")
    make_imagenet(tmp_path, 2)
    with pytest.raises(PreemptError, match="is missing"):
        imagenet(ImageNetConfig(root=str(tmp_path), n_eval=3), "test")


# ---- CIFAR-100 and SVHN: torchvision's own formats, made here, under torchvision's md5 checks ----

def _md5(path: Path) -> str:
    from preempt.data.cifar10 import md5

    return md5(path)


def make_cifar100(root: Path, n: int = 6) -> list[int]:
    """The extracted ``cifar-100-python`` folder as torchvision reads it (pickled dicts)."""
    import pickle

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = [int(v) for v in rng.integers(0, 100, n)]
    for name in ("train", "test"):
        blob = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": labels,
                "coarse_labels": [v // 5 for v in labels]}
        (folder / name).write_bytes(pickle.dumps(blob))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)]}))
    return labels


def test_cifar100_reads_torchvision_files_and_checks_their_md5(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import CIFAR100

    from preempt.data.cifar100 import Cifar100Config, cifar100

    labels = make_cifar100(tmp_path)
    folder = tmp_path / "cifar-100-python"
    # torchvision verifies each file against its md5 table: give it the table of the files made here
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})
    cfg = Cifar100Config(root=str(tmp_path), download=False)
    split = cifar100(cfg, "test")
    assert split.x.shape == (6, 3, 32, 32) and split.x.dtype == torch.float32
    assert 0 <= float(split.x.min()) and float(split.x.max()) <= 1
    assert split.y.tolist() == labels and len(split.classes) == 100 and split.classes[0] == "c0"
    (folder / "test").write_bytes((folder / "test").read_bytes()[:-10])  # truncated: md5 differs
    with pytest.raises(PreemptError) as err:
        cifar100(cfg, "test")
    assert "corrupted" in str(err.value) and "cifar-100-python.tar.gz" in str(err.value)
    assert "\n" not in str(err.value)


def test_cifar100_offline_without_the_archive_says_what_to_do(tmp_path: Path) -> None:
    from preempt.data.cifar100 import Cifar100Config, cifar100

    with pytest.raises(PreemptError) as err:
        cifar100(Cifar100Config(root=str(tmp_path), download=False), "train")
    assert "cifar-100-python.tar.gz" in str(err.value) and "\n" not in str(err.value)


def make_svhn(root: Path, split: str, n: int = 5) -> list[int]:
    """``<split>_32x32.mat`` as the SVHN site ships it: X is 32x32x3xN, y is N x 1 with 10 for '0'."""
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    digits = [int(v) for v in rng.integers(0, 10, n)]
    digits[0] = 0
    savemat(root / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                          "y": np.array([[10 if d == 0 else d] for d in digits], dtype=np.uint8)})
    return digits


def test_svhn_reads_the_mat_files_and_checks_their_md5(tmp_path: Path, monkeypatch) -> None:
    from torchvision.datasets import SVHN

    from preempt.data.svhn import SVHNConfig, svhn

    digits = make_svhn(tmp_path, "test")
    url, name, _ = SVHN.split_list["test"]
    monkeypatch.setitem(SVHN.split_list, "test", [url, name, _md5(tmp_path / name)])
    cfg = SVHNConfig(root=str(tmp_path), download=False)
    split = svhn(cfg, "test")
    assert split.x.shape == (5, 3, 32, 32) and split.y.tolist() == digits  # '0' is class 0
    assert split.classes == tuple("0123456789")
    (tmp_path / name).write_bytes(b"not a mat file")
    with pytest.raises(PreemptError) as err:
        svhn(cfg, "test")
    assert "test_32x32.mat" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PreemptError, match="train_32x32.mat"):
        svhn(cfg, "train")


def test_n_train_keeps_the_first_training_images(params, tmp_path, monkeypatch) -> None:
    """``dataset.n_train`` (quick runs of a large dataset) keeps the first n training images and
    leaves the evaluation images alone."""
    import torch

    from preempt import artifacts, config, paths
    from preempt.data import DATASETS
    from preempt.stages import Context
    from preempt.stages import data as data_stage

    raw = dict(params.raw)
    raw["dataset"] = {**raw["dataset"], "n_train": 100}
    p = config.parse(raw)
    monkeypatch.chdir(tmp_path)
    data_stage.run(Context(p, torch.device("cpu"), p))
    train, meta = artifacts.load(paths.data_path("train"))
    full = DATASETS[p.dataset.name].fn(p.dataset, "train")
    assert len(train["y"]) == meta["n"] == 100 and torch.equal(train["x"], full.x[:100])
    assert len(artifacts.load(paths.data_path("test"))[0]["y"]) == p.dataset.n_eval
