"""Evaluation: quality metrics, the work of `sinddm eval` / `eval-suite` / `eval-compare`, report pictures.

Import the modules themselves (nothing is re-exported here):

- `metrics`: `evaluate` and the public metric API, whose measures live in `images`
  (picture conversion), `swd` (patch SWD), `diversity` (pixel diversity, copying),
  `sifid` (Fréchet distance, SIFID over `inception`, the FID network) and `stats`
  (summaries, paired differences).
- `schema`: what metrics.json holds (format, metric names and labels) and how it is shown.
- `run`: `evaluate_run`, one model's evaluation (metrics.json, report.png, samples/).
- `report`: the pictures (report page, samples figure), Pillow only.
- `compare`: `compare_evaluations` / `compare`, paired differences between evaluations.
- `suite`: `run_suite`, train and evaluate a run per picture and recipe; `tables` writes its results.
- `suite_job`: one (picture, recipe) job of a suite; `run_job` runs it in a process of its own.
- `cluster`: the suite's jobs through submitit (local processes, one GPU set each, or SLURM).
"""
