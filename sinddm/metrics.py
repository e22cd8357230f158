"""Quality metrics for single-image generative models, vectorised in torch.

Every function takes pictures as uint8 arrays (H×W×3) or float tensors in [-1, 1]
(3×H×W, or N×3×H×W), the library's two picture types, and works on any device.

Measures (definitions exactly as implemented; see each function's docstring):

- `pixel_diversity`: per-pixel standard deviation over the samples of the grayscale
  (BT.601 luma) values, averaged over pixels, divided by the standard deviation of
  the training image's grayscale values (SinGAN's "diversity"; 0 for identical samples).
- `PatchSWD`: sliced Wasserstein-1 distance between the 7×7×3 patches of a sample and
  those of the training image, at several levels of a 2× box-filter pyramid, along a
  fixed set of random unit directions drawn from a seeded generator. Patch counts may
  differ (quantile matching), so samples of any size can be compared.
- `CopyMeasure`: a nearest-neighbour field (exact L2, 7×7 patches, at a reduced
  working resolution) from the sample to the training image; neighbouring positions
  whose offsets agree (within `tolerance` px) form coherent regions, and large
  coherent regions are chunks copied from the training image.
- `SIFID`: the Fréchet distance between the Gaussian
  statistics of InceptionV3 feature vectors of one sample and of the training image,
  at the 64-channel layer before the first max pooling and the 192-channel layer
  before the second (the network of pytorch-fid, in `sinddm.inception`; weights from a
  local file only).
- `frechet_distance`: ‖μ1-μ2‖² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½, by symmetric
  eigen-decompositions in float64 (no scipy).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import UserError
from .inception import TAPS, find_inception_weights, load_inception

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as Pillow's convert("L")


# ---------------------------------------------------------------------------------------
# picture conversion
# ---------------------------------------------------------------------------------------

def as_batch(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 H×W×3 arrays / float 3×H×W tensors in [-1, 1] (a list, or one N×3×H×W
    tensor) → float32 N×3×H×W in [-1, 1] on `device`. All must have the same size."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return images.to(device=device, dtype=torch.float32)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = [images]
    return torch.stack([as_image(x, device) for x in images])


def as_image(x, device: torch.device | str = "cpu") -> torch.Tensor:
    """One picture → float32 3×H×W in [-1, 1] on `device`."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected a uint8 H×W×3 array, got {x.dtype} {x.shape}")
        t = torch.from_numpy(np.array(x, dtype=np.uint8, copy=True)).permute(2, 0, 1).float() / 127.5 - 1.0
        return t.to(device)
    if isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[0] == 3:
        return x.to(device=device, dtype=torch.float32)
    raise ValueError(f"expected a uint8 H×W×3 array or a 3×H×W tensor, got {type(x).__name__}")


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W (any range) → N×H×W BT.601 luma in the same range."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1)


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
        batches = _same_size_batches(samples, chunk)
        n = sum(len(idx) for idx, _ in batches)
        out = torch.full((n, self.n_levels), float("nan"), dtype=torch.float64)
        for idx, x in batches:
            x = x.to(self.device)
            for level, sp in enumerate(self._sorted_projections(x)[:self.n_levels]):
                out[idx, level] = sliced_w1_sorted(sp, self.ref_sorted[level]).double().cpu()
        return out

    def __call__(self, samples, chunk: int = 8) -> list[float]:
        return self.per_level(samples, chunk).nanmean(dim=1).tolist()


def _same_size_batches(samples, chunk: int) -> list[tuple[list[int], torch.Tensor]]:
    """Group pictures by size into batches of at most `chunk`: [(indices, N×3×H×W)]."""
    if isinstance(samples, torch.Tensor) and samples.dim() == 4:
        return [(list(range(i, min(i + chunk, len(samples)))), samples[i:i + chunk].float())
                for i in range(0, len(samples), chunk)]
    if isinstance(samples, (np.ndarray, torch.Tensor)):  # one picture
        samples = [samples]
    imgs = [as_image(x) for x in samples]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, x in enumerate(imgs):
        groups.setdefault(tuple(x.shape[-2:]), []).append(i)
    out = []
    for idx in groups.values():
        for j in range(0, len(idx), chunk):
            part = idx[j:j + chunk]
            out.append((part, torch.stack([imgs[i] for i in part])))
    return out


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
        for idx, batch in _same_size_batches(samples, chunk):
            for i, r in zip(idx, region_stats(self.regions(batch), self.s.min_region)):
                out[i] = r
        return out


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
# SIFID (the network: sinddm.inception)
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
        batches = _same_size_batches(samples, chunk)
        n = sum(len(i) for i, _ in batches)
        out = {d: [float("nan")] * n for d in self.dims}
        for idx, x in batches:
            feats = self._features(x.to(self.device))
            with one_thread():
                for d in self.dims:
                    for j, i in enumerate(idx):
                        out[d][i] = frechet_distance(*gaussian_stats(feats[d][j]), *self.ref_stats[d])
        return out


# ---------------------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------------------

@dataclass
class EvalSettings:
    swd: SWDSettings = field(default_factory=SWDSettings)
    copy: CopySettings = field(default_factory=CopySettings)
    sifid: bool = True
    chunk: int = 8                 # pictures per batch through the networks


METRIC_NAMES = ["swd", "copy_mean_region", "copy_large_fraction", "copy_max_region", "sifid64", "sifid192"]


def _summary(values: list[float]) -> dict[str, float] | None:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def paired_difference(base: Sequence[float | None], other: Sequence[float | None]) -> dict[str, float] | None:
    """Mean per-sample difference `other - base` over pairs, with its standard error.

    Pair i is the same sampling seed drawn from two models, so most of the sample-to-sample
    spread cancels: `se` (from the differences) is usually far below `unpaired_se` (the
    two means' standard errors combined as if independent). Pairs with a missing value are
    dropped; None with fewer than 2 pairs left.
    """
    if len(base) != len(other):
        raise ValueError(f"paired values need equal lengths, got {len(base)} and {len(other)}")
    ok = [(a, b) for a, b in zip(base, other)
          if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    n = len(ok)
    if n < 2:
        return None
    a, b = (np.array(v, dtype=np.float64) for v in zip(*ok))
    d = b - a
    return {"n": n, "base_mean": float(a.mean()), "other_mean": float(b.mean()), "mean": float(d.mean()),
            "se": float(d.std(ddof=1) / math.sqrt(n)),
            "unpaired_se": float(math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / n))}


def evaluate(reference: np.ndarray, samples: list[np.ndarray], settings: EvalSettings | None = None,
             device: torch.device | str = "cpu", inception_weights: str | os.PathLike | None = None,
             progress: bool = False, names: list[str] | None = None) -> dict:
    """Every metric of `samples` (uint8 H×W×3) against `reference` (the training image).

    Returns {"per_sample": [{file, size_hw, swd, swd_levels, copy_*, sifid64, sifid192}],
    "aggregate": {metric: {mean, std, min, max}, "pixel_diversity": x}, "skipped":
    {metric: reason}, "settings": ..., "timing_s": {...}}. SIFID is skipped (with the
    reason) when no weights file is given or found; `inception_weights` names one.
    """
    settings = settings or EvalSettings()
    device = torch.device(device)
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to evaluate")
    names = names or [f"sample_{i:03d}" for i in range(n)]
    rows: list[dict] = [{"file": names[i], "size_hw": list(samples[i].shape[:2])} for i in range(n)]
    skipped: dict[str, str] = {}
    timing: dict[str, float] = {}
    weights_used = None
    bar = tqdm(total=3 * n, desc="metrics", unit="img", disable=not progress, dynamic_ncols=True)

    with torch.no_grad():
        t0 = time.perf_counter()
        batches = _same_size_batches(samples, settings.chunk)
        swd = PatchSWD(reference, settings.swd, device)
        for idx, batch in batches:
            levels = swd.per_level(batch, chunk=settings.chunk)
            for j, i in enumerate(idx):
                rows[i]["swd_levels"] = [None if math.isnan(v) else v for v in levels[j].tolist()]
                rows[i]["swd"] = float(levels[j].nanmean())
            bar.update(len(idx))
        timing["swd"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        copy = CopyMeasure(reference, settings.copy, device)
        for idx, batch in batches:
            for i, r in zip(idx, copy(batch, chunk=len(idx))):
                rows[i].update(r)
            bar.update(len(idx))
        timing["copy"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if not settings.sifid:
            skipped["sifid"] = "disabled"
        else:
            path, why = find_inception_weights(inception_weights)
            if path is None:
                skipped["sifid"] = why
            else:
                try:
                    sifid = SIFID(reference, path, device)
                except ValueError as e:
                    if inception_weights is not None:
                        raise UserError(f"--inception-weights '{path}': {e}; give pytorch-fid's "
                                        "pt_inception-2015-12-05-*.pth") from None
                    skipped["sifid"] = f"weights '{path}' unusable: {e}"
                else:
                    weights_used = str(Path(path).resolve())
                    for idx, batch in batches:
                        vals = sifid(batch, chunk=settings.chunk)
                        for j, i in enumerate(idx):
                            rows[i]["sifid64"] = vals[64][j]
                            rows[i]["sifid192"] = vals[192][j]
                        bar.update(len(idx))
        if "sifid" in skipped:
            for r in rows:
                r["sifid64"] = r["sifid192"] = None
            bar.update(n)
        timing["sifid"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sizes = {tuple(s.shape[:2]) for s in samples}
        if n < 2:
            skipped["pixel_diversity"] = "needs at least 2 samples"
            diversity = None
        elif len(sizes) > 1:
            skipped["pixel_diversity"] = "samples differ in size"
            diversity = None
        else:
            diversity = pixel_diversity(samples, reference)
        timing["pixel_diversity"] = time.perf_counter() - t0
    bar.close()
    skipped["lpips_diversity"] = "not implemented: LPIPS needs pretrained network weights"

    aggregate: dict = {"pixel_diversity": diversity}
    for m in METRIC_NAMES:
        aggregate[m] = _summary([r.get(m) for r in rows])
    timing["total"] = sum(timing.values())
    return {"per_sample": rows, "aggregate": aggregate, "skipped": skipped,
            "settings": {"swd": asdict(settings.swd), "copy": asdict(settings.copy),
                         "sifid": {"taps": {"64": "Conv2d_2b_3x3 (before the first max pool)",
                                            "192": "Conv2d_4a_3x3 (before the second max pool)"},
                                   "input": "native size, [-1, 1]", "weights": weights_used}},
            "timing_s": timing}
