import pytest
import torch

from salgl_core.attention import LowRankBilinearAttention


def _pair(feat, emb, att, chunk=0, dtype=torch.float32):
    torch.manual_seed(0)
    ref = LowRankBilinearAttention(feat, emb, att, fast=False).to(dtype)
    fast = LowRankBilinearAttention(feat, emb, att, fast=True, chunk=chunk).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _run(mod, x, e):
    x = x.clone().requires_grad_(True)
    e = e.clone().requires_grad_(True)
    feats, alpha = mod(x, e)
    # A loss that depends on both outputs, with random weights so no gradient cancels by symmetry.
    g = torch.Generator().manual_seed(1)
    w1 = torch.randn(feats.shape, generator=g, dtype=feats.dtype)
    w2 = torch.randn(alpha.shape, generator=g, dtype=alpha.dtype)
    ((feats * w1).sum() + (alpha * w2).sum() * 10).backward()
    grads = {n: p.grad.clone() for n, p in mod.named_parameters()}
    return feats, alpha, grads, x.grad, e.grad


@pytest.mark.parametrize("B,N,C,D,E,A,chunk", [
    (2, 16, 5, 32, 12, 24, 0),
    (3, 49, 20, 64, 768, 128, 0),
    (1, 7, 3, 16, 16, 8, 0),
    (2, 16, 11, 32, 12, 24, 4),   # chunked + checkpointed path
    (2, 16, 11, 32, 12, 24, 1),
])
def test_fast_attention_equals_reference(B, N, C, D, E, A, chunk):
    ref, fast = _pair(D, E, A, chunk)
    x, e = torch.randn(B, N, D), torch.randn(C, E)
    r, f = _run(ref, x, e), _run(fast, x, e)
    torch.testing.assert_close(f[0], r[0], rtol=1e-5, atol=1e-5)  # label features
    torch.testing.assert_close(f[1], r[1], rtol=1e-5, atol=1e-6)  # attention maps
    assert set(f[2]) == set(r[2]) == {"linear1.weight", "linear2.weight", "hidden_linear.weight",
                                      "hidden_linear.bias", "target_linear.weight", "target_linear.bias"}
    for name in r[2]:
        torch.testing.assert_close(f[2][name], r[2][name], rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(f[3], r[3], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f[4], r[4], rtol=1e-4, atol=1e-5)


def test_fast_attention_exact_in_float64():
    ref, fast = _pair(24, 10, 16, chunk=3, dtype=torch.float64)
    x, e = torch.randn(2, 9, 24, dtype=torch.float64), torch.randn(7, 10, dtype=torch.float64)
    r, f = _run(ref, x, e), _run(fast, x, e)
    torch.testing.assert_close(f[1], r[1], rtol=1e-12, atol=1e-12)
    for name in r[2]:
        torch.testing.assert_close(f[2][name], r[2][name], rtol=1e-10, atol=1e-12)


def test_attention_is_a_softmax_over_positions():
    _, fast = _pair(16, 8, 8)
    x = torch.randn(2, 10, 16)
    feats, alpha = fast(x, torch.randn(4, 8))
    assert alpha.shape == (2, 4, 10) and feats.shape == (2, 4, 16)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(feats, alpha @ x)


def test_fast_path_skips_the_hidden_product(monkeypatch):
    # The hidden Linear must never be applied to the B x C x N x A tensor in the fast path.
    _, fast = _pair(16, 8, 8)
    called = []
    fast.hidden_linear.register_forward_hook(lambda *a: called.append(1))
    fast(torch.randn(2, 5, 16), torch.randn(3, 8))
    assert not called


def test_cpu_kernel_tanh_and_gradients_match_autograd(monkeypatch):
    from salgl_core import attention
    from salgl_core.attention import _CpuFastScores, _fast_scores, _tanh_via_sigmoid_

    # tanh(z) = 2 sigmoid(2z) - 1: at most a few float32 ulps of 1 from torch.tanh, over the whole range.
    z = torch.linspace(-12, 12, 200_001)
    eps = torch.finfo(torch.float32).eps
    assert (_tanh_via_sigmoid_(z.clone()) - torch.tanh(z)).abs().max() <= 2 * eps
    # Forward and backward against autograd of the plain formula: float64 to rounding, float32 within tolerance.
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        g = torch.Generator().manual_seed(0)
        u, v, w = (torch.randn(*s, generator=g, dtype=dtype) for s in ((3, 5, 8), (4, 8), (8,)))
        c = torch.tensor(0.3, dtype=dtype)
        grad_out = torch.randn(3, 4, 5, generator=g, dtype=dtype)
        leaves = [t.clone().requires_grad_(True) for t in (u, v, w, c)]
        ref = torch.tanh(leaves[0].unsqueeze(1) * leaves[1].unsqueeze(1)) @ leaves[2] + leaves[3]
        want = torch.autograd.grad(ref, leaves, grad_out)
        leaves = [t.clone().requires_grad_(True) for t in (u, v, w, c)]
        out = _CpuFastScores.apply(*leaves)
        torch.testing.assert_close(out, ref.detach(), rtol=tol, atol=tol)
        # Twice through a retained graph: the backward leaves its saved tanh intact.
        first = torch.autograd.grad(out, leaves, grad_out, retain_graph=True)
        second = torch.autograd.grad(out, leaves, grad_out)
        for a, b, r in zip(first, second, want, strict=True):
            assert torch.equal(a, b)
            torch.testing.assert_close(a, r, rtol=tol, atol=tol)
        # Without gradients (evaluation): a few images at a time, here one, the same scores.
        monkeypatch.setattr(attention, "_CPU_BLOCK_ELEMENTS", 1)
        with torch.no_grad():
            torch.testing.assert_close(_fast_scores(u, v, w, c), ref.detach(), rtol=tol, atol=tol)
