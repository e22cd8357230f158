"""Statistics over per-sample metric values: summaries and paired differences.

numpy only, so that comparing metrics.json files needs no network or picture code.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def summary(values: list[float | None]) -> dict[str, float] | None:
    """mean, population std, min and max of the finite values; None when there are none."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def paired_difference(base: Sequence[float | None], other: Sequence[float | None]) -> dict[str, float] | None:
    """Mean per-sample difference `other - base` over pairs, with its standard error.

    Pair i is the same sampling seed drawn from two models, so most of the sample-to-sample
    spread cancels: `se` (from the differences) is usually far below `unpaired_se` (the
    two means' standard errors combined as if independent). Pairs with a missing value are
    dropped; None with fewer than 2 pairs left.
    """
    if len(base) != len(other):
        raise ValueError(f"paired values need equal lengths, got {len(base)} and {len(other)}")
    ok = [(a, b) for a, b in zip(base, other)
          if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    n = len(ok)
    if n < 2:
        return None
    a, b = (np.array(v, dtype=np.float64) for v in zip(*ok))
    d = b - a
    return {"n": n, "base_mean": float(a.mean()), "other_mean": float(b.mean()), "mean": float(d.mean()),
            "se": float(d.std(ddof=1) / math.sqrt(n)),
            "unpaired_se": float(math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / n))}
