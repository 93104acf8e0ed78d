"""ViT backbones (salgl_core/backbone.py): patch-token maps, position interpolation, torchvision/timm/official weights
and their one-line errors; the image-size rule (config.py); the dashboard's paper row for a ViT run.

timm is an optional extra and is not needed here: timm-layout state dicts are written out key by key from timm's
names, and timm's lookup of the Hugging Face cache is replaced by a stand-in (its real API was checked by hand
against timm 1.0.31: tokens equal to timm's forward_features within 3e-6 at 224 and 448 px)."""

from __future__ import annotations

import subprocess
import sys
import types
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision

from salgl_core.backbone import (
    BackboneWeightsError,
    ViTPatchTokens,
    build_backbone,
    load_vit_weights,
    resize_position_embedding,
)
from salgl_core.config import OFF_VIT_WEIGHTS, ConfigError, ExperimentConfig
from salgl_core.presets import recipe_config

TIMM_B16 = "vit_base_patch16_224.augreg_in21k"


def _vit_b(layers: int) -> torchvision.models.VisionTransformer:
    """torchvision's ViT-B/16 with only its first `layers` blocks (same widths, heads and patch size)."""
    return torchvision.models.VisionTransformer(224, 16, layers, 12, 768, 3072)


@pytest.fixture
def shallow_vit_b(monkeypatch):
    """`vit_base_patch16` built on a 2-block ViT-B/16: the same wiring, a CPU forward in milliseconds."""
    monkeypatch.setattr(torchvision.models, "vit_b_16", lambda weights=None: _vit_b(2))


def _timm_state(depth: int, dim: int = 768, grid: int = 14, classes: int = 10) -> dict[str, torch.Tensor]:
    """A random state dict under timm's ViT names (timm/models/vision_transformer.py), written out independently
    of the mapping it tests."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
          "patch_embed.proj.weight": r(dim, 3, 16, 16), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim), "head.weight": r(classes, dim), "head.bias": r(classes)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
                   b + "attn.qkv.weight": r(3 * dim, dim), b + "attn.qkv.bias": r(3 * dim),
                   b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
                   b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                   b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
                   b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim)})
    return sd


def _assert_holds_timm(net: ViTPatchTokens, sd: dict[str, torch.Tensor], blocks: int) -> None:
    assert torch.equal(net.class_token, sd["cls_token"]) and torch.equal(net.encoder.pos_embedding, sd["pos_embed"])
    assert torch.equal(net.conv_proj.weight, sd["patch_embed.proj.weight"])
    assert torch.equal(net.encoder.ln.weight, sd["norm.weight"]) and torch.equal(net.encoder.ln.bias, sd["norm.bias"])
    for i in range(blocks):
        layer, b = net.encoder.layers[i], f"blocks.{i}."
        pairs = [(layer.ln_1.weight, "norm1.weight"), (layer.ln_2.bias, "norm2.bias"),
                 (layer.self_attention.in_proj_weight, "attn.qkv.weight"),
                 (layer.self_attention.in_proj_bias, "attn.qkv.bias"),
                 (layer.self_attention.out_proj.weight, "attn.proj.weight"),
                 (layer.mlp[0].weight, "mlp.fc1.weight"), (layer.mlp[3].bias, "mlp.fc2.bias")]
        for ours, theirs in pairs:
            assert torch.equal(ours, sd[b + theirs]), b + theirs


def _fake_timm(monkeypatch, cached: dict[tuple[str, str], str]) -> None:
    """timm and huggingface_hub as _timm_weights_file uses them: get_pretrained_cfg(name).hf_hub_id and
    try_to_load_from_cache(repo, filename) -> a path in the local cache, or None."""
    timm = types.ModuleType("timm")
    timm.models = types.SimpleNamespace(get_pretrained_cfg=lambda name: types.SimpleNamespace(
        hf_hub_id=f"timm/{name}") if name.endswith((".augreg_in21k", ".augreg_in21k_ft_in1k")) else None)
    hub = types.ModuleType("huggingface_hub")
    hub.constants = types.SimpleNamespace(HF_HUB_CACHE="/hf-cache")
    hub.try_to_load_from_cache = lambda repo, filename: cached.get((repo, filename))
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)


def test_patch_token_maps_at_224_and_448(shallow_vit_b):
    net, dim = build_backbone("vit_base_patch16", None)
    assert dim == 768 and isinstance(net, ViTPatchTokens)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 768, 14, 14)
        assert net(torch.randn(1, 3, 448, 448)).shape == (1, 768, 28, 28)
        assert net(torch.randn(1, 3, 448, 224)).shape == (1, 768, 28, 14)
        with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
            net(torch.randn(1, 3, 450, 450))


def test_the_real_sizes_on_the_meta_device():
    """The full-depth ViT-L/16 (24 blocks, 1024 wide) and ViT-B/16, without allocating their weights."""
    with torch.device("meta"):
        large, dim = build_backbone("vit_large_patch16", None)
        out = large(torch.empty(2, 3, 448, 448))
        base, base_dim = build_backbone("vit_base_patch16", None)
        base_out = base(torch.empty(1, 3, 224, 224))
    assert (dim, len(large.encoder.layers), tuple(large.encoder.pos_embedding.shape)) == (1024, 24, (1, 197, 1024))
    assert out.shape == (2, 1024, 28, 28)
    assert (base_dim, len(base.encoder.layers), base_out.shape) == (768, 12, (1, 768, 14, 14))


def test_position_embedding_interpolation():
    pos = torch.randn(1, 197, 8)
    assert resize_position_embedding(pos, (14, 14)) is pos  # the weights' own grid: the table as is
    out = resize_position_embedding(pos, (28, 28))
    assert out.shape == (1, 785, 8) and torch.equal(out[:, 0], pos[:, 0])  # the class token's is kept
    grid = pos[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)
    assert torch.equal(out[:, 1:].reshape(1, 28, 28, 8), ref.permute(0, 2, 3, 1))
    # Independently of F.interpolate: a table that varies along the rows only (channel 0) or the columns only
    # (channel 1) is interpolated along that axis alone, as a 1-D cubic convolution (Keys, a = -0.75) at the source
    # coordinate (r + 1/2) * 14/28 - 1/2 (align_corners=False), borders clamped.
    v, w = torch.randn(14), torch.randn(14)
    table = torch.stack([v[:, None].expand(14, 14), w[None, :].expand(14, 14)], dim=-1).reshape(1, 196, 2)
    up = resize_position_embedding(torch.cat([torch.zeros(1, 1, 2), table], dim=1), (28, 28))[0, 1:]
    up = up.reshape(28, 28, 2)
    torch.testing.assert_close(up[:, :, 0], _cubic_1d(v, 28)[:, None].expand(28, 28))
    torch.testing.assert_close(up[:, :, 1], _cubic_1d(w, 28)[None, :].expand(28, 28))


def _cubic_1d(f: torch.Tensor, n: int, a: float = -0.75) -> torch.Tensor:
    def k(x: float) -> float:
        x = abs(x)
        return ((a + 2) * x - (a + 3)) * x * x + 1 if x <= 1 else ((x - 5) * x + 8) * x * a - 4 * a if x < 2 else 0.0

    out = []
    for r in range(n):
        src = (r + 0.5) * len(f) / n - 0.5
        i0 = int(torch.floor(torch.tensor(src)))
        out.append(sum(f[min(max(i0 + j, 0), len(f) - 1)] * k(src - i0 - j) for j in (-1, 0, 1, 2)))
    return torch.stack(out)


def test_the_forward_interpolates_as_the_official_code_resizes(shallow_vit_b):
    """Off the weights' grid (here 288 px, 18 x 18) the forward uses the 14 x 14 table interpolated: the same tokens
    as a ViT whose table was resized once at load time (the official code's way)."""
    net, _ = build_backbone("vit_base_patch16", None)
    x = torch.randn(1, 3, 288, 288)
    resized, _ = build_backbone("vit_base_patch16", None)
    state = net.state_dict()
    state["encoder.pos_embedding"] = resize_position_embedding(state["encoder.pos_embedding"], (18, 18))
    load_vit_weights(resized, state, "test")
    assert tuple(resized.encoder.pos_embedding.shape) == (1, 325, 768)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), resized.eval()(x))
    at_224 = net(torch.randn(1, 3, 224, 224))
    at_224.sum().backward()  # the 14 x 14 table trains through the interpolation
    assert net.encoder.pos_embedding.grad is not None and net.encoder.pos_embedding.grad.abs().sum() > 0


def test_tokens_equal_torchvisions_own_forward_with_weights_by_name_and_path(shallow_vit_b, tmp_path, monkeypatch):
    tv = _vit_b(2).eval()
    url = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir()
    torch.save(tv.state_dict(), cached)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    by_name, _ = build_backbone("vit_base_patch16", "IMAGENET1K_V1")
    by_path, _ = build_backbone("vit_base_patch16", str(cached))
    for net in (by_name, by_path):
        ours = net.state_dict()
        assert set(ours) == {k for k in tv.state_dict() if not k.startswith("heads.")}
        assert all(torch.equal(ours[k], v) for k, v in tv.state_dict().items() if k in ours)
    seen = []
    tv.encoder.register_forward_hook(lambda module, inputs, output: seen.append(output))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tv(x)
        tokens = by_path.eval()(x)
    assert torch.equal(tokens.flatten(2).transpose(1, 2), seen[0][:, 1:])  # patch tokens, class token dropped


def test_timm_layout_weights_from_the_hugging_face_cache(shallow_vit_b, tmp_path, monkeypatch):
    sd = _timm_state(depth=2)
    path = tmp_path / "pytorch_model.bin"
    torch.save(sd, path)
    _fake_timm(monkeypatch, {(f"timm/{TIMM_B16}", "pytorch_model.bin"): str(path)})
    net, _ = build_backbone("vit_base_patch16", f"timm:{TIMM_B16}")
    _assert_holds_timm(net, sd, blocks=2)
    # a local file in timm's layout works the same way
    _assert_holds_timm(build_backbone("vit_base_patch16", str(path))[0], sd, blocks=2)


def test_timm_weights_of_another_grid_keep_it(shallow_vit_b):
    """384-px weights (a 24 x 24 table) load as they are and are interpolated to each input's grid."""
    sd = _timm_state(depth=2, grid=24)
    net, _ = build_backbone("vit_base_patch16", None)
    load_vit_weights(net, sd, "test")
    _assert_holds_timm(net, sd, blocks=2)
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 768, 14, 14)
    bad = {**sd, "blocks.0.mlp.fc1.weight": torch.zeros(10, 768)}
    with pytest.raises(BackboneWeightsError) as e:
        load_vit_weights(build_backbone("vit_base_patch16", None)[0], bad, "test")
    assert _one_line(e).startswith("test does not hold weights of this ViT (width 768, 2 blocks): size mismatch for "
                                   "encoder.layers.encoder_layer_0.mlp.0.weight: copying a param with shape")
    with pytest.raises(BackboneWeightsError, match=r"test does not hold weights of this ViT \(width 768, 2 blocks\)"):
        load_vit_weights(build_backbone("vit_base_patch16", None)[0], _timm_state(depth=1), "test")


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_missing_weights_say_the_one_command_that_fetches_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(BackboneWeightsError) as e:
        build_backbone("vit_large_patch16", "IMAGENET1K_V1")
    assert "torchvision.models.vit_l_16(weights='IMAGENET1K_V1')" in _one_line(e)
    with pytest.raises(BackboneWeightsError) as e:
        build_backbone("vit_large_patch16", OFF_VIT_WEIGHTS["vit_large_patch16"])
    assert ("torch.hub.load_state_dict_from_url('https://github.com/rwightman/pytorch-image-models/releases/"
            "download/v0.1-vitjx/jx_vit_large_p16_224-4ee7a4dc.pth')") in _one_line(e)
    assert str(tmp_path / "checkpoints" / "jx_vit_large_p16_224-4ee7a4dc.pth") in str(e.value)
    fetch = "python -c \"import timm; timm.create_model('vit_large_patch16_224.augreg_in21k', pretrained=True)\""
    monkeypatch.setitem(sys.modules, "timm", None)  # the extra not installed
    with pytest.raises(BackboneWeightsError) as e:
        build_backbone("vit_large_patch16", "timm:vit_large_patch16_224.augreg_in21k")
    assert _one_line(e).endswith(f"needs the optional extra timm: pip install -e '.[timm]', then fetch the weights "
                                 f"with: {fetch}")
    _fake_timm(monkeypatch, {})
    with pytest.raises(BackboneWeightsError) as e:
        build_backbone("vit_large_patch16", "timm:vit_large_patch16_224.augreg_in21k")
    assert "are not in the Hugging Face cache (/hf-cache)" in _one_line(e) and f"run: {fetch};" in str(e.value)
    with pytest.raises(BackboneWeightsError, match=r"timm knows no pretrained weights 'vit_large_patch16_224\.x'"):
        build_backbone("vit_large_patch16", "timm:vit_large_patch16_224.x")
    with pytest.raises(BackboneWeightsError, match=r"'timm:vit_base_patch16_224.augreg_in21k' is not a "
                                                   r"vit_large_patch16 model: expected 'timm:vit_large_patch16_<size>"):
        build_backbone("vit_large_patch16", f"timm:{TIMM_B16}")
    with pytest.raises(BackboneWeightsError) as e:
        build_backbone("vit_large_patch16", "NO_SUCH")
    assert _one_line(e) == ("backbone_weights = 'NO_SUCH' is not a torchvision weights name for vit_l_16 (try "
                            "'IMAGENET1K_V1', 'jx_vit_large_p16_224-4ee7a4dc.pth' (the official code's) or "
                            "'timm:<model>.<tag>') and is not an existing file")


def test_an_image_size_off_the_patch_grid_is_refused_before_torch_loads():
    with pytest.raises(ConfigError) as e:
        ExperimentConfig.from_flat({"backbone": "vit_large_patch16", "image_size": 450})
    assert str(e.value) == ("DataConfig.image_size 450 is not a multiple of vit_large_patch16's patch size 16: "
                            "use 448 or 464")
    with pytest.raises(ConfigError, match="image_size 220 is not a multiple of vit_base_patch16's .*: use 208 or 224"):
        ExperimentConfig.from_flat({"backbone": "vit_base_patch16", "image_size": 220})
    for flat in ({"backbone": "vit_large_patch16", "image_size": 448}, {"backbone": "resnet101", "image_size": 450}):
        ExperimentConfig.from_flat(flat)
    code = ("import sys\nfrom salgl_core.config import ConfigError, ExperimentConfig\ntry:\n"
            "    ExperimentConfig.from_flat({'backbone': 'vit_large_patch16', 'image_size': 450})\n"
            "except ConfigError as e:\n    print('torch' in sys.modules, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("False DataConfig.image_size 450")


@pytest.mark.parametrize("recipe,pretrain,value", [("paper-coco-vitl16-448-in1k", "ImageNet-1k", 87.6),
                                                   ("paper-coco-vitl16-448-in22k", "ImageNet-22k", 90.1)])
def test_the_dashboard_finds_the_papers_vit_row(recipe, pretrain, value):
    from dashboards.data import paper as P
    from dashboards.shaping.trials import paper_references

    c = recipe_config(recipe)
    assert P.pretrain_name(c["backbone_weights"]) == pretrain
    coco = P.load_paper_tables().coco
    ref = P.paper_reference(coco, "coco", c["backbone"], c["image_size"], pretrain=pretrain)
    assert (ref.value, ref.pretrain) == (value, pretrain)
    run = types.SimpleNamespace(dataset="coco", backbone=c["backbone"], image_size=c["image_size"],
                                meta={"base_config": c})
    assert paper_references(run, P.load_paper_tables(), "best_mAP_ema")[0].value == value


def test_pretrain_names_of_the_vit_weights():
    from dashboards.data import paper as P

    assert [P.pretrain_name(w) for w in ("IMAGENET1K_V1", "jx_vit_base_p16_224-80ecf9dd.pth",
                                         "timm:vit_large_patch16_224.augreg_in21k",
                                         "timm:vit_large_patch16_224.augreg_in21k_ft_in1k",
                                         "timm:vit_base_patch16_224.orig_in21k", "timm:vit_base_patch16_224.mae",
                                         "IMAGENET1K_SWAG_E2E_V1")] == [
        "ImageNet-1k", "ImageNet-1k", "ImageNet-22k", "ImageNet-1k", "ImageNet-22k",
        "timm:vit_base_patch16_224.mae", "IMAGENET1K_SWAG_E2E_V1"]
    coco = P.load_paper_tables().coco
    # a ViT run whose pretraining the paper does not have matches none of its two rows
    assert P.paper_reference(coco, "coco", "vit_large_patch16", 448, pretrain="none (random init)") is None


@pytest.mark.slow
def test_full_vit_base_at_448():
    """The real 12-block ViT-B/16 at 448 px on a CPU (a few seconds)."""
    net, _ = build_backbone("vit_base_patch16", None)
    with torch.no_grad():
        out = net.eval()(torch.randn(1, 3, 448, 448))
    assert out.shape == (1, 768, 28, 28) and torch.isfinite(out).all()


def test_shallow_fixture_keeps_torchvisions_names():
    # The fixture's 2-block model has the real one's parameter names for the blocks it keeps.
    with torch.device("meta"):
        real = torchvision.models.vit_b_16(weights=None)
    full = OrderedDict((k, v.shape) for k, v in real.state_dict().items())
    small = OrderedDict((k, v.shape) for k, v in _vit_b(2).state_dict().items())
    assert all(full[k] == shape for k, shape in small.items())


def test_salgl_runs_on_vit_tokens(shallow_vit_b):
    """The whole model on the ViT's token map: 64 px -> a 4 x 4 grid of 768-wide tokens, one train step."""
    from salgl_core.config import ModelConfig
    from salgl_core.model import build_model

    cfg = ModelConfig(backbone="vit_base_patch16", backbone_weights=None, att_dim=16, enc_ffn=32, num_scenes=2)
    model = build_model(cfg, num_classes=3)
    assert model.feat_dim == 768
    out = model.train()(torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 1], [0, 1, 0]]))
    assert out.logits.shape == (2, 3) and out.attention.shape == (2, 3, 16)
    out.logits.sum().backward()
    assert model.backbone.encoder.pos_embedding.grad is not None
