"""What `sinddm eval` writes into metrics.json, and how its numbers are shown."""

from __future__ import annotations

import math

EVAL_FORMAT = "sinddm-eval/1"
METRICS_FILE = "metrics.json"

# The per-sample metrics of `sinddm.eval.metrics.evaluate`, in their order in metrics.json.
METRIC_NAMES = ["swd", "copy_mean_region", "copy_large_fraction", "copy_max_region", "sifid64", "sifid192"]

# metric → (label in tables and the report, one-line meaning)
METRIC_INFO = {
    "pixel_diversity": ("pixel div.", "per-pixel grey std over samples / training image std (0 = all alike)"),
    "swd": ("patch SWD", "sliced W1 of 7x7 patches, up to 4 pyramid levels (0 = same patch statistics)"),
    "copy_mean_region": ("copy: mean region", "size of the coherent NNF region a pixel lies in (1 = one copied block)"),
    "copy_large_fraction": ("copy: in large regions", "share of pixels in coherent regions >= 5% of the image"),
    "copy_max_region": ("copy: largest region", "largest coherent NNF region, fraction of the image"),
    "sifid64": ("SIFID-64", "single-image FID, InceptionV3 before the 1st max pool (64 ch)"),
    "sifid192": ("SIFID-192", "single-image FID, InceptionV3 before the 2nd max pool (192 ch)"),
}
TABLE_METRICS = ["pixel_diversity", "swd", "copy_mean_region", "copy_large_fraction", "sifid64", "sifid192"]


def json_clean(x):
    """NaN/inf → None (JSON has no NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    return x


def summary_pairs(m: dict, short: bool = False) -> list[tuple[str, str]]:
    """(label, value text) per metric of a metrics.json; `short` leaves the reasons for skipping out."""
    agg, skipped = m["aggregate"], m["skipped"]
    pairs = []
    for key in TABLE_METRICS:
        label = METRIC_INFO[key][0]
        v = agg.get(key)
        if key == "pixel_diversity":
            why = "" if short else f" ({skipped.get(key)})"
            pairs.append((label, f"{v:.4g}" if v is not None else f"skipped{why}"))
        elif v is None:
            why = skipped.get("sifid", "no values") if key.startswith("sifid") else "no values"
            pairs.append((label, "skipped" + ("" if short else f" ({why})")))
        else:
            pairs.append((label, f"{v['mean']:.4g} ± {v['std']:.2g}  (min {v['min']:.4g}, max {v['max']:.4g})"))
    return pairs


def summary_lines(m: dict, short: bool = False) -> list[str]:
    return [f"  {label:<22} {text}" for label, text in summary_pairs(m, short)]


def plus_minus(mean: float, se: float) -> str:
    """'-0.0021 ± 0.0004': the se to two significant digits, the mean to the same decimals."""
    decimals = max(0, 1 - math.floor(math.log10(se))) if se > 0 else 4
    return f"{mean:+.{decimals}f} ± {se:.{decimals}f}"
