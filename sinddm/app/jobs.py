"""One studio run per call: check the widget values, call the public `SinDDM` API, write the PNGs
(and any picture the command needs) into a fresh folder under the output folder, and return the
pictures, their paths and the `sinddm` command that reproduces them. No Gradio here.

Bad input raises `UserError` (one line); the page shows it as a message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from ..api import SinDDM
from ..config import config_from_dict
from ..errors import ParameterError, UserError
from ..sources import is_picture
from . import commands as C
from .uploads import HYBRID_CPU, keep_photo, read_upload

__all__ = ["FIELD_NAMES", "MAX_NUM", "Result", "Studio", "mask_from_layers", "read_upload"]

MAX_NUM = 16
# The API's parameters by the labels the page gives them.
FIELD_NAMES = {"num": "count", "start_level": "object size (start level)", "noise_level": "noise level",
               "step_size": "strength (text-roi step size)", "text": "prompt", "scale_hw": "scale factors"}


class Result(NamedTuple):
    images: list            # PIL images
    paths: list[Path]       # the PNGs written (grid.png last)
    command: str            # the sinddm command that writes the same pictures
    extra: Image.Image | None = None   # a picture shown beside the result (text-roi: its region mask)


def mask_from_layers(layers, size_wh: tuple[int, int], what: str = "mask") -> Image.Image:
    """Painted layers (RGBA arrays or pictures, from an image editor) → white-on-black mask: every
    pixel any stroke touched is white."""
    mask = np.zeros((size_wh[1], size_wh[0]), dtype=bool)
    for layer in layers or []:
        a = np.asarray(layer.convert("RGBA") if isinstance(layer, Image.Image) else layer)
        if a.ndim != 3 or a.shape[:2] != mask.shape:
            continue
        mask |= (a[..., 3] > 0) if a.shape[2] == 4 else a.any(axis=2)
    if not mask.any():
        raise UserError(f"{what}: nothing painted; paint over the region with the brush")
    return Image.fromarray((mask * 255).astype(np.uint8)).convert("RGB")


def _given(**values) -> dict:
    return {k: float(v) for k, v in values.items() if v is not None}


class Studio:
    """The active model, the names the commands use, and the output folder every run writes into.

    `max_pixels`: the pixel cap of a picture given as the model (the commands repeat it).
    `photo_max_pixels`: the cap of the photos uploaded later (default: `max_pixels`, else the
    model's training cap). `hybrid_config` / `hybrid_steps`: what "train hybrid" trains (default
    configs/hybrid-cpu.yaml's recipe); tests make it tiny.
    """

    def __init__(self, model: SinDDM, model_arg: str, out, device_arg: str = "auto", clip_checkpoint=None,
                 max_pixels: int | None = None, photo_max_pixels: int | None = None, hybrid_config=None,
                 hybrid_steps: int | None = None):
        self.device_arg, self.out, self.clip_checkpoint = device_arg, Path(out), clip_checkpoint
        self.photo_max_pixels = photo_max_pixels or max_pixels or model.loaded.config.image.max_pixels
        self.hybrid_config, self.hybrid_steps = hybrid_config, hybrid_steps
        self._use(model, model_arg, max_pixels, photo=model_arg if is_picture(model_arg) else None)
        self.out.mkdir(parents=True, exist_ok=True)

    def _use(self, model: SinDDM, model_arg, max_pixels: int | None, photo=None) -> None:
        """Make `model` the one every panel runs; `photo`: the picture "train hybrid" trains on."""
        self.model, self.model_arg, self.max_pixels = model, str(model_arg), max_pixels
        self.photo = None if photo is None else str(photo)

    def describe(self) -> str:
        """The active model in one line (Markdown), for the page's header."""
        h, w = self.model.size
        k, n = self.model.loaded.config.model.trained_scales, self.model.pyramid.n_scales
        kind = ("trained" if k is None or k == n else "training-free (the patch denoiser at every scale)" if k == 0
                else f"hybrid (a network at {k} of {n} scales)")
        cap = f", pixel cap {self.max_pixels}" if self.max_pixels is not None else ""
        return f"**active model:** `{self.model_arg}`: {kind}, {w}×{h} px (w×h), {n} scale{'s' * (n != 1)}{cap}"

    def use_photo(self, path) -> str:
        """Switch every panel to a training-free model of an uploaded photo (at `photo_max_pixels`);
        the photo is kept as OUT/photo-NNN/<name>, which the commands name. Returns the new header."""
        picture = read_upload(path, "photo")
        try:
            model = SinDDM.from_image(picture, self.photo_max_pixels, self.model.device, self.model.precision)
        except UserError as e:   # the library names its parameter 'image'; the page calls it the photo
            raise UserError(f"photo '{Path(path).name}': {str(e).removeprefix('image: ')}") from None
        folder = self.folder("photo")
        kept = keep_photo(path, folder)
        model.loaded.path = kept
        self._use(model, kept, self.photo_max_pixels, photo=kept)
        return self.describe()

    def train_hybrid(self, progress: bool = False) -> str:
        """Train the hybrid recipe on the active photo into OUT/hybrid-NNN (a run folder), then
        switch every panel to it. Returns the new header."""
        if self.photo is None:
            raise UserError("train hybrid: no photo to train on; upload a photograph first")
        config = config_from_dict(HYBRID_CPU, "hybrid-cpu") if self.hybrid_config is None else self.hybrid_config
        folder = self.folder("hybrid")
        try:
            model = SinDDM.train(self.photo, folder, config, steps=self.hybrid_steps, device=self.model.device,
                                 precision=self.model.precision, progress=progress)
        except BaseException:
            if not any(folder.iterdir()):  # refused before any work: leave no empty folder behind
                folder.rmdir()
            raise
        self._use(model, folder, None, photo=self.photo)
        return self.describe()

    def finest_image(self) -> Image.Image:
        """The training image at the finest scale: boxes are drawn on it, in its pixels."""
        from ..image_io import to_uint8

        pyr = self.model.pyramid
        return Image.fromarray(to_uint8(pyr.level_tensor(pyr.n_scales - 1)))

    def folder(self, panel: str) -> Path:
        """OUT/panel-NNN, the first number not used yet (created)."""
        used = [int(m.group(1)) for p in self.out.glob(f"{panel}-*")
                if (m := re.fullmatch(rf"{re.escape(panel)}-(\d+)(-cli)?", p.name))]
        path = self.out / f"{panel}-{max(used, default=0) + 1:03d}"
        path.mkdir(parents=True)
        return path

    def _finish(self, images, folder: Path, prefix: str, command, extra=None) -> Result:
        paths = SinDDM.save_images(images, folder, prefix)
        cli_out = folder.with_name(folder.name + "-cli")
        line = command(cli_out)
        if self.max_pixels is not None:  # a picture as the model, at its own pixel cap
            model = C.q(self.model_arg)
            line = line.replace(f" {model} ", f" {model} --max-pixels {self.max_pixels} ", 1)
        return Result(images, [*paths, folder / "grid.png"], line, extra)

    def _call(self, name: str, **arguments) -> list:
        """`SinDDM.<name>`, a refused parameter shown by its field's label on the page."""
        arguments["num"] = self._count(arguments["num"])
        try:
            return getattr(self.model, name)(**arguments)
        except ParameterError as e:
            label = lambda p: FIELD_NAMES.get(p, p.replace("_", " "))  # noqa: E731
            raise e.renamed(label(e.param), label) from None

    @staticmethod
    def _count(n):
        n = C.as_int(n)
        if isinstance(n, int) and n > MAX_NUM:
            raise UserError(f"count: at most {MAX_NUM} pictures per run in the studio, got {n}")
        return n

    def sample(self, n, seed, scale_h=1.0, scale_w=1.0, size_text="", start_level=0, progress=False) -> Result:
        n, seed, level = C.as_int(n), C.as_int(seed), C.as_int(start_level)
        size = C.parse_size_field(size_text)
        scale_hw = None if size else (float(scale_h), float(scale_w))
        images = self._call("sample", num=n, scale_hw=scale_hw, size=size, start_level=level, seed=seed,
                            progress=progress)
        return self._finish(images, self.folder("sample"), "sample", lambda o: C.sample_command(
            self.model_arg, n, seed, o, scale_hw=scale_hw, size=size, start_level=level, device=self.device_arg))

    def roi_copy(self, source_text, targets_text, n, seed, progress=False) -> Result:
        n, seed = C.as_int(n), C.as_int(seed)
        source = C.parse_box_field(source_text, "source box")
        targets = C.parse_boxes_field(targets_text, "target boxes")
        images = self._call("roi_copy", source=source, targets=targets, num=n, seed=seed, progress=progress)
        return self._finish(images, self.folder("roi-copy"), "roi_copy", lambda o: C.roi_copy_command(
            self.model_arg, source, targets, n, seed, o, device=self.device_arg))

    def harmonize(self, composite_path, layers, noise_level, n, seed, progress=False) -> Result:
        n, seed, level = C.as_int(n), C.as_int(seed), C.as_int(noise_level)
        composite = read_upload(composite_path, "composite")
        mask = mask_from_layers(layers, composite.size)
        images = self._call("harmonize", composite=composite, mask=mask, num=n, noise_level=level, seed=seed,
                            progress=progress)
        folder = self.folder("harmonize")
        composite.save(folder / "composite.png")
        mask.save(folder / "mask.png")
        return self._finish(images, folder, "harmonize", lambda o: C.harmonize_command(
            self.model_arg, folder / "composite.png", folder / "mask.png", level, n, seed, o, self.device_arg),
            extra=mask)

    def style_transfer(self, content_path, noise_level, n, seed, progress=False) -> Result:
        n, seed, level = C.as_int(n), C.as_int(seed), C.as_int(noise_level)
        content = read_upload(content_path, "content")
        images = self._call("style_transfer", content=content, num=n, noise_level=level, seed=seed,
                            progress=progress)
        folder = self.folder("style-transfer")
        content.save(folder / "content.png")
        return self._finish(images, folder, "style_transfer", lambda o: C.style_transfer_command(
            self.model_arg, folder / "content.png", level, n, seed, o, self.device_arg))

    def text(self, mode, prompt, n, seed, strength=None, fill_factor=None, momentum=None, box_text="",
             mask_layers=None, progress=False) -> Result:
        """text-content, text-style, text-style-transfer or text-roi (a box, or painted layers
        over the finest-scale image; the strength slider is text-roi's step size)."""
        n, seed = C.as_int(n), C.as_int(seed)
        kw = dict(text=prompt, num=n, seed=seed, clip=self._clip(), progress=progress)
        box = mask = None
        if mode == "text-roi":
            if str(box_text or "").strip():
                box = C.parse_box_field(box_text, "text-roi box")
            else:
                h, w = self.model.size
                mask = mask_from_layers(mask_layers, (w, h), "text-roi region (a box or a painted mask)")
            flags = _given(step_size=strength)
            images = self._call("text_roi", box=box, mask=mask, **flags, **kw)
        elif mode in ("text-content", "text-style", "text-style-transfer"):
            flags = _given(strength=strength, fill_factor=fill_factor, momentum=momentum)
            images = self._call(mode.replace("-", "_"), **flags, **kw)
        else:
            raise UserError(f"text mode '{mode}': use text-content, text-style, text-style-transfer or text-roi")
        folder = self.folder(mode)
        mask_path = None
        if mask is not None:
            mask_path = folder / "mask.png"
            mask.save(mask_path)
        extra = mask if mask is not None else self._box_picture(box) if box is not None else None
        return self._finish(images, folder, mode.replace("-", "_"), lambda o: C.text_command(
            self.model_arg, mode, prompt, n, seed, o, self.device_arg, box=box, mask=mask_path,
            clip_checkpoint=self.clip_checkpoint, **flags), extra=extra)

    def _clip(self):
        if not self.clip_checkpoint:
            return None
        from ..edits.clip import ClipSpec

        return ClipSpec(checkpoint=str(self.clip_checkpoint))

    def _box_picture(self, box) -> Image.Image:
        h, w = self.model.size
        a = np.zeros((h, w), dtype=np.uint8)
        a[box.slices()] = 255
        return Image.fromarray(a).convert("RGB")
