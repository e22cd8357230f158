"""Evaluation: quality metrics, the `sinddm eval` / `eval-suite` / `eval-compare` work, report pictures.

Import the modules themselves (nothing is re-exported here):

- `metrics`: `evaluate` and the public metric API, whose measures live in `images`
  (picture conversion), `swd` (patch SWD), `diversity` (pixel diversity, copying),
  `sifid` (Fréchet distance, SIFID over `inception`, the FID network) and `stats`
  (summaries, paired differences).
"""
