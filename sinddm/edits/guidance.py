"""Text guidance with CLIP (method §6, supplement E): templates, loss, the fill-factor mask, guided loops.

The CLIP model itself comes from `sinddm.edits.clip.load_clip`. Pieces, each usable on its own:

- `ViewAugmenter` (in `sinddm.edits.clip_views`): 16 augmented views per image as batched,
  differentiable tensor ops.
- `TextGuide`: text embeddings of the prompt in the 14 high-quality and 26 low-quality
  templates, the loss 1.2·(1 − mean cosine similarity) over a random template subset, and its
  gradient with respect to the images: every sample and view in ONE image-encoder forward.
- `threshold_gradient` (the fill-factor mask; bit-exact with the golden `clip/thresholded_q*`)
  and `guidance_step` (δ-normalised step inside the mask).
- `sample_guided` (DDPM ancestral steps at every scale, guidance through the samplers'
  x̂0 hook) and `optimize_roi` + `denoise` (text in a region).

The augmentation, loss and guided loops are this project's own code, written from the
description in docs/method.md §6 and supplement E.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .clip import LoadedClip
from .clip_views import DEFAULT_VIEW_MODE, N_VIEWS, VIEW_MODES, ViewAugmenter, accepts_any_size, encode_views
from ..errors import UserError
from ..samplers import ddpm_step, q_sample, upsample

# -- constants ---------------------------------------------------------------------------------

# method §6: the finer scales' templates.
HQ_TEMPLATES = [
    "photo of {}.", "high quality photo of {}.", "a photo of {}.", "the photo of {}.", "image of {}.",
    "an image of {}.", "high quality image of {}.", "a high quality image of {}.", "the {}.", "a {}.",
    "{}.", "{}", "{}!", "{}...",
]
# Supplement E.2: scale 0 and ROI editing (the ROI is blurry once upsampled for CLIP).
LQ_TEMPLATES = [
    "photo of {}.", "low quality photo of {}.", "low resolution photo of {}.", "low-res photo of {}.",
    "blurry photo of {}.", "pixelated photo of {}.", "a photo of {}.", "the photo of {}.", "image of {}.",
    "an image of {}.", "low quality image of {}.", "a low quality image of {}.", "low resolution image of {}.",
    "a low resolution image of {}.", "low-res image of {}.", "a low-res image of {}.", "blurry image of {}.",
    "a blurry image of {}.", "pixelated image of {}.", "a pixelated image of {}.", "the {}.", "a {}.", "{}.",
    "{}", "{}!", "{}...",
]
TEMPLATES = {"hq": HQ_TEMPLATES, "lq": LQ_TEMPLATES}

LOSS_WEIGHT = 1.2
UNGUIDED_TAIL = 3          # no guidance in the last 3 steps of the finest scale
STYLE_SUFFIX = " Style"

# -- loss and gradient -----------------------------------------------------------------------------


class TextGuide:
    """The CLIP score of images against a prompt, and its gradient.

    `score = -loss`, `loss = 1.2·(1 − mean cosine similarity)` between the image's views and a
    random subset of the prompt's template embeddings (subset size uniform in 1..n, drawn with
    replacement; drawn per sample so that results do not depend on the batch composition).
    `views`: 'reference', 'aspect' or 'square' (`sinddm.edits.clip_views`). `deterministic`: view 0
    alone and every template, the part of the score the reference record pins (no randomness).
    """

    def __init__(self, clip: LoadedClip, prompt: str, n_views: int = N_VIEWS,
                 generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None,
                 cuda_graphs: bool = False, views: str = DEFAULT_VIEW_MODE, deterministic: bool = False):
        if views not in VIEW_MODES:
            raise UserError(f"--clip-views '{views}': use one of {', '.join(VIEW_MODES)}")
        visual = clip.model.visual
        if views != "square" and not accepts_any_size(visual):
            raise UserError(f"--clip-views {views}: the image tower of CLIP {clip.name} takes square inputs only; "
                            "use --clip-views square")
        self.clip = clip
        self.prompt = prompt
        self.generator = generator
        self.autocast_dtype = autocast_dtype
        self.views = views
        self.deterministic = deterministic
        # On CUDA the image encoder's forward+backward is launch-bound (~1000 small kernels):
        # replay it as a CUDA graph per input shape (views of one image size share one shape).
        self.cuda_graphs = cuda_graphs and autocast_dtype is None
        patch = max(visual.patch_size) if views != "square" else 1
        self.augment = ViewAugmenter(size=clip.image_size, n_views=n_views, mode=views, min_side=patch)
        self.text = {k: clip.text_features([t.format(prompt) for t in v]) for k, v in TEMPLATES.items()}
        self.image_forwards = 0      # image-encoder calls (instrumentation)
        self.last_batch = 0          # images in the last image-encoder call

    def _encode(self, views01: torch.Tensor) -> torch.Tensor:
        x = ((views01 - self.clip.mean) / self.clip.std).to(self.clip.dtype)
        self.image_forwards += 1
        self.last_batch = x.shape[0]
        if self.cuda_graphs and x.is_cuda and x.requires_grad:
            encoder = self._graphed(x)
            if encoder is not None:
                return F.normalize(encoder(x).float(), dim=-1)
        ctx = (torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        with ctx:
            feats = self._forward(x)
        return F.normalize(feats.float(), dim=-1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return encode_views(self.clip.model.visual, x, self.views)

    def _graphed(self, x: torch.Tensor):
        """The image encoder captured (forward and backward) for x's shape; None if capture fails."""
        key = (tuple(x.shape), x.dtype, self.views)
        graphs = self.clip._graphs
        if key not in graphs:
            sample = torch.zeros(x.shape, dtype=x.dtype, device=x.device, requires_grad=True)
            try:
                graphs[key] = torch.cuda.make_graphed_callables(self._forward, (sample,))
            except Exception as e:  # an unsupported op or driver: run eagerly, say so once
                import warnings

                warnings.warn(f"CLIP encoder: CUDA graph capture failed ({type(e).__name__}: {e}); "
                              "running it eagerly")
                graphs[key] = None
        return graphs[key]

    def _template_weights(self, batch: int, n: int, device) -> torch.Tensor:
        """[batch, n]: each row averages a random multiset of k ~ U{1..n} templates."""
        k = torch.randint(1, n + 1, (batch,), generator=self.generator, device=device)
        idx = torch.randint(0, n, (batch, n), generator=self.generator, device=device)
        take = (torch.arange(n, device=device).unsqueeze(0) < k.unsqueeze(1)).float()
        w = torch.zeros(batch, n, device=device).scatter_add_(1, idx, take)
        return w / k.unsqueeze(1).float()

    def similarity(self, images: torch.Tensor, templates: str = "hq", augment: bool = True,
                   subset: bool = True) -> torch.Tensor:
        """[B] mean cosine similarity of each image (in [-1, 1]) with the prompt."""
        b = images.shape[0]
        img01 = (images.float() + 1) / 2
        views = self.augment(img01, self.generator) if augment else self.augment.view0(img01)
        nv = views.shape[0] // b
        feats = self._encode(views)                          # [B·V, D]
        text = self.text[templates]                          # [n, D]
        cos = (feats @ text.t()).view(b, nv, -1)             # [B, V, n]
        if subset:
            w = self._template_weights(b, text.shape[0], images.device)
        else:
            w = torch.full((b, text.shape[0]), 1.0 / text.shape[0], device=images.device)
        return (cos * w.unsqueeze(1)).sum(-1).mean(1)

    def score(self, images: torch.Tensor, templates: str = "hq", augment: bool = False) -> torch.Tensor:
        """[B] CLIP score −loss with every template (no subset); no augmentation by default."""
        with torch.no_grad():
            return -LOSS_WEIGHT * (1 - self.similarity(images, templates, augment=augment, subset=False))

    def score_grad(self, images: torch.Tensor, templates: str = "hq") -> tuple[torch.Tensor, torch.Tensor]:
        """([B] score, [B, 3, H, W] its gradient w.r.t. `images`): one encoder forward/backward."""
        with torch.enable_grad():
            x = images.detach().float().requires_grad_(True)
            random = not self.deterministic
            loss = LOSS_WEIGHT * (1 - self.similarity(x, templates, augment=random, subset=random))
            (g,) = torch.autograd.grad(-loss.sum(), x)
        return -loss.detach(), g


# -- mask and step ------------------------------------------------------------------------------------


def nearest_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile of [B, n] `values`, 'nearest' interpolation as torch.quantile picks it,
    without its size limit: rank q·(n−1) with q rounded to the values' dtype, the product exact
    (not rounded to float32: 0.7·49765 is 34835.4994, not 34835.5), then rounded half to even."""
    n = values.shape[1]
    q = float(torch.tensor(q, dtype=values.dtype))
    rank = round(q * (n - 1))                  # Python's round: half to even
    return values.kthvalue(rank + 1, dim=1).values


def threshold_gradient(g: torch.Tensor, fill_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The fill-factor mask (method §6; golden `clip/thresholded_q*`, q = 1 − fill_factor).

    e = ||g||₂ over channels per pixel; q = per-sample 'nearest' quantile 1 − f of e;
    m = e > q (strict: at f = 1 the minimum-energy pixel stays out); g ← max(e − q, 0)·g/e.
    Returns (m [B, 1, H, W] float, thresholded g).
    """
    e = g.norm(dim=1, keepdim=True)
    q = nearest_quantile(e.flatten(1), 1.0 - fill_factor).view(-1, 1, 1, 1)
    mask = (e > q).to(g.dtype)
    unit = torch.where(e > 0, g / e, torch.zeros_like(g))
    return mask, (e - q).clamp(min=0) * unit


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def guidance_step(x0: torch.Tensor, g: torch.Tensor, mask: torch.Tensor | None, strength: float) -> torch.Tensor:
    """x̂0 ← clamp(x̂0 + η·δ·g·m), δ = ||x̂0·m|| / ||g·m|| per sample (0 where g·m = 0)."""
    m = mask if mask is not None else torch.ones_like(x0[:, :1])
    gm = g * m
    num, den = _per_sample_norm(x0 * m), _per_sample_norm(gm)
    delta = torch.where(den > 0, num / den.clamp(min=torch.finfo(den.dtype).tiny), torch.zeros_like(den))
    return (x0 + strength * delta * gm).clamp(-1, 1)


# -- guided sampling -------------------------------------------------------------------------------


@dataclass
class GuidanceParams:
    strength: float = 0.3        # η
    fill_factor: float = 0.3     # f
    momentum: float = 0.2        # λ (0.2 in the reference, 0.05 in the paper)
    guide_from: int = 1          # first guided scale
    unguided_tail: int = UNGUIDED_TAIL


@dataclass
class GuideEvent:
    """What one sampling step did (for callbacks and tests)."""

    scale: int
    t: int
    guided: bool
    x0_in: torch.Tensor | None = None     # x̂0 as the denoiser gave it (clamped)
    x0_out: torch.Tensor | None = None    # x̂0 after momentum and the CLIP step
    mask: torch.Tensor | None = None
    mask_built: bool = False
    score: torch.Tensor | None = None


class _GuideState:
    def __init__(self, guide: TextGuide, params: GuidanceParams):
        self.guide, self.p = guide, params
        self.mask: torch.Tensor | None = None
        self.prev: torch.Tensor | None = None
        self.event: GuideEvent | None = None

    def resize(self, size_hw) -> None:
        size_hw = tuple(size_hw)
        if self.mask is not None and tuple(self.mask.shape[-2:]) != size_hw:
            self.mask = upsample(self.mask, size_hw)
        if self.prev is not None and tuple(self.prev.shape[-2:]) != size_hw:
            self.prev = upsample(self.prev, size_hw)

    def hook(self, scale: int):
        templates = "lq" if scale == 0 else "hq"

        def step(x0: torch.Tensor, t: int) -> torch.Tensor:
            x_in = x0
            m, lam = self.mask, self.p.momentum
            if m is not None and self.prev is not None:
                x0 = (1 - m) * x0 + m * (lam * x0 + (1 - lam) * self.prev)
            score, g = self.guide.score_grad(x0, templates)
            built = m is None
            if built:
                m, g = threshold_gradient(g, self.p.fill_factor)
                self.mask = m
            x0 = guidance_step(x0, g, m, self.p.strength)
            self.prev = x0
            self.event = GuideEvent(scale, t, True, x_in, x0, m, built, score)
            return x0

        return step


class _Autocast(torch.nn.Module):
    """Run the denoiser under autocast (precision 'fast' on CUDA)."""

    def __init__(self, model, dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x, t, scale):
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return self.model(x, t, scale)


def autocast_model(model, dtype: torch.dtype | None):
    return model if dtype is None else _Autocast(model, dtype)


def is_guided_step(params: GuidanceParams, scale: int, n_scales: int, t: int, k: int, n_steps: int) -> bool:
    """Step k (t = n_steps-1-k) of `scale`: guided unless before `guide_from`, in the first half
    of scale 0 (supplement E.3), or in the last `unguided_tail` steps of the finest scale."""
    if scale < params.guide_from:
        return False
    if scale == 0 and k < n_steps // 2:
        return False
    if scale == n_scales - 1 and t < params.unguided_tail:
        return False
    return True


@torch.no_grad()
def sample_guided(model, schedule, sizes_hw: list[tuple[int, int]], start_t: list[int], batch: int,
                  guide: TextGuide | None, params: GuidanceParams, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu", init: torch.Tensor | None = None, first_scale: int = 0,
                  progress=None, on_step: Callable[[GuideEvent], None] | None = None) -> torch.Tensor:
    """Text-guided coarse-to-fine sampling (method §6): DDPM ancestral steps at every scale
    (γ = 0, scale 0's posterior variance); scale s ≥ 1 starts from the previous output,
    upsampled and noised to T[s]. With `init` (the result of scale first_scale−1), sampling
    starts at `first_scale`. `guide=None` (or η = 0) gives the unguided run with the same noise.

    Noise comes from `generator` only (the guide's augmentations use their own generator), so
    guided and unguided runs with the same seed share every noise draw.
    """
    device = torch.device(device)
    n = len(sizes_hw)
    state = _GuideState(guide, params) if guide is not None else None
    x = init
    for s in range(first_scale, n):
        steps = start_t[s]
        if s == 0:
            x = torch.randn((batch, 3, *sizes_hw[0]), generator=generator, device=device)
        else:
            if x is None:
                raise ValueError("sample_guided: `init` is required when first_scale > 0")
            x_up = upsample(x.to(device).float(), sizes_hw[s])
            if x_up.shape[0] != batch:
                x_up = x_up.expand(batch, -1, -1, -1)
            noise = torch.randn(x_up.shape, generator=generator, device=device)
            x = q_sample(schedule, x_up, steps, noise)
        if state is not None:
            state.resize(sizes_hw[s])
        for k, t in enumerate(range(steps - 1, -1, -1)):
            noise = torch.randn(x.shape, generator=generator, device=device)
            guided = state is not None and is_guided_step(params, s, n, t, k, steps)
            hook = state.hook(s) if guided else None
            x = ddpm_step(model, schedule, x, t, s, noise, hook)
            if on_step is not None:
                on_step(state.event if guided else GuideEvent(s, t, False))
            if progress is not None:
                progress.update(1)
        if s == 0 and state is not None:
            state.mask = None  # a mask made at scale 0 is too noisy: rebuilt at scale 1
    return x


def optimize_roi(guide: TextGuide, image: torch.Tensor, box: tuple[int, int, int, int], batch: int,
                 region: torch.Tensor | None = None, iterations: int = 100, step: float = 0.1,
                 progress=None) -> torch.Tensor:
    """Text in a region (method §6): the box (y, x, h, w) of `image` [1, 3, H, W] is optimised
    directly, `iterations` × (x ← clamp(x + step·δ·g), δ = ||x|| / ||g||) on the low-quality
    templates, CLIP seeing only the box; `region` [1, 1, H, W] (a mask image, optional) limits
    the change to its pixels. Returns [batch, 3, H, W]: the image with the result pasted back,
    identical to `image` outside the box (and outside `region`)."""
    y, x, h, w = box
    crop = image[:, :, y:y + h, x:x + w].float().expand(batch, -1, -1, -1).clone()
    m = None if region is None else region[:, :, y:y + h, x:x + w].float()
    for _ in range(iterations):
        _, g = guide.score_grad(crop, "lq")
        crop = guidance_step(crop, g, m, step)
        if progress is not None:
            progress.update(1)
    out = image.float().expand(batch, -1, -1, -1).clone()
    if m is not None:
        crop = torch.where(m > 0, crop, out[:, :, y:y + h, x:x + w])
    out[:, :, y:y + h, x:x + w] = crop
    return out
