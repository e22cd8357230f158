"""Masks for the edit modes: harmonization's soft mask made as the reference makes it (method
§7.1), and the binary region masks of the text modes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MASK_DILATE_RADIUS = 7        # disk radius, px
MASK_BLUR_SIGMA = 5.0         # Gaussian σ, px
MASK_BLUR_TRUNCATE = 4.0      # kernel half-width in σ (scikit-image / SciPy's default)


def disk_kernel(radius: int) -> torch.Tensor:
    """(2r+1)² float kernel: 1 where dy² + dx² ≤ r²."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return ((d[:, None] ** 2 + d[None, :] ** 2) <= radius ** 2).float()


def gaussian_kernel1d(sigma: float, truncate: float = MASK_BLUR_TRUNCATE) -> torch.Tensor:
    """Normalised float64 1-D Gaussian over ±int(truncate·σ + 0.5), as SciPy's gaussian_filter
    (and so scikit-image's `filters.gaussian`) builds it."""
    radius = int(truncate * sigma + 0.5)
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (d / sigma) ** 2)
    return k / k.sum()


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a float 0/1 N×1×H×W mask with a disk (outside the image counts as 0)."""
    if radius <= 0:
        return mask
    k = disk_kernel(radius).to(mask)[None, None]
    return (F.conv2d(mask, k, padding=radius) > 0.5).to(mask.dtype)


def gaussian_blur(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N×1×H×W in float64, rows then columns, edges replicated
    (scikit-image's default 'nearest' mode): a region touching the border stays full there.
    Farther than the kernel's radius from any non-zero pixel the result is exactly 0."""
    if sigma <= 0:
        return mask
    k = gaussian_kernel1d(sigma)
    r = k.numel() // 2
    x = F.pad(mask.double(), (0, 0, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    x = F.pad(x, (r, r, 0, 0), mode="replicate")
    return F.conv2d(x, k.view(1, 1, 1, -1))


def mask_channel(picture: Image.Image | np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The mask picture as the reference reads it: resized to `size_hw` with LANCZOS (a no-op at
    that size already), then its first channel (red; grey for a grey picture), uint8 h×w.
    A bool array counts as 0/255."""
    if isinstance(picture, Image.Image):
        img = picture if picture.mode in ("L", "RGB") else picture.convert("RGB")
    else:
        a = np.asarray(picture)
        img = Image.fromarray(a.astype(np.uint8) * 255 if a.dtype == bool else a.astype(np.uint8))
    h, w = size_hw
    if img.size != (w, h):
        img = img.resize((w, h), Image.LANCZOS)
    a = np.asarray(img)
    return a if a.ndim == 2 else a[..., 0]


def harmonization_mask(picture: Image.Image | np.ndarray, size_hw: tuple[int, int],
                       radius: int = MASK_DILATE_RADIUS, sigma: float = MASK_BLUR_SIGMA) -> torch.Tensor:
    """The soft mask of harmonization (method §7.1), made as the reference makes it: the mask
    picture resized with LANCZOS to `size_hw` (the composite's working size), every non-zero
    pixel of its first channel (so LANCZOS ringing counts) dilated with a disk of `radius`,
    blurred with a Gaussian of `sigma` (scikit-image's border mode and truncation) and rescaled
    to [0, 1] by min–max. Returns 1×1×h×w float32.

    Pixels more than radius + int(4σ + 0.5) (27 px by default) rows or columns away from the
    mask's non-zero pixels are exactly 0, so there the harmonized output is exactly the composite.
    """
    m = torch.from_numpy((mask_channel(picture, size_hw) > 0).astype(np.float32))[None, None]
    if not bool(m.any()):
        raise ValueError("the mask is empty at the composite's working size")
    m = gaussian_blur(dilate(m, radius), sigma)
    lo, hi = m.min(), m.max()
    if float(hi - lo) <= 1e-12:  # the blurred mask covers everything evenly
        return torch.ones_like(m, dtype=torch.float32)
    return ((m - lo) / (hi - lo)).clamp(0, 1).float()
