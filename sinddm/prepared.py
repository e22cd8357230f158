"""Every public operation as a checked call: `prepare_<name>(model, **arguments)` checks each
argument (type, range, shape, fit with the model) and returns a `Prepared` whose `run()` does the
work (`SinDDM.prepare` picks one by name). `SinDDM`'s methods are `prepare(...).run()`; the command line, job files and the studio
prepare every call first (so bad input fails before any work or output), then run it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import checks as C
from .errors import ParameterError
from .pyramid import MIN_SIDE, checked_sample_sizes


@dataclass
class Prepared:
    """A checked call: `run()` returns its pictures (3×H×W tensors in [-1, 1]); `prefix` names
    its files (`sample_000.png` ...)."""

    run: Callable[[], list]
    prefix: str


def _common(model, num, seed, generator, batch_size, tile) -> dict:
    return dict(num=C.whole("num", num, 1), seed=C.seed(seed), generator=C.generator(generator),
                batch_size=C.optional_whole("batch_size", batch_size, 1), tile=C.optional_whole("tile", tile, 1))


def _sizes(model, scale_hw, size, start_level: int = 0) -> list[tuple[int, int]]:
    if scale_hw is not None and size is not None:
        raise ParameterError("size", "give {size} or {scale_hw}, not both")
    scale_hw = None if scale_hw is None else C.pair("scale_hw", scale_hw)
    if scale_hw is not None and not all(0 < f <= 64 for f in scale_hw):
        raise ParameterError("scale_hw", f"factors must be in (0, 64], got {scale_hw}")
    size = None if size is None else C.pair("size", size, "whole")
    n = model.pyramid.n_scales
    start_level = C.whole("start_level", start_level, 0, n - 1)
    return checked_sample_sizes(model.pyramid, scale_hw=scale_hw, size_hw=size, start_level=start_level)


def _named(value) -> str:
    """A picture given as a path, named at the start of a message ('' for an image or array)."""
    return f"'{value}' " if isinstance(value, (str, os.PathLike)) else ""


def _exact_only(model, what: str) -> None:
    """The image edits run the exact fp32 path: an explicit 'fast' has no meaning there."""
    if model.precision == "fast":
        raise ParameterError("precision", f"'fast' has no meaning for {what}, which runs the exact fp32 path; "
                                          "use precision 'auto' or 'fp32'")


def _finest_scales(model, what: str) -> None:
    if model.pyramid.n_scales < 2:
        raise ParameterError("model", f"{what} needs a model with at least 2 scales (this one has 1); "
                                      "train on a larger picture")


# -- sampling ----------------------------------------------------------------------------------

def prepare_sample(model, num=1, scale_hw=None, size=None, start_level=0, start_t=None, scale0_steps=None,
                   seed=0, generator=None, batch_size=None, tile=None, tileable=False, callback=None,
                   all_scales=False, progress=False) -> Prepared:
    from .devices import plan_tile
    from .pipeline import generate
    from .schedule import T_STEPS

    c = _common(model, num, seed, generator, batch_size, tile)
    sizes = _sizes(model, scale_hw, size, start_level)
    ts = C.start_t(start_t, model.loaded.start_t)
    steps0 = C.optional_whole("scale0_steps", scale0_steps, 2, T_STEPS)
    if steps0 is not None and start_t is not None and len(start_t) == model.pyramid.n_scales:
        raise ParameterError("scale0_steps", "and a T[0] in {start_t} both set scale 0's steps; give one of them")
    tileable, all_scales = C.flag("tileable", tileable), C.flag("all_scales", all_scales)
    callback = C.callback(callback)
    tile = plan_tile(sizes, model.loaded.model, c["batch_size"], model.device, c["tile"], num=c["num"])

    def run():
        return generate(model.loaded, c["num"], sizes, ts, seed=c["seed"], batch_size=c["batch_size"],
                        device=model.device, progress=progress, precision=model.precision, scale0_steps=steps0,
                        tile=tile, tileable=tileable, generator=c["generator"], callback=callback,
                        all_scales=all_scales)
    return Prepared(run, "sample")


# -- image-guided edits (method §7) --------------------------------------------------------------

def prepare_harmonize(model, composite, mask, num=1, noise_level=C.HARMONIZE_NOISE_LEVEL, seed=0,
                      generator=None, batch_size=None, tile=None, progress=False) -> Prepared:
    from .edits.image import harmonize, resize_like_training
    from .image_io import to_tensor
    from .edits.masks import harmonization_mask, mask_channel

    c = _common(model, num, seed, generator, batch_size, tile)
    level = C.noise_level(noise_level)
    _exact_only(model, "harmonize")
    comp, m = C.picture(composite, "composite"), C.picture(mask, "mask")
    if min(comp.size) < MIN_SIDE:
        raise ParameterError("composite", f"{comp.width}x{comp.height} px (w x h) is too small; give a picture "
                                          f"at least {MIN_SIDE} px on its short side")
    if m.size != comp.size:
        raise ParameterError("mask", f"{_named(mask)}{m.width}x{m.height} px but the {{composite}} {_named(composite)}"
                                     f"is {comp.width}x{comp.height} px; give a mask of the composite's size")
    if not mask_channel(m, (m.height, m.width)).any():
        raise ParameterError("mask", f"{_named(mask)}empty (every pixel is black); paint the pasted region white "
                                     "on black")
    picture = resize_like_training(comp, model.loaded.config.image.max_pixels)
    try:
        soft = harmonization_mask(m, picture.shape[:2])
    except ValueError:
        raise ParameterError("mask", f"the white region vanishes when the mask is resized to the working size "
                                     f"{picture.shape[1]}x{picture.shape[0]} px; paint a larger region") from None
    x = to_tensor(np.ascontiguousarray(picture))

    def run():
        return harmonize(model.tiled(c["tile"]), x, soft, num=c["num"], seed=c["seed"], noise_level=level,
                         batch_size=c["batch_size"], device=model.device, progress=progress,
                         generator=c["generator"])
    return Prepared(run, "harmonize")


def prepare_style_transfer(model, content, num=1, noise_level=C.STYLE_TRANSFER_NOISE_LEVEL, seed=0,
                           generator=None, batch_size=None, tile=None, progress=False) -> Prepared:
    from .edits.image import prepare_content, style_transfer
    from .image_io import to_tensor

    c = _common(model, num, seed, generator, batch_size, tile)
    level = C.noise_level(noise_level)
    _exact_only(model, "style_transfer")
    picture = C.picture(content, "content")
    if min(picture.size) < MIN_SIDE:
        raise ParameterError("content", f"{picture.width}x{picture.height} px (w x h) is too small; give a "
                                        f"picture at least {MIN_SIDE} px on its short side")
    x = to_tensor(prepare_content(picture, model.pyramid, model.loaded.config.image.max_pixels))

    def run():
        return style_transfer(model.tiled(c["tile"]), x, num=c["num"], seed=c["seed"], noise_level=level,
                              batch_size=c["batch_size"], device=model.device, progress=progress,
                              generator=c["generator"])
    return Prepared(run, "style_transfer")


def prepare_roi_copy(model, source, targets, num=1, scale_hw=None, size=None, start_t=None, seed=0,
                     generator=None, batch_size=None, tile=None, progress=False) -> Prepared:
    from .edits.image import roi_generate
    from .edits.regions import box_outside

    c = _common(model, num, seed, generator, batch_size, tile)
    _exact_only(model, "roi_copy")
    _finest_scales(model, "roi_copy")
    src = C.box(source, "source")
    if isinstance(targets, (str, bytes)) or not isinstance(targets, (Sequence, np.ndarray)) or len(targets) == 0:
        raise ParameterError("targets", f"must be a non-empty list of boxes y,x,h,w, got {targets!r}")
    tgts = [C.box(t, "targets") for t in targets]
    sizes = _sizes(model, scale_hw, size)
    ts = C.start_t(start_t, model.loaded.start_t)
    h, w = model.size
    if box_outside(src, (h, w)):
        raise ParameterError("source", f"{src} reaches beyond the training image's finest scale ({h} rows x {w} "
                                       "columns); give a box inside it")
    for t in tgts:
        if box_outside(t, sizes[-1]):
            raise ParameterError("targets", f"{t} reaches beyond the output ({sizes[-1][0]} rows x {sizes[-1][1]} "
                                            "columns); give a box inside it or enlarge the output ({size}, {scale_hw})")

    def run():
        return roi_generate(model.tiled(c["tile"]), sizes, ts, src, tgts, num=c["num"], seed=c["seed"],
                            batch_size=c["batch_size"], device=model.device, progress=progress,
                            generator=c["generator"])
    return Prepared(run, "roi_copy")


PREPARERS = {"sample": prepare_sample, "harmonize": prepare_harmonize, "style_transfer": prepare_style_transfer,
             "roi_copy": prepare_roi_copy}
