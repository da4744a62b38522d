"""The embedded default: UCI handwritten digits as shipped inside scikit-learn.

Why this dataset: it is real data (1,797 scanned handwritten digits, 10 classes, 8x8 grayscale,
from the UCI ML repository) and it ships *inside* the scikit-learn wheel, so the pipeline runs
offline anywhere with no download; and it is small enough that adversarial training of several
models, MCGS, AutoAttack and the reversions all finish in minutes on 2 CPU cores.
Pixel intensities are 0..16 in the source; we divide by 16 to get [0, 1].
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from . import DATASETS, DatasetConfig, Split


class DigitsConfig(DatasetConfig):
    name: Literal["digits"] = "digits"
    test_size: int = Field(500, ge=10, le=1000, description="held-out images (stratified split)")
    split_seed: int = 0


@DATASETS.register("digits", DigitsConfig)
def digits(cfg: DigitsConfig, split: Literal["train", "test"]) -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # N x 1 x 8 x 8
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=cfg.test_size, random_state=cfg.split_seed, stratify=y
    )
    idx = idx_train if split == "train" else idx_test
    return Split(
        x=torch.from_numpy(x[idx]), y=torch.from_numpy(y[idx]),
        classes=tuple(str(c) for c in bunch.target_names), mean=(0.5,), std=(0.5,),
    )
