"""SVHN (JATP's second dataset): torchvision's download of the cropped-digits .mat files, md5-checked.

``torchvision.datasets.SVHN(root, split, download=True)`` fetches ``train_32x32.mat`` /
``test_32x32.mat`` and verifies their md5; offline, with a file absent or corrupted, the data
stage stops with one line that says where to put it. torchvision maps the digit 0 (label 10 in
the .mat files) to class 0. The ``extra`` split is not used (JATP trains on ``train``).
"""

from __future__ import annotations

from typing import Literal

import torch

from ..artifacts import user_path
from . import DATASETS, DatasetConfig, Split, open_torchvision, uint8_images

CLASSES = tuple(str(d) for d in range(10))
MEAN = (0.4377, 0.4438, 0.4728)  # per-channel statistics of the training set, for trained models
STD = (0.1980, 0.2010, 0.1970)


class SVHNConfig(DatasetConfig):
    name: Literal["svhn"] = "svhn"
    root: str = "~/.cache/preempt/svhn"
    download: bool = True  # fetch the .mat file when it is not under root


@DATASETS.register("svhn", SVHNConfig)
def svhn(cfg: SVHNConfig, split: Literal["train", "test"]) -> Split:
    from torchvision.datasets import SVHN

    root = user_path(cfg.root)
    ds = open_torchvision("svhn", lambda: SVHN(str(root), split=split, download=cfg.download), str(root),
                          f"{split}_32x32.mat")
    return Split(x=uint8_images(ds.data, channels_last=False), y=torch.from_numpy(ds.labels.astype("int64")),
                 classes=CLASSES, mean=MEAN, std=STD)
