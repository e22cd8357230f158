"""The CLIP path of text guidance against the published implementation (tests/golden/clip_reference.pt)."""

import torch

from sinddm import guidance as G


def test_threshold_rank_is_torch_quantiles():
    """The mask's quantile picks the element torch.quantile('nearest') picks, at every size; the
    record's 167×298 mask (q·(n−1) = 0.7·49765, within 1e-3 of a half) depends on it."""
    gen = torch.Generator().manual_seed(0)
    cases = [(49766, 0.7), (480, 0.5), (480, 0.8), (16, 0.7), (2, 0.5), (7, 0.0), (7, 1.0)]
    cases += [(int(torch.randint(2, 5000, (1,), generator=gen)), float(torch.rand(1, generator=gen)))
              for _ in range(200)]
    for n, q in cases:
        v = torch.randn(2, n, generator=gen)
        want = torch.quantile(v, q, dim=1, interpolation="nearest")
        assert torch.equal(G.nearest_quantile(v, q), want), (n, q)
