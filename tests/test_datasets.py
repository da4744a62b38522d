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
