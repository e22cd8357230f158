"""Reading any picture into 8-bit RGB, and writing tensors back out as PNGs."""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError, check_readable

# Refuse to decode anything larger: a decompression bomb would exhaust memory. The size
# comes from the file's header, checked before any pixel data is decoded.
MAX_DECODE_PIXELS = 64_000_000


class _TooLarge(Exception):
    pass


def _looks_like_svg(path: Path) -> bool:
    if path.suffix.lower() in (".svg", ".svgz"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    except OSError:
        return False
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in head


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open `path`, apply EXIF orientation and convert any mode to 8-bit RGB.

    Animations give their first frame; pictures of more than MAX_DECODE_PIXELS pixels
    are refused from their header, before decoding.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"image '{path}': no such file; give the path of a PNG or JPEG picture")
    if path.is_dir():
        raise UserError(f"image '{path}': is a folder; give the path of a picture file")
    if path.stat().st_size == 0:
        raise UserError(f"image '{path}': the file is empty; give a valid picture file")
    check_readable(path, "image")
    try:
        with warnings.catch_warnings():
            # Pillow's own guard (Image.MAX_IMAGE_PIXELS) warns, then errors, from the header.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_DECODE_PIXELS:
                    raise _TooLarge(f"{img.width}x{img.height}")
                img.seek(0)  # first frame of animations
                img = ImageOps.exif_transpose(img)
                img.load()
                rgb = _to_rgb8(img)
    except (_TooLarge, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        size = f" ({e} px)" if isinstance(e, _TooLarge) else ""
        raise UserError(
            f"image '{path}': more than {MAX_DECODE_PIXELS:,} pixels{size}; downscale it before training"
        ) from None
    except UnidentifiedImageError:
        if _looks_like_svg(path):
            raise UserError(f"image '{path}': SVG vector graphics cannot be read; export it as a PNG "
                            "(rasterise it) first") from None
        raise UserError(f"image '{path}': not a picture Pillow can read; give a PNG or JPEG file") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"image '{path}': cannot be decoded ({e}); the file may be truncated or corrupt") from None
    if rgb.width == 0 or rgb.height == 0:
        raise UserError(f"image '{path}': has zero size; give a non-empty picture")
    return rgb


def _to_rgb8(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grey: scale to 8 bits (Pillow's convert would clip at 255). 16-bit
        # modes are always 0..65535; 32-bit 'I' (how Pillow opens some 16-bit PNGs) by range.
        a = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(np.round(a * 255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(np.round(a * (255.0 if a.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        return Image.fromarray(a.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency over white rather than exposing hidden colours.
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """uint8 H×W×3 picture → float tensor 3×H×W in [-1, 1]."""
    a = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float tensor 3×H×W in [-1, 1] → uint8 H×W×3 array."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def make_grid(images: list[np.ndarray], pad: int = 2, ncol: int | None = None,
              background: int = 255) -> np.ndarray:
    """Tile uint8 pictures (sizes may differ) into one picture, row-major."""
    n = len(images)
    ncol = ncol or min(n, max(1, math.ceil(math.sqrt(n))))
    nrow = math.ceil(n / ncol)
    cell_h = max(a.shape[0] for a in images)
    cell_w = max(a.shape[1] for a in images)
    grid = np.full((nrow * (cell_h + pad) + pad, ncol * (cell_w + pad) + pad, 3), background, np.uint8)
    for i, a in enumerate(images):
        r, c = divmod(i, ncol)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        grid[y:y + a.shape[0], x:x + a.shape[1]] = a
    return grid


def write_images(out: str | os.PathLike, images, prefix: str = "sample", log: bool = True) -> list[Path]:
    """`prefix_000.png ...` and `grid.png` in `out` (created); stale files of an earlier call are
    removed first. `images`: 3×H×W tensors in [-1, 1], uint8 H×W×3 arrays or PIL images."""
    out = Path(out)
    arrays = [to_uint8(x) if isinstance(x, torch.Tensor) else np.asarray(x) for x in images]
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob(f"{prefix}_*.png"), out / "grid.png"]:
        if old.is_file():
            old.unlink()
    paths = [out / f"{prefix}_{i:03d}.png" for i in range(len(arrays))]
    for path, a in zip(paths, arrays):
        Image.fromarray(a).save(path)
    Image.fromarray(make_grid(arrays)).save(out / "grid.png")
    if log:
        h, w = arrays[0].shape[:2]
        noun = ("sample" if prefix == "sample" else "image") + ("s" if len(arrays) != 1 else "")
        print(f"wrote {len(arrays)} {noun} of {w}x{h} px (w x h) and grid.png to {out}", file=sys.stderr)
    return paths
