#!/usr/bin/env python3
"""CPU sampling: the exact fp32 path against the CPU fast path (fp32, channels_last).

    python benchmarks/cpu_sampling.py                      # the shipped small model
    python benchmarks/cpu_sampling.py --model runs/x --num 4 --repeats 3 --json out.json

For each output size, draws the same NUM samples (same seed) with `--precision fp32` and
`fast`, alternating, REPEATS times each; prints the median seconds per sample, the
speed-up, and how far apart the two precisions' samples are (max |difference| in [-1, 1],
and the share of uint8 pixel values that differ once saved).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sinddm.checkpoint import load_model  # noqa: E402
from sinddm.fast import cpu_channels_last_pays  # noqa: E402
from sinddm.image_io import to_uint8  # noqa: E402
from sinddm.pipeline import generate  # noqa: E402
from sinddm.pyramid import sample_sizes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "assets/models/hubble-small.safetensors"))
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    pyr = loaded.pyramid
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"model {args.model} (width {loaded.model.dim}); CPU {cpu}; torch {torch.__version__}; "
          f"channels_last pays here: {cpu_channels_last_pays()}")
    rows = []
    for scale_hw in ((1.0, 1.0), (1.0, 2.0)):
        sizes = sample_sizes(pyr.sizes_hw, pyr.scale_factor, scale_hw=scale_hw)
        times: dict[str, list[float]] = {"fp32": [], "fast": []}
        out = {}
        for _ in range(args.repeats):
            for precision in times:
                t0 = time.perf_counter()
                out[precision] = generate(loaded, args.num, sizes, loaded.start_t, seed=args.seed,
                                          progress=False, precision=precision)
                times[precision].append((time.perf_counter() - t0) / args.num)
        a, b = torch.stack(out["fp32"]), torch.stack(out["fast"])
        ua = torch.stack([torch.from_numpy(to_uint8(x)) for x in out["fp32"]])
        ub = torch.stack([torch.from_numpy(to_uint8(x)) for x in out["fast"]])
        row = {"scale_hw": list(scale_hw), "size_hw": list(sizes[-1]), "num": args.num,
               "fp32_s_per_sample": statistics.median(times["fp32"]),
               "fast_s_per_sample": statistics.median(times["fast"]),
               "max_abs_diff": (a - b).abs().max().item(),
               "uint8_values_differing": (ua != ub).float().mean().item()}
        row["speedup"] = row["fp32_s_per_sample"] / row["fast_s_per_sample"]
        rows.append(row)
        print(f"{sizes[-1][0]}x{sizes[-1][1]}: fp32 {row['fp32_s_per_sample']:.2f} s/sample, fast "
              f"{row['fast_s_per_sample']:.2f} s/sample (x{row['speedup']:.2f}); max |diff| "
              f"{row['max_abs_diff']:.1e}, uint8 values differing {100 * row['uint8_values_differing']:.3f} %",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "torch": torch.__version__, "model": args.model,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
