"""The command line of evaluation: `sinddm eval`, `sinddm eval-suite` and `sinddm eval-compare`.

Argument definitions (`add_parsers`, which the main CLI calls with its subparsers) and thin
`cmd_*` handlers (`COMMANDS`) that check the arguments, call the library (`run`, `suite`,
`compare`) and print what was done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError


# ---------------------------------------------------------------------------------------
# parsers
# ---------------------------------------------------------------------------------------

def add_parsers(sub) -> None:
    """Add eval, eval-suite and eval-compare to the main CLI's subparsers `sub`."""
    from .common import add_model_argument, positive_int, seed_arg
    from ..eval.run import DEFAULT_NUM

    e = sub.add_parser(
        "eval", help="quality metrics of a trained model: metrics.json and a report page",
        description="Draw NUM samples from RUN_DIR (or take the PNGs in --samples DIR) and measure them "
                    "against the training image: pixel diversity, patch sliced-Wasserstein distance, "
                    "copying (nearest-neighbour-field regions) and SIFID at 64 and 192 channels (when "
                    "InceptionV3 weights are available locally). Writes metrics.json, report.png and, "
                    "for drawn samples, samples/ into --out.")
    add_model_argument(e, "run")
    e.add_argument("--num", type=positive_int("--num"),
                   help=f"samples to draw (default {DEFAULT_NUM}); with --samples, the first NUM files")
    e.add_argument("--seed", type=seed_arg, default=0, help="sampling seed (default 0)")
    e.add_argument("--out", help="output folder (default: RUN_DIR/eval)")
    e.add_argument("--samples", metavar="DIR", help="evaluate the PNG files in DIR (except grid.png) "
                   "instead of drawing samples")
    add_common_arguments(e)
    e.add_argument("--start-t", nargs="+", type=int, metavar="T",
                   help="sampling start timesteps T[1] .. T[N-1] (or T[0] .. T[N-1]), as in 'sinddm sample'")
    e.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")

    s = sub.add_parser(
        "eval-suite", help="train and evaluate one run per image and recipe; one comparison table",
        description="For every picture in IMAGES_DIR and every --config recipe: train a run with 'sinddm "
                    "train' (a complete run in the same place is reused, an interrupted one resumed), "
                    "evaluate it like 'sinddm eval', and write OUT/results.csv, results.md, "
                    "results.json and samples.png (each run's first samples beside its training image). "
                    "Runs live in OUT/<recipe>/<image>/, their evaluations in .../eval/.")
    s.add_argument("images", metavar="IMAGES_DIR", help="a folder of training pictures")
    s.add_argument("--config", required=True, nargs="+", metavar="YAML",
                   help="one or more recipes (YAML configs) to compare")
    s.add_argument("--out", help="suite folder (default: runs/eval-suite)")
    s.add_argument("--steps", type=positive_int("--steps"), help="training steps (overrides the configs)")
    s.add_argument("--num", type=positive_int("--num"), default=DEFAULT_NUM,
                   help=f"samples per run (default {DEFAULT_NUM})")
    s.add_argument("--seed", type=seed_arg, default=0, help="training and sampling seed (default 0)")
    s.add_argument("--baseline", metavar="RECIPE",
                   help="recipe (config file name without .yaml) that results.md compares every other recipe "
                        "with, sample by sample, as 'sinddm eval-compare' (default: the first --config)")
    add_common_arguments(s)
    add_executor_arguments(s)

    c = sub.add_parser(
        "eval-compare", help="paired differences between 'sinddm eval' results (same seeds, same picture)",
        description="Compare each OTHER evaluation with BASE sample by sample: for every metric, the mean "
                    "per-sample difference OTHER - BASE with its standard error and their ratio z "
                    "(|z| above ~3 is unlikely to be noise). Evaluations pair up when both were made "
                    "with the same --num of the same training picture; drawing both with the same "
                    "--seed is what makes the pairs cancel noise. Each argument is a metrics.json, an "
                    "eval folder holding one, or a run folder with eval/metrics.json.")
    c.add_argument("base", metavar="BASE", help="the reference evaluation")
    c.add_argument("others", nargs="+", metavar="OTHER", help="evaluations to compare with BASE")
    c.add_argument("--json", metavar="FILE", help="also write the comparison as JSON to FILE")
    c.add_argument("--overwrite", action="store_true", help="replace existing --json / --png files")
    c.add_argument("--png", metavar="FILE", help="also draw FILE: a row per evaluation (BASE first), the "
                   "training image and the first samples, which share their seeds column by column")


def add_executor_arguments(p) -> None:
    from .common import int_arg, positive_int
    from ..eval.cluster import EXECUTORS

    g = p.add_argument_group("where the jobs run (each picture x recipe is one job; docs/scaling.md)")
    g.add_argument("--executor", choices=EXECUTORS,
                   help="inline: one after another in this process (default); local: a process per job on this "
                        "machine, each with its own GPU(s); slurm: a SLURM job array (needs 'sinddm[cluster]')")
    g.add_argument("--jobs", type=positive_int("--jobs"), help="jobs at once (default 1)")
    g.add_argument("--gpus-per-job", type=int_arg("--gpus-per-job", 0),
                   help="GPUs per job (default 1 when the jobs use a GPU, else 0); two local jobs never share one")
    g.add_argument("--slurm-partition", metavar="NAME", help="SLURM partition")
    g.add_argument("--slurm-time", metavar="TIME",
                   help="SLURM time limit per job: minutes or [D-]HH:MM:SS (required with --executor slurm)")
    g.add_argument("--slurm-extra", nargs="+", metavar="KEY=VALUE",
                   help="more sbatch options, e.g. account=mylab qos=high constraint=a100")
    g.add_argument("--suite-config", metavar="YAML",
                   help="a file with these settings as keys (executor, jobs, gpus_per_job, slurm_partition, "
                        "slurm_time, slurm_extra: {KEY: VALUE}); options given here win")


def add_common_arguments(p) -> None:
    from .common import add_device_arguments, positive_int

    p.add_argument("--inception-weights", metavar="FILE",
                   help="pytorch-fid's pt_inception-2015-12-05-*.pth (default: looked up in torch's hub "
                        "cache; without it SIFID is skipped; nothing is downloaded)")
    add_device_arguments(p, precision_help="sampling (and training) precision, as in 'sinddm sample' (default auto)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"),
                   help="samples per sampling batch (default as in 'sinddm sample': as many as fit in GPU memory, 4 on a CPU)")
    p.add_argument("--threads", type=positive_int("--threads"),
                   help="CPU threads for torch (default: torch's; 1 is often faster on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _apply_threads(args) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


# ---------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------

def cmd_eval(args) -> int:
    from ..checks import start_t as checked_start_t
    from ..errors import ParameterError
    from .common import load_run, output_folder
    from ..devices import resolve_device
    from ..eval.run import check_inception_weights, evaluate_run

    device = resolve_device(args.device)
    _apply_threads(args)
    check_inception_weights(args.inception_weights)
    if args.samples is not None and not Path(args.samples).is_dir():
        raise UserError(f"--samples '{args.samples}': no such folder; give the folder of sample PNGs")
    loaded = load_run(args.run, device, max_pixels=args.max_pixels)
    try:
        start_t = checked_start_t(args.start_t, loaded.start_t) if args.samples is None else None
    except ParameterError as e:
        raise e.renamed("--start-t") from None
    out = output_folder(loaded, args, "eval")  # --out or RUN_DIR/eval, checked
    m = evaluate_run(loaded, out, num=args.num, seed=args.seed, samples_dir=args.samples, start_t=start_t,
                     device=device, batch_size=args.batch_size, precision=args.precision,
                     inception_weights=args.inception_weights, progress=not args.quiet)
    _print_summary(m, out)
    return 0


def _print_summary(m: dict, out: Path) -> None:
    from ..eval.schema import summary_lines

    shw, thw = m["sample_hw"], m["training_image_hw"]
    # Patch SWD, copying and SIFID compare patch statistics, so other sizes are fair; say which.
    of = "" if shw == thw else (" of mixed sizes" if shw is None else f" of {shw[1]}x{shw[0]} px")
    print(f"{m['num_samples']} samples{of} vs the training image "
          f"({thw[1]}x{thw[0]} px), metrics in "
          f"{m['timing_s']['total']:.1f} s:", file=sys.stderr)
    print("\n".join(summary_lines(m, short=True)), file=sys.stderr)
    for k, why in m["skipped"].items():
        if k != "lpips_diversity":
            print(f"  {k} skipped: {why}", file=sys.stderr)
    print(f"wrote {out / 'metrics.json'} and {out / 'report.png'}", file=sys.stderr)


def cmd_eval_suite(args) -> int:
    from ..eval.cluster import executor_options
    from ..eval.suite import DEFAULT_OUT, run_suite

    opts = executor_options(args.suite_config, executor=args.executor, jobs=args.jobs,
                            gpus_per_job=args.gpus_per_job, slurm_partition=args.slurm_partition,
                            slurm_time=args.slurm_time, slurm_extra=args.slurm_extra)
    _apply_threads(args)
    doc = run_suite(args.images, args.config, args.out, steps=args.steps, num=args.num, seed=args.seed,
                    baseline=args.baseline, inception_weights=args.inception_weights, device=args.device,
                    batch_size=args.batch_size, precision=args.precision, progress=not args.quiet,
                    executor=opts, threads=args.threads)
    out = Path(args.out) if args.out else DEFAULT_OUT
    print(f"wrote {out / 'results.csv'}, {out / 'results.md'}, {out / 'results.json'} and {out / 'samples.png'}",
          file=sys.stderr)
    missing = doc.get("missing", [])
    if missing:
        print(f"{len(missing)} of {len(doc['rows'])} jobs left no results: "
              + "; ".join(f"{m['recipe']} / {m['image']}" for m in missing)
              + f" (their logs: {out / 'logs'}); run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def cmd_eval_compare(args) -> int:
    from ..eval.compare import compare_evaluations, render_comparison

    c = compare_evaluations(args.base, args.others)  # all checked before any output
    for flag, f in (("--json", args.json), ("--png", args.png)):
        if f and Path(f).is_dir():
            raise UserError(f"{flag} '{f}': is a folder; give a file name")
        if f and not Path(f).parent.is_dir():
            raise UserError(f"{flag} '{f}': its folder '{Path(f).parent}' does not exist; create it or give "
                            "another file name")
        if f and Path(f).exists() and not args.overwrite:
            raise UserError(f"{flag} '{f}': exists; give another file name or pass --overwrite")
    if args.png and Path(args.png).suffix.lower() != ".png":
        raise UserError(f"--png '{args.png}': give a file name ending in .png")
    if args.png:  # before any output: a picture that cannot be drawn is an error like any bad input
        why = render_comparison(Path(args.png), c)
        if why:
            raise UserError(f"--png '{args.png}': {why}")
    print(c.text())
    if args.json:
        Path(args.json).write_text(json.dumps(c.to_json(), indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.png:
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


COMMANDS = {"eval": cmd_eval, "eval-suite": cmd_eval_suite, "eval-compare": cmd_eval_compare}
