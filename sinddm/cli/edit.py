"""`sinddm edit RUN MODE ...`: one subcommand per edit mode.

A mode is an object with `name` (the CLI's), `api_name` (the `SinDDM` method's), `help`,
`add_arguments(parser)` and `arguments(args)`: the method's keyword arguments from the parsed
options. `SinDDM.prepare` checks them all before any work or output.
"""

from __future__ import annotations

from ..errors import UserError
from .common import (ModelCache, Parser, add_model_argument, add_output_arguments, open_sinddm, output_folder,
                     prepare_call, write_outputs)
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
    model = open_sinddm(args, cache)
    mode = get_mode(args.mode)
    job = prepare_call(model, mode.api_name, **mode.arguments(args), num=args.num, seed=args.seed,
                       batch_size=args.batch_size, tile=args.tile, progress=not args.quiet)
    out = output_folder(model.loaded, args, name=f"edit_{args.mode}")
    return {"job": job, "out": out}


def cmd_edit(args, plan: dict | None = None) -> int:
    p = plan or edit_plan(args)
    write_outputs(p["out"], p["job"].run(), prefix=args.mode.replace("-", "_"))
    return 0


COMMANDS = {"edit": cmd_edit}
