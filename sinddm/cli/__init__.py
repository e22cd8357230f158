"""The `sinddm` command line. Thin: each module parses its commands' arguments and calls the library;
bad input exits with code 2 and one line that names the input and what to do.

  common   the parser class, argument types, shared option groups, output folders and files
  train    inspect, train, convert-reference      (sinddm.runs)
  sample   sample                                 (sinddm.pipeline)
  edit     edit MODE: edit_image, edit_text        (sinddm.edits.image, sinddm.edits.text)
  jobs     run JOBS.yaml
  eval     eval, eval-suite, eval-compare          (sinddm.eval)
  app      app: the studio web page                (sinddm.app, optional extra sinddm[app])
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import TrainingStopped, UserError
from . import app, edit, eval, jobs, sample, train
from .common import EPILOG, Parser


COMMAND_MODULES = [train, sample, edit, jobs, eval, app]   # each has add_parsers(sub) and COMMANDS


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="sinddm", description="SinDDM: a diffusion model learned from a single image.", epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"sinddm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    # in the order --help lists them
    for add in (train.add_parsers, sample.add_parsers, train.add_convert_parser, edit.add_parsers,
                jobs.add_parsers, eval.add_parsers, app.add_parsers):
        add(sub)
    return p


def _out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA) subclasses RuntimeError; the CPU allocator raises a plain one."""
    text = str(e)
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text.lower())


def _stopped(e: TrainingStopped) -> int:
    import shlex

    print(f"{e}: saved {e.out_dir} (checkpoint.pt, model.safetensors); continue it with "
          f"'sinddm train {shlex.quote(str(e.image)) if e.image else 'IMAGE'} --out "
          f"{shlex.quote(str(e.out_dir))} --resume'", file=sys.stderr)
    return 128 + e.signum


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handlers = {name: fn for module in COMMAND_MODULES for name, fn in module.COMMANDS.items()}
        return handlers[args.command](args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the machine, not the input: a full disk, a vanished folder, ...
        where = f" ('{e.filename}')" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        print(f"error: out of memory ({str(e).splitlines()[0][:120]}); use a smaller --batch-size, --size or "
              "--num per call", file=sys.stderr)
        return 1
    except TrainingStopped as e:
        return _stopped(e)


__all__ = ["build_parser", "main"]
