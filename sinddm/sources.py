"""What a MODEL argument may name: a run folder, a model file, a training checkpoint, or a
picture, which becomes a training-free model on the spot (the patch denoiser at every scale,
docs/method.md §11): its pyramid is the one `sinddm inspect` shows for the same pixel cap.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import LoadedModel, load_model
from .checks import whole
from .config import Config
from .errors import ParameterError
from .hybrid import build_denoiser
from .image_io import load_rgb
from .pyramid import DEFAULT_MAX_PIXELS, build_pyramid

PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}


def is_picture(path: str | os.PathLike) -> bool:
    """Whether `path` names a picture file (by its suffix) rather than a model."""
    return Path(path).suffix.lower() in PICTURE_SUFFIXES and not Path(path).is_dir()


def picture_model(picture: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS, source: str = "picture",
                  device: torch.device | str = "cpu") -> LoadedModel:
    """A training-free model of `picture`: no network, the patch denoiser at every scale."""
    max_pixels = whole("max_pixels", max_pixels, 1)
    config = Config()
    config.image.max_pixels = max_pixels
    config.model.trained_scales = 0
    pyramid = build_pyramid(picture, max_pixels, name=source)
    model = build_denoiser(None, pyramid, config).to(device).eval()
    return LoadedModel(model=model, pyramid=pyramid, config=config, step=0, path=Path(source))


def open_model(path: str | os.PathLike, device: torch.device | str = "cpu",
               max_pixels: int | None = None) -> LoadedModel:
    """`load_model` for a model, `picture_model` for a picture (`max_pixels`: its pixel cap)."""
    if is_picture(path):
        return picture_model(load_rgb(path), DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
                             source=str(path), device=device)
    if max_pixels is not None:
        raise ParameterError("max_pixels", f"applies to a picture given as the model, not to the model '{path}'")
    return load_model(path, device)
