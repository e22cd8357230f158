"""Paired differences between evaluations of the same picture (`sinddm eval-compare`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError
from .report import SUITE_SAMPLES_PER_ROW, render_suite_samples
from .schema import EVAL_FORMAT, METRIC_INFO, METRIC_NAMES, METRICS_FILE, plus_minus
from .stats import paired_difference


@dataclass
class Evaluation:
    """One metrics.json of 'sinddm eval': the name it was given by, where it is, what it holds."""
    name: str
    path: Path
    metrics: dict


@dataclass
class Comparison:
    """Each of `others` against `base`: `results[i]` is `compare(base, others[i])`."""
    base: Evaluation
    others: list[Evaluation]
    results: list[dict]

    def to_json(self) -> dict:
        return {"base": str(self.base.path),
                "comparisons": [{"other": str(o.path), **c} for o, c in zip(self.others, self.results)]}

    def text(self) -> str:
        return "\n\n".join("\n".join(format_comparison(c, self.base.name, o.name))
                           for o, c in zip(self.others, self.results))


def compare_evaluations(base: str | Path, others: Sequence[str | Path]) -> Comparison:
    """Find, read and compare: `base` and each of `others` is a metrics.json, an eval folder holding
    one, or a run folder with eval/metrics.json. Every input is checked before anything is compared."""
    base_path = find_metrics(base)
    base_m = read_metrics(base_path)
    paths = [find_metrics(o) for o in others]
    evals = [Evaluation(str(o), p, read_metrics(p)) for o, p in zip(others, paths)]
    results = [compare(base_m, e.metrics, str(base), e.name) for e in evals]
    return Comparison(Evaluation(str(base), base_path, base_m), evals, results)


def find_metrics(arg: str | Path) -> Path:
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


def render_comparison(path: Path, c: Comparison) -> str | None:
    """The comparison as a picture (eval-suite's samples.png layout): a row per evaluation, base
    first, each its training image and first samples; the reason when it cannot be drawn."""
    from ..checkpoint import load_model
    from ..image_io import load_rgb

    m = c.base.metrics
    try:
        reference = load_model(m["model"]).pyramid.levels[-1]
    except (UserError, OSError, KeyError) as e:
        return f"the training image comes from the model '{m.get('model')}', which cannot be loaded ({e})"
    entries = []
    for e, result in [(c.base, None)] + list(zip(c.others, c.results)):
        files = _sample_files(e.path, e.metrics)[:SUITE_SAMPLES_PER_ROW]
        missing = [f for f in files if not f.is_file()]
        if missing:
            return f"'{missing[0]}' is gone: the picture needs the evaluated samples"
        swd = e.metrics["aggregate"].get("swd")
        lines = [_short(e.name), f"patch SWD {swd['mean']:.4g}" if swd else "patch SWD -"]
        if result is None:
            lines.append("(base)")
        elif result["metrics"]["swd"] is not None:
            lines.append(f"vs base {plus_minus(result['metrics']['swd']['mean'], result['metrics']['swd']['se'])}")
        entries.append((lines, reference, [np.asarray(load_rgb(f)) for f in files]))
    render_suite_samples(path, entries)
    return None
