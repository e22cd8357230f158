"""`sinddm edit RUN MODE ...`: one subcommand per edit mode.

A mode is an object with `name`, `help`, `add_arguments(parser)`, `validate(args, loaded)` (reads
and checks every input before any work or output, keeping what it read on `args.edit_inputs`) and
`run(args, loaded, device) -> list of 3×H×W tensors in [-1, 1]`, which calls the library.
"""

from __future__ import annotations

from ..errors import UserError
from .common import (ModelCache, Parser, add_model_argument, add_output_arguments, load_run, output_folder,
                     write_outputs)
from .edit_image import MODES as IMAGE_MODES
from .edit_text import MODES as TEXT_MODES

MODES = [*IMAGE_MODES, *TEXT_MODES]


def get_mode(name: str):
    for mode in MODES:
        if mode.name == name:
            return mode
    raise UserError(f"edit mode '{name}' is not available")


def add_parsers(sub) -> None:
    e = sub.add_parser("edit", help="edit or guide generation (one mode per call)",
                       description="Run one editing mode on a trained model; writes NUM PNGs plus grid.png "
                                   "like 'sinddm sample'.")
    add_model_argument(e)
    modes = e.add_subparsers(dest="mode", metavar="MODE", parser_class=Parser)
    modes.required = True
    for mode in MODES:
        m = modes.add_parser(mode.name, help=mode.help, description=mode.help)
        mode.add_arguments(m)
        add_output_arguments(m, out_name=f"edit_{mode.name}")


def edit_plan(args, cache: ModelCache | None = None) -> dict:
    """Everything `sinddm edit` checks before it works: model, the mode's inputs, output folder."""
    from ..devices import resolve_device

    device = resolve_device(args.device)
    loaded = load_run(args.model, device, cache, args.max_pixels)
    mode = get_mode(args.mode)
    mode.validate(args, loaded)
    out = output_folder(loaded, args, name=f"edit_{args.mode}")
    return {"device": device, "loaded": loaded, "mode": mode, "out": out}


def cmd_edit(args, plan: dict | None = None) -> int:
    p = plan or edit_plan(args)
    from ..tiling import tiled_loaded

    images = p["mode"].run(args, tiled_loaded(p["loaded"], args.tile), p["device"])
    write_outputs(p["out"], images, prefix=args.mode.replace("-", "_"))
    return 0


COMMANDS = {"edit": cmd_edit}
