"""Quality metrics for single-image generative models, vectorised in torch: the public API.

Every function takes pictures as uint8 arrays (H×W×3) or float tensors in [-1, 1]
(3×H×W, or N×3×H×W), the library's two picture types, and works on any device.
`evaluate` runs every measure over a set of samples; the measures live in their own
modules and are importable from here (definitions exactly as implemented; see each
function's docstring):

- `pixel_diversity` (`diversity`): per-pixel standard deviation over the samples of the
  grayscale (BT.601 luma) values, averaged over pixels, divided by the standard deviation
  of the training image's grayscale values (SinGAN's "diversity"; 0 for identical samples).
- `PatchSWD` (`swd`): sliced Wasserstein-1 distance between the 7×7×3 patches of a sample
  and those of the training image, at several levels of a 2× box-filter pyramid, along a
  fixed set of random unit directions drawn from a seeded generator. Patch counts may
  differ (quantile matching), so samples of any size can be compared.
- `CopyMeasure` (`diversity`): a nearest-neighbour field (exact L2, 7×7 patches, at a
  reduced working resolution) from the sample to the training image; neighbouring
  positions whose offsets agree (within `tolerance` px) form coherent regions, and large
  coherent regions are chunks copied from the training image.
- `SIFID` (`sifid`): the Fréchet distance between the Gaussian statistics of InceptionV3
  feature vectors of one sample and of the training image, at the 64-channel layer before
  the first max pooling and the 192-channel layer before the second (the network of
  pytorch-fid, in `sinddm.eval.inception`; weights from a local file only).
- `frechet_distance` (`sifid`): ‖μ1-μ2‖² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½, by
  symmetric eigen-decompositions in float64 (no scipy).
- `paired_difference` (`stats`): the mean per-sample difference between two evaluations
  drawn with the same seeds, with its standard error.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError
from .diversity import (CopyMeasure, CopySettings, coherent_regions, connected_components, pixel_diversity,
                        region_stats)
from .images import GRAY_WEIGHTS, as_batch, as_image, grayscale, same_size_batches
from .inception import find_inception_weights
from .schema import METRIC_NAMES
from .sifid import SIFID, SIFID_TAPS, frechet_distance, gaussian_stats, one_thread
from .stats import paired_difference, summary
from .swd import PatchSWD, SWDSettings, box_pyramid, resample_sorted, sliced_w1_sorted, sort_last

__all__ = ["GRAY_WEIGHTS", "METRIC_NAMES", "SIFID", "SIFID_TAPS", "CopyMeasure", "CopySettings", "EvalSettings",
           "PatchSWD", "SWDSettings", "as_batch", "as_image", "box_pyramid", "coherent_regions",
           "connected_components", "evaluate", "frechet_distance", "gaussian_stats", "grayscale", "one_thread",
           "paired_difference", "pixel_diversity", "region_stats", "resample_sorted", "same_size_batches",
           "sliced_w1_sorted", "sort_last", "summary"]


@dataclass
class EvalSettings:
    swd: SWDSettings = field(default_factory=SWDSettings)
    copy: CopySettings = field(default_factory=CopySettings)
    sifid: bool = True
    chunk: int = 8                 # pictures per batch through the networks


def evaluate(reference: np.ndarray, samples: list[np.ndarray], settings: EvalSettings | None = None,
             device: torch.device | str = "cpu", inception_weights: str | os.PathLike | None = None,
             progress: bool = False, names: list[str] | None = None) -> dict:
    """Every metric of `samples` (uint8 H×W×3) against `reference` (the training image).

    Returns {"per_sample": [{file, size_hw, swd, swd_levels, copy_*, sifid64, sifid192}],
    "aggregate": {metric: {mean, std, min, max}, "pixel_diversity": x}, "skipped":
    {metric: reason}, "settings": ..., "timing_s": {...}}. SIFID is skipped (with the
    reason) when no weights file is given or found; `inception_weights` names one.
    """
    settings = settings or EvalSettings()
    device = torch.device(device)
    n = len(samples)
    if n == 0:
        raise ValueError("no samples to evaluate")
    names = names or [f"sample_{i:03d}" for i in range(n)]
    rows: list[dict] = [{"file": names[i], "size_hw": list(samples[i].shape[:2])} for i in range(n)]
    skipped: dict[str, str] = {}
    timing: dict[str, float] = {}
    bar = tqdm(total=3 * n, desc="metrics", unit="img", disable=not progress, dynamic_ncols=True)

    with torch.no_grad():
        t0 = time.perf_counter()
        batches = same_size_batches(samples, settings.chunk)
        _add_swd(rows, reference, batches, settings, device, bar)
        timing["swd"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        _add_copy(rows, reference, batches, settings, device, bar)
        timing["copy"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        weights_used = _add_sifid(rows, reference, batches, settings, device, bar, inception_weights, skipped)
        timing["sifid"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        diversity = _diversity_or_reason(samples, reference, skipped)
        timing["pixel_diversity"] = time.perf_counter() - t0
    bar.close()
    skipped["lpips_diversity"] = "not implemented: LPIPS needs pretrained network weights"

    aggregate: dict = {"pixel_diversity": diversity}
    for m in METRIC_NAMES:
        aggregate[m] = summary([r.get(m) for r in rows])
    timing["total"] = sum(timing.values())
    return {"per_sample": rows, "aggregate": aggregate, "skipped": skipped,
            "settings": {"swd": asdict(settings.swd), "copy": asdict(settings.copy),
                         "sifid": {"taps": {"64": "Conv2d_2b_3x3 (before the first max pool)",
                                            "192": "Conv2d_4a_3x3 (before the second max pool)"},
                                   "input": "native size, [-1, 1]", "weights": weights_used}},
            "timing_s": timing}


def _add_swd(rows: list[dict], reference, batches, settings: EvalSettings, device, bar) -> None:
    swd = PatchSWD(reference, settings.swd, device)
    for idx, batch in batches:
        levels = swd.per_level(batch, chunk=settings.chunk)
        for j, i in enumerate(idx):
            rows[i]["swd_levels"] = [None if math.isnan(v) else v for v in levels[j].tolist()]
            rows[i]["swd"] = float(levels[j].nanmean())
        bar.update(len(idx))


def _add_copy(rows: list[dict], reference, batches, settings: EvalSettings, device, bar) -> None:
    copy = CopyMeasure(reference, settings.copy, device)
    for idx, batch in batches:
        for i, r in zip(idx, copy(batch, chunk=len(idx))):
            rows[i].update(r)
        bar.update(len(idx))


def _add_sifid(rows: list[dict], reference, batches, settings: EvalSettings, device, bar,
               inception_weights, skipped: dict[str, str]) -> str | None:
    """sifid64 / sifid192 per row (None, with the reason in `skipped`, when there are no usable
    weights); returns the weights file used."""
    weights_used = None
    if not settings.sifid:
        skipped["sifid"] = "disabled"
    else:
        path, why = find_inception_weights(inception_weights)
        if path is None:
            skipped["sifid"] = why
        else:
            try:
                sifid = SIFID(reference, path, device)
            except ValueError as e:
                if inception_weights is not None:
                    raise UserError(f"--inception-weights '{path}': {e}; give pytorch-fid's "
                                    "pt_inception-2015-12-05-*.pth") from None
                skipped["sifid"] = f"weights '{path}' unusable: {e}"
            else:
                weights_used = str(Path(path).resolve())
                for idx, batch in batches:
                    vals = sifid(batch, chunk=settings.chunk)
                    for j, i in enumerate(idx):
                        rows[i]["sifid64"] = vals[64][j]
                        rows[i]["sifid192"] = vals[192][j]
                    bar.update(len(idx))
    if "sifid" in skipped:
        for r in rows:
            r["sifid64"] = r["sifid192"] = None
        bar.update(len(rows))
    return weights_used


def _diversity_or_reason(samples: list[np.ndarray], reference, skipped: dict[str, str]) -> float | None:
    sizes = {tuple(s.shape[:2]) for s in samples}
    if len(samples) < 2:
        skipped["pixel_diversity"] = "needs at least 2 samples"
        return None
    if len(sizes) > 1:
        skipped["pixel_diversity"] = "samples differ in size"
        return None
    return pixel_diversity(samples, reference)
