"""CIFAR-10: torchvision's real download, or the offline npz copy this build environment provides.

``source: torchvision`` (what users run): ``torchvision.datasets.CIFAR10(root, download=True)``
fetches the official archive and verifies its md5; offline, with the archive absent, the stage
stops with one line that says where to put it.

``source: npz`` reads three npz files from ``root`` (for machines without internet, such as this
project's CI; ``root`` may use ``$VARS`` and ``~``). Each file's md5 is checked against the table
below before it is read. The two large files were decoded from JPEG copies (not bit-exact, about
5.8/255 mean absolute error) and are sorted by class; the third holds the first 1000 official test
images losslessly. The test split is therefore rebuilt in the *official order* (the i-th official
test image is the r-th image of its class in the sorted file, r = its rank within the class), and
images 0..999 are replaced by the lossless ones. So "the first n test images" means the same
images under both sources, and they are exact for n <= 1000.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..artifacts import user_path
from ..errors import PreemptError
from . import DATASETS, DatasetConfig, Split, open_torchvision, uint8_images

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the training set, for trained models
STD = (0.2470, 0.2435, 0.2616)
NPZ_MD5 = {
    "cifar10_jpeg_train.npz": "40d5858af98af8eaccf903eaa84d6df9",
    "cifar10_jpeg_test.npz": "6e898552ce9600b4b84c2b89c130789e",
    "cifar10_test_first1000.npz": "5de37b3432f14c7836caeff151230ca3",
}


class Cifar10Config(DatasetConfig):
    name: Literal["cifar10"] = "cifar10"
    source: Literal["torchvision", "npz"] = "torchvision"
    root: str = "~/.cache/preempt/cifar10"
    download: bool = True  # torchvision only: fetch the archive when it is not under root


def md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - the published checksums are md5
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _npz(root: Path, name: str) -> dict[str, np.ndarray]:
    path = root / name
    if not path.is_file():
        raise PreemptError(f"dataset.root: {path} not found; point dataset.root at the folder holding "
                           f"{', '.join(NPZ_MD5)} (or use source: torchvision)")
    digest = md5(path)
    if digest != NPZ_MD5[name]:
        raise PreemptError(f"{path}: md5 {digest} does not match the expected {NPZ_MD5[name]} "
                           "(corrupted or truncated copy); copy the file again")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def official_order(sorted_labels: np.ndarray, official_labels: np.ndarray) -> np.ndarray:
    """Indices into a class-sorted file (sorted by class, then by within-class rank) that put it
    in the official order whose labels are ``official_labels``."""
    counts = np.bincount(sorted_labels, minlength=len(CLASSES))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.zeros(len(official_labels), dtype=np.int64)
    seen = np.zeros(len(CLASSES), dtype=np.int64)
    for i, c in enumerate(official_labels):
        rank[i] = seen[c]
        seen[c] += 1
    if not np.array_equal(seen, counts):
        raise PreemptError("cifar10 npz: class counts of the test files disagree; copy the files again")
    return starts[official_labels] + rank


def _from_npz(cfg: Cifar10Config, split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
    root = user_path(cfg.root)
    if split == "train":
        d = _npz(root, "cifar10_jpeg_train.npz")
        return uint8_images(d["images"]), torch.from_numpy(d["labels"].astype(np.int64))
    jpeg, exact = _npz(root, "cifar10_jpeg_test.npz"), _npz(root, "cifar10_test_first1000.npz")
    official = exact["all_test_labels"].astype(np.int64)
    idx = official_order(jpeg["labels"].astype(np.int64), official)
    images = jpeg["images"][idx].copy()
    n = len(exact["labels"])
    images[:n] = exact["data"].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return uint8_images(images), torch.from_numpy(official)


def _from_torchvision(cfg: Cifar10Config, split: Literal["train", "test"]) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    root = user_path(cfg.root)
    ds = open_torchvision("cifar10", lambda: CIFAR10(str(root), train=split == "train", download=cfg.download),
                          str(root), "cifar-10-python.tar.gz (or use source: npz)")
    return uint8_images(ds.data), torch.tensor(ds.targets, dtype=torch.int64)


@DATASETS.register("cifar10", Cifar10Config)
def cifar10(cfg: Cifar10Config, split: Literal["train", "test"]) -> Split:
    x, y = (_from_npz if cfg.source == "npz" else _from_torchvision)(cfg, split)
    return Split(x=x, y=y, classes=CLASSES, mean=MEAN, std=STD)
