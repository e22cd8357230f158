"""Pure helpers of the studio (no Gradio): boxes from clicks, widget values parsed into API
arguments (the API checks them), and the `sinddm` command that reproduces a panel's result.

Every `*_command` returns one shell line; `sinddm` run with it writes the same pictures (same
seed, same model, same device) into `out`.
"""

from __future__ import annotations

import shlex
from typing import Sequence

from ..errors import UserError
from ..edits.regions import Box, parse_box


def q(value) -> str:
    return shlex.quote(str(value))


def box_from_corners(a: Sequence[int], b: Sequence[int], size_hw: tuple[int, int]) -> Box:
    """The box spanned by two clicked pixels (x, y) a and b, both included, clipped to the image."""
    h, w = size_hw
    (x0, y0), (x1, y1) = a, b
    xs = sorted((min(max(int(x0), 0), w - 1), min(max(int(x1), 0), w - 1)))
    ys = sorted((min(max(int(y0), 0), h - 1), min(max(int(y1), 0), h - 1)))
    return Box(ys[0], xs[0], ys[1] - ys[0] + 1, xs[1] - xs[0] + 1)


def parse_box_field(text: str, what: str) -> Box:
    """A box typed or drawn into a field ('y,x,h,w'); an empty field is a message naming it."""
    if not str(text or "").strip():
        raise UserError(f"{what}: empty; draw it on the image (two clicks: opposite corners) or type y,x,h,w")
    try:
        return parse_box(text)
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None


def parse_boxes_field(text: str, what: str) -> list[Box]:
    """One box per line (or separated by ';')."""
    parts = [p for p in str(text or "").replace(";", "\n").splitlines() if p.strip()]
    if not parts:
        raise UserError(f"{what}: empty; draw at least one (two clicks: opposite corners) or type y,x,h,w")
    return [parse_box_field(p, what) for p in parts]


def parse_size_field(text: str) -> tuple[int, int] | None:
    """'HxW' → (h, w); empty → None (the scale factors are used)."""
    import re

    text = str(text or "").strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+)\s*[xX]\s*(\d+)", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise UserError(f"size: expected HEIGHTxWIDTH in pixels, e.g. 100x240; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def as_int(value):
    """A widget's number as an int where it is a whole one (sliders give 4.0); anything else is
    passed on as it is, for the library to refuse in its own words."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return int(f) if f.is_integer() else value


def _num(x: float) -> str:
    return f"{float(x):g}"


def _common(n: int, seed: int, out, device: str) -> list[str]:
    args = ["--num", str(n), "--seed", str(seed), "--out", q(out)]
    if device and device != "auto":
        args += ["--device", q(device)]
    return args


def sample_command(model, n: int, seed: int, out, scale_hw: tuple[float, float] | None = None,
                   size: tuple[int, int] | None = None, start_level: int = 0, device: str = "auto") -> str:
    parts = ["sinddm", "sample", q(model)]
    if size is not None:
        parts += ["--size", f"{size[0]}x{size[1]}"]
    elif scale_hw is not None and tuple(map(float, scale_hw)) != (1.0, 1.0):
        parts += ["--scale-hw", _num(scale_hw[0]), _num(scale_hw[1])]
    if start_level:
        parts += ["--start-level", str(start_level)]
    return " ".join(parts + _common(n, seed, out, device))


def roi_copy_command(model, source: Box, targets: Sequence[Box], n: int, seed: int, out,
                     device: str = "auto") -> str:
    parts = ["sinddm", "edit", q(model), "roi-copy", "--source", str(source), "--target", *map(str, targets)]
    return " ".join(parts + _common(n, seed, out, device))


def harmonize_command(model, composite, mask, noise_level: int, n: int, seed: int, out,
                      device: str = "auto") -> str:
    parts = ["sinddm", "edit", q(model), "harmonize", "--composite", q(composite), "--mask", q(mask),
             "--noise-level", str(noise_level)]
    return " ".join(parts + _common(n, seed, out, device))


def style_transfer_command(model, content, noise_level: int, n: int, seed: int, out, device: str = "auto") -> str:
    parts = ["sinddm", "edit", q(model), "style-transfer", "--content", q(content), "--noise-level", str(noise_level)]
    return " ".join(parts + _common(n, seed, out, device))


def text_command(model, mode: str, prompt: str, n: int, seed: int, out, device: str = "auto",
                 strength: float | None = None, fill_factor: float | None = None, momentum: float | None = None,
                 step_size: float | None = None, box: Box | None = None, mask=None, clip_checkpoint=None) -> str:
    """text-content / text-style / text-style-transfer / text-roi (box or mask)."""
    parts = ["sinddm", "edit", q(model), mode, "--text", q(prompt)]
    if box is not None:
        parts += ["--box", str(box)]
    if mask is not None:
        parts += ["--mask", q(mask)]
    for flag, value in (("--strength", strength), ("--fill-factor", fill_factor), ("--momentum", momentum),
                        ("--step-size", step_size)):
        if value is not None:
            parts += [flag, _num(value)]
    if clip_checkpoint:
        parts += ["--clip-checkpoint", q(clip_checkpoint)]
    return " ".join(parts + _common(n, seed, out, device))
