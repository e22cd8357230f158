"""Image-guided editing (method §7): harmonization, style transfer from an image and ROI-guided
generation, as library functions over a loaded model.

- Harmonization: a naively pasted composite is noised a little and denoised at the finest
  scale; a soft mask (`masks.harmonization_mask`) limits the change to the pasted region.
- Style transfer from an image: a content image, histogram-matched to the training image, is
  noised a little more and denoised at the finest scale.
- ROI-guided generation: a source box of the training image is copied into target boxes of the
  output through an x̂0 hook at every step of every scale but the finest (`regions`).

Images are float tensors in [-1, 1] (N×3×H×W for batches); pictures on the way in are uint8
H×W×3 arrays. Every mode batches through `pipeline.seeded_batches`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..devices import auto_batch_size
from ..pipeline import make_generator, progress_bar, seeded_batches
from ..pyramid import Pyramid, working_size
from .regions import ROI_WEIGHT, Box, roi_hooks
from ..checks import HARMONIZE_NOISE_LEVEL, STYLE_TRANSFER_NOISE_LEVEL
from ..samplers import denoise_at_scale, sample_pyramid



# -- pictures --------------------------------------------------------------------------------

def resize_like_training(picture: Image.Image, max_pixels: int) -> np.ndarray:
    """A picture at the size the training image's pixel cap rule gives it (method §1.2: shrink
    to W·H ≤ max_pixels, truncating), resized with LANCZOS like the pyramid levels; uint8 H×W×3.

    A picture of the training image's original size gets exactly the finest level's size.
    """
    w, h = working_size(picture.width, picture.height, max_pixels)
    if (w, h) != picture.size:
        picture = picture.resize((w, h), Image.LANCZOS)
    return np.array(picture.convert("RGB"), dtype=np.uint8)


def match_histograms(content: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching of uint8 H×W×3 `content` to `reference` (any size), as the
    reference does it (method §7.2): each distinct content value goes to the reference value at
    its quantile (cumulative count / total, on both sides), interpolated linearly between the
    reference's distinct values, and truncated into uint8 (the reference writes the float result
    into a uint8 array: truncation, not rounding, is what it shipped with). An image matched to
    itself is unchanged.
    """
    content = np.asarray(content, dtype=np.uint8)
    reference = np.asarray(reference, dtype=np.uint8)
    if content.ndim != 3 or reference.ndim != 3 or content.shape[2] != reference.shape[2]:
        raise ValueError(f"need two H×W×C pictures with the same channels, got {content.shape} and {reference.shape}")
    out = np.empty_like(content)
    for c in range(content.shape[2]):
        src = content[..., c].ravel()
        ref = reference[..., c].ravel()
        s_vals, s_inv, s_counts = np.unique(src, return_inverse=True, return_counts=True)
        r_vals, r_counts = np.unique(ref, return_counts=True)
        s_q = np.cumsum(s_counts) / src.size
        r_q = np.cumsum(r_counts) / ref.size
        mapped = np.interp(s_q, r_q, r_vals)
        out[..., c] = mapped.astype(np.uint8)[s_inv.ravel()].reshape(content.shape[:2])
    return out


def prepare_content(picture: Image.Image, pyramid: Pyramid, max_pixels: int) -> np.ndarray:
    """Style transfer's input: the content picture resized like the training image, then
    histogram-matched per channel to the finest training level (in this order, so that the
    denoiser's input has the training image's colour distribution exactly). uint8 H×W×3."""
    return match_histograms(resize_like_training(picture, max_pixels), pyramid.levels[-1])


# -- the modes -------------------------------------------------------------------------------

def _denoise_finest(loaded, picture: torch.Tensor, mask: torch.Tensor | None, num: int, seed: int,
                    t_start: int, batch_size: int | None, device, progress: bool, ancestral: bool,
                    desc: str, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """`num` denoisings of `picture` at the finest scale from t_start with γ = 0; with a mask,
    m · result + (1 - m) · picture."""
    device = torch.device(device)
    model = loaded.model.to(device).eval()
    schedule = loaded.schedule.to(device)
    c = picture.to(device).float()[None]
    m = None if mask is None else mask.to(device).float()
    if m is not None and tuple(m.shape[-2:]) != tuple(c.shape[-2:]):
        raise ValueError(f"mask {tuple(m.shape[-2:])} and composite {tuple(c.shape[-2:])} differ in size")
    bs = batch_size or auto_batch_size([tuple(c.shape[-2:])], model.dim, device)
    finest = loaded.pyramid.n_scales - 1

    with progress_bar(math.ceil(num / bs) * t_start, desc, progress) as bar:
        def one(n: int, s: int) -> torch.Tensor:
            gen = make_generator(device, s)
            x = c.expand(n, -1, -1, -1)
            noise = torch.randn(x.shape, generator=gen, device=device)
            result = denoise_at_scale(model, schedule, x, finest, t_start, noise, ancestral=ancestral,
                                      generator=gen, progress=bar)
            return result if m is None else m * result + (1 - m) * x

        return seeded_batches(num, bs, seed, one, generator)


@torch.no_grad()
def harmonize(loaded, composite: torch.Tensor, soft_mask: torch.Tensor, num: int = 1, seed: int = 0,
              noise_level: int = HARMONIZE_NOISE_LEVEL, batch_size: int | None = None,
              device: torch.device | str = "cpu", progress: bool = False,
              ancestral: bool = False, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Harmonize a naive composite (3×H×W in [-1, 1], already at its working size) with the
    soft mask (1×1×H×W in [0, 1], from `masks.harmonization_mask`): denoise at the finest scale
    from t = noise_level with γ = 0 (see `samplers.denoise_at_scale`), then keep the composite where the
    mask is 0: out = m · result + (1 - m) · composite (exactly the composite outside the mask)."""
    return _denoise_finest(loaded, composite, soft_mask, num, seed, noise_level, batch_size, device, progress,
                           ancestral, "harmonize", generator)


@torch.no_grad()
def style_transfer(loaded, content: torch.Tensor, num: int = 1, seed: int = 0,
                   noise_level: int = STYLE_TRANSFER_NOISE_LEVEL, batch_size: int | None = None,
                   device: torch.device | str = "cpu", progress: bool = False,
                   ancestral: bool = False, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Denoise `content` (3×H×W in [-1, 1]; histogram-matched and resized beforehand, see
    `prepare_content`) at the finest scale from t = noise_level with γ = 0, no mask."""
    return _denoise_finest(loaded, content, None, num, seed, noise_level, batch_size, device, progress,
                           ancestral, "style-transfer", generator)


@torch.no_grad()
def roi_generate(loaded, sizes_hw: Sequence[tuple[int, int]], start_t: Sequence[int], source: Box,
                 targets: Sequence[Box], num: int = 1, seed: int = 0, batch_size: int | None = None,
                 device: torch.device | str = "cpu", progress: bool = False,
                 weight: float = ROI_WEIGHT, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """ROI-guided generation (Fig. S10): random samples through the whole pyramid whose
    `targets` (finest output pixels) are pulled towards the training image's `source` box
    at every step of every scale but the finest. As in the reference, the draws are plain
    sampling's and scale 0 blends into the raw x̂0 before its clamp (method §7.3)."""
    device = torch.device(device)
    model = loaded.model.to(device).eval()
    schedule = loaded.schedule.to(device)
    gammas = loaded.gammas.to(device)
    hooks = roi_hooks(loaded.pyramid, sizes_hw, source, targets, weight)
    bs = batch_size or auto_batch_size(list(sizes_hw), model.dim, device)

    with progress_bar(math.ceil(num / bs) * sum(start_t), "roi-copy", progress) as bar:
        def one(n: int, s: int) -> torch.Tensor:
            return sample_pyramid(model, schedule, gammas, list(sizes_hw), list(start_t), n,
                                  generator=make_generator(device, s), device=device, progress=bar,
                                  hooks=hooks, hook_before_clamp=True)[-1]

        return seeded_batches(num, bs, seed, one, generator)
