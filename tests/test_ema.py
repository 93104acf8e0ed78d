import torch
from torch import nn

from salgl_core.ema import ModelEMA


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)
        self.register_buffer("counts", torch.zeros(2))


def test_ema_averages_weights_and_float_buffers_copies_integers():
    m = Tiny()
    ema = ModelEMA(m, decay=0.9)
    start = ema.module.lin.weight.clone()
    with torch.no_grad():
        m.lin.weight.add_(1.0)
        m.counts.fill_(10.0)
        m.bn.num_batches_tracked.fill_(7)
    ema.update(m)
    torch.testing.assert_close(ema.module.lin.weight, 0.9 * start + 0.1 * m.lin.weight)
    torch.testing.assert_close(ema.module.counts, torch.full((2,), 1.0))  # averaged, as official comat_ema
    assert ema.module.bn.num_batches_tracked.item() == 7
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_comat_ema_off_uses_live_counts():
    class WithCo(nn.Module):
        def __init__(self):
            super().__init__()
            self.cooccurrence = Tiny()

    m = WithCo()
    ema = ModelEMA(m, decay=0.9, comat_ema=False)
    m.cooccurrence.counts.fill_(10.0)
    ema.update(m)
    torch.testing.assert_close(ema.module.cooccurrence.counts, torch.full((2,), 10.0))
