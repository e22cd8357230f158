"""Image-guided editing (DESIGN §7, supplement F and Fig. S10): pure functions.

- ROI-guided generation: a source box of the training image is copied into target boxes
  of the output through an x̂0 hook at every step of every scale but the finest.
- Harmonization: a naively pasted composite is noised a little and denoised at the
  finest scale; a soft mask (dilated, blurred) limits the change to the pasted region.
- Style transfer from an image: a content image, histogram-matched to the training
  image, is noised a little more and denoised at the finest scale.

Boxes are `(y, x, h, w)` in finest-scale pixels. Images are float tensors in [-1, 1]
(N×3×H×W for batches); pictures on the way in are uint8 H×W×3 arrays.

The CLI modes (`sinddm edit RUN MODE ...`) live in `sinddm.edits.image`.
"""

from __future__ import annotations

import math
import re
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .pipeline import auto_batch_size, batch_seed
from .pyramid import Pyramid, working_size
from .samplers import X0Hook, default_noise_sampler, q_sample, sample_blended, sample_ddpm, upsample
from .schedule import Schedule

ROI_WEIGHT = 0.8              # x̂0[target] ← 0.8 · source + 0.2 · x̂0[target] (DESIGN §7)
HARMONIZE_START_T = 5         # DESIGN §7
STYLE_TRANSFER_START_T = 15   # DESIGN §7
MASK_DILATE_RADIUS = 7        # disk radius, px
MASK_BLUR_SIGMA = 5.0         # Gaussian σ, px
MASK_BLUR_TRUNCATE = 4.0      # kernel half-width in σ (scikit-image / SciPy's default)


# -- boxes -----------------------------------------------------------------------------------

class Box(NamedTuple):
    """A rectangle in pixels: top row, left column, height, width."""

    y: int
    x: int
    h: int
    w: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def __str__(self) -> str:
        return f"{self.y},{self.x},{self.h},{self.w}"


_BOX_RE = re.compile(r"\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*")


def parse_box(text: str) -> Box:
    """'y,x,h,w' (whole numbers, y, x >= 0, h, w >= 1) → Box; ValueError says what is wrong."""
    m = _BOX_RE.fullmatch(str(text))
    if not m:
        raise ValueError(f"expected a box as y,x,h,w (four whole numbers, e.g. 10,20,32,16), got {text!r}")
    box = Box(*(int(g) for g in m.groups()))
    if box.y < 0 or box.x < 0:
        raise ValueError(f"box {text!r}: y and x must be >= 0")
    if box.h < 1 or box.w < 1:
        raise ValueError(f"box {text!r}: h and w must be >= 1")
    return box


def box_outside(box: Box, size_hw: tuple[int, int]) -> bool:
    """Whether `box` reaches beyond an image of `size_hw`."""
    return box.y + box.h > size_hw[0] or box.x + box.w > size_hw[1]


def scale_box(box: Box, factor: float, size_hw: tuple[int, int]) -> Box:
    """`box` at a level `factor` times smaller than the finest: every number divided by
    `factor` and truncated (DESIGN §7); at least 1 px, shifted (never cut) to fit `size_hw`
    when truncation and the level's own rounding disagree by a pixel at the border."""
    h = min(max(1, int(box.h / factor)), size_hw[0])
    w = min(max(1, int(box.w / factor)), size_hw[1])
    y = min(int(box.y / factor), size_hw[0] - h)
    x = min(int(box.x / factor), size_hw[1] - w)
    return Box(y, x, h, w)


def resize_patch(patch: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of a 3×h×w or N×3×h×w patch."""
    batched = patch.dim() == 4
    p = patch if batched else patch[None]
    if tuple(p.shape[-2:]) != tuple(size_hw):
        p = F.interpolate(p, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=True)
    return p if batched else p[0]


# -- ROI-guided generation -------------------------------------------------------------------

def roi_copy_hook(source_patch: torch.Tensor, targets: Sequence[Box], weight: float = ROI_WEIGHT) -> X0Hook:
    """x0_hook writing `source_patch` (3×h×w in [-1, 1], one pyramid level's crop) into each
    target: x̂0[target] ← weight · resize(source) + (1 - weight) · x̂0[target].

    The patch is resized to each target's size (bilinear), so targets may differ in size from
    the source. Targets are applied in order (a later one wins where they overlap). The input
    x̂0 is not modified in place.
    """
    patches = [resize_patch(source_patch.float(), (t.h, t.w)) for t in targets]
    cache: dict = {}

    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        key = (x0.device, x0.dtype)
        if key not in cache:
            cache[key] = [p.to(device=x0.device, dtype=x0.dtype) for p in patches]
        out = x0.clone()
        for box, p in zip(targets, cache[key]):
            ys, xs = box.slices()
            out[..., ys, xs] = weight * p + (1 - weight) * out[..., ys, xs]
        return out

    return hook


def roi_hooks(pyramid: Pyramid, sizes_hw: Sequence[tuple[int, int]], source: Box, targets: Sequence[Box],
              weight: float = ROI_WEIGHT) -> list[X0Hook]:
    """One hook per output scale: scales 0..N-2 copy the source box of that pyramid level into
    the targets (both scaled by r^(N-1-s)); the finest scale gets None (DESIGN §7)."""
    n = len(sizes_hw)
    if n != pyramid.n_scales:
        raise ValueError(f"{n} output scales for a {pyramid.n_scales}-scale pyramid")
    r = pyramid.scale_factor
    hooks: list[X0Hook] = []
    for s in range(n - 1):
        f = r ** (n - 1 - s)
        src = scale_box(source, f, pyramid.sizes_hw[s])
        ys, xs = src.slices()
        patch = pyramid.level_tensor(s)[:, ys, xs]
        hooks.append(roi_copy_hook(patch, [scale_box(t, f, sizes_hw[s]) for t in targets], weight))
    hooks.append(None)
    return hooks


@torch.no_grad()
def sample_pyramid_hooked(model, schedule: Schedule, gammas: torch.Tensor, sizes_hw: Sequence[tuple[int, int]],
                          start_t: Sequence[int], batch: int, hooks: Sequence[X0Hook],
                          generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                          progress=None) -> list[torch.Tensor]:
    """`samplers.sample_pyramid` with its own x̂0 hook per scale (`hooks[s]`, None for none).

    Draws the same noise in the same order as `sample_pyramid(..., step_draws=False)` (the
    reference's ROI-guided loop makes no per-step draws at the finer scales): with every hook
    None the outputs are identical. Returns every scale's output.
    """
    outputs = []
    x = torch.randn((batch, 3, *sizes_hw[0]), generator=generator, device=device)
    x = sample_ddpm(model, schedule, x, 0, default_noise_sampler(x, generator), t_start=start_t[0],
                    x0_hook=hooks[0], progress=progress)
    outputs.append(x)
    for s in range(1, len(sizes_hw)):
        x_blurry = upsample(x, sizes_hw[s])
        noise = torch.randn(x_blurry.shape, generator=generator, device=device)
        x = sample_blended(model, schedule, x_blurry, s, start_t[s], gammas[s - 1], noise,
                           x0_hook=hooks[s], progress=progress)
        outputs.append(x)
    return outputs


# -- masks -----------------------------------------------------------------------------------

def binarize_mask(picture: Image.Image | np.ndarray) -> np.ndarray:
    """Any mask picture → bool H×W: a pixel is in when its grey level is at least 50 % (128)."""
    if isinstance(picture, Image.Image):
        grey = np.asarray(picture.convert("L"), dtype=np.uint8)
    else:
        a = np.asarray(picture)
        grey = a if a.ndim == 2 else np.asarray(Image.fromarray(a.astype(np.uint8)).convert("L"))
    return grey >= 128


def resize_mask(mask: np.ndarray | torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bool H×W → bool h×w: area-weighted (antialiased bilinear) resize, kept where ≥ 50 %."""
    m = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).float()[None, None]
    if tuple(m.shape[-2:]) != tuple(size_hw):
        m = F.interpolate(m, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=True)
    return m[0, 0] >= 0.5


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


# -- pictures --------------------------------------------------------------------------------

def resize_like_training(picture: Image.Image, max_pixels: int) -> np.ndarray:
    """A picture at the size the training image's pixel cap rule gives it (DESIGN §1.2: shrink
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


# -- finest-scale denoising (harmonization, style transfer) ----------------------------------

@torch.no_grad()
def denoise_at_finest(model, schedule: Schedule, x: torch.Tensor, scale: int, t_start: int,
                      noise: torch.Tensor, progress=None, ancestral: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise `x` (N×3×H×W, a finished picture) to t = t_start with `noise`, then denoise it at
    `scale` with γ = 0 through steps t_start-1 .. 0 (the finer scales' convention, DESIGN §5).

    Default: the finer-scale sampler (`sample_blended`) with every γ_t = 0, i.e. DDIM (σ = 0)
    steps on x̂0. γ = 0 because `x` is not a blurry upsample of a coarser output: there is no
    x̃ to mix back in. The deterministic steps keep everything else the unconditional finer
    scales do, and the only randomness is the one noise draw, so the result stays as close to
    `x` as t_start allows. `ancestral=True` runs DDPM ancestral steps instead (fresh noise from
    `generator` at every step, as `guidance.denoise` does for text-guided ROI edits).
    """
    if ancestral:
        x_t = q_sample(schedule, x, t_start, noise)
        return sample_ddpm(model, schedule, x_t, scale, default_noise_sampler(x_t, generator),
                           t_start=t_start, progress=progress)
    zeros = torch.zeros(schedule.num_timesteps, device=x.device, dtype=torch.float32)
    return sample_blended(model, schedule, x, scale, t_start, zeros, noise, progress=progress)


def _batches(num: int, batch_size: int, seed: int, device: torch.device,
             fn: Callable[[int, torch.Generator], torch.Tensor]) -> list[torch.Tensor]:
    """`fn(n, generator)` per batch; batch b draws from its own generator seeded with
    `batch_seed(seed, b)` (as `pipeline.generate` does). Returns 3×H×W tensors on the CPU."""
    out: list[torch.Tensor] = []
    for b in range(math.ceil(num / batch_size)):
        n = min(batch_size, num - b * batch_size)
        gen = torch.Generator(device=device).manual_seed(batch_seed(seed, b))
        out.extend(fn(n, gen).cpu())
    return out


def _progress_bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not progress, dynamic_ncols=True)


def _denoise_finest(loaded, picture: torch.Tensor, mask: torch.Tensor | None, num: int, seed: int,
                    t_start: int, batch_size: int | None, device, progress: bool, ancestral: bool,
                    desc: str) -> list[torch.Tensor]:
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

    with _progress_bar(math.ceil(num / bs) * t_start, desc, progress) as bar:
        def one(n, gen):
            x = c.expand(n, -1, -1, -1)
            noise = torch.randn(x.shape, generator=gen, device=device)
            result = denoise_at_finest(model, schedule, x, finest, t_start, noise, progress=bar,
                                       ancestral=ancestral, generator=gen)
            return result if m is None else m * result + (1 - m) * x

        return _batches(num, bs, seed, device, one)


@torch.no_grad()
def harmonize(loaded, composite: torch.Tensor, soft_mask: torch.Tensor, num: int = 1, seed: int = 0,
              t_start: int = HARMONIZE_START_T, batch_size: int | None = None,
              device: torch.device | str = "cpu", progress: bool = False,
              ancestral: bool = False) -> list[torch.Tensor]:
    """Harmonize a naive composite (3×H×W in [-1, 1], already at its working size) with the
    soft mask (1×1×H×W in [0, 1], from `harmonization_mask`): denoise at the finest scale from
    t_start with γ = 0 (see `denoise_at_finest`), then keep the composite where the mask is 0:
    out = m · result + (1 - m) · composite (exactly the composite outside the mask)."""
    return _denoise_finest(loaded, composite, soft_mask, num, seed, t_start, batch_size, device, progress,
                           ancestral, "harmonize")


@torch.no_grad()
def style_transfer(loaded, content: torch.Tensor, num: int = 1, seed: int = 0,
                   t_start: int = STYLE_TRANSFER_START_T, batch_size: int | None = None,
                   device: torch.device | str = "cpu", progress: bool = False,
                   ancestral: bool = False) -> list[torch.Tensor]:
    """Denoise `content` (3×H×W in [-1, 1]; histogram-matched and resized beforehand, see
    `prepare_content`) at the finest scale from t_start with γ = 0, no mask."""
    return _denoise_finest(loaded, content, None, num, seed, t_start, batch_size, device, progress,
                           ancestral, "style-transfer")


def prepare_content(picture: Image.Image, pyramid: Pyramid, max_pixels: int) -> np.ndarray:
    """Style transfer's input: the content picture resized like the training image, then
    histogram-matched per channel to the finest training level (in this order, so that the
    denoiser's input has the training image's colour distribution exactly). uint8 H×W×3."""
    return match_histograms(resize_like_training(picture, max_pixels), pyramid.levels[-1])


@torch.no_grad()
def roi_generate(loaded, sizes_hw: Sequence[tuple[int, int]], start_t: Sequence[int], source: Box,
                 targets: Sequence[Box], num: int = 1, seed: int = 0, batch_size: int | None = None,
                 device: torch.device | str = "cpu", progress: bool = False,
                 weight: float = ROI_WEIGHT) -> list[torch.Tensor]:
    """ROI-guided generation (Fig. S10): random samples through the whole pyramid whose
    `targets` (finest output pixels) are pulled towards the training image's `source` box
    at every step of every scale but the finest."""
    device = torch.device(device)
    model = loaded.model.to(device).eval()
    schedule = loaded.schedule.to(device)
    gammas = loaded.gammas.to(device)
    hooks = roi_hooks(loaded.pyramid, sizes_hw, source, targets, weight)
    bs = batch_size or auto_batch_size(list(sizes_hw), model.dim, device)

    with _progress_bar(math.ceil(num / bs) * sum(start_t), "roi-copy", progress) as bar:
        def one(n, gen):
            return sample_pyramid_hooked(model, schedule, gammas, sizes_hw, start_t, n, hooks,
                                         generator=gen, device=device, progress=bar)[-1]

        return _batches(num, bs, seed, device, one)
