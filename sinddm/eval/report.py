"""The pictures of an evaluation, drawn with Pillow alone: the report page and the samples figure.

`render_report`: one page per evaluation (training image, samples, aggregate metrics, loss
curve, per-sample bars). `render_suite_samples`: a row per run (its labels, the training
image, its first samples), the figure of `sinddm eval-suite` and `sinddm eval-compare --png`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .schema import METRIC_INFO, TABLE_METRICS, summary_pairs


def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _fit(img, max_w: int, max_h: int):
    from PIL import Image

    k = min(max_w / img.width, max_h / img.height)
    size = (max(1, round(img.width * k)), max(1, round(img.height * k)))
    return img.resize(size, Image.LANCZOS if k < 1 else Image.NEAREST)


def _bar_chart(values: list[float | None], title: str, size: tuple[int, int]):
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    f, fs = _font(13), _font(11)
    d.text((w // 2, 4), title, fill="black", font=f, anchor="ma")
    left, right, top, bottom = 52, 10, 24, 22
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    vals = [v if v is not None and math.isfinite(v) else None for v in values]
    finite = [v for v in vals if v is not None]
    if not finite:
        d.text((w // 2, h // 2), "skipped", fill=(120, 120, 120), font=f, anchor="mm")
        return img
    lo = min(0.0, min(finite))
    hi = max(finite)
    hi = hi if hi > lo else lo + 1.0
    pw, ph = w - left - right, h - top - bottom
    n = len(vals)
    bw = pw / n

    def ypix(v):
        return top + (1 - (v - lo) / (hi - lo)) * ph

    for i, v in enumerate(vals):
        if v is None:
            continue
        x0 = left + i * bw + (0.15 * bw if bw > 3 else 0)
        x1 = max(x0 + 1, left + (i + 1) * bw - (0.15 * bw if bw > 3 else 0))
        ya, yb = sorted((ypix(v), ypix(0)))
        d.rectangle([x0, ya, max(x0, x1 - 1), yb], fill=(31, 119, 180))
    mean = sum(finite) / len(finite)
    y = ypix(mean)
    for x in range(left, w - right, 8):
        d.line([x, y, min(x + 4, w - right), y], fill=(214, 39, 40), width=1)
    for v in (lo, hi):
        d.text((left - 4, ypix(v)), f"{v:.3g}", fill="black", font=fs, anchor="rm")
    d.text((w - right, h - bottom + 4), f"mean {mean:.4g} (red), {len(finite)} samples", fill=(214, 39, 40),
           font=fs, anchor="ra")
    d.text((left, h - bottom + 4), "sample 0 ->", fill="black", font=fs, anchor="la")
    return img


def _loss_image(loss_csv: Path | None, size: tuple[int, int]):
    from PIL import Image, ImageDraw

    from ..plots import loss_curve

    steps, losses = [], []
    if loss_csv is not None:
        try:
            for line in loss_csv.read_text().splitlines()[1:]:
                s, l = line.split(",")[:2]
                steps.append(int(s))
                losses.append(float(l))
        except (OSError, ValueError):
            steps, losses = [], []
    if not steps:
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).text((size[0] // 2, size[1] // 2), "no loss.csv in the run folder",
                                 fill=(120, 120, 120), font=_font(13), anchor="mm")
        return img
    return loss_curve(steps, losses, size=size)


def render_report(path: Path, reference: np.ndarray, samples: list[np.ndarray], metrics: dict,
                  loss_csv: Path | None, title: str) -> None:
    """One page: training image, sample grid, aggregate metrics, loss curve, per-sample bars."""
    from PIL import Image, ImageDraw

    W, pad, row_h = 1280, 16, 300
    cw, ch = (W - 4 * pad) // 3, 190
    ref_img = _fit(Image.fromarray(reference), 360, row_h)  # row 1: training image | samples
    grid_img = _fit(_sample_grid(samples), W - 3 * pad - ref_img.width, row_h)
    loss = _loss_image(loss_csv, (560, 300))  # row 2: aggregate text | loss curve
    charts = _per_sample_charts(metrics["per_sample"], (cw, ch))  # row 3: per-sample bars
    notes = _notes(metrics)  # then the metrics' meanings and what was skipped
    H = pad + 30 + 20 + row_h + pad + 300 + pad + 2 * (ch + pad) + 18 * len(notes) + pad + pad
    page = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(page)
    fs = _font(12)
    y = pad
    d.text((pad, y), title, fill="black", font=_font(18))
    y += 30
    d.text((pad, y), f"training image ({reference.shape[1]}x{reference.shape[0]})", fill="black", font=fs)
    d.text((2 * pad + ref_img.width, y), f"samples 0..{len(samples) - 1} (row-major)", fill="black", font=fs)
    y += 20
    page.paste(ref_img, (pad, y))
    page.paste(grid_img, (2 * pad + ref_img.width, y))
    y += row_h + pad
    _draw_aggregate(d, (pad, y), metrics)
    page.paste(loss, (W - pad - loss.width, y))
    y += 300 + pad
    for i, c in enumerate(charts):
        r, col = divmod(i, 3)
        page.paste(c, (pad + col * (cw + pad), y + r * (ch + pad)))
    y += 2 * (ch + pad)
    for i, (line, colour) in enumerate(notes):
        d.text((pad, y + 18 * i), line, fill=colour, font=fs)
    page.save(path)


def _sample_grid(samples: list[np.ndarray]):
    """The samples in a grid about 1.8 times as wide as tall in pictures, row-major."""
    from PIL import Image

    from ..image_io import make_grid

    n = len(samples)
    ncol = max(1, min(n, math.ceil(math.sqrt(n * 1.8))))
    return Image.fromarray(make_grid(samples, pad=2, ncol=ncol))


def _per_sample_charts(rows: list[dict], size: tuple[int, int]) -> list:
    keys = ["swd", "copy_mean_region", "copy_large_fraction", "copy_max_region", "sifid64", "sifid192"]
    return [_bar_chart([r.get(k) for r in rows], f"{METRIC_INFO[k][0]} per sample", size) for k in keys]


def _notes(metrics: dict) -> list[tuple[str, tuple[int, int, int]]]:
    """(line, colour): what each metric means, then what was skipped and why."""
    legend = [f"{METRIC_INFO[k][0]}: {METRIC_INFO[k][1]}" for k in TABLE_METRICS + ["copy_max_region"]]
    skipped = [f"skipped {k}: {v}" for k, v in metrics.get("skipped", {}).items()]
    return [(line, (60, 60, 60)) for line in legend] + [(line, (160, 60, 0)) for line in skipped]


def _draw_aggregate(d, xy: tuple[int, int], metrics: dict) -> None:
    """How the samples were made, then each metric's mean ± std (min, max)."""
    x, y = xy
    f = _font(13)
    s, hw = metrics["samples"], metrics["training_image_hw"]
    head = [f"{metrics['num_samples']} samples ({s['source']}"
            + (f", seed {s.get('seed')}" if s.get("seed") is not None else "")
            + f"), training image {hw[1]}x{hw[0]} px",
            f"metrics took {metrics['timing_s']['total']:.1f} s",
            "", "aggregate over samples (mean ± std):"]
    for i, line in enumerate(head):
        d.text((x, y + 18 * i), line, fill="black", font=f)
    for i, (label, text) in enumerate(summary_pairs(metrics, short=True), start=len(head)):
        d.text((x + 8, y + 18 * i), label, fill="black", font=f)
        d.text((x + 175, y + 18 * i), text, fill="black", font=f)


SUITE_SAMPLES_PER_ROW = 6


def render_suite_samples(path: Path, entries: list[tuple[list[str], np.ndarray, list[np.ndarray]]],
                         row_h: int = 128) -> None:
    """One row per run: its label lines, the training image, then its first samples, all at
    `row_h` px tall (small pictures are enlarged without smoothing), so recipes compare by eye."""
    from PIL import Image, ImageDraw

    if not entries:
        return
    pad, label_w = 8, 230
    rows = [[_fit(Image.fromarray(a), 4 * row_h, row_h) for a in [ref, *samples[:SUITE_SAMPLES_PER_ROW]]]
            for _, ref, samples in entries]
    width = label_w + max(sum(im.width + pad for im in row) for row in rows) + pad
    page = Image.new("RGB", (width, pad + len(rows) * (row_h + pad) + 16), "white")
    d = ImageDraw.Draw(page)
    f = _font(13)
    d.text((label_w, pad // 2), "training image, then the first samples", fill=(90, 90, 90), font=_font(12))
    for r, ((label, _, _), row) in enumerate(zip(entries, rows)):
        y = 16 + pad + r * (row_h + pad)
        for i, line in enumerate(label):
            d.text((pad, y + 18 * i), line, fill="black", font=f)
        x = label_w
        for i, im in enumerate(row):
            page.paste(im, (x, y))
            x += im.width + (2 * pad if i == 0 else pad)
    page.save(path)
