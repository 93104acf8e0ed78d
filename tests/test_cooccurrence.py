import io

import pytest
import torch

from salgl_core.cooccurrence import SceneCooccurrence

# Three images, C = 3 labels, K = 2 scenes.
Y = torch.tensor([[1.0, 1.0, 0.0],
                  [0.0, 1.0, 1.0],
                  [1.0, 0.0, 0.0]])
S = torch.tensor([[0.9, 0.1],
                  [0.2, 0.8],
                  [0.6, 0.4]])


def test_hard_counts_by_hand():
    co = SceneCooccurrence(2, 3).train()
    co(S, Y)
    # scene 0 gets images 0 and 2: y0 y0^T + y2 y2^T; scene 1 gets image 1.
    expected0 = torch.tensor([[2.0, 1, 0], [1, 1, 0], [0, 0, 0]])
    expected1 = torch.tensor([[0.0, 0, 0], [0, 1, 1], [0, 1, 1]])
    assert torch.equal(co.counts[0], expected0)
    assert torch.equal(co.counts[1], expected1)


def test_soft_counts_by_hand():
    co = SceneCooccurrence(2, 3, soft=True).train()
    co(S, Y)
    outer = [torch.outer(y, y) for y in Y]
    for k in range(2):
        expected = sum(S[n, k] * outer[n] for n in range(3))
        torch.testing.assert_close(co.counts[k], expected)
    # e.g. scene 0, pair (0, 1) is only in image 0: weight 0.9
    assert co.counts[0, 0, 1].item() == pytest.approx(0.9)


def test_soft_gradient_flows_through_current_batch_only():
    co = SceneCooccurrence(2, 3, soft=True).train()
    co(S, Y)  # first batch is history
    s = S.clone().requires_grad_(True)
    adj = co(s, Y)
    adj.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert not co.counts.requires_grad  # the stored buffer is detached


def test_momentum_one_is_running_sum():
    co = SceneCooccurrence(2, 3, momentum=1.0).train()
    ref = SceneCooccurrence(2, 3).train()
    total = torch.zeros(2, 3, 3)
    for i in range(4):
        y = Y.roll(i, dims=0)
        total += ref.batch_counts(S, y)
        co(S, y)
    torch.testing.assert_close(co.counts, total)


def test_momentum_decays_old_counts_by_exactly_mu_per_batch():
    mu = 0.5
    co = SceneCooccurrence(2, 3, momentum=mu).train()
    co(S, Y)
    first = co.counts.clone()
    empty = torch.zeros_like(Y)  # batches without labels add nothing, so only the decay acts
    for n in range(1, 4):
        co(S, empty)
        torch.testing.assert_close(co.counts, first * mu ** n)
    co(S, Y)
    torch.testing.assert_close(co.counts, first * mu ** 4 + co.batch_counts(S, Y))


def test_no_update_in_eval_mode():
    co = SceneCooccurrence(2, 3).train()
    co(S, Y)
    before = co.counts.clone()
    co.eval()
    co(S, Y)
    co(S)
    assert torch.equal(co.counts, before)


def test_adjacency_rows_are_conditional_probabilities():
    co = SceneCooccurrence(2, 3).train()
    co(S, Y)
    p = co.probabilities()
    # scene 0: label 0 appears twice, with label 1 once -> P(1 | 0) = 1/2; label 1 once, with 0 -> P(0 | 1) = 1
    assert p[0, 0, 1].item() == pytest.approx(0.5, abs=1e-6)
    assert p[0, 1, 0].item() == pytest.approx(1.0, abs=1e-6)
    assert p[0, 0, 0].item() == pytest.approx(1.0, abs=1e-6)  # self-loop kept (ignore_self off)
    assert torch.equal(p[0, 2], torch.zeros(3))  # label 2 never seen in scene 0: zero row
    # hard adjacency picks the argmax scene's matrix; soft mixes them by the scene probabilities
    co.eval()
    torch.testing.assert_close(co(S)[1], p[1])
    soft = SceneCooccurrence(2, 3, soft=True)
    soft.counts.copy_(co.counts)
    soft.eval()
    torch.testing.assert_close(soft(S)[2], 0.6 * p[0] + 0.4 * p[1])


def test_ignore_self_and_normalize():
    co = SceneCooccurrence(2, 3, ignore_self=True, normalize=True).train()
    co(S, Y)
    p = co.probabilities()
    assert torch.all(torch.diagonal(p, dim1=1, dim2=2) == 0)
    rows = p.sum(-1)
    assert torch.allclose(rows[rows > 0], torch.ones_like(rows[rows > 0]), atol=1e-6)


def test_state_dict_round_trip_weights_only():
    co = SceneCooccurrence(2, 3).train()
    co(S, Y)
    buf = io.BytesIO()
    torch.save(co.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = SceneCooccurrence(2, 3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.counts, co.counts)
    assert "counts" in dict(co.named_buffers())
    assert fresh.to(torch.float64).counts.dtype == torch.float64  # follows .to()


def test_counts_stay_exact_under_bf16_autocast():
    # bf16 has an 8-bit mantissa: a count of 301 would round to 300 if the update ran under autocast.
    co = SceneCooccurrence(2, 3).train()
    y = torch.tensor([[1.0, 1.0, 0.0]]).repeat(301, 1)
    s = torch.tensor([[0.9, 0.1]]).repeat(301, 1).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adj = co(s, y)
    assert co.counts[0, 0, 1].item() == 301.0 and co.counts.dtype == torch.float32
    assert adj.dtype == torch.float32


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("counts_dtype,probs_dtype", [(torch.float64, torch.float32), (torch.float64, torch.float64),
                                                      (torch.float32, torch.bfloat16), (torch.float32, torch.float16)])
def test_any_probs_dtype_against_counts_dtype(soft, counts_dtype, probs_dtype):
    # Regression: soft mode multiplied float32 scene probabilities with counts in the model's dtype
    # ("expected m1 and m2 to have the same dtype"). Everything now runs in the counts' dtype.
    co = SceneCooccurrence(2, 3, soft=soft).to(counts_dtype).train()
    s = S.to(probs_dtype, copy=True).requires_grad_(True)  # a fresh leaf, never the shared S
    adj = co(s, Y.to(probs_dtype))
    assert adj.dtype == counts_dtype and co.counts.dtype == counts_dtype
    if soft:
        adj.sum().backward()
        assert s.grad is not None and s.grad.dtype == probs_dtype and s.grad.abs().sum() > 0
    ref = SceneCooccurrence(2, 3, soft=soft).train()
    torch.testing.assert_close(co.counts.float(), ref.batch_counts(S.to(probs_dtype).float(), Y), rtol=0, atol=0)
    co.eval()
    assert co(S.to(probs_dtype)).dtype == counts_dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_counts_stay_float32_when_the_module_is_cast_to_half(dtype):
    co = SceneCooccurrence(2, 3).train()
    co.counts.fill_(2049.0)  # not representable in fp16 (2048) nor in bf16 (2048)
    co.to(dtype)
    assert co.counts.dtype == torch.float32 and co.counts[0, 0, 0].item() == 2049.0
    co(S.to(dtype), Y)
    assert co.counts.dtype == torch.float32 and co.counts[0, 0, 0].item() == 2051.0  # images 0 and 2
    assert co.to(torch.float64).counts.dtype == torch.float64  # widening applies as usual
