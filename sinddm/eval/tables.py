"""eval-suite's tables: results.csv, results.md and results.json, with paired differences.

One row per recipe and image, a '(mean)' row per recipe over several images, and (with a
baseline recipe) each other recipe's paired differences from it, image by image.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .compare import compare
from .schema import METRIC_INFO, TABLE_METRICS, json_clean, plus_minus


TABLE_COLUMNS = ["recipe", "image", "size", "scales", "steps", "train_s", "samples"] + TABLE_METRICS
CSV_COLUMNS = TABLE_COLUMNS + ["status"]   # 'ok', or 'missing: <why>' for a job without results


def missing_row(recipe: str, image: str, why: str) -> dict:
    """The row of a job that left no results (failed, killed, not run): every value empty."""
    row = {c: None for c in TABLE_COLUMNS}
    row.update(recipe=recipe, image=image, skipped={}, status=f"missing: {why}")
    return row


def _mean_rows(rows: list[dict], recipes) -> list[dict]:
    out = []
    for name, _, _ in recipes:
        mine = [r for r in rows if r["recipe"] == name]
        if len(mine) < 2:
            continue
        mean = {"recipe": name, "image": "(mean)", "size": "", "scales": "", "steps": "", "samples": "",
                "train_s": None}
        ts = [r["train_s"] for r in mine if r["train_s"] is not None]
        mean["train_s"] = sum(ts) / len(ts) if ts else None
        for k in TABLE_METRICS:
            vals = [r[k] for r in mine if r[k] is not None]
            mean[k] = sum(vals) / len(vals) if len(vals) == len(mine) else None
        out.append(mean)
    return out


PAIRED_METRICS = ["swd", "sifid64", "sifid192"]


def paired_rows(evals: dict, baseline: str, recipes: list[str], images: list[str]) -> list[dict]:
    """Per recipe and image: paired differences against the baseline recipe's run on that image;
    with several images a '(mean)' row averages them (standard errors combined as independent)."""
    out = []
    for name in recipes:
        if name == baseline:
            continue
        mine = []
        for img in images:
            if evals.get((baseline, img)) is None or evals.get((name, img)) is None:  # a job left no results
                mine.append({"recipe": name, "image": img, "pairs": 0, "pixel_diversity": None,
                             **{k: None for k in PAIRED_METRICS}})
                continue
            c = compare(evals[(baseline, img)], evals[(name, img)], f"{baseline}/{img}", f"{name}/{img}")
            row = {"recipe": name, "image": img, "pairs": c["pairs"]}
            for k in PAIRED_METRICS:
                d = c["metrics"][k]
                row[k] = None if d is None else {"mean": d["mean"], "se": d["se"]}
            pd = c["pixel_diversity"]
            row["pixel_diversity"] = (None if pd["base"] is None or pd["other"] is None
                                      else pd["other"] - pd["base"])
            mine.append(row)
        out += mine
        if len(mine) > 1:
            mean = {"recipe": name, "image": "(mean)", "pairs": sum(r["pairs"] for r in mine)}
            for k in PAIRED_METRICS:
                ds = [r[k] for r in mine]
                mean[k] = None if None in ds else {
                    "mean": sum(d["mean"] for d in ds) / len(ds),
                    "se": math.sqrt(sum(d["se"] ** 2 for d in ds)) / len(ds)}
            pds = [r["pixel_diversity"] for r in mine]
            mean["pixel_diversity"] = None if None in pds else sum(pds) / len(pds)
            out.append(mean)
    return out


def _paired_lines(baseline: str, paired: list[dict], num: int, seed: int) -> list[str]:
    metrics = [k for k in PAIRED_METRICS if any(r[k] is not None for r in paired)]
    lines = ["", f"## Paired differences against `{baseline}`", "",
             f"Each run's per-sample metric minus that of the `{baseline}` run on the same picture, averaged "
             f"over the {num} samples; every run draws its samples with seed {seed}, so sample i "
             "of two runs starts from the same noise and most of the sample-to-sample spread cancels. "
             "± is the standard error of that mean (negative = better than the baseline for these "
             "metrics); `sinddm eval-compare` gives the full comparison of two runs.", "",
             "| recipe | image | " + " | ".join(f"Δ {METRIC_INFO[k][0]}" for k in metrics)
             + f" | Δ {METRIC_INFO['pixel_diversity'][0]} |",
             "|---|---|" + "---:|" * (len(metrics) + 1)]
    for r in paired:
        cells = ["–" if r[k] is None else plus_minus(r[k]["mean"], r[k]["se"]) for k in metrics]
        pd = r["pixel_diversity"]
        cells.append("–" if pd is None else f"{pd:+.3f}")
        lines.append(f"| {r['recipe']} | {r['image']} | " + " | ".join(cells) + " |")
    return lines


def _fmt_cell(key: str, v) -> str:
    if v is None:
        return "–"
    if key == "train_s":
        return f"{v:.0f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_tables(out: Path, rows: list[dict], recipes, *, num: int, seed: int, baseline: str | None = None,
                 paired: list[dict] | None = None) -> dict:
    """results.csv, results.md and results.json in `out`; returns results.json's content.

    `recipes`: (name, config path, config) triples; `num`, `seed`: how every run was sampled."""
    out.mkdir(parents=True, exist_ok=True)
    means = _mean_rows(rows, recipes)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(CSV_COLUMNS)
    for r in rows + means:
        r.setdefault("status", "ok")
        wr.writerow(["" if r.get(c) is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                     for c in CSV_COLUMNS])
    (out / "results.csv").write_text(buf.getvalue())
    lines = _markdown(rows, means, recipes, num, seed)
    if paired:
        lines += _paired_lines(baseline, paired, num, seed)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    doc = {"rows": rows, "means": means}
    missing = [{"recipe": r["recipe"], "image": r["image"], "why": r["status"][len("missing: "):]}
               for r in rows if r["status"] != "ok"]
    if missing:
        doc["missing"] = missing
    if paired:
        doc["paired"] = {"baseline": baseline, "rows": paired}
    (out / "results.json").write_text(json.dumps(json_clean(doc), indent=1) + "\n")
    return doc


def _markdown(rows: list[dict], means: list[dict], recipes, num: int, seed: int) -> list[str]:
    headers = {"train_s": "train s", "pixel_diversity": METRIC_INFO["pixel_diversity"][0]}
    headers.update({k: METRIC_INFO[k][0] for k in TABLE_METRICS})
    lines = ["# sinddm eval-suite", "",
             f"Recipes: {', '.join(f'`{n}` ({p})' for n, p, _ in recipes)}; {num} samples per run, "
             f"seed {seed}. Lower is better for patch SWD and SIFID; copy columns measure how much of a "
             "sample is one coherent block of the training image (lower = less copying); pixel diversity is 0 "
             "when every sample is the same picture and grows with variation (noise scores about 1 or more).", "",
             "| " + " | ".join(headers.get(c, c) for c in TABLE_COLUMNS) + " |",
             "|" + "|".join("---" if c in ("recipe", "image") else "---:" for c in TABLE_COLUMNS) + "|"]
    for r in rows + means:
        cells = [_fmt_cell(c, r.get(c)) for c in TABLE_COLUMNS]
        if r.get("status", "ok") != "ok":
            cells[2:] = ["missing"] + ["–"] * (len(cells) - 3)
        lines.append("| " + " | ".join(cells) + " |")
    gone = [f"{r['recipe']} / {r['image']} ({r['status'][len('missing: '):]})" for r in rows if r["status"] != "ok"]
    if gone:
        lines += ["", "Missing (no results; run the same command again to retry them, finished jobs are kept): "
                  + "; ".join(gone) + "."]
    reasons = sorted({f"{k}: {v}" for r in rows for k, v in r["skipped"].items()})
    if reasons:
        lines += ["", "Skipped: " + "; ".join(reasons) + "."]
    lines += ["", "Metric definitions: " + "; ".join(f"**{METRIC_INFO[k][0]}**: {METRIC_INFO[k][1]}"
                                                     for k in TABLE_METRICS) + "."]
    return lines
