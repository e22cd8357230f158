"""`sinddm eval-compare`: paired differences between evaluations of the same picture.

Two models sampled with the same seed start every sample from the same noise, so sample i
of one and sample i of the other are a pair: the per-sample difference of a metric cancels
most of the sample-to-sample spread, which dominates patch SWD and SIFID. The standard
error of the mean difference is then several times smaller than comparing two means
(docs/recipe-steps/README.md measured about 6x for patch SWD), which is what tells a real
recipe change from noise with a few dozen samples.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from .errors import UserError
from .eval_cli import EVAL_FORMAT, METRIC_INFO
from .eval.schema import METRIC_NAMES
from .eval.stats import paired_difference

METRICS_FILE = "metrics.json"


def add_parsers(sub) -> None:
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
    c.add_argument("--png", metavar="FILE", help="also draw FILE: a row per evaluation (BASE first), the "
                   "training image and the first samples, which share their seeds column by column")


def find_metrics(arg: str) -> Path:
    p = Path(arg)
    for cand in (p, p / METRICS_FILE, p / "eval" / METRICS_FILE):
        if cand.is_file():
            return cand
    if not p.exists():
        raise UserError(f"'{arg}': no such file or folder; give a metrics.json or the folder 'sinddm eval' wrote")
    raise UserError(f"'{arg}': holds no {METRICS_FILE} (nor eval/{METRICS_FILE}); run 'sinddm eval' on it first")


def read_metrics(path: Path) -> dict:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"'{path}': not a readable JSON file ({e}); give a metrics.json from 'sinddm eval'") from None
    if not isinstance(m, dict) or m.get("format") != EVAL_FORMAT:
        raise UserError(f"'{path}': not a 'sinddm eval' metrics file (format {EVAL_FORMAT}); "
                        "run 'sinddm eval' to make one")
    return m


def _sampling_seed(m: dict) -> int | None:
    s = m.get("samples", {})
    return s.get("seed") if s.get("source") == "generated" else None


def compare(base: dict, other: dict, base_name: str = "BASE", other_name: str = "OTHER") -> dict:
    """Paired differences `other - base` per metric; refuses evaluations that do not pair up."""
    ref_a, ref_b = base.get("reference_sha256"), other.get("reference_sha256")
    if (ref_a and ref_b and ref_a != ref_b) or base["training_image_hw"] != other["training_image_hw"]:
        raise UserError(f"'{other_name}': measured against another training picture than '{base_name}'; "
                        "compare evaluations of models trained on the same picture")
    files_a = [r["file"] for r in base["per_sample"]]
    files_b = [r["file"] for r in other["per_sample"]]
    if files_a != files_b:
        raise UserError(f"'{other_name}': its {len(files_b)} samples are not the {len(files_a)} of '{base_name}' "
                        "file for file; evaluate both with the same --num (and --samples folders with the same "
                        "file names)")
    seed_a, seed_b = _sampling_seed(base), _sampling_seed(other)
    result = {"pairs": len(files_a), "same_seed": seed_a is not None and seed_a == seed_b,
              "seed": seed_a if seed_a == seed_b else None, "metrics": {},
              "pixel_diversity": {"base": base["aggregate"].get("pixel_diversity"),
                                  "other": other["aggregate"].get("pixel_diversity")}}
    for key in METRIC_NAMES:
        result["metrics"][key] = paired_difference([r.get(key) for r in base["per_sample"]],
                                                   [r.get(key) for r in other["per_sample"]])
    return result


def plus_minus(mean: float, se: float) -> str:
    """'-0.0021 ± 0.0004': the se to two significant digits, the mean to the same decimals."""
    decimals = max(0, 1 - math.floor(math.log10(se))) if se > 0 else 4
    return f"{mean:+.{decimals}f} ± {se:.{decimals}f}"


def format_comparison(c: dict, base_name: str, other_name: str) -> list[str]:
    how = (f"both drawn with sampling seed {c['seed']}" if c["same_seed"] else
           "not drawn with one sampling seed, so the pairs are independent and the paired se is no smaller "
           "than the unpaired one")
    lines = [f"{other_name} - {base_name}: {c['pairs']} pairs, {how}",
             f"  {'metric':<24}{'base':>10}{'other':>10}   {'other - base ± se':<24}{'z':>7}  (unpaired se)"]
    for key, d in c["metrics"].items():
        label = METRIC_INFO[key][0]
        if d is None:
            lines.append(f"  {label:<24}{'skipped (no values)':>20}")
            continue
        z = d["mean"] / d["se"] if d["se"] > 0 else math.copysign(math.inf, d["mean"]) if d["mean"] else 0.0
        lines.append(f"  {label:<24}{d['base_mean']:>10.4g}{d['other_mean']:>10.4g}   "
                     f"{plus_minus(d['mean'], d['se']):<24}{z:>7.1f}  ({d['unpaired_se']:.2g})")
    pd = c["pixel_diversity"]
    if pd["base"] is not None and pd["other"] is not None:
        lines.append(f"  {METRIC_INFO['pixel_diversity'][0]:<24}{pd['base']:>10.4g}{pd['other']:>10.4g}   "
                     f"{pd['other'] - pd['base']:+.4g} (one value per set: no se)")
    return lines


def _sample_files(metrics_path: Path, m: dict) -> list[Path]:
    """The evaluated PNGs, in per_sample order: drawn ones beside metrics.json, else the --samples folder."""
    folder = (metrics_path.parent / "samples" if m.get("samples", {}).get("source") == "generated"
              else Path(m.get("samples", {}).get("folder", "")))
    return [folder / r["file"] for r in m["per_sample"]]


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def render_comparison(path: Path, base: tuple[str, Path, dict], others: list[tuple[str, Path, dict, dict]]) -> str | None:
    """The comparison as a picture (eval-suite's samples.png layout); the reason when it cannot be drawn."""
    from .checkpoint import load_model
    from .eval_cli import SUITE_SAMPLES_PER_ROW, render_suite_samples
    from .image_io import load_rgb

    name, mpath, m = base
    try:
        reference = load_model(m["model"]).pyramid.levels[-1]
    except (UserError, OSError, KeyError) as e:
        return f"the training image comes from the model '{m.get('model')}', which cannot be loaded ({e})"
    entries = []
    for label, mp, mm, c in [(name, mpath, m, None)] + others:
        files = _sample_files(mp, mm)[:SUITE_SAMPLES_PER_ROW]
        missing = [f for f in files if not f.is_file()]
        if missing:
            return f"'{missing[0]}' is gone: the picture needs the evaluated samples"
        swd = mm["aggregate"].get("swd")
        lines = [_short(label), f"patch SWD {swd['mean']:.4g}" if swd else "patch SWD -"]
        if c is None:
            lines.append("(base)")
        elif c["metrics"]["swd"] is not None:
            lines.append(f"vs base {plus_minus(c['metrics']['swd']['mean'], c['metrics']['swd']['se'])}")
        entries.append((lines, reference, [np.asarray(load_rgb(f)) for f in files]))
    render_suite_samples(path, entries)
    return None


def cmd_eval_compare(args) -> int:
    base_path = find_metrics(args.base)
    base = read_metrics(base_path)
    paths = {arg: find_metrics(arg) for arg in args.others}
    others = [(arg, read_metrics(paths[arg])) for arg in args.others]
    results = [(arg, compare(base, m, args.base, arg)) for arg, m in others]  # all checked before any output
    for flag, f in (("--json", args.json), ("--png", args.png)):
        if f and Path(f).is_dir():
            raise UserError(f"{flag} '{f}': is a folder; give a file name")
        if f and not Path(f).parent.is_dir():
            raise UserError(f"{flag} '{f}': its folder '{Path(f).parent}' does not exist; create it or give "
                            "another file name")
    if args.png and Path(args.png).suffix.lower() != ".png":
        raise UserError(f"--png '{args.png}': give a file name ending in .png")
    if args.png:  # before any output: a picture that cannot be drawn is an error like any bad input
        why = render_comparison(Path(args.png), (args.base, base_path, base),
                                [(arg, paths[arg], m, c) for (arg, m), (_, c) in zip(others, results)])
        if why:
            raise UserError(f"--png '{args.png}': {why}")
    blocks = ["\n".join(format_comparison(c, args.base, arg)) for arg, c in results]
    print("\n\n".join(blocks))
    if args.json:
        doc = {"base": str(base_path), "comparisons": [{"other": str(paths[arg]), **c} for arg, c in results]}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.png:
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


COMMANDS = {"eval-compare": cmd_eval_compare}
