"""The `sinddm` command line: inspect, train, sample, convert-reference.

Thin: parse and validate arguments, then call the library. Bad input exits with
code 2 and one line that names the input and what to do.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from . import __version__
from .errors import TrainingStopped, UserError

EPILOG = "Docs and examples: README.md. Paper: Kulikov et al., SinDDM, ICML 2023."


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # '-1,10,16,16' is a (bad) box value, not an option: then its own check names the problem
        self._negative_number_matcher = re.compile(r"^-\d+(,-?\d+)*$|^-\d*\.\d+$")

    def error(self, message: str):  # one line, exit 2 (argparse prints usage too by default)
        raise UserError(f"{self.prog}: {message} (see --help)")


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


def _positive_int(name: str):
    return int_arg(name, 1)


_seed = int_arg("seed", 0, 2 ** 63 - 1, hi_text="2^63-1")


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


def _size(v: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", v)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"--size must be HEIGHTxWIDTH in pixels, e.g. 200x400; got {v!r}")
    return int(m.group(1)), int(m.group(2))


def _factor(v: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scale-hw factors must be numbers, got {v!r}") from None
    if not 0 < f <= 64:
        raise argparse.ArgumentTypeError(f"--scale-hw factors must be in (0, 64], got {v!r}")
    return f


def add_size_arguments(p: argparse.ArgumentParser) -> None:
    """--scale-hw / --size: the output size, shared by `sample` and the edit modes."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scale-hw", nargs=2, type=_factor, metavar=("FH", "FW"),
                   help="multiply every scale's height and width, e.g. 1 2 for a 1x2 panorama")
    g.add_argument("--size", type=_size, metavar="HxW", help="finest output size in pixels, height first")


def add_output_arguments(p: argparse.ArgumentParser, default_num: int = 4, out_name: str = "samples") -> None:
    """Options every image-producing command shares."""
    p.add_argument("--num", type=_positive_int("--num"), default=default_num,
                   help=f"number of images (default {default_num})")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--out", help=f"output folder (default: RUN_DIR/{out_name} for a run folder or the "
                   f"model.safetensors in one, ./{out_name} for a model file elsewhere)")
    p.add_argument("--batch-size", type=_positive_int("--batch-size"),
                   help="images per batch (default: as many as fit in GPU memory; 4 on a CPU, where "
                        "larger batches are slower per image)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "fast"], default="auto",
                   help="fast: the network in bf16 and channels_last, with CUDA graphs on a GPU and oneDNN's "
                        "fused convolutions on an x86 CPU (bf16 only where the CPU has it natively, else fp32; "
                        "docs/cpu-fast-path.md); fp32: the exact path (default auto: fast where the device has it)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sinddm", description="SinDDM: a diffusion model learned from a single image.",
                epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"sinddm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    q = sub.add_parser("inspect", help="print the pyramid and noise schedule an image gets",
                       description="Print the multiscale pyramid (sizes, factor, blur distances) and the "
                                   "per-scale start timesteps for IMAGE.")
    q.add_argument("image", help="the training image (PNG, JPEG, ...)")
    q.add_argument("--max-pixels", type=_positive_int("--max-pixels"), default=50_000,
                   help="pixel cap of the finest scale (default 50000, the paper's)")
    q.add_argument("--json", action="store_true", help="print JSON: sizes_hw, n_scales, scale_factor, "
                   "blur_distance, start_t")
    q.add_argument("--preview", metavar="PNG", help="also write a picture of the pyramid")

    t = sub.add_parser("train", help="train a model on one image",
                       description="Train SinDDM on IMAGE. Writes RUN_DIR with model.safetensors (for "
                                   "sampling), checkpoint.pt (for --resume), config.yaml, pyramid.png, "
                                   "loss.csv, loss.png and samples_grid.png. Ctrl-C or SIGTERM stops after "
                                   "the current step and saves it; --resume continues from there.")
    t.add_argument("image", help="the training image")
    t.add_argument("--config", help="YAML config (default: the paper recipe, configs/paper.yaml)")
    t.add_argument("--out", help="run folder (default: runs/<image name>)")
    t.add_argument("--steps", type=_positive_int("--steps"), help="total training steps (overrides the config)")
    t.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N] (default auto)")
    t.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    t.add_argument("--precision", choices=["auto", "fp32", "fast"], default="auto",
                   help="fast: bf16 autocast (fp32 weights) and channels_last, with CUDA graphs on a GPU, bf16 only "
                        "where native on a CPU; fp32: the exact reference arithmetic (default auto: fast where "
                        "the device has it; on --resume, the precision the run was trained in)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw random samples at any size",
                       description="Draw NUM samples from a trained model and write sample_XXX.png files "
                                   "plus grid.png into --out.")
    s.add_argument("model", metavar="RUN_DIR|CHECKPOINT", help="a run folder, model.safetensors or checkpoint.pt")
    add_size_arguments(s)
    s.add_argument("--start-level", "--start-scale", dest="start_level", type=int, default=0, metavar="K",
                   help="object size control: start the coarsest noise at level K's size (smaller objects)")
    s.add_argument("--start-t", nargs="+", type=int, metavar="T",
                   help="start timesteps T[1] .. T[N-1] in 1..99 (or T[0] .. T[N-1], T[0] in 1..100); "
                        "default from the pyramid; higher: more change at that scale")
    s.add_argument("--scale0-steps", type=int, metavar="K",
                   help="sample the coarsest scale in K evenly spaced DDPM steps instead of all 100 (faster: "
                        "K=25 cuts the coarsest scale's time 4x; see docs/fast-sampling.md for what it costs)")
    add_output_arguments(s)

    c = sub.add_parser("convert-reference", help="turn a reference-implementation checkpoint into a run",
                       description="Convert a checkpoint of the published SinDDM code ({'model', 'ema'}, keys "
                                   "'denoise_fn.*') plus its training IMAGE into a run folder for 'sinddm sample'.")
    c.add_argument("checkpoint", metavar="CKPT", help="the reference checkpoint (model-N.pt)")
    c.add_argument("image", metavar="IMAGE", help="the image the checkpoint was trained on (its pyramid is "
                   "rebuilt; nothing in the checkpoint can tell a wrong picture)")
    c.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write")
    c.add_argument("--max-pixels", type=_positive_int("--max-pixels"), default=50_000,
                   help="pixel cap used in training (default 50000)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing run folder")

    from .edits import available_modes

    e = sub.add_parser("edit", help="edit or guide generation (one mode per call)",
                       description="Run one editing mode on a trained model; writes NUM PNGs plus grid.png "
                                   "like 'sinddm sample'.")
    e.add_argument("model", metavar="RUN_DIR|CHECKPOINT", help="a run folder, model.safetensors or checkpoint.pt")
    modes = e.add_subparsers(dest="mode", metavar="MODE", parser_class=_Parser)
    modes.required = True
    for mode in available_modes():
        m = modes.add_parser(mode.name, help=mode.help, description=mode.help)
        mode.add_arguments(m)
        add_output_arguments(m, out_name=f"edit_{mode.name}")

    r = sub.add_parser("run", help="run a YAML list of sample/edit jobs in one process",
                       description="Run JOBS.yaml: a list of jobs, each {sample: {...}} or {edit: {...}} whose\n"
                                   "keys are the command's options without dashes (model and mode included).\n"
                                   "Every job is checked before the first one runs; models load once. Paths\n"
                                   "are relative to the current folder. Example:\n\n"
                                   "  - sample: {model: runs/rocket, num: 8, scale_hw: [1, 2], out: out/pano}\n"
                                   "  - edit: {model: runs/rocket, mode: style-transfer, content: c.png, "
                                   "out: out/style}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("jobs", metavar="JOBS.yaml", help="the job list (YAML)")

    for module in _command_modules():  # commands that live in their own modules
        module.add_parsers(sub)
    return p


COMMAND_MODULES = ["sinddm.eval_cli", "sinddm.eval_compare"]


def _command_modules() -> list:
    """Modules that add subcommands: each has `add_parsers(sub)` and a `COMMANDS` dict."""
    import importlib
    import importlib.util

    return [importlib.import_module(m) for m in COMMAND_MODULES if importlib.util.find_spec(m) is not None]


# -- commands ------------------------------------------------------------------------------

def _check_picture_path(path: Path, flag: str) -> None:
    from PIL import Image

    if path.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"{flag} '{path}': unknown picture type '{path.suffix}'; give a .png file name")
    if path.is_dir():
        raise UserError(f"{flag} '{path}': is a folder; give a .png file name")
    if not path.parent.is_dir():
        raise UserError(f"{flag} '{path}': folder '{path.parent}' does not exist; create it first")


def cmd_inspect(args) -> int:
    from .image_io import load_rgb
    from .plots import pyramid_preview
    from .pyramid import build_pyramid
    from .schedule import Schedule, start_timesteps

    if args.preview:
        _check_picture_path(Path(args.preview), "--preview")
    pyr = build_pyramid(load_rgb(args.image), args.max_pixels, name=f"image '{args.image}'")
    start_t = start_timesteps(Schedule.cosine(), pyr.blur_distance)
    if args.preview:
        pyramid_preview(pyr, args.preview, start_t)
    if args.json:
        print(json.dumps({"sizes_hw": [list(x) for x in pyr.sizes_hw], "n_scales": pyr.n_scales,
                          "scale_factor": pyr.scale_factor, "blur_distance": pyr.blur_distance,
                          "start_t": start_t}))
        return 0
    w, h = pyr.input_wh
    print(f"image {args.image}: {w}x{h} px (w x h) -> {pyr.n_scales} scales, factor r = {pyr.scale_factor:.4f}")
    print(f"{'scale':>5} {'size (h x w)':>13} {'blur d':>8} {'T[s]':>5}")
    for i, (hh, ww) in enumerate(pyr.sizes_hw):
        d = f"{pyr.blur_distance[i - 1]:.4f}" if i else "-"
        print(f"{i:>5} {f'{hh} x {ww}':>13} {d:>8} {start_t[i]:>5}")
    return 0


def _check_parent(path: Path, what: str, flag: str = "--out") -> None:
    """The nearest existing ancestor of `path` must be a folder (else mkdir/save fail with a traceback)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{what} '{path}': '{parent}' is a file, not a folder; choose another {flag}")


def _check_writable(path: Path, what: str, flag: str = "--out") -> None:
    """Create and delete a file where the outputs will go (or in the nearest existing ancestor),
    so that a folder we may not write to fails now, in one line, not after minutes of work."""
    import tempfile

    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:
        raise UserError(f"{what} '{path}': cannot write in '{where}' ({e.strerror or e}); "
                        f"choose another {flag} or fix its permissions") from None


# What `sinddm train` / `convert-reference` write into a run folder, and what the other commands
# write there by default (made from the run's model, so they go when the run is replaced).
RUN_ENTRIES = {"model.safetensors", "checkpoint.pt", "checkpoints", "config.yaml", "pyramid.png", "loss.csv",
               "loss.png", "samples_grid.png", "samples", "eval"}
RUN_PREFIXES = ("edit_",)


def _is_run_folder(path: Path) -> bool:
    """A run: a model or checkpoint, or (interrupted before its first save) config.yaml with pyramid.png."""
    return ((path / "model.safetensors").is_file() or (path / "checkpoint.pt").is_file()
            or ((path / "config.yaml").is_file() and (path / "pyramid.png").is_file()))


def _clear_run_folder(path: Path) -> list[str]:
    """Remove the run's own entries (and save temporaries); return the names of the others, left alone."""
    kept = []
    for p in sorted(path.iterdir()):
        n = p.name
        if n in RUN_ENTRIES or n.startswith(RUN_PREFIXES) or (n.startswith(".") and n.endswith(".tmp")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        else:
            kept.append(n)
    return kept


def _prepare_out(path: Path, overwrite: bool, what: str, flag_hint: str = "--overwrite",
                 remove: bool = True) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} '{path}': exists and is not a folder; choose another --out")
    _check_parent(path, what)
    _check_writable(path, what)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise UserError(f"{what} '{path}': exists and is not empty; choose another --out or pass {flag_hint}")
        if remove:
            if not _is_run_folder(path):
                raise UserError(f"{what} '{path}': is not a sinddm run folder; --overwrite only replaces runs, "
                                "choose another --out")
            kept = _clear_run_folder(path)
            if kept:
                print(f"note: {what} '{path}': replaced the run; left {len(kept)} other entries as they were "
                      f"({', '.join(kept[:4])}{', ...' if len(kept) > 4 else ''})", file=sys.stderr)


def cmd_train(args) -> int:
    from .config import load_config
    from .image_io import load_rgb
    from .training import resolve_device

    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path("runs") / Path(args.image).stem
    config = load_config(args.config) if args.config else None
    image = load_rgb(args.image)
    return _train(args, out, device, config, image)


def _train(args, out: Path, device, config, image) -> int:
    from .checkpoint import atomic_write_bytes
    from .config import ema_warning, scale_batch_sizes
    from .plots import pyramid_preview
    from .pyramid import build_pyramid
    from .schedule import Schedule, start_timesteps
    from .training import Trainer

    if args.resume:
        trainer = Trainer.resume(out, device, config, precision=args.precision)
        max_pixels = trainer.config.image.max_pixels
        if build_pyramid(image, max_pixels).sizes_hw != trainer.pyramid.sizes_hw:
            raise UserError(f"--resume: image '{args.image}' is not the image the run in '{out}' was trained on")
        if trainer.resume_note:
            print(f"resume: {trainer.resume_note}", file=sys.stderr)
        _check_train_memory(trainer.pyramid.sizes_hw, trainer.config, device)
    else:
        from .config import Config
        config = config or Config()
        pyr = build_pyramid(image, config.image.max_pixels, name=f"image '{args.image}'")
        _check_train_memory(pyr.sizes_hw, config, device)
        _prepare_out(out, args.overwrite, "run folder", "--overwrite (or --resume to continue it)")
        if args.steps:
            config.train.steps = args.steps
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / "config.yaml", config.to_yaml().encode())
            pyramid_preview(pyr, out / "pyramid.png", start_timesteps(Schedule.cosine(), pyr.blur_distance))
            trainer = Trainer(config, pyr, out, device, seed=args.seed, source=str(args.image),
                              precision=args.precision)
        except KeyboardInterrupt:
            # Before training starts (it stops on Ctrl-C after a step and saves): a new run holding
            # only a config and a preview would block the next try, so it goes; other files stay.
            _clear_run_folder(out)
            if not any(out.iterdir()):
                out.rmdir()
            raise
    steps = args.steps or trainer.config.train.steps
    if args.resume and trainer.step >= steps:
        print(f"{out}: already at step {trainer.step} of {steps}; nothing to train (pass --steps N to train "
              "longer)", file=sys.stderr)
        return 0
    if args.steps:
        trainer.config.train.steps = steps
        atomic_write_bytes(out / "config.yaml", trainer.config.to_yaml().encode())
    sizes = " ".join(f"{w}x{h}" for h, w in trainer.pyramid.sizes_hw)
    batches = scale_batch_sizes(trainer.config.train, trainer.pyramid.n_scales)
    batch = str(batches[0]) if len(set(batches)) == 1 else "/".join(map(str, batches)) + " (coarse to fine)"
    print(f"training {out} on {device}: {trainer.pyramid.n_scales} scales (w x h: {sizes}), network width "
          f"{trainer.config.model.dim}, batch {batch}, precision {trainer.precision}, "
          f"steps {trainer.step} -> {steps}",
          file=sys.stderr)
    warning = ema_warning(trainer.config.train, steps)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    unused = len(trainer.config.train.coarse_batch_sizes) - trainer.pyramid.n_scales
    if unused > 0:
        print(f"warning: train.coarse_batch_sizes lists {unused} more batch size(s) than this image has scales "
              f"({trainer.pyramid.n_scales}); the extra ones are unused", file=sys.stderr)
    trainer.train(steps, progress=not args.quiet)
    n = trainer.config.train.grid_samples
    if n:
        _write_training_grid(out, n, device, args.seed, args.quiet, args.precision)
    skipped = f"; {trainer.skipped_steps} steps with a NaN/inf loss were skipped" if trainer.skipped_steps else ""
    print(f"done: {out / 'model.safetensors'} (sample with: sinddm sample {out}){skipped}", file=sys.stderr)
    return 0


def _check_train_memory(sizes_hw, config, device) -> None:
    """On a CPU, refuse a run whose largest step cannot fit in memory (the OS would kill it with no
    message, possibly hours in, when the random scale first lands on it). On a GPU torch raises."""
    from .config import scale_batch_sizes
    from .pipeline import available_memory
    from .training import train_memory_by_scale

    free = available_memory(device) if device.type == "cpu" else None
    if free is None:
        return
    tc, dim = config.train, config.model.dim
    batches = scale_batch_sizes(tc, len(sizes_hw))
    needs = train_memory_by_scale(sizes_hw, batches, dim)
    need = max(needs)
    if need <= free:
        return
    s = needs.index(need)
    (h, w), b = sizes_hw[s], batches[s]
    fits = max(1, int(b * free // need))
    key = f"train.coarse_batch_sizes[{s}]" if s < len(tc.coarse_batch_sizes) else "train.batch_size"
    raise UserError(f"training width {dim} with batch {b} at {h}x{w} px (h x w) needs about {need / 2**30:.1f} GiB, "
                    f"more than the {free / 2**30:.1f} GiB memory available; set {key} to {fits} or less, or "
                    "lower image.max_pixels, in a config (configs/cpu.yaml is made for a CPU)")


def _write_training_grid(out: Path, n: int, device, seed: int, quiet: bool, precision: str) -> None:
    from PIL import Image

    from .checkpoint import load_model
    from .image_io import make_grid, to_uint8
    from .pipeline import generate

    loaded = load_model(out, device)
    imgs = generate(loaded, n, loaded.pyramid.sizes_hw, loaded.start_t, seed=seed, device=device,
                    progress=not quiet, precision=precision)
    real = loaded.pyramid.levels[-1]
    Image.fromarray(make_grid([real] + [to_uint8(x) for x in imgs])).save(out / "samples_grid.png")


def parse_start_t(values: list[int] | None, default: list[int]) -> list[int]:
    if not values:
        return default
    n = len(default)
    if len(values) == n - 1:
        values = [default[0]] + list(values)
    elif len(values) != n:
        raise UserError(f"--start-t: give {n - 1} values (T[1]..T[{n - 1}]) or {n} (T[0]..T[{n - 1}]), "
                        f"got {len(values)}")
    if not 1 <= values[0] <= 100:
        raise UserError(f"--start-t: T[0] must be in 1..100, got {values[0]}")
    for s, v in enumerate(values[1:], start=1):
        if not 1 <= v <= 99:
            raise UserError(f"--start-t: T[{s}] must be in 1..99, got {v}")
    return list(values)


def cmd_sample(args, plan: dict | None = None) -> int:
    from .pipeline import generate

    p = plan or sample_plan(args)
    imgs = generate(p["loaded"], args.num, p["sizes"], p["start_t"], seed=args.seed, batch_size=args.batch_size,
                    device=p["device"], progress=not args.quiet, precision=args.precision,
                    scale0_steps=args.scale0_steps)
    write_outputs(p["out"], imgs)
    return 0


def sample_plan(args) -> dict:
    """Everything `sinddm sample` checks before it draws: model, sizes, timesteps, output folder."""
    from .training import resolve_device

    device = resolve_device(args.device)
    loaded = load_run(args.model, device)
    pyr = loaded.pyramid
    if not 0 <= args.start_level < pyr.n_scales:
        raise UserError(f"--start-level must be in 0..{pyr.n_scales - 1}, got {args.start_level}")
    sizes = output_sizes(loaded, args, start_level=args.start_level)
    start_t = parse_start_t(args.start_t, loaded.start_t)
    if args.scale0_steps is not None:
        if not 2 <= args.scale0_steps <= 100:
            raise UserError(f"--scale0-steps must be in 2..100, got {args.scale0_steps}")
        if args.start_t and len(args.start_t) == pyr.n_scales:
            raise UserError("--scale0-steps and a T[0] in --start-t both set scale 0's steps; give one of them")
    _check_memory(sizes, loaded.model.dim, args.batch_size, device)
    out = output_folder(loaded, args)
    return {"device": device, "loaded": loaded, "sizes": sizes, "start_t": start_t, "out": out}


def _check_memory(sizes, dim: int, batch_size: int | None, device) -> None:
    """On a CPU, refuse a size that cannot fit even one image (the OS would kill the process with
    no message) and an explicit --batch-size that cannot fit (naming one that would). On a GPU an
    out-of-memory error is raised, and reported in one line, by torch itself."""
    from .pipeline import auto_batch_size, available_memory, memory_needed

    free = available_memory(device) if device.type == "cpu" else None
    if free is None:
        return
    h, w = sizes[-1]
    where = "memory available"
    one = memory_needed(sizes, dim, 1)
    if one > free:
        raise UserError(f"sampling {h}x{w} px (h x w) with this width-{dim} model needs about {one / 2**30:.1f} GiB "
                        f"per image, more than the {free / 2**30:.1f} GiB {where}; ask for a smaller --size or "
                        "--scale-hw")
    bs = batch_size or auto_batch_size(sizes, dim, device)
    if bs * one > free:
        raise UserError(f"--batch-size {bs}: {bs} images of {h}x{w} px (h x w) need about "
                        f"{bs * one / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB "
                        f"{where}; use --batch-size {max(1, int(free // one))} or less")


# -- shared by sample, edit and run -----------------------------------------------------------

_RUN_CACHE: dict | None = None  # set by `sinddm run` so that each model loads once


def load_run(path, device):
    """`load_model`, memoised while `sinddm run` executes a job file."""
    from .checkpoint import load_model

    if _RUN_CACHE is None:
        return load_model(path, device)
    key = (str(Path(path).resolve()), str(device))
    if key not in _RUN_CACHE:
        _RUN_CACHE[key] = load_model(path, device)
    return _RUN_CACHE[key]


def output_sizes(loaded, args, start_level: int = 0) -> list[tuple[int, int]]:
    """Per-scale sizes from --scale-hw / --size, validated."""
    from .pyramid import sample_sizes

    pyr = loaded.pyramid
    sizes = sample_sizes(pyr.sizes_hw, pyr.scale_factor, scale_hw=getattr(args, "scale_hw", None),
                         size_hw=getattr(args, "size", None), start_level=start_level)
    if min(min(hw) for hw in sizes) < 4:
        raise UserError(f"requested size too small: the coarsest scale would be {sizes[0][0]}x{sizes[0][1]} px; "
                        "use a larger --size or --scale-hw")
    if max(h * w for h, w in sizes) > 64_000_000:
        raise UserError("requested size too large (over 64 Mpx at the finest scale); use a smaller --size")
    return sizes


def output_folder(loaded, args, name: str = "samples") -> Path:
    """--out, or RUN_DIR/<name>; checked (and never emptied: it may be the run folder itself)."""
    default = (loaded.path.parent if loaded.path.name in ("model.safetensors", "checkpoint.pt")
               else Path(".")) / name
    out = Path(args.out) if args.out else default
    _prepare_out(out, args.overwrite, "output folder", remove=False)
    return out


def write_outputs(out: Path, images, prefix: str = "sample") -> None:
    """`prefix_000.png ...` and `grid.png`; stale files of an earlier call are removed first."""
    from PIL import Image

    from .image_io import make_grid, to_uint8

    arrays = [to_uint8(x) for x in images]
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob(f"{prefix}_*.png"), out / "grid.png"]:
        if old.is_file():
            old.unlink()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(out / f"{prefix}_{i:03d}.png")
    Image.fromarray(make_grid(arrays)).save(out / "grid.png")
    h, w = arrays[0].shape[:2]
    noun = ("sample" if prefix == "sample" else "image") + ("s" if len(arrays) != 1 else "")
    print(f"wrote {len(arrays)} {noun} of {w}x{h} px (w x h) and grid.png to {out}", file=sys.stderr)


def cmd_edit(args, plan: dict | None = None) -> int:
    p = plan or edit_plan(args)
    images = p["mode"].run(args, p["loaded"], p["device"])
    write_outputs(p["out"], images, prefix=args.mode.replace("-", "_"))
    return 0


def edit_plan(args) -> dict:
    """Everything `sinddm edit` checks before it works: model, the mode's inputs, output folder."""
    from .edits import get_mode
    from .training import resolve_device

    device = resolve_device(args.device)
    loaded = load_run(args.model, device)
    mode = get_mode(args.mode)
    mode.validate(args, loaded)
    out = output_folder(loaded, args, name=f"edit_{args.mode}")
    return {"device": device, "loaded": loaded, "mode": mode, "out": out}


def _job_argv(job, index: int, source: str) -> list[str]:
    """One job mapping → the argv of the same command line."""
    if not isinstance(job, dict) or len(job) != 1:
        raise UserError(f"{source}: job {index + 1} must be a mapping with one key, 'sample' or 'edit'")
    (command, opts), = job.items()
    if command not in ("sample", "edit"):
        raise UserError(f"{source}: job {index + 1}: unknown command '{command}'; use sample or edit")
    if opts is not None and not isinstance(opts, dict):
        raise UserError(f"{source}: job {index + 1}: '{command}' must map option names to values, e.g. "
                        f"{{{command}: {{model: runs/x, num: 4}}}}")
    opts = {str(k).lstrip("-"): v for k, v in (opts or {}).items()}  # '--num' and 'num' both name --num
    if "help" in opts:
        raise UserError(f"{source}: job {index + 1}: 'help' is not a job option; see 'sinddm {command} --help'")
    if isinstance(opts.get("size"), list) and len(opts["size"]) == 2:
        opts["size"] = "x".join(map(str, opts["size"]))  # [H, W], the natural YAML form of --size HxW
    if "model" not in opts:
        raise UserError(f"{source}: job {index + 1}: 'model' is missing (a run folder or model file)")
    argv = [command, str(opts.pop("model"))]
    if command == "edit":
        if "mode" not in opts:
            raise UserError(f"{source}: job {index + 1}: 'mode' is missing for an edit job")
        argv.append(str(opts.pop("mode")))
    for key, value in opts.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def cmd_run(args) -> int:
    import yaml

    global _RUN_CACHE
    path = Path(args.jobs)
    if not path.is_file():
        raise UserError(f"jobs file '{path}': no such file; give a YAML list of jobs")
    try:
        jobs = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UserError(f"jobs file '{path}': not valid YAML; fix the syntax") from None
    except UnicodeDecodeError:
        raise UserError(f"jobs file '{path}': not a text file; give a YAML list of jobs") from None
    except OSError as e:
        raise UserError(f"jobs file '{path}': cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(jobs, list) or not jobs:
        raise UserError(f"jobs file '{path}': expected a non-empty YAML list of jobs")
    parser = build_parser()
    parsed = []
    for i, job in enumerate(jobs):
        argv = _job_argv(job, i, f"jobs file '{path}'")
        try:
            parsed.append(parser.parse_args(argv))
        except UserError as e:
            raise UserError(f"jobs file '{path}': job {i + 1}: {e}") from None
    _RUN_CACHE = {}
    try:
        plans, writers = [], {}
        for i, job_args in enumerate(parsed):  # every job is checked before the first one runs
            try:
                plans.append((sample_plan if job_args.command == "sample" else edit_plan)(job_args))
            except UserError as e:
                raise UserError(f"jobs file '{path}': job {i + 1}: {e}") from None
            out = plans[-1]["out"].resolve()
            if out in writers:
                raise UserError(f"jobs file '{path}': jobs {writers[out]} and {i + 1} both write to "
                                f"'{plans[-1]['out']}'; give each job its own 'out'")
            writers[out] = i + 1
        for i, (job_args, plan) in enumerate(zip(parsed, plans)):
            print(f"job {i + 1}/{len(parsed)}: {job_args.command} {job_args.model}", file=sys.stderr)
            COMMANDS[job_args.command](job_args, plan)
    finally:
        _RUN_CACHE = None
    return 0


def cmd_convert(args) -> int:
    from .checkpoint import MODEL_FILE, save_model
    from .config import Config
    from .convert import load_reference_checkpoint
    from .image_io import load_rgb
    from .model import infer_width
    from .plots import pyramid_preview
    from .pyramid import build_pyramid
    from .schedule import Schedule, start_timesteps

    weights = load_reference_checkpoint(args.checkpoint)
    pyr = build_pyramid(load_rgb(args.image), args.max_pixels, name=f"image '{args.image}'")
    config = Config()
    config.model.dim = infer_width(weights)
    config.image.max_pixels = args.max_pixels
    out = Path(args.out)
    _prepare_out(out, args.overwrite, "run folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(config.to_yaml())
    save_model(out / MODEL_FILE, weights, pyr, config, step=0, source=f"reference:{args.checkpoint}")
    pyramid_preview(pyr, out / "pyramid.png", start_timesteps(Schedule.cosine(), pyr.blur_distance))
    print(f"wrote {out / MODEL_FILE} (width {config.model.dim}, {pyr.n_scales} scales)", file=sys.stderr)
    return 0


COMMANDS = {"inspect": cmd_inspect, "train": cmd_train, "sample": cmd_sample, "convert-reference": cmd_convert,
            "edit": cmd_edit, "run": cmd_run}


def _out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA) subclasses RuntimeError; the CPU allocator raises a plain one."""
    text = str(e)
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in text or "out of memory" in text.lower())


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handlers = dict(COMMANDS)
        for module in _command_modules():
            handlers.update(module.COMMANDS)
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
        import shlex

        print(f"{e}: saved {e.out_dir} (checkpoint.pt, model.safetensors); continue it with "
              f"'sinddm train {shlex.quote(str(e.image)) if e.image else 'IMAGE'} --out "
              f"{shlex.quote(str(e.out_dir))} --resume'", file=sys.stderr)
        return 128 + e.signum


if __name__ == "__main__":
    sys.exit(main())
