"""LPIPS for real: torchmetrics' metric on a torchvision backbone read from where torchvision
caches it. Offline there are no ImageNet weights, so the test saves a randomly initialised
backbone at that exact path (no mock): the code path that runs the day the real file is there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from preempt import metrics


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # re-read TORCH_HOME
    return tmp_path


def test_lpips_absent_weights_give_the_offline_note(hub: Path) -> None:
    value, note = metrics.lpips(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), "alex")
    assert value is None and "absent (offline)" in note and str(hub) in note


@pytest.mark.parametrize("net,builder", [("alex", torchvision.models.alexnet),
                                         ("squeeze", torchvision.models.squeezenet1_1)])
def test_lpips_with_backbone_weights_on_disk(hub: Path, net: str, builder) -> None:
    path = metrics.lpips_weights_file(net)
    assert path.parent == hub / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(builder().state_dict(), path)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g)
    near = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    far = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    same, note = metrics.lpips(x, x, net)
    assert note == "" and same == pytest.approx(0.0, abs=1e-6)
    d_near, _ = metrics.lpips(x, near, net)
    d_far, _ = metrics.lpips(x, far, net)
    assert d_near is not None and d_far is not None and 0 < d_near < d_far
    gray, _ = metrics.lpips(x[:, :1, :8, :8], near[:, :1, :8, :8], net)  # digits: 1 channel, 8x8
    assert gray is not None and gray > 0
