"""`sinddm sample`: parse, check everything up front (`sample_plan`), then call `pipeline.generate`."""

from __future__ import annotations

from ..errors import UserError
from ..schedule import T_STEPS
from .common import (ModelCache, add_model_argument, add_output_arguments, add_size_arguments, add_start_t_argument, load_run,
                     output_folder, output_sizes, parse_start_t)

MIN_SCALE0_STEPS, MAX_SCALE0_STEPS = 2, T_STEPS


def add_parsers(sub) -> None:
    s = sub.add_parser("sample", help="draw random samples at any size",
                       description="Draw NUM samples from a trained model and write sample_XXX.png files "
                                   "plus grid.png into --out.")
    add_model_argument(s)
    add_size_arguments(s)
    s.add_argument("--start-level", "--start-scale", dest="start_level", type=int, default=0, metavar="K",
                   help="object size control: start the coarsest noise at level K's size (smaller objects)")
    add_start_t_argument(s, ranges=True)
    s.add_argument("--scale0-steps", type=int, metavar="K",
                   help="sample the coarsest scale in K evenly spaced DDPM steps instead of all 100 (faster: "
                        "K=25 cuts the coarsest scale's time 4x; see docs/fast-sampling.md for what it costs)")
    s.add_argument("--tileable", action="store_true",
                   help="a seamless texture: the network pads circularly and the scales up-sample around a "
                        "torus, so the picture tiles without a seam")
    add_output_arguments(s)


def sample_plan(args, cache: ModelCache | None = None) -> dict:
    """Everything `sinddm sample` checks before it draws: model, sizes, timesteps, output folder."""
    from ..devices import plan_tile, resolve_device

    device = resolve_device(args.device)
    loaded = load_run(args.model, device, cache, args.max_pixels)
    pyr = loaded.pyramid
    if not 0 <= args.start_level < pyr.n_scales:
        raise UserError(f"--start-level must be in 0..{pyr.n_scales - 1}, got {args.start_level}")
    sizes = output_sizes(loaded, args, start_level=args.start_level)
    start_t = parse_start_t(args.start_t, loaded.start_t)
    if args.scale0_steps is not None:
        if not MIN_SCALE0_STEPS <= args.scale0_steps <= MAX_SCALE0_STEPS:
            raise UserError(f"--scale0-steps must be in {MIN_SCALE0_STEPS}..{MAX_SCALE0_STEPS}, "
                            f"got {args.scale0_steps}")
        if args.start_t and len(args.start_t) == pyr.n_scales:
            raise UserError("--scale0-steps and a T[0] in --start-t both set scale 0's steps; give one of them")
    tile = plan_tile(sizes, loaded.model, args.batch_size, device, args.tile, num=args.num)
    out = output_folder(loaded, args)
    return {"device": device, "loaded": loaded, "sizes": sizes, "start_t": start_t, "out": out, "tile": tile}


def cmd_sample(args, plan: dict | None = None) -> int:
    from ..pipeline import generate
    from .common import write_outputs

    p = plan or sample_plan(args)
    imgs = generate(p["loaded"], args.num, p["sizes"], p["start_t"], seed=args.seed, batch_size=args.batch_size,
                    device=p["device"], progress=not args.quiet, precision=args.precision,
                    scale0_steps=args.scale0_steps, tile=p["tile"], tileable=args.tileable)
    write_outputs(p["out"], imgs)
    return 0


COMMANDS = {"sample": cmd_sample}
