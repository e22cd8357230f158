"""Patch sliced-Wasserstein distance (SWD) between samples and the training image.

`PatchSWD`: sliced Wasserstein-1 distance between the 7×7×3 patches of a sample and
those of the training image, at several levels of a 2× box-filter pyramid, along a
fixed set of random unit directions drawn from a seeded generator. Patch counts may
differ (quantile matching), so samples of any size can be compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .images import as_image, same_size_batches


# ---------------------------------------------------------------------------------------
# sorting and quantile matching
# ---------------------------------------------------------------------------------------

def sort_last(x: torch.Tensor) -> torch.Tensor:
    """Sort along the last dimension (numpy's SIMD sort on the CPU: ~5x torch's there)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return torch.sort(x, dim=-1).values


def resample_sorted(a: torch.Tensor, q: int) -> torch.Tensor:
    """The empirical quantile function of sorted rows `a` (…×n) at q levels (i+½)/q.

    Linear interpolation between order statistics at position p·n - ½; for q = n this
    returns `a` itself, so equal counts reduce to plain sorted matching.
    """
    n = a.shape[-1]
    if q == n:
        return a
    pos = ((torch.arange(q, device=a.device, dtype=torch.float64) + 0.5) * (n / q) - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo).to(a.dtype)
    return a[..., lo] * (1 - w) + a[..., hi] * w


def sliced_w1_sorted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Wasserstein-1 between 1-D empirical distributions given as sorted rows.

    a: …×K×n, b: K×m (or broadcastable). Both are matched at q = min(n, m) quantile
    levels; the result is the mean |Q_a - Q_b| over levels and over the K rows (…).
    """
    q = min(a.shape[-1], b.shape[-1])
    return (resample_sorted(a, q) - resample_sorted(b, q)).abs().mean(dim=(-1, -2))


# ---------------------------------------------------------------------------------------
# patch sliced-Wasserstein distance
# ---------------------------------------------------------------------------------------

@dataclass
class SWDSettings:
    patch: int = 7             # patch side (px)
    levels: int = 4            # pyramid levels: full size, 1/2, 1/4, 1/8 (box filter, 2×2)
    projections: int = 128     # random unit directions per level
    max_patches: int = 8192    # per image and level: positions on a regular stride grid
    min_side: int = 16         # a level needs this short side (else the pyramid stops)
    seed: int = 0              # the directions' generator


def box_pyramid(x: torch.Tensor, levels: int, min_side: int) -> list[torch.Tensor]:
    """[x, avgpool2(x), avgpool2²(x), …] while the short side stays ≥ min_side."""
    out = [x]
    while len(out) < levels and min(out[-1].shape[-2:]) // 2 >= min_side:
        out.append(F.avg_pool2d(out[-1], 2))
    return out


def _grid_stride(h: int, w: int, patch: int, max_patches: int) -> int:
    n = (h - patch + 1) * (w - patch + 1)
    return max(1, math.ceil(math.sqrt(n / max_patches)))


class PatchSWD:
    """Sliced W1 between the patch distributions of samples and one reference picture.

    At pyramid level l, every patch position p on a regular grid of stride s_l (chosen
    per picture so that at most `max_patches` positions remain; stride 1 when fewer)
    gives the 147-vector P(p) of the 7×7×3 patch (values in [-1, 1]). For K unit
    directions u_k (Gaussian, normalised; drawn from torch.Generator seeded with
    `seed`, new ones for each level) the projections <P(p), u_k> of sample and
    reference are sorted and compared at min(n, m) quantile levels:

        SWD_l = mean_k mean_i |Q_sample,k(i) - Q_reference,k(i)|

    and the reported `swd` is the mean of SWD_l over the levels both pictures have.
    A picture against itself gives exactly 0.
    """

    def __init__(self, reference, settings: SWDSettings | None = None, device: torch.device | str = "cpu"):
        self.s = settings or SWDSettings()
        self.device = torch.device(device)
        ref = as_image(reference, self.device)[None]
        gen = torch.Generator().manual_seed(self.s.seed)
        d = 3 * self.s.patch ** 2
        self.weights = []
        for _ in range(self.s.levels):
            u = torch.randn(self.s.projections, d, generator=gen, dtype=torch.float32)
            u = u / u.norm(dim=1, keepdim=True)
            self.weights.append(u.view(-1, 3, self.s.patch, self.s.patch).to(self.device))
        self.ref_sorted = [p[0] for p in self._sorted_projections(ref)]

    @property
    def n_levels(self) -> int:
        return len(self.ref_sorted)

    def _sorted_projections(self, x: torch.Tensor) -> list[torch.Tensor]:
        """N×3×H×W → per level, N×K×n sorted projections."""
        out = []
        for level, img in enumerate(box_pyramid(x, self.s.levels, self.s.min_side)):
            h, w = img.shape[-2:]
            if min(h, w) < self.s.patch:
                break
            stride = _grid_stride(h, w, self.s.patch, self.s.max_patches)
            proj = F.conv2d(img, self.weights[level], stride=stride)  # N×K×h'×w'
            out.append(sort_last(proj.flatten(2)))
        return out

    def per_level(self, samples, chunk: int = 8) -> torch.Tensor:
        """N×L float64 SWD per sample and level (NaN where a sample lacks a level)."""
        batches = same_size_batches(samples, chunk)
        n = sum(len(idx) for idx, _ in batches)
        out = torch.full((n, self.n_levels), float("nan"), dtype=torch.float64)
        for idx, x in batches:
            x = x.to(self.device)
            for level, sp in enumerate(self._sorted_projections(x)[:self.n_levels]):
                out[idx, level] = sliced_w1_sorted(sp, self.ref_sorted[level]).double().cpu()
        return out

    def __call__(self, samples, chunk: int = 8) -> list[float]:
        return self.per_level(samples, chunk).nanmean(dim=1).tolist()
