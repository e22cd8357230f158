"""SIFID: the Fréchet distance between InceptionV3 feature statistics of a sample and of the training image.

- `frechet_distance`: ‖μ1-μ2‖² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½, by symmetric
  eigen-decompositions in float64 (no scipy).
- `SIFID`: that distance between the Gaussian statistics of the feature vectors of one
  sample and of the training image, at the 64-channel layer before the first max pooling
  and the 192-channel layer before the second (the network of pytorch-fid, in
  `sinddm.eval.inception`; weights from a local file only).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Sequence

import torch

from .images import as_image, same_size_batches
from .inception import TAPS, load_inception


# ---------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------

@contextmanager
def one_thread():
    """Small dense linear algebra (eigh of 64..192-square matrices) runs several times
    faster on one thread than on two busy ones; restore the thread count afterwards."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """n×C feature vectors → (mean, unbiased covariance) in float64."""
    f = features.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.t() @ c / max(1, f.shape[0] - 1)


def _sym_sqrt(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((a + a.t()) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.t()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ1-μ2‖² + tr Σ1 + tr Σ2 - 2 tr √(Σ1^½ Σ2 Σ1^½), float64.

    tr √(Σ1 Σ2) equals tr √(Σ1^½ Σ2 Σ1^½) (similar matrices); the latter is symmetric
    PSD, so both roots come from symmetric eigen-decompositions (negative rounding
    eigenvalues clamped to 0). No scipy.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).flatten() for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    s1, s2 = torch.atleast_2d(s1), torch.atleast_2d(s2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape[0] != mu1.shape[0]:
        raise ValueError(f"mismatched statistics: {tuple(mu1.shape)}/{tuple(s1.shape)} vs "
                         f"{tuple(mu2.shape)}/{tuple(s2.shape)}")
    with one_thread():
        r1 = _sym_sqrt(s1)
        m = r1 @ s2 @ r1
        tr_covmean = torch.linalg.eigvalsh((m + m.t()) / 2).clamp(min=0).sqrt().sum()
    d = mu1 - mu2
    return float(d @ d + s1.trace() + s2.trace() - 2 * tr_covmean)


# ---------------------------------------------------------------------------------------
# SIFID (the network: sinddm.eval.inception)
# ---------------------------------------------------------------------------------------

SIFID_TAPS = {64: "pre_pool1", 192: "pre_pool2"}


class SIFID:
    """Single-image FID of each sample against the training image, at 64 and 192 channels.

    Pictures go in at their own size (no resize), as [-1, 1] values (pytorch-fid's
    normalisation of [0, 1] input). For one picture the feature map C×h×w is h·w
    vectors of C dimensions; their mean and unbiased covariance are compared with the
    training image's by `frechet_distance`.
    """

    def __init__(self, reference, weights: str | os.PathLike, device: torch.device | str = "cpu",
                 dims: Sequence[int] = (64, 192)):
        self.device = torch.device(device)
        self.dims = tuple(dims)
        last = max((SIFID_TAPS[d] for d in self.dims), key=list(TAPS).index)
        self.net = load_inception(weights, last, self.device)
        feats = self._features(as_image(reference, self.device)[None])
        self.ref_stats = {d: gaussian_stats(f[0]) for d, f in feats.items()}

    @torch.no_grad()
    def _features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out = self.net(x, taps=[SIFID_TAPS[d] for d in self.dims])
        return {d: out[SIFID_TAPS[d]].flatten(2).transpose(1, 2).cpu() for d in self.dims}  # N×hw×C

    def __call__(self, samples, chunk: int = 8) -> dict[int, list[float]]:
        batches = same_size_batches(samples, chunk)
        n = sum(len(i) for i, _ in batches)
        out = {d: [float("nan")] * n for d in self.dims}
        for idx, x in batches:
            feats = self._features(x.to(self.device))
            with one_thread():
                for d in self.dims:
                    for j, i in enumerate(idx):
                        out[d][i] = frechet_distance(*gaussian_stats(feats[d][j]), *self.ref_stats[d])
        return out
