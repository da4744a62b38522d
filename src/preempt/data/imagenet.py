"""ImageNet (ILSVRC2012) validation images, read from a folder the user provides.

ImageNet cannot be downloaded automatically (its licence requires registration at
image-net.org), so ``root`` must point at the validation set in torchvision's ImageFolder layout:
``root/<wnid>/ILSVRC2012_val_XXXXXXXX.JPEG`` (1000 wnid folders). Missing folder or files stop the
data stage with one line before anything else runs.

The evaluated images are a fixed, documented subset: RobustBench's list of 5000 validation images
(``robustbench/helper_files/imagenet_test_image_ids.txt``, the same images every RobustBench
ImageNet number uses), of which the first ``n_eval`` are taken, in the list's order. Labels follow
the sorted-wnid class index (``imagenet_class_to_id_map.json`` in the same folder). Preprocessing
is RobustBench's: ``Res256Crop224`` (resize the short side to 256, centre-crop 224) by default.
There is no training split: ImageNet models come from the zoo (``source: robustbench``).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field

from ..artifacts import user_path
from ..errors import PreemptError
from . import DATASETS, DatasetConfig, Split

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class ImageNetConfig(DatasetConfig):
    name: Literal["imagenet"] = "imagenet"
    root: str = Field(description="the validation folder in ImageFolder layout ($VARS and ~ expanded)")
    n_eval: int = Field(1000, ge=1, le=5000)
    preprocessing: Literal["Res256Crop224", "BicubicRes256Crop224", "Res224"] = "Res256Crop224"


def helper_files() -> Path:
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        raise PreemptError("imagenet: the robustbench package is not installed; run ./setup.sh")
    return Path(spec.submodule_search_locations[0]) / "helper_files"


def subset() -> list[str]:
    """RobustBench's fixed ImageNet evaluation list: ``<wnid>/<file>`` relative paths."""
    lines = (helper_files() / "imagenet_test_image_ids.txt").read_text().split()
    return [ln.strip() for ln in lines if ln.strip()]


def class_index() -> dict[str, int]:
    return json.loads((helper_files() / "imagenet_class_to_id_map.json").read_text())


def _transform(name: str) -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms as T

    if name == "Res224":
        return T.Compose([T.Resize([224, 224]), T.ToTensor()])
    interp = T.InterpolationMode.BICUBIC if name.startswith("Bicubic") else T.InterpolationMode.BILINEAR
    return T.Compose([T.Resize(256, interpolation=interp), T.CenterCrop(224), T.ToTensor()])


@DATASETS.register("imagenet", ImageNetConfig)
def imagenet(cfg: ImageNetConfig, split: Literal["train", "test"]) -> Split:
    from PIL import Image

    classes = class_index()
    names = tuple(sorted(classes, key=classes.__getitem__))
    if split == "train":
        return Split(torch.zeros(0, 3, 224, 224), torch.zeros(0, dtype=torch.int64), names, MEAN, STD)
    root = user_path(cfg.root)
    if not root.is_dir():
        raise PreemptError(f"dataset.root: ImageNet validation folder {root} not found; get ILSVRC2012 val from "
                           "image-net.org, arrange it as root/<wnid>/<file>.JPEG (ImageFolder layout) and set dataset.root")
    tf = _transform(cfg.preprocessing)
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for rel in subset()[: cfg.n_eval]:
        path = root / rel
        if not path.is_file():
            raise PreemptError(f"dataset.root: {path} is missing (image {len(xs)} of RobustBench's ImageNet subset); "
                               "the folder must hold the full ILSVRC2012 validation set in ImageFolder layout")
        with Image.open(path) as im:
            xs.append(tf(im.convert("RGB")))
        ys.append(classes[rel.split("/")[0]])
    return Split(torch.stack(xs), torch.tensor(ys, dtype=torch.int64), names, MEAN, STD)
