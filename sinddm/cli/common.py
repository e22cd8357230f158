"""What every command shares: the parser class, argument types, the option groups defined once
(size, device and precision, outputs), output folders and files, and the job-file model cache."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..errors import UserError
from ..runs import prepare_out

EPILOG = "Docs and examples: README.md. Paper: Kulikov et al., SinDDM, ICML 2023."


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # '-1,10,16,16' is a (bad) box value, not an option: then its own check names the problem
        self._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")

    def error(self, message: str):  # one line, exit 2 (argparse prints usage too by default)
        raise UserError(f"{self.prog}: {message} (see --help)")


# -- argument types --------------------------------------------------------------------------

def int_arg(name: str, lo: int, hi: int | None = None, hi_text: str | None = None):
    """argparse type: a whole number in [lo, hi] (hi_text names the upper bound in messages)."""
    def parse(v: str) -> int:
        try:
            i = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {v!r}") from None
        if i < lo or (hi is not None and i > hi):
            bound = f">= {lo}" if hi is None else f"in {lo}..{hi_text or hi}"
            raise argparse.ArgumentTypeError(f"{name} must be {bound}, got {i}")
        return i
    return parse


def positive_int(name: str):
    return int_arg(name, 1)


seed_arg = int_arg("seed", 0, 2 ** 63 - 1, hi_text="2^63-1")


def unit_float(name: str):
    """argparse type: a number in [0, 1]."""
    def parse(v: str) -> float:
        try:
            f = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number in [0, 1], got {v!r}") from None
        if not 0.0 <= f <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 1], got {v!r}")
        return f
    return parse


def size_arg(v: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", v)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 200x400; got {v!r}")
    return int(m.group(1)), int(m.group(2))


def factor_arg(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale-hw factors must be numbers, got {v!r}") from None
    if not 0 < f <= 64:
        raise argparse.ArgumentTypeError(f"--scale-hw factors must be in (0, 64], got {v!r}")
    return f


def box_arg(value: str):
    """argparse type for a box `y,x,h,w` in finest-scale pixels (see regions.parse_box)."""
    from ..edits.regions import parse_box

    try:
        return parse_box(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- option groups ---------------------------------------------------------------------------

def add_size_arguments(p: argparse.ArgumentParser) -> None:
    """--scale-hw / --size: the output size, shared by `sample` and the edit modes."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scale-hw", nargs=2, type=factor_arg, metavar=("FH", "FW"),
                   help="multiply every scale's height and width, e.g. 1 2 for a 1x2 panorama")
    g.add_argument("--size", type=size_arg, metavar="HxW", help="finest output size in pixels, height first")


def add_start_t_argument(p: argparse.ArgumentParser, ranges: bool = False) -> None:
    text = ("start timesteps T[1] .. T[N-1] in 1..99 (or T[0] .. T[N-1], T[0] in 1..100); default from the "
            "pyramid; higher: more change at that scale (a picture given as the model starts scale 0 from "
            "itself noised to T[0], default 60)" if ranges else
            "start timesteps T[1] .. T[N-1] (or T[0] .. T[N-1]); default from the pyramid")
    p.add_argument("--start-t", nargs="+", type=int, metavar="T", help=text)


SAMPLING_PRECISION_HELP = ("fast: the network in bf16 and channels_last, with CUDA graphs on a GPU and oneDNN's "
                           "fused convolutions on an x86 CPU (bf16 only where the CPU has it natively, else fp32; "
                           "docs/cpu-fast-path.md); fp32: the exact path (default auto: fast where the device has it)")
TRAINING_PRECISION_HELP = ("fast: bf16 autocast (fp32 weights) and channels_last, with CUDA graphs on a GPU, bf16 only "
                           "where native on a CPU; fp32: the exact reference arithmetic (default auto: fast where "
                           "the device has it; on --resume, the precision the run was trained in)")


def add_device_arguments(p: argparse.ArgumentParser, device_help: str = "auto, cpu or cuda[:N] (default auto)",
                         precision_help: str = SAMPLING_PRECISION_HELP) -> None:
    """--device and --precision, for every command that runs the network."""
    from ..devices import PRECISIONS

    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--precision", choices=list(PRECISIONS), default="auto", help=precision_help)


def add_output_arguments(p: argparse.ArgumentParser, default_num: int = 4, out_name: str = "samples") -> None:
    """Options every image-producing command shares."""
    p.add_argument("--num", type=positive_int("--num"), default=default_num,
                   help=f"number of images (default {default_num})")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--out", help=f"output folder (default: RUN_DIR/{out_name} for a run folder or the "
                   f"model.safetensors in one, ./{out_name} for a model file elsewhere)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"),
                   help="images per batch (default: as many as fit in GPU memory; 4 on a CPU, where "
                        "larger batches are slower per image)")
    p.add_argument("--tile", type=positive_int("--tile"), metavar="N",
                   help="run the network on N-px tiles plus a halo of its receptive field: the same pictures "
                        "in bounded memory (default: whole images; sample tiles by itself when they do not fit)")
    add_device_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# -- shared by sample, edit and run -----------------------------------------------------------

MODEL_METAVAR = "MODEL|PICTURE"
MODEL_HELP = ("a run folder, model.safetensors or checkpoint.pt; or a picture, which becomes a training-free "
              "model on the spot (the closed-form patch denoiser at every scale; docs/method.md §11)")


def add_model_argument(p: argparse.ArgumentParser, dest: str = "model") -> None:
    """The MODEL positional and --max-pixels, for every command that loads a model."""
    from ..pyramid import DEFAULT_MAX_PIXELS

    p.add_argument(dest, metavar=MODEL_METAVAR, help=MODEL_HELP)
    p.add_argument("--max-pixels", type=positive_int("--max-pixels"), metavar="N",
                   help=f"for a PICTURE: shrink it to at most N pixels first, as training does "
                        f"(default {DEFAULT_MAX_PIXELS}; `sinddm inspect` shows the pyramid)")


class ModelCache:
    """Models loaded once per (path, device, pixel cap): `sinddm run` passes one to every job."""

    def __init__(self):
        self._models: dict = {}

    def load(self, path, device, max_pixels: int | None = None):
        from ..sources import open_model

        key = (str(Path(path).resolve()), str(device), max_pixels)
        if key not in self._models:
            self._models[key] = open_model(path, device, max_pixels)
        return self._models[key]


def load_run(path, device, cache: ModelCache | None = None, max_pixels: int | None = None):
    """`sources.open_model` (a model, or a picture's training-free model), through `cache` when given."""
    from ..sources import open_model

    from ..errors import ParameterError

    try:
        if cache is not None:
            return cache.load(path, device, max_pixels)
        return open_model(path, device, max_pixels)
    except ParameterError as e:
        raise e.renamed(flag_for(e.param), flag_for) from None


# The API's parameter names as this command line spells them (the rest: '--' + name with dashes).
FLAG_NAMES = {"targets": "--target", "clip": "--clip-model", "model": "MODEL", "image": "IMAGE"}


def flag_for(param: str) -> str:
    return FLAG_NAMES.get(param, "--" + param.replace("_", "-"))


def open_sinddm(args, cache: ModelCache | None = None):
    """The `SinDDM` object of the MODEL argument, on --device, with --precision."""
    from ..api import SinDDM
    from ..devices import resolve_device

    device = resolve_device(args.device)
    return SinDDM(load_run(args.model, device, cache, getattr(args, "max_pixels", None)), device, args.precision)


def prepare_call(model, name: str, **arguments):
    """`model.prepare(name, ...)` with a refused parameter shown as its flag."""
    from ..errors import ParameterError

    try:
        return model.prepare(name, **arguments)
    except ParameterError as e:
        raise e.renamed(flag_for(e.param), flag_for) from None


def output_folder(loaded, args, name: str = "samples") -> Path:
    """--out, or RUN_DIR/<name>; checked (and never emptied: it may be the run folder itself)."""
    default = (loaded.path.parent if loaded.path.name in ("model.safetensors", "checkpoint.pt")
               else Path(".")) / name
    out = Path(args.out) if args.out else default
    prepare_out(out, args.overwrite, "output folder", remove=False)
    return out


def write_outputs(out: Path, images, prefix: str = "sample") -> None:
    """`prefix_000.png ...` and `grid.png`, with one line on stderr (see `image_io.write_images`)."""
    from ..image_io import write_images

    write_images(out, images, prefix)
