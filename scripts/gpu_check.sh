#!/usr/bin/env bash
# One command for a GPU machine, run from the repository root:
#
#     bash scripts/gpu_check.sh            # results in $OUT (default ./out)
#
#     PARTS=ship,bench BENCH_MODES=fp32,fast BENCH_BUDGET=130 TOTAL_S=580 bash scripts/gpu_check.sh
#
# Always: optional offline wheels (.whl/*.whl -> /tmp/site), an import check, nvidia-smi.
# Then the parts PARTS names (default bench,fast,small), in that order:
#   bench  benchmarks/speed.py (fp32, fast, agreement, the fast mode with BENCH_COARSE batches
#          at the coarsest scales, compile last)  -> speed.json, speed.txt
#   fast   a short fast-recipe run (configs/fast.yaml, TRAIN_STEPS steps) -> fast_run/, and
#          the same 8 samples with --precision fp32 and fast      -> samples_{fp32,fast}_grid.png
#   small  the shipped small model's recipe (configs/small.yaml on assets/hubble.jpg) -> small_run/
#   ship   the width-160 model to ship: SHIP_CONFIG (default configs/fast.yaml) on
#          assets/hubble.jpg, seed 0 -> ship/: model.safetensors, sha256, loss, grids at
#          1x1/1x2/2x1, `sinddm eval` metrics.json + report.png, and `sinddm eval-compare` of the same
#          24 seeds drawn with --precision fp32 and fast (paired differences, side-by-side picture)
#
# Writes nothing outside the repository except under /tmp. Every part has its own
# `timeout`, and each part's limit shrinks to fit a hard total of TOTAL_S (default
# 450 s), so the script ends in under 8 minutes whatever happens. A failing part is
# reported and the next one still runs. Knobs (env): OUT, PYTHON, TOTAL_S,
# BENCH_BUDGET (s, default 215), BENCH_MODES (default fp32,fast,compile), BENCH_COARSE (default
# 128,64; empty: no such job),
# TRAIN_STEPS (default 2000), SMALL_BUDGET (s, default 90), TRAIN_IMAGE (default assets/rocket.jpg),
# PARTS, SHIP_CONFIG, SHIP_BUDGET (s, default 360).

set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
FINAL_OUT=${OUT:-./out}
mkdir -p "$FINAL_OUT"
FINAL_OUT=$(cd "$FINAL_OUT" && pwd)
# The device tool returns at most 8 files: work in /tmp, pack everything into one
# archive at exit (even after a failure), and keep speed.txt beside it.
OUT=/tmp/sinddm_gpu_out
rm -rf "$OUT" && mkdir -p "$OUT"
pack() { tar czf "$FINAL_OUT/gpu_results.tgz" -C "$OUT" . 2>/dev/null; cp "$OUT/speed.txt" "$FINAL_OUT/" 2>/dev/null; true; }
trap pack EXIT
TOTAL_S=${TOTAL_S:-450}
BENCH_BUDGET=${BENCH_BUDGET:-215}
BENCH_MODES=${BENCH_MODES:-fp32,fast,compile}
BENCH_COARSE=${BENCH_COARSE-128,64}
TRAIN_STEPS=${TRAIN_STEPS:-2000}
PARTS=${PARTS:-bench,fast,small}
T0=$(date +%s)
RUN=/tmp/sinddm_gpu_check
rm -rf "$RUN" && mkdir -p "$RUN"

say() { echo; echo "=== [$(( $(date +%s) - T0 )) s] $*"; }
# limit WANTED: the smaller of WANTED and what is left of TOTAL_S (at least 1)
limit() { local left=$(( TOTAL_S - ($(date +%s) - T0) )); local w=$1; (( w > left )) && w=$left; (( w < 1 )) && w=1; echo "$w"; }
part() {  # part NAME SECONDS CMD... : run with a timeout, report the outcome, never abort
    local name=$1 secs; secs=$(limit "$2"); shift 2
    if (( secs < 10 )); then echo "SKIPPED $name: total time budget spent"; return 99; fi
    say "$name (timeout ${secs} s)"
    timeout -k 5 "$secs" "$@"; local rc=$?
    if (( rc == 124 || rc == 137 )); then echo "TIMEOUT $name after ${secs} s"; elif (( rc != 0 )); then echo "FAILED $name (exit $rc)"; else echo "OK $name"; fi
    return $rc
}

# train_part NAME SECONDS "FILES" ARGS...: `sinddm train` (precision fast) into $RUN/NAME with its
# log in $OUT/NAME/train.log; report the wall time and copy FILES back into $OUT/NAME.
train_part() {
    local name=$1 secs=$2 files=$3 s0; shift 3
    mkdir -p "$OUT/$name"
    s0=$(date +%s)
    part "train $name ($*)" "$secs" \
        bash -c 'log=$1; shift; exec "$@" > "$log" 2>&1' _ "$OUT/$name/train.log" \
        $PY -m sinddm train "${TRAIN_IMAGE:-assets/rocket.jpg}" "$@" --out "$RUN/$name" --overwrite --precision fast
    echo "$name wall time $(( $(date +%s) - s0 )) s (start-up, graph capture and grid included)"
    tr '\r' '\n' < "$OUT/$name/train.log" | grep -v '^\s*$' | tail -n 6
    for f in $files; do
        [ -f "$RUN/$name/$f" ] && cp "$RUN/$name/$f" "$OUT/$name/"
    done
    true
}

# -- 1. environment ----------------------------------------------------------------------------
say "environment"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} && echo "installed wheels from .whl/ into /tmp/site"
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
timeout -k 5 "$(limit 60)" $PY - <<'EOF' | tee "$OUT/env.txt"
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
missing = []
for name in ["torch", "numpy", "PIL", "yaml", "safetensors", "tqdm", "triton", "torchvision", "open_clip"]:
    try:
        m = importlib.import_module(name)
        print(f"  {name:<12} {getattr(m, '__version__', 'ok')}")
    except Exception as e:
        missing.append(name)
        print(f"  {name:<12} MISSING ({type(e).__name__})")
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
              "cudnn", torch.backends.cudnn.version())
except Exception as e:
    print("torch check failed:", e)
need = [m for m in missing if m in ("torch", "numpy", "PIL")]
print("MISSING (needed by everything):", need or "none")
print("MISSING (needed for training/sampling parts: yaml, safetensors):",
      [m for m in missing if m in ("yaml", "safetensors")] or "none")
print("MISSING (optional: triton for torch.compile; open_clip/torchvision for text guidance):",
      [m for m in missing if m in ("triton", "open_clip", "torchvision")] or "none")
EOF
CLI_OK=1
$PY -c "import yaml, safetensors" 2>/dev/null || { CLI_OK=0; echo "yaml/safetensors missing: parts fast, small and ship (the CLI) will be skipped; carry wheels in .whl/"; }

# -- the parts, run in the order PARTS names them --------------------------------------------------

part_bench() {  # benchmarks/speed.py (fp32, fast, agreement, compile last)
    part "benchmarks/speed.py" $(( BENCH_BUDGET + 20 )) \
        $PY benchmarks/speed.py --modes "$BENCH_MODES" --budget "$BENCH_BUDGET" --out "$OUT/speed.json" \
        ${BENCH_COARSE:+--coarse-batches "$BENCH_COARSE"} \
        2>&1 | tee "$OUT/speed.txt"
}

part_fast() {  # a short fast-recipe run, then the same 8 samples with --precision fp32 and fast
    train_part fast_run "${TRAIN_BUDGET:-110}" "model.safetensors samples_grid.png loss.png loss.csv pyramid.png config.yaml" \
        --config configs/fast.yaml --steps "$TRAIN_STEPS"
    ls -l "$OUT/fast_run"
    if [ ! -f "$RUN/fast_run/model.safetensors" ]; then
        echo "no model.safetensors from the training part: sampling comparison skipped"; return
    fi
    for p in fp32 fast; do
        part "sample 8 with --precision $p" 30 \
            $PY -m sinddm sample "$RUN/fast_run" --num 8 --batch-size 8 --seed 0 --precision "$p" \
            --out "$RUN/samples_$p" --overwrite --quiet 2>&1 | tail -n 3
        [ -f "$RUN/samples_$p/grid.png" ] && cp "$RUN/samples_$p/grid.png" "$OUT/samples_${p}_grid.png"
    done
    timeout -k 5 "$(limit 20)" $PY - "$RUN" <<'PYEOF' 2>&1 | tee "$OUT/samples_compare.txt"
import sys
from pathlib import Path
import numpy as np
from PIL import Image
run = Path(sys.argv[1])
a = sorted((run / "samples_fp32").glob("sample_*.png")); b = sorted((run / "samples_fast").glob("sample_*.png"))
if not a or len(a) != len(b):
    print("samples compare: missing samples", len(a), len(b)); sys.exit(0)
d = [np.abs(np.asarray(Image.open(x), np.float64) - np.asarray(Image.open(y), np.float64)).mean() for x, y in zip(a, b)]
print("same seed, fp32 vs fast samples: mean |diff| per image (0-255 scale):", " ".join(f"{v:.2f}" for v in d))
print("(a few units: bf16 rounding carried through 236 denoising steps; tens: investigate)")
PYEOF
}

part_small() {  # the shipped small model's recipe on the GPU (its CPU training took 85 min)
    TRAIN_IMAGE=assets/hubble.jpg train_part small_run "${SMALL_BUDGET:-90}" \
        "model.safetensors samples_grid.png loss.png loss.csv config.yaml" --config configs/small.yaml
}

part_ship() {  # the width-160 model to ship: SHIP_CONFIG on assets/hubble.jpg, seed 0, then its pictures
    local cfg=${SHIP_CONFIG:-configs/fast.yaml} run=$RUN/ship
    TRAIN_IMAGE=assets/hubble.jpg train_part ship "${SHIP_BUDGET:-360}" \
        "model.safetensors samples_grid.png loss.png loss.csv pyramid.png config.yaml" --config "$cfg" --seed 0
    if [ ! -f "$run/model.safetensors" ]; then echo "ship: no model.safetensors (see ship/train.log)"; return; fi
    # the part's timeout sends SIGTERM, which saves the step reached: such a model is not the recipe's
    grep -a "stopped by SIGTERM" "$OUT/ship/train.log" && echo "ship: PARTIAL model (the time limit stopped training)"
    ls -l "$run/model.safetensors"; sha256sum "$run/model.safetensors" | tee "$OUT/ship/sha256.txt"
    for hw in "1 1" "1 2" "2 1"; do
        part "ship: sample 4 at ${hw/ /x}" 30 $PY -m sinddm sample "$run" --num 4 --seed 0 --scale-hw $hw \
            --out "$RUN/ship_${hw/ /x}" --overwrite --quiet 2>&1 | tail -n 2
        [ -f "$RUN/ship_${hw/ /x}/grid.png" ] && cp "$RUN/ship_${hw/ /x}/grid.png" "$OUT/ship/grid_${hw/ /x}.png"
    done
    part "ship: sinddm eval (24 samples)" 60 $PY -m sinddm eval "$run" --num 24 --seed 0 --out "$RUN/ship_eval" \
        --overwrite --quiet 2>&1 | tail -n 12
    for f in metrics.json report.png; do [ -f "$RUN/ship_eval/$f" ] && cp "$RUN/ship_eval/$f" "$OUT/ship/"; done
    # the same 24 seeds drawn with --precision fp32: paired metric differences fast - fp32
    part "ship: sinddm eval --precision fp32" 60 $PY -m sinddm eval "$run" --num 24 --seed 0 --precision fp32 \
        --out "$RUN/ship_eval_fp32" --overwrite --quiet 2>&1 | tail -n 3
    part "ship: eval-compare fast vs fp32" 30 $PY -m sinddm eval-compare "$RUN/ship_eval_fp32" "$RUN/ship_eval" \
        --json "$OUT/ship/compare_fast_vs_fp32.json" --png "$OUT/ship/compare_fast_vs_fp32.png" \
        2>&1 | tee "$OUT/ship/compare_fast_vs_fp32.txt"
    true
}

part "nvidia-smi" 20 nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"
for name in ${PARTS//,/ }; do
    case $name in
        bench) part_bench ;;
        fast|small|ship)
            if (( CLI_OK )); then "part_$name"; else echo "SKIPPED $name: the CLI needs yaml and safetensors"; fi ;;
        *) echo "unknown part '$name' in PARTS (use bench, fast, small, ship)" ;;
    esac
done

say "done in $(( $(date +%s) - T0 )) s; results in $OUT:"
ls -lR "$OUT" | head -n 60
