"""`SinDDM`: the public object. Load a model (or train one, or make one from a picture), then
sample and edit from Python:

    from sinddm import SinDDM
    model = SinDDM.load("assets/models/hubble-small.safetensors")
    images = model.sample(4, scale_hw=(1, 2), seed=0)          # PIL images
    SinDDM.save_images(images, "out")                           # out/sample_000.png ...

Every method checks every argument and raises `sinddm.errors.ParameterError` (a `UserError`),
one line naming the parameter, before any work. The command line, job files and the studio call
these methods (through `prepare`) and rename the parameter to their flag, key or field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from . import checks as C
from .checkpoint import LoadedModel
from .devices import resolve_device, resolve_precision
from .errors import ParameterError
from .api_edits import EditMethods, Picture, _args
from .pyramid import DEFAULT_MAX_PIXELS

PathLike = str | os.PathLike


def _device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise ParameterError("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return resolve_device(device)


class SinDDM(EditMethods):
    """A SinDDM model on a device: trained, hybrid or training-free, with sampling and every
    edit mode as methods. Make one with `load`, `from_image` or `train`.

    Attributes:
        loaded: the model, its pyramid and config (`sinddm.checkpoint.LoadedModel`).
        device: where it runs.
        precision: 'auto', 'fp32' or 'fast' (see `load`).
    """

    def __init__(self, loaded: LoadedModel, device: torch.device, precision: str = "auto"):
        self.loaded, self.device = loaded, device
        self.precision = C.choice("precision", precision, ("auto", "fp32", "fast"))

    # -- making one --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: PathLike, device: str | torch.device = "auto", precision: str = "auto",
             max_pixels: int | None = None) -> "SinDDM":
        """Load a model file, or make a training-free model from a picture.

        Args:
            path: a run folder, a `model.safetensors`, a `checkpoint.pt`, or a picture file (then
                the model is `from_image`'s).
            device: 'auto' (CUDA when there is one), 'cpu', 'cuda' or 'cuda:N', or a torch.device.
            precision: 'auto' (the device's fast path where it has one), 'fp32' (the exact path,
                pinned by the golden tests) or 'fast' (bf16 network, CUDA graphs).
            max_pixels: for a picture only: its pixel cap (default 50000, as training).

        Returns:
            The model.

        Raises:
            UserError: a missing or unreadable file, a bad device or precision; `max_pixels`
                given with a model file.
        """
        from .sources import open_model

        dev = _device(device)
        resolve_precision(C.choice("precision", precision, ("auto", "fp32", "fast")), dev)
        mp = C.optional_whole("max_pixels", max_pixels, 1)
        return cls(open_model(path, dev, mp), dev, precision)

    @classmethod
    def from_image(cls, image: Picture, max_pixels: int = DEFAULT_MAX_PIXELS, device: str | torch.device = "auto",
                   precision: str = "auto") -> "SinDDM":
        """A training-free model of a picture, made at once: the closed-form patch denoiser at
        every scale (docs/method.md §11), on the pyramid training would build.

        Args:
            image: a path, a PIL image or a uint8 H×W×3 array.
            max_pixels: the pixel cap the picture is shrunk to first (as in training).
            device: as in `load`.
            precision: as in `load`.

        Returns:
            The model; it samples and edits like a trained one.

        Raises:
            UserError: an unreadable picture, or one too small for a pyramid (42 px short side).
        """
        from .sources import picture_model

        dev = _device(device)
        resolve_precision(C.choice("precision", precision, ("auto", "fp32", "fast")), dev)
        source = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        return cls(picture_model(C.picture(image, "image"), max_pixels, source, dev), dev, precision)

    @classmethod
    def train(cls, image: PathLike | Image.Image, out: PathLike, config=None, steps: int | None = None,
              seed: int = 0, device: str | torch.device = "auto", precision: str = "auto", resume: bool = False,
              overwrite: bool = False, progress: bool = True) -> "SinDDM":
        """Train on a picture into a run folder (what `sinddm train` writes), then load the result.

        Args:
            image: the training picture (a path or a PIL image).
            out: the run folder.
            config: a `sinddm.Config`, a YAML path, or None for the paper's recipe.
            steps: overrides `train.steps`.
            seed: the training seed.
            device: as in `load`.
            precision: as in `load`.
            resume: continue the run in `out` exactly where it stopped.
            overwrite: replace an earlier run in `out`.
            progress: show a progress bar.

        Returns:
            The trained model.

        Raises:
            UserError: bad picture, config or folder.
        """
        from .runs import train_run

        picture = image if isinstance(image, (str, os.PathLike)) else C.picture(image, "image")
        run = train_run(picture, out, config, steps=C.optional_whole("steps", steps, 1), seed=C.seed(seed),
                        device=device, precision=precision, resume=C.flag("resume", resume),
                        overwrite=C.flag("overwrite", overwrite), progress=progress)
        return cls.load(run, device, precision)

    def to(self, device: str | torch.device) -> "SinDDM":
        """Move the model to another device.

        Args:
            device: 'auto', 'cpu', 'cuda' or 'cuda:N', or a torch.device.

        Returns:
            The model itself, now on `device`.
        """
        self.device = _device(device)
        self.loaded.model.to(self.device)
        return self

    # -- facts -------------------------------------------------------------------------------
    @property
    def pyramid(self):
        """The training picture's pyramid (`sinddm.Pyramid`), coarsest level first."""
        return self.loaded.pyramid

    @property
    def size(self) -> tuple[int, int]:
        """The finest training scale's (height, width): boxes are in these pixels."""
        return tuple(self.pyramid.sizes_hw[-1])

    @property
    def start_t(self) -> list[int]:
        """The default start timesteps T[0..N-1] of this pyramid."""
        return list(self.loaded.start_t)

    def sizes(self, scale_hw: tuple[float, float] | None = None, size: tuple[int, int] | None = None,
              start_level: int = 0) -> list[tuple[int, int]]:
        """Per-scale (height, width) of an output.

        Args:
            scale_hw: multiplies every scale's height and width.
            size: fixes the finest output's (height, width); the coarser follow by the factor r.
            start_level: object size: start the coarsest noise at level K's size.

        Returns:
            One (height, width) per scale, coarsest first.

        Raises:
            ParameterError: both `size` and `scale_hw`, a bad value, or an output too small or too large.
        """
        from .prepared import _sizes

        return _sizes(self, scale_hw, size, start_level)

    def tiled(self, tile: int | None):
        """The loaded model with its denoiser run on tiles (the same numbers in bounded memory).

        Args:
            tile: the tiles' core size in px, or None for whole pictures.

        Returns:
            A `LoadedModel` view whose denoiser is tiled (the model itself for None).
        """
        from .tiling import tiled_loaded

        return tiled_loaded(self.loaded, C.optional_whole("tile", tile, 1))

    # -- sampling (the edits and `prepare` come from EditMethods) -----------------------------
    def sample(self, num: int = 1, scale_hw: tuple[float, float] | None = None, size: tuple[int, int] | None = None,
               start_level: int = 0, start_t: Sequence[int] | None = None, scale0_steps: int | None = None,
               seed: int = 0, generator: torch.Generator | None = None, batch_size: int | None = None,
               tile: int | None = None, tileable: bool = False,
               callback: Callable[[int, int, torch.Tensor], None] | None = None, all_scales: bool = False,
               progress: bool = False, output: str = "pil"):
        """Random samples through the whole pyramid (method §5).

        Args:
            num: how many pictures (>= 1).
            scale_hw: multiplies every scale's (height, width), e.g. (1, 2) for a panorama.
            size: the finest output's (height, width) in pixels (instead of `scale_hw`).
            start_level: object size: start the coarsest noise at level K's size (0..N-1).
            start_t: start timesteps T[1..N-1], or T[0..N-1] (T[0] in 1..100, the rest 1..99).
            scale0_steps: sample the coarsest scale in this many respaced steps (2..100).
            seed: batch b is seeded with seed + 1000003·b (the same pictures for any `num`).
            generator: draw each batch's seed from this torch.Generator instead.
            batch_size: pictures per batch (default: what fits; 4 on a CPU).
            tile: run the denoiser on tiles of this many px (the same pictures, bounded memory).
            tileable: a seamless texture (everything wraps around a torus).
            callback: `callback(scale, t, x0)` at every step, x0 the step's estimate (N×3×h×w).
            all_scales: return every scale's outputs, a list per scale (coarsest first).
            progress: show a progress bar.
            output: 'pil' for PIL images, 'tensor' for 3×H×W tensors in [-1, 1].

        Returns:
            `num` pictures (or, with `all_scales`, one such list per scale).

        Raises:
            ParameterError: any bad argument, before any work.
        """
        return self._call("sample", output, _args(locals()))

    # -- pictures out ------------------------------------------------------------------------
    @staticmethod
    def save_images(images, out: PathLike, prefix: str = "sample") -> list[Path]:
        """Write pictures as `out/prefix_000.png ...` and `out/grid.png` (earlier ones replaced).

        Args:
            images: PIL images, uint8 H×W×3 arrays or 3×H×W tensors in [-1, 1].
            out: the folder (created).
            prefix: the file names' start.

        Returns:
            The pictures' paths (grid.png not included).
        """
        from .image_io import write_images

        return write_images(out, images, prefix, log=False)

    def __repr__(self) -> str:
        h, w = self.size
        k, n = self.loaded.config.model.trained_scales, self.pyramid.n_scales
        kind = (f"width {self.loaded.model.dim}" if k is None or k == n else "training-free" if k == 0
                else f"hybrid: network at {k} of {n} scales, width {self.loaded.model.dim}")
        return f"SinDDM({self.loaded.path}, {kind}, {n} scales, {w}x{h} px, step {self.loaded.step}, {self.device})"

