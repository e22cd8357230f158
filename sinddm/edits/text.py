"""Text-guided edit modes (method §6.7) as library functions over a loaded model:

  text_content         new content from a prompt, guided from scale `guide_from` on (default 1)
  text_style           samples in a style: prompt + " Style", guided at the finest scale only
  text_style_transfer  the training image restyled: its level N-2 injected, the finest scale guided
  text_roi             content in a region of the training image (a box, or a 0/1 region mask)

Every function takes the CLIP to use (`clip`: a `ClipSpec`, default ViT-B/32 with OpenAI's weights)
and how CLIP sees x̂0 (`views`, method §6.3), and batches through `pipeline.seeded_batches`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from . import guidance
from .. import samplers
from .clip import ClipSpec
from .clip_views import DEFAULT_VIEW_MODE
from ..devices import auto_batch_size, resolve_precision
from .guidance import STYLE_SUFFIX, GuidanceParams
from ..pipeline import make_generator, progress_bar, seeded_batches

TEXT_BATCH_CAP = 16       # 16 samples × 16 views = 256 CLIP images per guided step
ROI_DENOISE_T = 3         # text-roi denoises the finest scale from t = 3 (method §6.7)
ROI_ITERATIONS = 100
ROI_STEP_SIZE = 0.1       # x ← clamp(x + 0.1 δ g) per iteration (method §6.7)
AUG_SEED_OFFSET = 0x5EED_C11B   # the views' generator: its own stream, so guidance never moves the noise


def make_guide(prompt: str, clip: ClipSpec | None, device: torch.device, precision: str = "fp32",
               views: str = DEFAULT_VIEW_MODE):
    """(TextGuide for `prompt`, the network's autocast dtype or None). precision 'fast' (CUDA
    only): bf16 denoiser and CLIP weights and a CUDA-graphed CLIP encoder; else fp32 everywhere."""
    from .clip import load_clip

    dtype = torch.bfloat16 if resolve_precision(precision, device) == "fast" else None
    loaded_clip = load_clip(clip or ClipSpec(), device, dtype=dtype or torch.float32)
    return guidance.TextGuide(loaded_clip, prompt, cuda_graphs=dtype is not None, views=views), dtype


def _batch_size(batch_size: int | None, sizes_hw, loaded, device) -> int:
    return batch_size or min(TEXT_BATCH_CAP, auto_batch_size(list(sizes_hw), loaded.model.dim, device))


def _generators(seed: int, device) -> tuple[torch.Generator, torch.Generator]:
    """The batch's noise generator and its views' generator."""
    return make_generator(device, seed % 2 ** 64), make_generator(device, (seed + AUG_SEED_OFFSET) % 2 ** 64)


def _guided_sampling(loaded, prompt: str, params: GuidanceParams, sizes_hw, start_t, num: int, seed: int,
                     first_scale: int, init: torch.Tensor | None, clip, views: str, batch_size: int | None,
                     device, precision: str, progress: bool, desc: str,
                     generator: torch.Generator | None = None) -> list[torch.Tensor]:
    device = torch.device(device)
    sizes_hw, start_t = list(sizes_hw), list(start_t)
    guide, dtype = make_guide(prompt, clip, device, precision, views)
    model = guidance.autocast_model(loaded.model.to(device).eval(), dtype)
    schedule = loaded.schedule.to(device)
    init = None if init is None else init.to(device)
    bs = _batch_size(batch_size, sizes_hw, loaded, device)
    with progress_bar(math.ceil(num / bs) * sum(start_t[first_scale:]), desc, progress) as bar:
        def one(n: int, s: int) -> torch.Tensor:
            gen, guide.generator = _generators(s, device)
            return guidance.sample_guided(model, schedule, sizes_hw, start_t, n, guide, params, generator=gen,
                                          device=device, init=init, first_scale=first_scale, progress=bar)

        return seeded_batches(num, bs, seed, one, generator)


def text_content(loaded, prompt: str, num: int = 1, seed: int = 0, sizes_hw: Sequence | None = None,
                 start_t: Sequence[int] | None = None, strength: float = 0.3, fill_factor: float = 0.3,
                 momentum: float = 0.2, guide_from: int = 1, clip: ClipSpec | None = None,
                 views: str = DEFAULT_VIEW_MODE, batch_size: int | None = None, device="cpu",
                 precision: str = "fp32", progress: bool = False,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """New content from `prompt`: CLIP guidance from scale `guide_from` on, inside a mask covering
    `fill_factor` of the image (method §6.5–6.7)."""
    params = GuidanceParams(strength=strength, fill_factor=fill_factor, momentum=momentum, guide_from=guide_from)
    return _guided_sampling(loaded, prompt.strip(), params, sizes_hw or loaded.pyramid.sizes_hw,
                            start_t or loaded.start_t, num, seed, 0, None, clip, views, batch_size, device,
                            precision, progress, "text-content", generator)


def text_style(loaded, prompt: str, num: int = 1, seed: int = 0, sizes_hw: Sequence | None = None,
               start_t: Sequence[int] | None = None, strength: float = 0.3, fill_factor: float = 1.0,
               momentum: float = 0.05, clip: ClipSpec | None = None, views: str = DEFAULT_VIEW_MODE,
               batch_size: int | None = None, device="cpu", precision: str = "fp32",
               progress: bool = False, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Samples in the style `prompt` names (prompt + " Style"), guided at the finest scale only."""
    params = GuidanceParams(strength=strength, fill_factor=fill_factor, momentum=momentum,
                            guide_from=loaded.pyramid.n_scales - 1)
    return _guided_sampling(loaded, prompt.strip() + STYLE_SUFFIX, params, sizes_hw or loaded.pyramid.sizes_hw,
                            start_t or loaded.start_t, num, seed, 0, None, clip, views, batch_size, device,
                            precision, progress, "text-style", generator)


def text_style_transfer(loaded, prompt: str, num: int = 1, seed: int = 0, start_t: Sequence[int] | None = None,
                        strength: float = 0.3, fill_factor: float = 1.0, momentum: float = 0.05,
                        clip: ClipSpec | None = None, views: str = DEFAULT_VIEW_MODE,
                        batch_size: int | None = None, device="cpu", precision: str = "fp32",
                        progress: bool = False, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The training image restyled by `prompt`: its level N-2 is injected as scale N-2's result and
    the finest scale is sampled with style guidance."""
    n = loaded.pyramid.n_scales
    if n < 2:
        raise ValueError("text-style-transfer needs a model with at least 2 scales")
    params = GuidanceParams(strength=strength, fill_factor=fill_factor, momentum=momentum, guide_from=n - 1)
    init = loaded.pyramid.level_tensor(n - 2).unsqueeze(0)
    return _guided_sampling(loaded, prompt.strip() + STYLE_SUFFIX, params, loaded.pyramid.sizes_hw,
                            start_t or loaded.start_t, num, seed, n - 1, init, clip, views, batch_size, device,
                            precision, progress, "text-style-transfer", generator)


def text_roi(loaded, prompt: str, box: tuple[int, int, int, int], region: torch.Tensor | None = None,
             num: int = 1, seed: int = 0, iterations: int = ROI_ITERATIONS, step_size: float = ROI_STEP_SIZE,
             clip: ClipSpec | None = None, views: str = DEFAULT_VIEW_MODE, batch_size: int | None = None,
             device="cpu", precision: str = "fp32", progress: bool = False,
             generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Content from `prompt` inside `box` (y, x, h, w at the finest scale; `region`, 1×1×H×W 0/1,
    limits it further): the region is optimised with CLIP, pasted back, then the finest scale is
    denoised from t = 3 with DDPM steps."""
    device = torch.device(device)
    guide, dtype = make_guide(prompt.strip(), clip, device, precision, views)
    model = guidance.autocast_model(loaded.model.to(device).eval(), dtype)
    schedule = loaded.schedule.to(device)
    finest = loaded.pyramid.n_scales - 1
    image = loaded.pyramid.level_tensor(finest).unsqueeze(0).to(device)
    region = region.to(device) if region is not None else None
    bs = _batch_size(batch_size, [loaded.pyramid.sizes_hw[-1]], loaded, device)
    with progress_bar(math.ceil(num / bs) * (iterations + ROI_DENOISE_T), "text-roi", progress) as bar:
        def one(n: int, s: int) -> torch.Tensor:
            gen, guide.generator = _generators(s, device)
            pasted = guidance.optimize_roi(guide, image, tuple(box), n, region=region, iterations=iterations,
                                           step=step_size, progress=bar)
            noise = torch.randn(pasted.shape, generator=gen, device=device)
            x = samplers.denoise_at_scale(model, schedule, pasted, finest, ROI_DENOISE_T, noise=noise,
                                          ancestral=True, generator=gen, progress=bar)
            return x.float().clamp(-1, 1)

        return seeded_batches(num, bs, seed, one, generator)
