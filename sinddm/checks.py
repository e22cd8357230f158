"""Argument checks for the public API: one place, one wording. Every check raises a
`ParameterError` naming the parameter; the command line, job files and the studio map that name
to their own (a flag, a key, a field) when they show the message.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import ParameterError, UserError
from .schedule import T_STEPS

T_MAX = T_STEPS      # T[0] in 1..100, later ones in 1..99 (method §2)
HARMONIZE_NOISE_LEVEL = 5        # method §7.1
STYLE_TRANSFER_NOISE_LEVEL = 15  # method §7.2
OUTPUTS = ("pil", "tensor")


def whole(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    """`value` as an int in lo..hi (numpy integers welcome; bools, floats and strings refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(name, f"must be a whole number, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        raise ParameterError(name, f"must be {f'>= {lo}' if hi is None else f'in {lo}..{hi}'}, got {v}")
    return v


def optional_whole(name: str, value: Any, lo: int, hi: int | None = None) -> int | None:
    return None if value is None else whole(name, value, lo, hi)


def number(name: str, value: Any, lo: float, hi: float) -> float:
    """`value` as a float in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ParameterError(name, f"must be a number in [{lo:g}, {hi:g}], got {value!r}")
    if not lo <= float(value) <= hi:
        raise ParameterError(name, f"must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(name, f"must be True or False, got {value!r}")
    return bool(value)


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if value not in options:
        raise ParameterError(name, f"must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def seed(value: Any) -> int:
    return whole("seed", value, 0, 2 ** 63 - 1)


def generator(value: Any) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise ParameterError("generator", f"must be a torch.Generator or None, got {type(value).__name__}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError("text", f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ParameterError("text", "empty; give a few words, e.g. 'a medieval castle'")
    return value


def callback(value: Any):
    if value is not None and not callable(value):
        raise ParameterError("callback", f"must be callable as callback(scale, t, x0), got {type(value).__name__}")
    return value


def start_t(value: Any, default: Sequence[int]) -> list[int]:
    """Per-scale start timesteps: T[1..N-1] (T[0] kept) or T[0..N-1]; T[0] in 1..100, the rest in 1..99."""
    n = len(default)
    if value is None:
        return list(default)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not isinstance(value, np.ndarray):
        raise ParameterError("start_t", f"must be a list of whole numbers, got {value!r}")
    values = list(value)
    if len(values) == n - 1 and n > 1:
        values = [default[0], *values]
    elif len(values) != n:
        raise ParameterError("start_t", f"give {n - 1} values (T[1]..T[{n - 1}]) or {n} (T[0]..T[{n - 1}]), "
                                        f"got {len(values)}")
    out = []
    for s, v in enumerate(values):
        hi = T_MAX if s == 0 else T_MAX - 1
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise ParameterError("start_t", f"T[{s}] must be a whole number, got {v!r}")
        if not 1 <= int(v) <= hi:
            raise ParameterError("start_t", f"T[{s}] must be in 1..{hi}, got {int(v)}")
        out.append(int(v))
    return out


def noise_level(value: Any) -> int:
    """The one timestep harmonization and style transfer start from (method §7)."""
    return whole("noise_level", value, 1, T_MAX - 1)


def pair(name: str, value: Any, kind: str = "number") -> tuple:
    """A (height, width) pair."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        raise ParameterError(name, f"must be a (height, width) pair, got {value!r}")
    if kind == "whole":
        return tuple(whole(name, v, 1) for v in value)
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ParameterError(name, f"must be a (height, width) pair of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def picture(value: Any, name: str) -> Image.Image:
    """A path, PIL image or uint8 H×W×3 (or H×W) array as an RGB (or L) PIL image."""
    from .image_io import load_rgb

    if isinstance(value, Image.Image):
        return value.convert("RGB") if value.mode not in ("RGB", "L") else value
    if isinstance(value, np.ndarray):
        if value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[2] not in (1, 3, 4)) or value.size == 0:
            raise ParameterError(name, f"an array must be H×W or H×W×3, got shape {value.shape}")
        if value.dtype != np.uint8:
            raise ParameterError(name, f"an array must be uint8 (0..255), got {value.dtype}")
        a = value[..., 0] if value.ndim == 3 and value.shape[2] == 1 else value[..., :3] if value.ndim == 3 else value
        return Image.fromarray(np.ascontiguousarray(a))
    if not isinstance(value, (str, os.PathLike)):
        raise ParameterError(name, f"must be a path, a PIL image or a uint8 array, got {type(value).__name__}")
    try:
        return load_rgb(value)
    except UserError as e:
        raise ParameterError(name, str(e)) from None


def box(value: Any, name: str):
    """A Box, 'y,x,h,w' or four whole numbers."""
    from .edits.regions import Box, parse_box

    if isinstance(value, Box):
        return value
    try:
        if isinstance(value, str):
            return parse_box(value)
        if isinstance(value, (Sequence, np.ndarray)) and len(value) == 4 and all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            return parse_box(",".join(str(int(v)) for v in value))
    except ValueError as e:
        raise ParameterError(name, str(e)) from None
    raise ParameterError(name, f"must be a box y,x,h,w (four whole numbers), got {value!r}")
