"""What `sinddm eval` writes into metrics.json, and how its numbers are shown."""

from __future__ import annotations

# The per-sample metrics of `sinddm.eval.metrics.evaluate`, in their order in metrics.json.
METRIC_NAMES = ["swd", "copy_mean_region", "copy_large_fraction", "copy_max_region", "sifid64", "sifid192"]
