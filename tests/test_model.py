import itertools

import pytest
import torch

from salgl_core.config import ConfigError, ModelConfig
from salgl_core.losses import SALGLLoss
from salgl_core.model import build_model, random_scenes

SMALL = dict(backbone="small_cnn", backbone_weights=None, att_dim=16, enc_heads=4, enc_ffn=32,
             label_embedding_dim=24)
C = 6


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, 32, 32, generator=g)
    y = (torch.rand(b, C, generator=g) < 0.4).float()
    y[:, 0] = 1  # every image has a label, so the co-occurrence counts are not empty
    return x, y


@pytest.mark.parametrize("K,T,soft", list(itertools.product([1, 4], [0, 3], [False, True])))
def test_forward_backward(K, T, soft):
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, num_scenes=K, gnn_steps=T, soft_assignment=soft, outmess=T > 0)
    model = build_model(cfg, C).train()
    x, y = _batch()
    out = model(x, y)
    n_tokens = 4 * 4  # 32 px / stride 8
    assert out.logits.shape == (6, C)
    assert out.scene_probs.shape == (6, K) and out.attention.shape == (6, C, n_tokens)
    assert out.adjacency.shape == (6, C, C)
    assert (model.gnn is None) == (T == 0)
    assert model.head.in_features == (2 if T else 1) * model.feat_dim
    loss, terms = SALGLLoss(cfg)(out.logits, out.scene_probs, y)
    assert all(torch.isfinite(v) for v in terms.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if K > 1:
        assert model.scene_linear.weight.grad.abs().sum() > 0
    assert model.cooccurrence.counts.sum() > 0  # the batch was counted


def test_hard_mode_scene_gradient_comes_only_from_entropy_terms():
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, num_scenes=4, gnn_steps=2, soft_assignment=False)
    model = build_model(cfg, C).train()
    x, y = _batch()
    model(x, y)  # fill the counts so that the graph carries messages
    out = model(x, y)
    _, terms = SALGLLoss(cfg)(out.logits, out.scene_probs, y)
    terms_grad = torch.autograd.grad(out.logits.sum() + 0 * out.scene_probs.sum(),
                                     model.scene_linear.weight, allow_unused=True)[0]
    assert terms_grad is None or terms_grad.abs().sum() == 0  # argmax: no path from logits
    out = model(x, y)
    loss, _ = SALGLLoss(cfg)(out.logits, out.scene_probs, y)
    g = torch.autograd.grad(loss, model.scene_linear.weight)[0]
    assert g.abs().sum() > 0


def test_soft_mode_scene_gradient_also_flows_from_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, num_scenes=4, gnn_steps=2, soft_assignment=True)
    model = build_model(cfg, C).train()
    x, y = _batch()
    out = model(x, y)
    g = torch.autograd.grad(out.logits.sum(), model.scene_linear.weight)[0]
    assert g.abs().sum() > 0


def test_eval_needs_no_targets_and_training_does():
    model = build_model(ModelConfig(**SMALL), C)
    x, y = _batch()
    with pytest.raises(ValueError, match="needs targets"):
        model.train()(x)
    model.eval()
    before = model.cooccurrence.counts.clone()
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (6, C)
    assert torch.equal(model.cooccurrence.counts, before)


def test_current_batch_contributes_before_use():
    # Official behaviour: at iteration 0 the adjacency is built from the first batch itself.
    model = build_model(ModelConfig(**SMALL, num_scenes=1), C).train()
    x, y = _batch()
    out = model(x, y)
    counts = y.t() @ y
    expected = counts / (torch.diagonal(counts).unsqueeze(-1) + 1e-8)
    torch.testing.assert_close(out.adjacency[0], expected)


def test_label_embedding_sources(tmp_path):
    import numpy as np

    vec = np.random.default_rng(0).normal(size=(C, 10))
    path = tmp_path / "emb.npy"
    np.save(path, vec)
    m = build_model(ModelConfig(**{**SMALL, "label_embedding": str(path)}), C)
    assert "label_embedding.weight" in dict(m.named_buffers())  # fixed, as the official BERT vectors
    assert m.label_embedding.dim == 10
    learned = build_model(ModelConfig(**SMALL), C)
    assert "label_embedding.weight" in dict(learned.named_parameters())
    fixed = build_model(ModelConfig(**{**SMALL, "label_embedding": "random"}), C)
    assert "label_embedding.weight" in dict(fixed.named_buffers())
    with pytest.raises(ValueError, match="classes"):
        build_model(ModelConfig(**{**SMALL, "label_embedding": str(path)}), C + 1)
    with pytest.raises(ValueError, match="does not exist"):
        build_model(ModelConfig(**{**SMALL, "label_embedding": str(tmp_path / "missing.npy")}), C)


def test_official_bert_vectors_load():
    from pathlib import Path

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "label_embeddings"
    if not shared.is_dir():
        pytest.skip("../shared/data/label_embeddings is absent")
    m = build_model(ModelConfig(**{**SMALL, "label_embedding": str(shared / "voc2007" / "bert.npy")}), 20)
    assert m.label_embedding.weight.shape == (20, 768)
    assert m.label_embedding.weight.dtype == torch.float32


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="enc_heads"):
        build_model(ModelConfig(**{**SMALL, "enc_heads": 7}), C)


def test_positional_encoding_changes_output():
    torch.manual_seed(0)
    a = build_model(ModelConfig(**SMALL, enc_dropout=0.0), C).eval()
    b = build_model(ModelConfig(**SMALL, enc_dropout=0.0, pos_encoding=True), C).eval()
    b.load_state_dict(a.state_dict())
    x, _ = _batch()
    with torch.no_grad():
        assert not torch.allclose(a(x).logits, b(x).logits)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_forward_backward_in_float64_and_bfloat16(dtype, soft):
    # Regression: soft scene assignment crashed for a non-float32 model (scene probabilities forced to
    # float32 against counts in the model's dtype).
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, num_scenes=3, gnn_steps=2, soft_assignment=soft, outmess=True)
    model = build_model(cfg, C).to(dtype).train()
    x, y = _batch()
    for _ in range(2):  # the second step uses counts that already hold a batch
        out = model(x.to(dtype), y)
        assert out.logits.dtype == dtype
        # Scene probabilities and adjacency: at least float32 (bf16 model), float64 for a float64 model.
        wide = torch.promote_types(dtype, torch.float32)
        assert out.scene_probs.dtype == wide and out.adjacency.dtype == wide
        loss, terms = SALGLLoss(cfg)(out.logits, out.scene_probs, y)
        assert all(torch.isfinite(v) for v in terms.values())
        model.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        assert model.scene_linear.weight.grad.abs().sum() > 0
    # The counts stay float32 under a bf16 model and sum over the scenes to the label co-occurrences of
    # the two batches. Hard assignment adds 0/1 products: exact. Soft assignment adds, in the counts' dtype,
    # n = 2 batches x B images x K scenes nonnegative terms s_k * y_i * y_j, each off by about an eps of
    # itself (a float32 softmax's K probabilities sum to 1 only within a few eps), and rounds n times at
    # most eps/2 of the total: within n * eps * (largest count), 36 * 12 eps = 5.1e-5 in float32 (4 eps,
    # 4.8e-7, seen on some CPUs). A tolerance from the dtype, not from one machine's numbers.
    counts = model.cooccurrence.counts
    assert counts.dtype == wide
    expected = 2 * (y.t() @ y).double()
    n_terms = 2 * len(y) * cfg.num_scenes
    atol = n_terms * torch.finfo(wide).eps * expected.max().item() if soft else 0.0
    torch.testing.assert_close(counts.sum(0).double(), expected, rtol=0, atol=atol)
    model.eval()
    with torch.no_grad():
        assert model(x.to(dtype)).logits.dtype == dtype


@pytest.mark.parametrize("source", ["oracle", "random"])
def test_given_scenes_select_counts_and_adjacency_without_a_classifier(source):
    torch.manual_seed(0)
    cfg = ModelConfig(**SMALL, num_scenes=3, gnn_steps=2, scene_source=source)
    model = build_model(cfg, C).train()
    assert model.scene_linear is None and not any("scene" in n for n, _ in model.named_parameters())
    x, y = _batch()
    scenes = torch.tensor([2, 0, 2, 1, 0, 2])
    out = model(x, y, scenes)
    assert out.scene_logits is None and torch.equal(out.scene_probs, torch.eye(3)[scenes])
    for k in range(3):  # hard assignment by the given ids: M_k = sum of y y^T over the images of scene k
        yk = y[scenes == k]
        torch.testing.assert_close(model.cooccurrence.counts[k], yk.t() @ yk, rtol=0, atol=0)
    torch.testing.assert_close(out.adjacency, model.cooccurrence.probabilities()[scenes])
    out.logits.sum().backward()  # every parameter is used: no dead scene classifier
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, scenes=scenes.flip(0)).scene_probs.argmax(1), scenes.flip(0))


def test_scene_ids_are_required_checked_and_refused_by_learned():
    x, y = _batch()
    oracle = build_model(ModelConfig(**SMALL, num_scenes=3, scene_source="oracle"), C).train()
    with pytest.raises(ValueError, match="needs each image's scene id"):
        oracle(x, y)
    with pytest.raises(ValueError, match=r"in \[0, 3\).*-1 means the dataset records no true scene"):
        oracle(x, y, torch.tensor([0, 1, -1, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        oracle(x, y, torch.tensor([0, 1, 3, 2, 0, 1]))
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        oracle(x, y, torch.tensor([0, 1]))
    assert oracle.cooccurrence.counts.sum() == 0  # nothing was counted by the refused calls
    learned = build_model(ModelConfig(**SMALL, num_scenes=3), C).train()
    with pytest.raises(ValueError, match="must not see them"):
        learned(x, y, torch.zeros(6, dtype=torch.long))


def test_random_scenes_are_fixed_balanced_and_split_specific():
    idx = torch.arange(4000)
    a = random_scenes(idx, "train", 4)
    assert a.dtype == torch.long and torch.equal(a, random_scenes(idx, "train", 4))
    assert torch.equal(random_scenes(idx[[7, 3, 3999]], "train", 4), a[[7, 3, 3999]])  # per image, not per batch
    assert (torch.bincount(a, minlength=4) - 1000).abs().max() < 150  # about uniform
    assert (a != random_scenes(idx, "val", 4)).float().mean() > 0.6  # the splits draw independently
    assert set(random_scenes(idx, "train", 1).tolist()) == {0}
