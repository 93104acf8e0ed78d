import math

import pytest
import torch

from salgl_core.config import ModelConfig
from salgl_core.losses import SALGLLoss, asymmetric_loss, bce_loss, entropy


def _asl_by_hand(x, y, gn=2.0, gp=0.0, eps=1e-5):
    p = torch.sigmoid(x)
    total = 0.0
    B, C = x.shape
    for b in range(B):
        for c in range(C):
            if y[b, c] == 1:
                total += (1 - p[b, c]) ** gp * math.log(max(p[b, c].item(), eps))
            else:
                total += p[b, c] ** gn * math.log(max(1 - p[b, c].item(), eps))
    return -total / B / C * 1000


def test_asl_matches_hand_formula():
    torch.manual_seed(0)
    x = torch.randn(4, 6) * 3
    y = (torch.rand(4, 6) < 0.4).float()
    assert asymmetric_loss(x, y).item() == pytest.approx(float(_asl_by_hand(x, y)), rel=1e-5)
    assert asymmetric_loss(x, y, 1.0, 1.0).item() == pytest.approx(float(_asl_by_hand(x, y, 1.0, 1.0)), rel=1e-5)


def test_asl_focusing_weight_has_no_gradient():
    x = torch.tensor([[0.3, -1.2]], requires_grad=True)
    y = torch.tensor([[0.0, 0.0]])
    asymmetric_loss(x, y).backward()
    p = torch.sigmoid(x.detach())
    # d/dx [-(p^2 (detached)) log(1-p)] / (B*C) * 1000 = p^2 * p / 2 * 1000
    expected = p ** 2 * p / 2 * 1000
    torch.testing.assert_close(x.grad, expected)


def test_asl_clip_and_bce():
    x = torch.tensor([[-4.0, 4.0]])
    y = torch.tensor([[0.0, 1.0]])
    assert asymmetric_loss(x, y, clip=0.05).item() < asymmetric_loss(x, y).item()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
    assert bce_loss(x, y).item() == pytest.approx(ref.item())


def test_entropy_terms():
    cfg = ModelConfig(num_scenes=4)
    crit = SALGLLoss(cfg)
    uniform = torch.full((8, 4), 0.25)
    onehot = torch.eye(4).repeat(2, 1)
    logits, y = torch.zeros(8, 3), torch.zeros(8, 3)
    _, t_uniform = crit(logits, uniform, y)
    _, t_onehot = crit(logits, onehot, y)
    # uniform per image: sample entropy log 4, batch term 0; confident and balanced: the reverse.
    assert t_uniform["loss_sample_entropy"].item() == pytest.approx(math.log(4), abs=1e-5)
    assert t_uniform["loss_batch_entropy"].item() == pytest.approx(0.0, abs=1e-4)
    assert t_onehot["loss_sample_entropy"].item() == pytest.approx(0.0, abs=1e-5)
    assert t_onehot["loss_batch_entropy"].item() == pytest.approx(0.0, abs=1e-4)
    collapsed = torch.tensor([[1.0, 0, 0, 0]]).repeat(8, 1)
    _, t_col = crit(logits, collapsed, y)
    assert t_col["loss_batch_entropy"].item() == pytest.approx(100 * math.log(4), rel=1e-4)
    assert entropy(torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2), abs=1e-6)


def test_total_uses_weights():
    cfg = ModelConfig(num_scenes=3, sample_entropy_weight=0.5, batch_entropy_weight=2.0)
    s = torch.softmax(torch.randn(5, 3), -1)
    x, y = torch.randn(5, 4), (torch.rand(5, 4) < 0.5).float()
    total, t = SALGLLoss(cfg)(x, s, y)
    expected = t["loss_cls"] + 0.5 * t["loss_sample_entropy"] + 2.0 * t["loss_batch_entropy"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("source", ["oracle", "random"])
def test_given_scenes_add_no_entropy_terms(source):
    # A collapsed one-hot would cost 100 log 3 in the batch term under 'learned'; given scenes cost nothing.
    s = torch.tensor([[1.0, 0, 0]]).repeat(5, 1)
    x, y = torch.randn(5, 4), (torch.rand(5, 4) < 0.5).float()
    total, t = SALGLLoss(ModelConfig(num_scenes=3, scene_source=source))(x, s, y)
    learned, _ = SALGLLoss(ModelConfig(num_scenes=3))(x, s, y)
    assert total.item() == t["loss_cls"].item() == pytest.approx(asymmetric_loss(x, y).item())
    assert t["loss_sample_entropy"].item() == t["loss_batch_entropy"].item() == 0.0
    assert learned.item() > total.item() + 100
