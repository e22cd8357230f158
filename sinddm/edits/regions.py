"""Regions for ROI-guided generation (method §7.3): boxes in finest-scale pixels, their sizes at
coarser levels, and the x̂0 hooks that copy a source box of the training image into target boxes.

Boxes are `(y, x, h, w)`; images are float tensors in [-1, 1] (N×3×H×W for batches).
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from ..pyramid import Pyramid
from ..samplers import X0Hook

ROI_WEIGHT = 0.8              # x̂0[target] ← 0.8 · source + 0.2 · x̂0[target] (method §7.3)


class Box(NamedTuple):
    """A rectangle in pixels: top row, left column, height, width."""

    y: int
    x: int
    h: int
    w: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)

    def __str__(self) -> str:
        return f"{self.y},{self.x},{self.h},{self.w}"


_BOX_RE = re.compile(r"\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*,\s*([+-]?\d+)\s*")


def parse_box(text: str) -> Box:
    """'y,x,h,w' (whole numbers, y, x >= 0, h, w >= 1) → Box; ValueError says what is wrong."""
    m = _BOX_RE.fullmatch(str(text))
    if not m:
        raise ValueError(f"expected a box as y,x,h,w (four whole numbers, e.g. 10,20,32,16), got {text!r}")
    box = Box(*(int(g) for g in m.groups()))
    if box.y < 0 or box.x < 0:
        raise ValueError(f"box {text!r}: y and x must be >= 0")
    if box.h < 1 or box.w < 1:
        raise ValueError(f"box {text!r}: h and w must be >= 1")
    return box


def box_outside(box: Box, size_hw: tuple[int, int]) -> bool:
    """Whether `box` reaches beyond an image of `size_hw`."""
    return box.y + box.h > size_hw[0] or box.x + box.w > size_hw[1]


def scale_box(box: Box, factor: float, size_hw: tuple[int, int]) -> Box:
    """`box` at a level `factor` times smaller than the finest: every number divided by
    `factor` and truncated (method §7); at least 1 px, shifted (never cut) to fit `size_hw`
    when truncation and the level's own rounding disagree by a pixel at the border."""
    h = min(max(1, int(box.h / factor)), size_hw[0])
    w = min(max(1, int(box.w / factor)), size_hw[1])
    y = min(int(box.y / factor), size_hw[0] - h)
    x = min(int(box.x / factor), size_hw[1] - w)
    return Box(y, x, h, w)


def resize_patch(patch: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of a 3×h×w or N×3×h×w patch."""
    batched = patch.dim() == 4
    p = patch if batched else patch[None]
    if tuple(p.shape[-2:]) != tuple(size_hw):
        p = F.interpolate(p, size=tuple(size_hw), mode="bilinear", align_corners=False, antialias=True)
    return p if batched else p[0]


def roi_copy_hook(source_patch: torch.Tensor, targets: Sequence[Box], weight: float = ROI_WEIGHT) -> X0Hook:
    """x0_hook writing `source_patch` (3×h×w in [-1, 1], one pyramid level's crop) into each
    target: x̂0[target] ← weight · resize(source) + (1 - weight) · x̂0[target].

    The patch is resized to each target's size (bilinear), so targets may differ in size from
    the source. Targets are applied in order (a later one wins where they overlap). The input
    x̂0 is not modified in place.
    """
    patches = [resize_patch(source_patch.float(), (t.h, t.w)) for t in targets]
    cache: dict = {}

    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        key = (x0.device, x0.dtype)
        if key not in cache:
            cache[key] = [p.to(device=x0.device, dtype=x0.dtype) for p in patches]
        out = x0.clone()
        for box, p in zip(targets, cache[key]):
            ys, xs = box.slices()
            out[..., ys, xs] = weight * p + (1 - weight) * out[..., ys, xs]
        return out

    return hook


def roi_hooks(pyramid: Pyramid, sizes_hw: Sequence[tuple[int, int]], source: Box, targets: Sequence[Box],
              weight: float = ROI_WEIGHT) -> list[X0Hook]:
    """One hook per output scale: scales 0..N-2 copy the source box of that pyramid level into
    the targets (both scaled by r^(N-1-s)); the finest scale gets None (method §7)."""
    n = len(sizes_hw)
    if n != pyramid.n_scales:
        raise ValueError(f"{n} output scales for a {pyramid.n_scales}-scale pyramid")
    r = pyramid.scale_factor
    hooks: list[X0Hook] = []
    for s in range(n - 1):
        f = r ** (n - 1 - s)
        src = scale_box(source, f, pyramid.sizes_hw[s])
        ys, xs = src.slices()
        patch = pyramid.level_tensor(s)[:, ys, xs]
        hooks.append(roi_copy_hook(patch, [scale_box(t, f, sizes_hw[s]) for t in targets], weight))
    hooks.append(None)
    return hooks
