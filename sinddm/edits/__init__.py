"""Editing modes for `sinddm edit RUN_DIR MODE ...` (and `sinddm run` job files).

A mode is an object with `name`, `help`, `add_arguments(parser)`, `validate(args, loaded)`
(raise UserError on bad input, before any work or output) and
`run(args, loaded, device) -> list of 3×H×W tensors in [-1, 1]`. Modules listed in
`MODE_MODULES` export theirs in a `MODES` list; the CLI adds the shared output options
(--num, --seed, --out, --batch-size, --device, --precision, --overwrite, --quiet).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

from ..errors import UserError

MODE_MODULES = ["sinddm.edits.image", "sinddm.edits.text"]


def available_modes() -> list:
    modes = []
    for name in MODE_MODULES:
        if importlib.util.find_spec(name) is not None:
            modes.extend(importlib.import_module(name).MODES)
    return modes


def get_mode(name: str):
    for mode in available_modes():
        if mode.name == name:
            return mode
    raise UserError(f"edit mode '{name}' is not available")


def box_arg(value: str):
    """argparse type for a box `y,x,h,w` in finest-scale pixels (see editing.parse_box)."""
    from ..editing import parse_box

    try:
        return parse_box(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
