"""Pictures people would rather look at than read: loss curves and pyramid previews.

Drawn with Pillow alone, so no plotting library is needed.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .pyramid import Pyramid


def _text(draw: ImageDraw.ImageDraw, xy, s: str, fill=(0, 0, 0), anchor="la") -> None:
    draw.text(xy, s, fill=fill, font=ImageFont.load_default(), anchor=anchor)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.1e}"


def loss_curve(steps: list[int], losses: list[float], title: str = "training loss (L1 on noise)",
               size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A line plot of loss against step, log-scaled in y when the range is wide (an RGB picture)."""
    w, h = size
    left, right, top, bottom = 64, 16, 28, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    _text(d, (w // 2, 8), title, anchor="ma")
    d.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    pts = [(s, l) for s, l in zip(steps, losses) if math.isfinite(l) and l > 0]
    if len(pts) >= 1:
        xs = np.array([p[0] for p in pts], dtype=np.float64)
        ys = np.array([p[1] for p in pts], dtype=np.float64)
        log_y = ys.max() / ys.min() > 20
        fy = np.log10 if log_y else (lambda v: v)
        y0, y1 = fy(ys.min()), fy(ys.max())
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        x0, x1 = (xs.min(), xs.max()) if xs.max() > xs.min() else (xs.min() - 1, xs.max() + 1)
        pw, ph = w - left - right, h - top - bottom

        def px(x, y):
            return left + (x - x0) / (x1 - x0) * pw, top + (1 - (fy(y) - y0) / (y1 - y0)) * ph

        coords = [px(x, y) for x, y in zip(xs, ys)]
        if len(coords) > 1:
            d.line(coords, fill=(31, 119, 180), width=2)
        else:
            cx, cy = coords[0]
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=(31, 119, 180))
        for frac in (0.0, 0.5, 1.0):
            yv = y0 + frac * (y1 - y0)
            label = 10 ** yv if log_y else yv
            ypix = top + (1 - frac) * ph
            d.line([left - 4, ypix, left, ypix], fill=(0, 0, 0))
            _text(d, (left - 6, ypix), _fmt(label), anchor="rm")
            xv = x0 + frac * (x1 - x0)
            xpix = left + frac * pw
            d.line([xpix, h - bottom, xpix, h - bottom + 4], fill=(0, 0, 0))
            _text(d, (xpix, h - bottom + 6), f"{int(round(xv))}", anchor="ma")
        _text(d, (w // 2, h - 14), "step" + ("   (log-scale loss)" if log_y else ""), anchor="ma")
    else:
        _text(d, (w // 2, h // 2), "no finite loss values yet", anchor="mm")
    return img


def pyramid_preview(pyramid: Pyramid, path, start_t: list[int] | None = None) -> None:
    """Every level (top row) and its blurry version x̃ (bottom row), labelled."""
    n, pad, label_h = pyramid.n_scales, 6, 26
    widths = [a.shape[1] for a in pyramid.levels]
    row_h = label_h + pyramid.levels[-1].shape[0] + pad
    img = Image.new("RGB", (sum(widths) + pad * (n + 1), 2 * row_h + pad), "white")
    d = ImageDraw.Draw(img)
    x = pad
    for s in range(n):
        h, w = pyramid.sizes_hw[s]
        top = f"s={s}  {w}x{h}" + (f"\nT[s]={start_t[s]}" if start_t else "")
        _text(d, (x, pad), top)
        img.paste(Image.fromarray(pyramid.levels[s]), (x, pad + label_h))
        if s > 0:
            _text(d, (x, pad + row_h), f"blurry\nd={pyramid.blur_distance[s - 1]:.3f}")
            img.paste(Image.fromarray(pyramid.blurry[s]), (x, pad + row_h + label_h))
        x += w + pad
    img.save(path)
