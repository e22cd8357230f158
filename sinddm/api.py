"""`SinDDM`: the public object. Load a model (or train one), then sample and edit from Python:

    from sinddm import SinDDM
    model = SinDDM.load("assets/models/hubble-small.safetensors")
    images = model.sample(4, scale_hw=(1, 2), seed=0)          # PIL images
    model.save(images, "out")                                   # out/sample_000.png ...

Every method checks its input as the command line does (`UserError`, one line) and returns PIL
images (`output="pil"`, the default) or 3×H×W tensors in [-1, 1] (`output="tensor"`).
The command line is written on top of this object's building blocks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .checkpoint import LoadedModel
from .devices import plan_tile, resolve_device, resolve_precision
from .errors import UserError
from .image_io import load_rgb, to_tensor, to_uint8
from .pyramid import DEFAULT_MAX_PIXELS, checked_sample_sizes
from .regions import Box, box_outside, parse_box

PathLike = str | os.PathLike
Picture = PathLike | Image.Image | np.ndarray


def _picture(p: Picture, what: str) -> Image.Image:
    if isinstance(p, Image.Image):
        return p.convert("RGB") if p.mode not in ("RGB", "L") else p
    if isinstance(p, np.ndarray):
        return Image.fromarray(p.astype(np.uint8))
    try:
        return load_rgb(p)
    except UserError as e:
        raise UserError(f"{what}: {e}") from None


def _tile(tile: int | None) -> int | None:
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise UserError(f"tile must be a whole number of pixels >= 1, got {tile!r}")
    return tile


def _box(b: Box | str | Sequence[int]) -> Box:
    return b if isinstance(b, Box) else parse_box(b if isinstance(b, str) else ",".join(map(str, b)))


class SinDDM:
    """A trained SinDDM model on a device, with sampling and every edit mode as methods."""

    def __init__(self, loaded: LoadedModel, device: torch.device, precision: str = "auto"):
        self.loaded, self.device, self.precision = loaded, device, precision

    # -- making one --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: PathLike, device: str | torch.device = "auto", precision: str = "auto",
             max_pixels: int | None = None) -> "SinDDM":
        """A run folder, a model.safetensors or a checkpoint.pt; or a picture file, which gives the
        training-free model of `from_image` (`max_pixels`: its pixel cap, pictures only)."""
        from .sources import open_model

        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        resolve_precision(precision, dev)
        return cls(open_model(path, dev, max_pixels), dev, precision)

    @classmethod
    def from_image(cls, image: Picture, max_pixels: int = DEFAULT_MAX_PIXELS, device: str | torch.device = "auto",
                   precision: str = "auto") -> "SinDDM":
        """A training-free model of `image` (a path, PIL image or uint8 H×W×3 array), made at once:
        the closed-form patch denoiser at every scale (docs/method.md §11), on the pyramid training
        would build with the same `max_pixels`. Samples and every edit work on it as on a trained one."""
        from .sources import picture_model

        dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
        resolve_precision(precision, dev)
        source = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        return cls(picture_model(_picture(image, "image"), max_pixels, source, dev), dev, precision)

    @classmethod
    def train(cls, image: Picture, out: PathLike, config=None, steps: int | None = None, seed: int = 0,
              device: str | torch.device = "auto", precision: str = "auto", resume: bool = False,
              overwrite: bool = False, progress: bool = True) -> "SinDDM":
        """Train on `image` into the run folder `out` (what `sinddm train` writes), then load it.
        `config`: a `Config`, a YAML path or None (the paper's recipe)."""
        from .runs import train_run

        picture = image if isinstance(image, (str, os.PathLike)) else _picture(image, "image")
        run = train_run(picture, out, config, steps=steps, seed=seed, device=device, precision=precision,
                        resume=resume, overwrite=overwrite, progress=progress)
        return cls.load(run, device, precision)

    # -- facts -------------------------------------------------------------------------------
    @property
    def pyramid(self):
        return self.loaded.pyramid

    @property
    def size(self) -> tuple[int, int]:
        """The finest training scale's (height, width): boxes are in these pixels."""
        return tuple(self.pyramid.sizes_hw[-1])

    def sizes(self, scale_hw: tuple[float, float] | None = None, size: tuple[int, int] | None = None,
              start_level: int = 0) -> list[tuple[int, int]]:
        """Per-scale (h, w) of an output: `scale_hw` multiplies every scale, `size` fixes the finest."""
        pyr = self.pyramid
        if not 0 <= start_level < pyr.n_scales:
            raise UserError(f"start_level must be in 0..{pyr.n_scales - 1}, got {start_level}")
        return checked_sample_sizes(pyr, scale_hw=scale_hw, size_hw=size, start_level=start_level)

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, n: int = 1, scale_hw: tuple[float, float] | None = None, size: tuple[int, int] | None = None,
               start_level: int = 0, start_t: Sequence[int] | None = None, seed: int = 0,
               batch_size: int | None = None, scale0_steps: int | None = None, progress: bool = False,
               output: str = "pil", tile: int | None = None, tileable: bool = False):
        """`n` random samples through the whole pyramid (method §5). `tile`: run the network on tiles
        of this many px (the same pictures in bounded memory; on by itself when the size does not fit);
        `tileable`: a seamless texture (the network and the up-sampling wrap around)."""
        from .pipeline import generate

        sizes = self.sizes(scale_hw, size, start_level)
        tile = plan_tile(sizes, self.loaded.model, batch_size, self.device, _tile(tile), num=n)
        images = generate(self.loaded, n, sizes, list(start_t or self.loaded.start_t), seed=seed,
                          batch_size=batch_size, device=self.device, progress=progress, precision=self.precision,
                          scale0_steps=scale0_steps, tile=tile, tileable=tileable)
        return self._out(images, output)

    # -- image-guided edits (method §7) ------------------------------------------------------
    # Every edit takes `tile` (px): the network runs on tiles, the same pictures in bounded memory.
    def _loaded(self, tile: int | None):
        from .tiling import tiled_loaded

        return tiled_loaded(self.loaded, _tile(tile))

    def harmonize(self, composite: Picture, mask: Picture, n: int = 1, t_start: int | None = None,
                  seed: int = 0, batch_size: int | None = None, progress: bool = False, output: str = "pil",
                  tile: int | None = None):
        """Blend a pasted object into its surroundings; `mask` is white on black where it is."""
        from .editing import HARMONIZE_START_T, harmonize, resize_like_training
        from .masks import harmonization_mask

        comp, m = _picture(composite, "composite"), _picture(mask, "mask")
        if m.size != comp.size:
            raise UserError(f"mask: {m.width}x{m.height} px but the composite is {comp.width}x{comp.height} px; "
                            "give a mask of the composite's size")
        picture = resize_like_training(comp, self.loaded.config.image.max_pixels)
        try:
            soft = harmonization_mask(m, picture.shape[:2])
        except ValueError:
            raise UserError("mask: empty at the composite's working size; paint the pasted region white") from None
        images = harmonize(self._loaded(tile), to_tensor(np.ascontiguousarray(picture)), soft, num=n, seed=seed,
                           t_start=t_start or HARMONIZE_START_T, batch_size=batch_size, device=self.device,
                           progress=progress)
        return self._out(images, output)

    def style_transfer(self, content: Picture, n: int = 1, t_start: int | None = None, seed: int = 0,
                       batch_size: int | None = None, progress: bool = False, output: str = "pil",
                       tile: int | None = None):
        """The content picture with the training image's colours and fine textures."""
        from .editing import STYLE_TRANSFER_START_T, prepare_content, style_transfer

        prepared = prepare_content(_picture(content, "content"), self.pyramid, self.loaded.config.image.max_pixels)
        images = style_transfer(self._loaded(tile), to_tensor(prepared), num=n, seed=seed,
                                t_start=t_start or STYLE_TRANSFER_START_T, batch_size=batch_size,
                                device=self.device, progress=progress)
        return self._out(images, output)

    def roi_copy(self, source: Box | str | Sequence[int], targets: Sequence[Box | str | Sequence[int]], n: int = 1,
                 scale_hw: tuple[float, float] | None = None, size: tuple[int, int] | None = None,
                 start_t: Sequence[int] | None = None, seed: int = 0, batch_size: int | None = None,
                 progress: bool = False, output: str = "pil",
                 tile: int | None = None):
        """Samples whose target boxes (y, x, h, w in output pixels) copy the training image's source box."""
        from .editing import roi_generate

        if self.pyramid.n_scales < 2:
            raise UserError("roi_copy needs a model with at least 2 scales")
        src, tgts = _box(source), [_box(t) for t in targets]
        sizes = self.sizes(scale_hw, size)
        if box_outside(src, self.size):
            raise UserError(f"source {src}: reaches beyond the training image's finest scale {self.size}")
        for t in tgts:
            if box_outside(t, sizes[-1]):
                raise UserError(f"target {t}: reaches beyond the output {tuple(sizes[-1])}")
        images = roi_generate(self._loaded(tile), sizes, list(start_t or self.loaded.start_t), src, tgts, num=n, seed=seed,
                              batch_size=batch_size, device=self.device, progress=progress)
        return self._out(images, output)

    # -- text-guided edits (method §6) -------------------------------------------------------
    def _text(self, clip, views, check_prompt: str) -> dict:
        from .clip import ClipSpec, resolve_clip
        from .clip_views import DEFAULT_VIEW_MODE

        if not str(check_prompt).strip():
            raise UserError("prompt: empty; give a few words, e.g. 'a medieval castle'")
        spec = clip if isinstance(clip, ClipSpec) else ClipSpec() if clip is None else ClipSpec(model=str(clip))
        resolve_clip(spec)  # the weights can be had (or one line saying how to get them), before any work
        return dict(clip=spec, views=views or DEFAULT_VIEW_MODE, device=self.device, precision=self.precision)

    def text_content(self, prompt: str, n: int = 1, scale_hw=None, size=None, start_t=None, guide_from: int = 1,
                     strength: float = 0.3, fill_factor: float = 0.3, momentum: float = 0.2, seed: int = 0,
                     clip=None, views: str | None = None, batch_size: int | None = None, progress: bool = False,
                     output: str = "pil", tile: int | None = None):
        """New content from a prompt (CLIP guidance from scale `guide_from` on). `clip`: a
        `sinddm.clip.ClipSpec` (default ViT-B/32, OpenAI weights); `views`: reference / aspect / square."""
        from .text_edits import text_content

        if not 0 <= guide_from < self.pyramid.n_scales:
            raise UserError(f"guide_from must be in 0..{self.pyramid.n_scales - 1}, got {guide_from}")
        images = text_content(self._loaded(tile), prompt, num=n, seed=seed, sizes_hw=self.sizes(scale_hw, size), start_t=start_t,
                              strength=strength, fill_factor=fill_factor, momentum=momentum, guide_from=guide_from,
                              batch_size=batch_size, progress=progress, **self._text(clip, views, prompt))
        return self._out(images, output)

    def text_style(self, prompt: str, n: int = 1, scale_hw=None, size=None, start_t=None, strength: float = 0.3,
                   fill_factor: float = 1.0, momentum: float = 0.05, seed: int = 0, clip=None,
                   views: str | None = None, batch_size: int | None = None, progress: bool = False,
                   output: str = "pil", tile: int | None = None):
        """Samples in the style the prompt names (prompt + " Style"; guidance at the finest scale)."""
        from .text_edits import text_style

        images = text_style(self._loaded(tile), prompt, num=n, seed=seed, sizes_hw=self.sizes(scale_hw, size), start_t=start_t,
                            strength=strength, fill_factor=fill_factor, momentum=momentum, batch_size=batch_size,
                            progress=progress, **self._text(clip, views, prompt))
        return self._out(images, output)

    def text_style_transfer(self, prompt: str, n: int = 1, start_t=None, strength: float = 0.3, fill_factor: float = 1.0,
                            momentum: float = 0.05, seed: int = 0, clip=None, views: str | None = None,
                            batch_size: int | None = None, progress: bool = False, output: str = "pil",
                            tile: int | None = None):
        """The training image restyled by the prompt."""
        from .text_edits import text_style_transfer

        if self.pyramid.n_scales < 2:
            raise UserError("text_style_transfer needs a model with at least 2 scales")
        images = text_style_transfer(self._loaded(tile), prompt, num=n, seed=seed, start_t=start_t, strength=strength,
                                     fill_factor=fill_factor, momentum=momentum, batch_size=batch_size,
                                     progress=progress, **self._text(clip, views, prompt))
        return self._out(images, output)

    def text_roi(self, prompt: str, box=None, mask: Picture | None = None, n: int = 1, iterations: int = 100,
                 strength: float = 0.1, seed: int = 0, clip=None, views: str | None = None,
                 batch_size: int | None = None, progress: bool = False, output: str = "pil",
                 tile: int | None = None):
        """Content from the prompt inside a region of the training image: a `box` (y, x, h, w) or a
        `mask` picture (white inside; resized to the finest scale)."""
        from .masks import mask_channel
        from .text_edits import text_roi

        if (box is None) == (mask is None):
            raise UserError("text_roi: give a box or a mask (one of them)")
        region = None
        if box is not None:
            b = _box(box)
            if box_outside(b, self.size):
                raise UserError(f"box {b}: outside the {self.size[0]}x{self.size[1]} finest scale")
            box = tuple(b)
        else:
            a = mask_channel(_picture(mask, "mask"), self.size) > 0
            if not a.any():
                raise UserError("mask: no white pixels at the finest scale; mark the region in white")
            ys, xs = np.nonzero(a)
            box = (int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
            region = torch.from_numpy(a.astype(np.float32)).view(1, 1, *a.shape)
        images = text_roi(self._loaded(tile), prompt, box, region, num=n, seed=seed, iterations=iterations,
                          strength=strength, batch_size=batch_size, progress=progress,
                          **self._text(clip, views, prompt))
        return self._out(images, output)

    # -- outputs -----------------------------------------------------------------------------
    @staticmethod
    def _out(images: list[torch.Tensor], output: str):
        if output == "tensor":
            return images
        if output != "pil":
            raise UserError(f"output '{output}': use 'pil' or 'tensor'")
        return [Image.fromarray(to_uint8(x)) for x in images]

    @staticmethod
    def save(images, out: PathLike, prefix: str = "sample") -> list[Path]:
        """`out/prefix_000.png ...` and `out/grid.png` (earlier ones replaced); returns the pictures' paths."""
        from .image_io import write_images

        return write_images(out, images, prefix, log=False)

    def __repr__(self) -> str:
        h, w = self.size
        k, n = self.loaded.config.model.trained_scales, self.pyramid.n_scales
        kind = (f"width {self.loaded.model.dim}" if k is None or k == n else "training-free" if k == 0
                else f"hybrid: network at {k} of {n} scales, width {self.loaded.model.dim}")
        return f"SinDDM({self.loaded.path}, {kind}, {n} scales, {w}x{h} px, step {self.loaded.step}, {self.device})"
