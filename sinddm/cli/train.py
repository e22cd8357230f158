"""`sinddm inspect`, `sinddm train` and `sinddm convert-reference`: parse, then call `sinddm.runs`."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError
from ..pyramid import DEFAULT_MAX_PIXELS
from .common import TRAINING_PRECISION_HELP, add_device_arguments, positive_int, seed_arg



def add_parsers(sub) -> None:
    """inspect and train (convert-reference is added after sample, by `add_convert_parser`)."""
    q = sub.add_parser("inspect", help="print the pyramid and noise schedule an image gets",
                       description="Print the multiscale pyramid (sizes, factor, blur distances) and the "
                                   "per-scale start timesteps for IMAGE.")
    q.add_argument("image", help="the training image (PNG, JPEG, ...)")
    q.add_argument("--max-pixels", type=positive_int("--max-pixels"), default=DEFAULT_MAX_PIXELS,
                   help="pixel cap of the finest scale (default 50000, the paper's)")
    q.add_argument("--json", action="store_true", help="print JSON: sizes_hw, n_scales, scale_factor, "
                   "blur_distance, start_t")
    q.add_argument("--preview", metavar="PNG", help="also write a picture of the pyramid")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --preview file")

    t = sub.add_parser("train", help="train a model on one image",
                       description="Train SinDDM on IMAGE. Writes RUN_DIR with model.safetensors (for "
                                   "sampling), checkpoint.pt (for --resume), config.yaml, pyramid.png, "
                                   "loss.csv, loss.png and samples_grid.png. Ctrl-C or SIGTERM stops after "
                                   "the current step and saves it; --resume continues from there.")
    t.add_argument("image", help="the training image")
    t.add_argument("--config", help="YAML config (default: the paper recipe, configs/paper.yaml)")
    t.add_argument("--out", help="run folder (default: runs/<image name>)")
    t.add_argument("--steps", type=positive_int("--steps"), help="total training steps (overrides the config)")
    t.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    add_device_arguments(t, device_help="auto (CUDA if present), cpu or cuda[:N] (default auto)",
                         precision_help=TRAINING_PRECISION_HELP)
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def add_convert_parser(sub) -> None:
    c = sub.add_parser("convert-reference", help="turn a reference-implementation checkpoint into a run",
                       description="Convert a checkpoint of the published SinDDM code ({'model', 'ema'}, keys "
                                   "'denoise_fn.*') plus its training IMAGE into a run folder for 'sinddm sample'.")
    c.add_argument("checkpoint", metavar="CKPT", help="the reference checkpoint (model-N.pt)")
    c.add_argument("image", metavar="IMAGE", help="the image the checkpoint was trained on (its pyramid is "
                   "rebuilt; nothing in the checkpoint can tell a wrong picture)")
    c.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to write")
    c.add_argument("--max-pixels", type=positive_int("--max-pixels"), default=DEFAULT_MAX_PIXELS,
                   help="pixel cap used in training (default 50000)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def _check_picture_path(path: Path, flag: str, overwrite: bool) -> None:
    from PIL import Image

    if path.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"{flag} '{path}': unknown picture type '{path.suffix}'; give a .png file name")
    if path.is_dir():
        raise UserError(f"{flag} '{path}': is a folder; give a .png file name")
    if not path.parent.is_dir():
        raise UserError(f"{flag} '{path}': folder '{path.parent}' does not exist; create it first")
    if path.exists() and not overwrite:
        raise UserError(f"{flag} '{path}': exists; choose another file name or pass --overwrite")


def cmd_inspect(args) -> int:
    from ..image_io import load_rgb
    from ..plots import pyramid_preview
    from ..pyramid import build_pyramid
    from ..schedule import Schedule, start_timesteps

    if args.preview:
        _check_picture_path(Path(args.preview), "--preview", args.overwrite)
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


def cmd_train(args) -> int:
    from ..runs import train_run

    train_run(args.image, args.out, args.config, steps=args.steps, seed=args.seed, device=args.device,
              precision=args.precision, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    return 0


def cmd_convert(args) -> int:
    from ..runs import convert_reference

    convert_reference(args.checkpoint, args.image, args.out, max_pixels=args.max_pixels, overwrite=args.overwrite)
    return 0


COMMANDS = {"inspect": cmd_inspect, "train": cmd_train, "convert-reference": cmd_convert}
