"""CIFAR-100 (Trigger Activation's second dataset): torchvision's download, md5-checked.

``torchvision.datasets.CIFAR100(root, download=True)`` fetches the official archive and verifies
the md5 of the archive and of each extracted file; offline, with the archive absent or a file
corrupted, the data stage stops with one line that says where to put it. Labels are the 100 fine
classes.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..artifacts import user_path
from . import DATASETS, DatasetConfig, Split, open_torchvision, uint8_images

MEAN = (0.5071, 0.4865, 0.4409)  # per-channel statistics of the training set, for trained models
STD = (0.2673, 0.2564, 0.2762)


class Cifar100Config(DatasetConfig):
    name: Literal["cifar100"] = "cifar100"
    root: str = "~/.cache/preempt/cifar100"
    download: bool = True  # fetch the archive when it is not under root


@DATASETS.register("cifar100", Cifar100Config)
def cifar100(cfg: Cifar100Config, split: Literal["train", "test"]) -> Split:
    from torchvision.datasets import CIFAR100

    root = user_path(cfg.root)
    ds = open_torchvision("cifar100", lambda: CIFAR100(str(root), train=split == "train", download=cfg.download),
                          str(root), "cifar-100-python.tar.gz")
    return Split(x=uint8_images(ds.data), y=torch.tensor(ds.targets, dtype=torch.int64), classes=tuple(ds.classes),
                 mean=MEAN, std=STD)
