"""What the studio accepts from an upload, and the recipe of its "train hybrid" button. No Gradio.

Every upload is capped twice: Gradio refuses a file over MAX_UPLOAD_BYTES while it streams in (the
page passes the cap to `launch`), and `read_upload` refuses one again, from its size on disk and
then from its header's pixel count, before any pixel is decoded: a small file may declare a huge
picture (a decompression bomb).
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

from PIL import Image

from ..errors import UserError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024   # 20 MB: a camera JPEG fits; a stray video or archive does not
MAX_UPLOAD_PIXELS = 25_000_000        # 25 MP: a 24 MP camera's picture; 75 MB once decoded as RGB

# configs/hybrid-cpu.yaml, embedded: configs/ is not in the package (a wheel would not ship it), and
# the studio must find its recipe however sinddm is installed. tests/test_app.py checks the two agree.
HYBRID_CPU = {
    "image": {"max_pixels": 12000},
    "model": {"dim": 32, "trained_scales": 1},
    "train": {"steps": 4000, "batch_size": 4, "lr": 1.0e-3, "lr_milestones": [2000, 3000, 3500], "lr_gamma": 0.5,
              "ema_decay": 0.98, "ema_every": 10, "ema_start": 400, "checkpoint_every": 2000, "keep_checkpoints": 2,
              "log_every": 50, "grid_samples": 4},
}


def read_upload(path, what: str, max_bytes: int = MAX_UPLOAD_BYTES,
                max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """An uploaded file as an RGB picture; a file that is not one, or is over a cap, is one line
    naming `what` and the file (not the server's upload path)."""
    from ..image_io import load_rgb

    if not path:
        raise UserError(f"{what}: no picture uploaded; upload a PNG or JPEG")
    p, name = Path(path), Path(path).name
    too_many = f"{what} '{name}': {{}}over the studio's limit of {max_pixels:,} pixels; downscale it first"
    if p.is_file() and p.stat().st_size > max_bytes:
        raise UserError(f"{what} '{name}': {p.stat().st_size / 2 ** 20:.1f} MB is over the studio's upload limit "
                        f"of {max_bytes / 2 ** 20:g} MB; downscale or recompress it")
    if p.is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(p) as img:      # the header only: nothing is decoded yet
                    w, h = img.size
        except Image.DecompressionBombError:    # Pillow's own guard, from the header too
            raise UserError(too_many.format("")) from None
        except Exception:  # noqa: BLE001 - not a picture: load_rgb below says so in its words
            w = h = 0
        if w * h > max_pixels:
            raise UserError(too_many.format(f"{w}x{h} px is "))
    try:
        return load_rgb(path)
    except UserError as e:
        raise UserError(f"{what}: " + str(e).replace(f"'{path}'", f"'{name}'")) from None


def keep_photo(path, folder: Path) -> Path:
    """A copy of an uploaded photo in `folder`, under its own (tidied) name: the file the commands
    name. The bytes are copied, so the copy decodes to the same pixels."""
    from ..sources import PICTURE_SUFFIXES

    src = Path(path)
    stem = re.sub(r"[^\w.-]+", "_", src.stem).strip("._") or "photo"
    suffix = src.suffix.lower()
    if suffix not in PICTURE_SUFFIXES:     # e.g. no suffix: then it would not be taken for a picture
        dest = folder / f"{stem}.png"
        read_upload(path, "photo").save(dest)
        return dest
    dest = folder / f"{stem}{suffix}"
    shutil.copyfile(src, dest)
    return dest
