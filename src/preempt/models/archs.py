"""Small architectures for the embedded default and CPU experiments, plus the CIFAR ResNet family.

``resnet{8,20,32,44,56}`` follow He et al.'s CIFAR ResNet with the "option A" parameter-free
shortcut, with parameter names that match the akamaster CIFAR-10 checkpoints (conv1/bn1/layerK/
linear), so those weights load into ``resnet20..56`` unchanged. ``resnet8`` (one block per stage)
is the same design sized for 8x8 digits (and the cheapest ResNet for CPU adversarial training on
CIFAR-10); ``resnet14`` (two blocks per stage) sits between it and ``resnet20``. ``vgg_small`` is a
plain five-convolution VGG-style network, a second, non-residual family that trains in about a
minute per CIFAR-10 epoch on one CPU thread.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..compat import import_robustbench
from . import ARCHS


@ARCHS.register("mlp")
def mlp(in_shape: tuple[int, int, int], n_classes: int, hidden: int = 256) -> nn.Module:
    """Multilayer perceptron, two hidden layers of 256 ReLU units."""
    c, h, w = in_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )


@ARCHS.register("cnn")
def cnn(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Small CNN: three 3x3 convolutions (32-64-64), max and average pooling, two dense layers."""
    return nn.Sequential(
        nn.Conv2d(in_shape[0], 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, n_classes),
    )


@ARCHS.register("vgg_small")
def vgg_small(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """Plain VGG-style network: five 3x3 conv-BN-ReLU layers (16-32-32-64-64), no residuals."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(in_shape[0], 16), nn.MaxPool2d(2),
        *block(16, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), *block(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes),
    )


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: subsample by 2 and zero-pad channels equally on both sides."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            _ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, n_blocks: int, in_channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes = 16
        layers = []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n_blocks):
                blocks.append(BasicBlock(planes, width, stride if i == 0 else 1))
                planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _resnet(n_blocks: int, in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    return CifarResNet(n_blocks, in_shape[0], n_classes)


for _depth in (8, 14, 20, 32, 44, 56):
    _factory = partial(_resnet, (_depth - 2) // 6)
    _factory.__doc__ = (f"CIFAR ResNet-{_depth} (He et al., option-A shortcuts; akamaster's parameter names), "
                        f"{(_depth - 2) // 6} block(s) per stage.")
    ARCHS.register(f"resnet{_depth}")(_factory)


@ARCHS.register("wrn34_10")
def wrn34_10(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """WideResNet-34-10 (Zagoruyko and Komodakis): Moon et al.'s CIFAR-10 victims, trained here.
    RobustBench's own implementation (``robustbench.model_zoo.architectures.wide_resnet``), the
    one its WRN zoo entries load into, so nothing of it is written twice; 46M parameters."""
    if in_shape[0] != 3:
        raise ValueError(f"wrn34_10 takes 3-channel images, not {in_shape[0]}")
    import_robustbench()
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return WideResNet(depth=34, widen_factor=10, num_classes=n_classes)


def _rb_resnet(blocks: str, depths: list[int], in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    if in_shape != (3, 32, 32):
        raise ValueError(f"the CIFAR ResNet-18/50 take 3x32x32 images, not {'x'.join(map(str, in_shape))}")
    import_robustbench()
    from robustbench.model_zoo.architectures import resnet

    return resnet.ResNet(getattr(resnet, blocks), depths, num_classes=n_classes)


@ARCHS.register("resnet18")
def resnet18(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """ResNet-18 in its CIFAR form (3x3 stem, no max-pool; 11M parameters): JATP's targets and
    Trigger Activation's RN-18. RobustBench's implementation, the one its ResNet-18 zoo entries
    load into; ``layer3`` is the third stage (JATP's feature layer)."""
    return _rb_resnet("BasicBlock", [2, 2, 2, 2], in_shape, n_classes)


@ARCHS.register("resnet50")
def resnet50(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """ResNet-50 in its CIFAR form (bottleneck blocks, 3x3 stem; 24M parameters): Trigger
    Activation's RN-50. RobustBench's implementation."""
    return _rb_resnet("Bottleneck", [3, 4, 6, 3], in_shape, n_classes)


# Trigger Activation's other CIFAR architectures (VGG-19, MobileNet-V2, DenseNet-121), each
# torchvision's implementation with the usual CIFAR changes (a 3x3 stride-1 stem, no early
# downsampling, a linear head on the pooled features) so that 32x32 inputs keep spatial extent.
# torchvision is imported when one is built: importing it costs 2.4 s (it loads torch._dynamo),
# which every Snakemake parse and stage process would otherwise pay.
def _cifar_only(name: str, in_shape: tuple[int, int, int]) -> None:
    if in_shape[0] != 3 or in_shape[1] < 32:
        raise ValueError(f"{name} takes 3-channel images of at least 32x32, not {'x'.join(map(str, in_shape))}")


@ARCHS.register("vgg19")
def vgg19(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """VGG-19 with batch norm in its CIFAR form: torchvision's 16 convolutions (configuration
    "E"), then global average pooling and one linear layer (512 -> classes; 20M parameters)."""
    _cifar_only("vgg19", in_shape)
    from torchvision.models.vgg import cfgs as vgg_cfgs
    from torchvision.models.vgg import make_layers as vgg_layers

    return nn.Sequential(vgg_layers(vgg_cfgs["E"], batch_norm=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(512, n_classes))


@ARCHS.register("mobilenet_v2")
def mobilenet_v2(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """MobileNet-V2 in its CIFAR form: torchvision's network with a stride-1 stem and the second
    stage at stride 1 (32x32 -> 4x4 before pooling, as ImageNet's 224 -> 7; 2.2M parameters)."""
    _cifar_only("mobilenet_v2", in_shape)
    from torchvision.models import MobileNetV2

    setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
               [6, 320, 1, 1]]
    net = MobileNetV2(num_classes=n_classes, inverted_residual_setting=setting)
    stem = net.features[0][0]
    assert isinstance(stem, nn.Conv2d)
    stem.stride = (1, 1)
    return net


@ARCHS.register("densenet121")
def densenet121(in_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """DenseNet-121 in its CIFAR form: torchvision's network (growth 32, blocks 6-12-24-16) with a
    3x3 stride-1 stem and no stem max-pool (32x32 -> 4x4 before pooling; 7M parameters)."""
    _cifar_only("densenet121", in_shape)
    from torchvision.models import DenseNet

    net = DenseNet(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, num_classes=n_classes)
    net.features.conv0 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    net.features.pool0 = nn.Identity()
    return net
