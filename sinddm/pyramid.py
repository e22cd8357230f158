"""The multiscale pyramid of the training image (method §1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .errors import ParameterError, UserError
from .image_io import to_tensor

MIN_SIDE = 42        # the coarsest short side is clamped to [42, 55]
MAX_COARSE_SIDE = 55
COARSE_AREA = 3110   # px²: the 35×35 receptive field covers ~40 % of the coarsest scale
TARGET_FACTOR = 1.411
DEFAULT_MAX_PIXELS = 50_000


@dataclass
class Pyramid:
    """Levels coarsest first. `levels[i]` and `blurry[i]` are uint8 H×W×3 arrays."""

    input_wh: tuple[int, int]
    scale_factor: float
    levels: list[np.ndarray]
    blurry: list[np.ndarray | None]   # blurry[0] is None: scale 0 has no blurry version
    blur_distance: list[float]        # scales 1..N-1

    @property
    def n_scales(self) -> int:
        return len(self.levels)

    @property
    def sizes_hw(self) -> list[tuple[int, int]]:
        return [(a.shape[0], a.shape[1]) for a in self.levels]

    def level_tensor(self, s: int) -> torch.Tensor:
        return to_tensor(self.levels[s])

    def blurry_tensor(self, s: int) -> torch.Tensor:
        """x̃^s; for s = 0 the clean level (the loss ignores it there)."""
        return to_tensor(self.blurry[s] if s > 0 else self.levels[0])


def working_size(w: int, h: int, max_pixels: int) -> tuple[int, int]:
    """The pixel cap: shrink (with truncation) so that W·H ≤ max_pixels."""
    if w * h > max_pixels:
        k = math.sqrt(w * h / max_pixels)
        return int(w / k), int(h / k)
    return w, h


def pyramid_geometry(w: int, h: int) -> tuple[int, float, list[tuple[int, int]]]:
    """(N, r, sizes as (w, h) coarsest first) for a working size (w, h)."""
    short, long = min(w, h), max(w, h)
    c = min(max(round(math.sqrt(COARSE_AREA * short / long)), MIN_SIDE), MAX_COARSE_SIDE)
    n = round(math.log(short / c) / math.log(TARGET_FACTOR)) + 1
    if n < 2:
        r = 1.0
        n = 1
    else:
        r = math.exp(math.log(short / c) / (n - 1))
    sizes = [(round(w / r ** (n - 1 - i)), round(h / r ** (n - 1 - i))) for i in range(n)]
    return n, r, sizes


def blur_distance(level: np.ndarray, blurry: np.ndarray) -> float:
    # Faithful to the reference: the difference is taken in uint8, so it wraps
    # modulo 256 (-2 counts as 254). Mathematically odd, but the published start
    # timesteps (and so the paper's results) were produced with it.
    diff = (level.astype(np.uint8) - blurry.astype(np.uint8)).astype(np.float64)
    return float(np.linalg.norm(diff) / (3 * level.shape[0] * level.shape[1]))


def build_pyramid(image: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS,
                  name: str = "image") -> Pyramid:
    """Every level is one LANCZOS resize of the full-resolution RGB `image`."""
    w0, h0 = image.size
    if min(w0, h0) < MIN_SIDE:
        raise UserError(f"{name}: {w0}x{h0} px is too small; the short side must be at least {MIN_SIDE} px")
    w, h = working_size(w0, h0, max_pixels)
    if min(w, h) < MIN_SIDE:
        raise UserError(
            f"{name}: the pixel cap {max_pixels} shrinks {w0}x{h0} to {w}x{h}, below the {MIN_SIDE} px "
            f"short side; raise max_pixels or use a less elongated image")
    _, r, sizes = pyramid_geometry(w, h)
    levels = [np.array(image.resize(size, Image.LANCZOS), dtype=np.uint8) for size in sizes]
    blurry: list[np.ndarray | None] = [None]
    for i in range(1, len(levels)):
        prev = Image.fromarray(levels[i - 1])
        blurry.append(np.array(prev.resize(sizes[i], Image.BILINEAR), dtype=np.uint8))
    dists = [blur_distance(levels[i], blurry[i]) for i in range(1, len(levels))]
    return Pyramid(input_wh=(w0, h0), scale_factor=r, levels=levels, blurry=blurry, blur_distance=dists)


def sample_sizes(pyramid_sizes_hw: list[tuple[int, int]], scale_factor: float,
                 scale_hw: tuple[float, float] | None = None,
                 size_hw: tuple[int, int] | None = None,
                 start_level: int = 0) -> list[tuple[int, int]]:
    """Per-scale output sizes (h, w) for sampling (method §5).

    `scale_hw` multiplies every training size; `size_hw` fixes the finest output
    and the coarser scales follow it by the factor r. `start_level = k` starts the
    scale-0 noise at the size of level k and shifts every later scale by k levels,
    extrapolating beyond the finest by r (smaller objects, supplement F).
    """
    n = len(pyramid_sizes_hw)
    if size_hw is not None:
        base = [(int(round(size_hw[0] / scale_factor ** (n - 1 - i))),
                 int(round(size_hw[1] / scale_factor ** (n - 1 - i)))) for i in range(n)]
        base[-1] = tuple(size_hw)
    else:
        fh, fw = scale_hw if scale_hw is not None else (1.0, 1.0)
        base = [(int(h * fh), int(w * fw)) for h, w in pyramid_sizes_hw]
    if start_level == 0:
        return base
    out = []
    for i in range(n):
        j = i + start_level
        if j < n:
            out.append(base[j])
        else:
            k = j - (n - 1)
            out.append((int(round(base[-1][0] * scale_factor ** k)), int(round(base[-1][1] * scale_factor ** k))))
    return out


MIN_OUTPUT_SIDE = 4   # px: the coarsest scale of an output must be at least this big


def checked_sample_sizes(pyramid: "Pyramid", scale_hw: tuple[float, float] | None = None,
                         size_hw: tuple[int, int] | None = None, start_level: int = 0) -> list[tuple[int, int]]:
    """`sample_sizes` for `pyramid`, refusing (ParameterError, naming `size` or `scale_hw`) an output whose coarsest scale
    would be under 4 px or whose finest would pass MAX_DECODE_PIXELS (64 Mpx)."""
    from .image_io import MAX_DECODE_PIXELS

    sizes = sample_sizes(pyramid.sizes_hw, pyramid.scale_factor, scale_hw=scale_hw, size_hw=size_hw,
                         start_level=start_level)
    param = "size" if size_hw is not None else "scale_hw"
    if min(min(hw) for hw in sizes) < MIN_OUTPUT_SIDE:
        raise ParameterError(param, f"too small: the coarsest scale would be {sizes[0][0]}x{sizes[0][1]} px "
                                    f"(at least {MIN_OUTPUT_SIDE}); ask for a larger output")
    if max(h * w for h, w in sizes) > MAX_DECODE_PIXELS:
        raise ParameterError(param, "too large (over 64 Mpx at the finest scale); ask for a smaller output")
    return sizes
