"""How samples vary and how much they copy: pixel diversity and coherent NNF regions.

- `pixel_diversity`: per-pixel standard deviation over the samples of the grayscale
  (BT.601 luma) values, averaged over pixels, divided by the standard deviation of
  the training image's grayscale values (SinGAN's "diversity"; 0 for identical samples).
- `CopyMeasure`: a nearest-neighbour field (exact L2, 7×7 patches, at a reduced
  working resolution) from the sample to the training image; neighbouring positions
  whose offsets agree (within `tolerance` px) form coherent regions, and large
  coherent regions are chunks copied from the training image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .images import as_batch, as_image, grayscale, same_size_batches


# ---------------------------------------------------------------------------------------
# pixel diversity
# ---------------------------------------------------------------------------------------

def pixel_diversity(samples, reference) -> float:
    """mean over pixels of std over samples (grayscale) / std over pixels of the reference.

    Both standard deviations are population ones (divide by n). The samples must share
    one size; the reference may have another. 0 when all samples are identical.
    """
    x = grayscale(as_batch(samples).double())
    if x.shape[0] < 2:
        raise ValueError("pixel diversity needs at least 2 samples")
    ref = grayscale(as_image(reference)[None].double())
    ref_std = float(ref.std(correction=0))
    if ref_std == 0:
        return float("nan")
    return float(x.std(dim=0, correction=0).mean()) / ref_std


# ---------------------------------------------------------------------------------------
# copying: nearest-neighbour fields and coherent regions
# ---------------------------------------------------------------------------------------

@dataclass
class CopySettings:
    patch: int = 7             # patch side at the working resolution
    max_pixels: int = 4096     # working resolution: the reference is shrunk to at most this many px
    dims: int = 16             # patches compared in the reference's top principal components (0: all 147)
    tolerance: int = 1         # neighbouring offsets agree when they differ by ≤ this (each axis, px)
    min_region: float = 0.05   # "large" region: at least this fraction of the sample's positions


def connected_components(n: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Labels (the smallest node index of each component) of the graph on n nodes with
    undirected edges a[i]–b[i]: hook roots onto smaller roots, then jump pointers; each
    round at least halves the number of trees that still touch an edge."""
    parent = torch.arange(n, device=a.device)
    while True:
        pa, pb = parent[a], parent[b]
        lo, hi = torch.minimum(pa, pb), torch.maximum(pa, pb)
        keep = lo != hi
        if not bool(keep.any()):
            return parent
        parent.scatter_reduce_(0, hi[keep], lo[keep], reduce="amin")
        while True:
            nxt = parent[parent]
            if torch.equal(nxt, parent):
                break
            parent = nxt


def coherent_regions(offsets: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """(N×)h×w×2 integer NNF offsets → (N×)h×w region labels (unique across the batch).

    4-neighbours p and q = p + e join when their offsets agree within `tolerance` per
    axis, max|o(q) - o(p)| ≤ tolerance, and they are not matched to the same reference
    patch (o(q) - o(p) ≠ -e). The second rule keeps "hub" patches apart: when many
    unrelated positions match one reference patch, their offsets change by exactly one
    pixel per step, which the tolerance alone would chain into one huge region.
    """
    single = offsets.dim() == 3
    if single:
        offsets = offsets[None]
    n, h, w, _ = offsets.shape
    idx = torch.arange(n * h * w, device=offsets.device).view(n, h, w)
    a_parts, b_parts = [], []
    all_ = slice(None)
    for da, db, e in (((all_, all_, slice(1, None)), (all_, all_, slice(None, -1)), (0, 1)),   # right–left
                      ((all_, slice(1, None), all_), (all_, slice(None, -1), all_), (1, 0))):  # down–up
        diff = offsets[da] - offsets[db]
        same_target = (diff[..., 0] == -e[0]) & (diff[..., 1] == -e[1])
        agree = (diff.abs().amax(-1) <= tolerance) & ~same_target
        a_parts.append(idx[da][agree])
        b_parts.append(idx[db][agree])
    labels = connected_components(n * h * w, torch.cat(a_parts), torch.cat(b_parts)).view(n, h, w)
    return labels[0] if single else labels


def region_stats(labels: torch.Tensor, min_region: float) -> list[dict[str, float]]:
    """Per picture of (N×)h×w labels, with |R(p)| the size of the region of position p
    and n = h·w: copy_mean_region = mean_p |R(p)|/n (= Σ_R |R|²/n², the size of the
    region a random position lies in, as a fraction); copy_large_fraction = the share
    of positions whose region has |R| ≥ min_region·n; copy_max_region = max_R |R|/n."""
    if labels.dim() == 2:
        labels = labels[None]
    n = labels[0].numel()
    flat = labels.flatten(1)
    sizes = torch.bincount(labels.flatten(), minlength=labels.numel())
    frac = sizes[flat].double() / n  # N×n: each position's region size
    mean = frac.mean(1)
    large = (frac >= min_region - 1e-12).double().mean(1)
    biggest = frac.amax(1)
    return [{"copy_mean_region": float(a), "copy_large_fraction": float(b), "copy_max_region": float(c)}
            for a, b, c in zip(mean.tolist(), large.tolist(), biggest.tolist())]


class CopyMeasure:
    """How much of a sample is a coherent copy of a chunk of the training image.

    Both pictures are shrunk by the same factor f = max(1, sqrt(H·W / max_pixels))
    (H×W: the reference; bilinear with antialiasing), so a 250×200 image is compared
    at about 72×57 px. Every 7×7×3 patch (values in [-1, 1]) is projected onto the
    top `dims` principal components of the reference's patches. For every patch
    position p of the sample, NN(p) is the position of the reference patch at the
    smallest L2 distance in that space (exhaustive search; first index on ties), and
    the offset is o(p) = NN(p) - p. `coherent_regions` joins 4-neighbours whose offsets
    agree (within `tolerance` px per axis, and not matched to one and the same
    reference patch); its connected components are the coherent regions, summarised by
    `region_stats` relative to the sample's number of patch positions. The training
    image against itself gives one region covering everything (offset 0 everywhere).
    Regions are measured at the working resolution: a copied chunk of a full-size
    sample shows up shrunk by f, and flat areas (ambiguous matches) rarely count.
    """

    def __init__(self, reference, settings: CopySettings | None = None, device: torch.device | str = "cpu"):
        self.s = settings or CopySettings()
        self.device = torch.device(device)
        ref = as_image(reference, self.device)[None]
        h, w = ref.shape[-2:]
        self.factor = max(1.0, math.sqrt(h * w / self.s.max_pixels))
        ref = self._shrink(ref)
        self.ref_hw = tuple(ref.shape[-2:])
        self.ref_w = self.ref_hw[1] - self.s.patch + 1
        patches = F.unfold(ref, self.s.patch)[0].t()  # P×D, D = 3·patch²
        self.basis = None
        if 0 < self.s.dims < patches.shape[1]:
            centred = (patches - patches.mean(0)).double()
            _, vecs = torch.linalg.eigh(centred.t() @ centred)
            self.basis = vecs[:, -self.s.dims:].float().contiguous()  # D×dims, top components
            patches = patches @ self.basis
        self.ref_t = patches.t().contiguous()  # dims×P
        self.ref_sq = (patches ** 2).sum(1)

    def _shrink(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1.0:
            return x
        h, w = x.shape[-2:]
        size = (max(self.s.patch, round(h / self.factor)), max(self.s.patch, round(w / self.factor)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def nnf(self, samples) -> torch.Tensor:
        """N×h'×w'×2 (y, x) offsets from each sample patch to its nearest reference patch
        (h'×w'×2 for one picture). Samples of one call must share a size."""
        single = not (isinstance(samples, list) or (isinstance(samples, torch.Tensor) and samples.dim() == 4))
        x = self._shrink(as_batch(samples, self.device))
        n = x.shape[0]
        hh, ww = x.shape[-2] - self.s.patch + 1, x.shape[-1] - self.s.patch + 1
        q = F.unfold(x, self.s.patch).transpose(1, 2).reshape(n * hh * ww, -1)
        if self.basis is not None:
            q = q @ self.basis
        # argmin_j |q - r_j|² = argmin_j (|r_j|² - 2 q·r_j); rows in chunks to bound memory.
        rows = max(1, (1 << 24) // max(1, self.ref_t.shape[1]))
        nn_idx = torch.cat([torch.addmm(self.ref_sq, q[i:i + rows], self.ref_t, alpha=-2).argmin(1)
                            for i in range(0, q.shape[0], rows)]).view(n, hh, ww)
        ys, xs = torch.div(nn_idx, self.ref_w, rounding_mode="floor"), nn_idx % self.ref_w
        gy, gx = torch.meshgrid(torch.arange(hh, device=x.device), torch.arange(ww, device=x.device),
                                indexing="ij")
        off = torch.stack([ys - gy, xs - gx], dim=-1)
        return off[0] if single else off

    def regions(self, samples) -> torch.Tensor:
        return coherent_regions(self.nnf(samples), self.s.tolerance)

    def __call__(self, samples, chunk: int = 16) -> list[dict[str, float]] | dict[str, float]:
        """region_stats of each sample (a dict for one picture, a list for several)."""
        if not (isinstance(samples, list) or (isinstance(samples, torch.Tensor) and samples.dim() == 4)):
            return region_stats(self.regions(samples), self.s.min_region)[0]
        out: list = [None] * len(samples)
        for idx, batch in same_size_batches(samples, chunk):
            for i, r in zip(idx, region_stats(self.regions(batch), self.s.min_region)):
                out[i] = r
        return out
