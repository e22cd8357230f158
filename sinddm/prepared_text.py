"""The text-guided operations (method §6) as checked calls (see `prepared`)."""

from __future__ import annotations

import numpy as np
import torch

from . import checks as C
from .errors import ParameterError
from .prepared import Prepared, _common, _finest_scales, _sizes


def _clip(model, clip, clip_views) -> dict:
    """The CLIP spec (its weights reachable, or one line saying how to get them) and the view mode."""
    from .edits.clip import ClipSpec, resolve_clip
    from .edits.clip_views import DEFAULT_VIEW_MODE, VIEW_MODES

    if clip is not None and not isinstance(clip, (ClipSpec, str)):
        raise ParameterError("clip", f"must be a sinddm.edits.clip.ClipSpec, a model name or None, got {clip!r}")
    spec = clip if isinstance(clip, ClipSpec) else ClipSpec() if clip is None else ClipSpec(model=clip)
    views = C.choice("clip_views", DEFAULT_VIEW_MODE if clip_views is None else clip_views, VIEW_MODES)
    resolve_clip(spec)
    return dict(clip=spec, views=views)


def _guidance(strength, fill_factor, momentum) -> dict:
    return dict(strength=C.number("strength", strength, 0, 1), fill_factor=C.number("fill_factor", fill_factor, 0, 1),
                momentum=C.number("momentum", momentum, 0, 1))


def _run(model, fn, c: dict, progress, **kwargs):
    def run():
        return fn(model.tiled(c["tile"]), num=c["num"], seed=c["seed"], generator=c["generator"],
                  batch_size=c["batch_size"], device=model.device, precision=model.precision, progress=progress,
                  **kwargs)
    return run


def prepare_text_content(model, text, num=1, scale_hw=None, size=None, start_t=None, guide_from=1,
                         strength=0.3, fill_factor=0.3, momentum=0.2, seed=0, generator=None, clip=None,
                         clip_views=None, batch_size=None, tile=None, progress=False) -> Prepared:
    from .edits.text import text_content

    prompt, c = C.text(text), _common(model, num, seed, generator, batch_size, tile)
    sizes, ts = _sizes(model, scale_hw, size), C.start_t(start_t, model.loaded.start_t)
    g = _guidance(strength, fill_factor, momentum)
    first = C.whole("guide_from", guide_from, 0, model.pyramid.n_scales - 1)
    run = _run(model, text_content, c, progress, prompt=prompt, sizes_hw=sizes, start_t=ts, guide_from=first,
               **g, **_clip(model, clip, clip_views))
    return Prepared(run, "text_content")


def prepare_text_style(model, text, num=1, scale_hw=None, size=None, start_t=None, strength=0.3,
                       fill_factor=1.0, momentum=0.05, seed=0, generator=None, clip=None, clip_views=None,
                       batch_size=None, tile=None, progress=False) -> Prepared:
    from .edits.text import text_style

    prompt, c = C.text(text), _common(model, num, seed, generator, batch_size, tile)
    sizes, ts = _sizes(model, scale_hw, size), C.start_t(start_t, model.loaded.start_t)
    run = _run(model, text_style, c, progress, prompt=prompt, sizes_hw=sizes, start_t=ts,
               **_guidance(strength, fill_factor, momentum), **_clip(model, clip, clip_views))
    return Prepared(run, "text_style")


def prepare_text_style_transfer(model, text, num=1, start_t=None, strength=0.3, fill_factor=1.0, momentum=0.05,
                                seed=0, generator=None, clip=None, clip_views=None, batch_size=None, tile=None,
                                progress=False) -> Prepared:
    from .edits.text import text_style_transfer

    prompt, c = C.text(text), _common(model, num, seed, generator, batch_size, tile)
    _finest_scales(model, "text_style_transfer")
    ts = C.start_t(start_t, model.loaded.start_t)
    run = _run(model, text_style_transfer, c, progress, prompt=prompt, start_t=ts,
               **_guidance(strength, fill_factor, momentum), **_clip(model, clip, clip_views))
    return Prepared(run, "text_style_transfer")


def region_of_mask(mask, size_hw: tuple[int, int]):
    """(bounding box, 1×1×H×W 0/1 region) of a mask picture at the finest scale, read as harmonize
    reads its mask (`masks.mask_channel`: resized with LANCZOS, every pixel whose first channel is not 0)."""
    from .edits.masks import mask_channel

    picture = C.picture(mask, "mask")
    if not mask_channel(picture, (picture.height, picture.width)).any():
        raise ParameterError("mask", "no white pixels; mark the region in white")
    a = mask_channel(picture, size_hw) > 0
    if not a.any():
        raise ParameterError("mask", f"the white region vanishes at the finest scale's {size_hw[1]}x{size_hw[0]} "
                                     "px; paint a larger region")
    ys, xs = np.nonzero(a)
    box = (int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    return box, torch.from_numpy(a.astype(np.float32)).view(1, 1, *a.shape)


def prepare_text_roi(model, text, box=None, mask=None, num=1, iterations=100, step_size=0.1, seed=0,
                     generator=None, clip=None, clip_views=None, batch_size=None, tile=None,
                     progress=False) -> Prepared:
    from .edits.regions import box_outside
    from .edits.text import text_roi

    prompt, c = C.text(text), _common(model, num, seed, generator, batch_size, tile)
    if (box is None) == (mask is None):
        raise ParameterError("box", "give a box or a mask (one of them)")
    h, w = model.size
    if box is not None:
        b = C.box(box, "box")
        if box_outside(b, (h, w)):
            raise ParameterError("box", f"{b} is outside the {h}x{w} finest scale (y + h <= {h}, x + w <= {w})")
        region_box, region = tuple(b), None
    else:
        region_box, region = region_of_mask(mask, (h, w))
    run = _run(model, text_roi, c, progress, prompt=prompt, box=region_box, region=region,
               iterations=C.whole("iterations", iterations, 0), step_size=C.number("step_size", step_size, 0, 1),
               **_clip(model, clip, clip_views))
    return Prepared(run, "text_roi")


TEXT_PREPARERS = {"text_content": prepare_text_content, "text_style": prepare_text_style,
                  "text_style_transfer": prepare_text_style_transfer, "text_roi": prepare_text_roi}
