"""`sinddm sample`: parse, then `SinDDM.prepare("sample", ...)` checks everything up front and runs."""

from __future__ import annotations

from .common import (ModelCache, add_model_argument, add_output_arguments, add_size_arguments, add_start_t_argument,
                     open_sinddm, output_folder, prepare_call)


def add_parsers(sub) -> None:
    s = sub.add_parser("sample", help="draw random samples at any size",
                       description="Draw NUM samples from a model (or a picture's training-free model) and write "
                                   "sample_XXX.png files plus grid.png into --out.")
    add_model_argument(s)
    add_size_arguments(s)
    s.add_argument("--start-level", type=int, default=0, metavar="K",
                   help="object size control: start the coarsest noise at level K's size (smaller objects)")
    add_start_t_argument(s, ranges=True)
    s.add_argument("--scale0-steps", type=int, metavar="K",
                   help="sample the coarsest scale in K evenly spaced DDPM steps instead of all 100 (faster: "
                        "K=25 cuts the coarsest scale's time 4x; see docs/fast-sampling.md for what it costs); a picture "
                        "given as the model then starts from pure noise, without its layout")
    s.add_argument("--tileable", action="store_true",
                   help="a seamless texture: the network pads circularly and the scales up-sample around a "
                        "torus, so the picture tiles without a seam")
    add_output_arguments(s)


def sample_plan(args, cache: ModelCache | None = None) -> dict:
    """Everything `sinddm sample` checks before it draws: model, arguments, output folder."""
    model = open_sinddm(args, cache)
    job = prepare_call(model, "sample", num=args.num, scale_hw=args.scale_hw, size=args.size,
                       start_level=args.start_level, start_t=args.start_t, scale0_steps=args.scale0_steps,
                       seed=args.seed, batch_size=args.batch_size, tile=args.tile, tileable=args.tileable,
                       progress=not args.quiet)
    return {"job": job, "out": output_folder(model.loaded, args)}


def cmd_sample(args, plan: dict | None = None) -> int:
    from .common import write_outputs

    p = plan or sample_plan(args)
    write_outputs(p["out"], p["job"].run())
    return 0


COMMANDS = {"sample": cmd_sample}
