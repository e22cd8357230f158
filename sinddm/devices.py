"""Where the work runs and what fits there: device and precision names, memory estimates and the
up-front checks that refuse work the machine cannot hold (the OS would kill it without a word).

Memory figures are floors measured on a CPU; on a GPU torch raises (and the CLI reports it in
one line), so the checks only act on a CPU.
"""

from __future__ import annotations

import torch

from .errors import UserError

PRECISIONS = ("auto", "fp32", "fast")

# Rough float32 bytes per pixel per sample held at once by the denoiser's forward
# pass under no_grad (a few feature maps of `dim` channels plus the image tensors).
_LIVE_MAPS = 6
# What a sample's finest-scale forward really holds at once (measured: the shipped width-48 model at
# 800x944 px on a CPU peaked ~3.7 maps of `dim` channels above start-up): the floor for refusing.
_NEEDED_MAPS = 4
# What one CPU training step holds at its peak, in maps of `dim` channels over the batch at the
# step's scale (forward activations kept for backward, their gradients, the loss's tensors):
# measured 13.4 at width 160, batch 8, 244x204 px, and 17-21 at small sizes, where the fixed costs
# (weights, Adam's moments, the pyramid) weigh more. The floor for refusing a run up front.
_TRAIN_MAPS = 12
# On a CPU, larger batches are slower per image once activations leave the caches (shipped
# width-48 model, 101x118 px, 2 cores: 3.4 / 3.9 / 4.1 / 5.1 s per image at batch 2 / 4 / 8 / 24).
CPU_BATCH_CAP = 4
_CPU_SAMPLING_BUDGET = 2 * 1024 ** 3   # bytes the automatic CPU batch size may plan for
_FLOAT32 = 4


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when visible, else the CPU), 'cpu' or 'cuda[:N]'; UserError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to PyTorch; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda") from None


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' and 'fast' are the device's fast path (`fast.FastOptions.for_device`: CUDA, or an x86
    CPU with oneDNN), and 'fp32' where it has none; 'fp32' is the exact path."""
    from .fast import has_fast_path

    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use auto, fp32 or fast")
    if precision == "fp32":
        return "fp32"
    return "fast" if has_fast_path(torch.device(device)) else "fp32"


def available_memory(device: torch.device) -> int | None:
    """Free bytes where the work runs: the GPU's free memory, or the OS's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:  # Linux; elsewhere unknown (no check)
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def auto_batch_size(sizes_hw: list[tuple[int, int]], dim: int, device: torch.device) -> int:
    """The largest batch whose finest-scale activations fit a conservative budget (at most
    `CPU_BATCH_CAP` on a CPU)."""
    h, w = sizes_hw[-1]
    per_sample = h * w * dim * _FLOAT32 * _LIVE_MAPS
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(free // 2 // max(per_sample, 1)))
    return max(1, min(CPU_BATCH_CAP, int(_CPU_SAMPLING_BUDGET // max(per_sample, 1))))


def memory_needed(sizes_hw: list[tuple[int, int]], dim: int, batch: int) -> int:
    """Bytes that sampling `batch` images at `sizes_hw` needs at least (the finest scale dominates)."""
    h, w = max(sizes_hw, key=lambda hw: hw[0] * hw[1])
    return batch * h * w * dim * _FLOAT32 * _NEEDED_MAPS


def train_memory_by_scale(sizes_hw: list[tuple[int, int]], batches: list[int], dim: int) -> list[int]:
    """Bytes that a training step at each scale needs at least."""
    return [b * h * w * dim * _FLOAT32 * _TRAIN_MAPS for (h, w), b in zip(sizes_hw, batches)]


def train_memory_needed(sizes_hw: list[tuple[int, int]], batches: list[int], dim: int) -> int:
    """Bytes that a training step needs at least, at its most demanding scale."""
    return max(train_memory_by_scale(sizes_hw, batches, dim))


def _cpu_free(device: torch.device) -> int | None:
    return available_memory(device) if device.type == "cpu" else None


# Whole-image tensors the samplers hold per image at once (x, x̂0, the mixes, noise, the stitched ε, ...),
# in 3-channel float32 maps: what tiling cannot shrink.
_IMAGE_MAPS = 12
DEFAULT_TILE = 256   # px: the tile core `plan_tile` picks (halo overhead (256 + 2·16)² / 256² ≈ 1.27)


def tiled_memory_needed(sizes: list[tuple[int, int]], dim: int, batch: int, tile: int, halo: int) -> int:
    """Bytes that tiled sampling needs at least: the images themselves plus one pass of windows."""
    from .tiling import TILE_PASS_BUDGET

    h, w = max(sizes, key=lambda hw: hw[0] * hw[1])
    window = (min(tile + 2 * halo, h) * min(tile + 2 * halo, w)) * dim * _FLOAT32 * _NEEDED_MAPS
    windows = batch * -(-h // tile) * -(-w // tile)
    return batch * h * w * 3 * _FLOAT32 * _IMAGE_MAPS + max(window, min(TILE_PASS_BUDGET, windows * window))


def plan_tile(sizes: list[tuple[int, int]], model, batch_size: int | None, device: torch.device,
              tile: int | None = None, num: int | None = None) -> int | None:
    """The tile to sample `model` with: `tile` as asked, or, on a CPU where the untiled activations do
    not fit in the memory available (CPU RAM or free GPU memory), `DEFAULT_TILE` (said in one line on
    stderr). UserError when not even the tiled images fit."""
    import sys

    from .tiling import receptive_radius

    dim = model.dim
    free = available_memory(device)
    if free is None:
        return tile
    h, w = sizes[-1]
    bs = min(batch_size or auto_batch_size(sizes, dim, device), num or 2 ** 31)
    if tile is None and bs * memory_needed(sizes, dim, 1) <= free:
        return None
    halo = receptive_radius(model)
    tries = [tile] if tile else [DEFAULT_TILE >> k for k in range(4)]   # 256, 128, 64, 32: the first that fits
    use = next((t for t in tries if tiled_memory_needed(sizes, dim, bs, t, halo) <= free), tries[-1])
    need = tiled_memory_needed(sizes, dim, bs, use, halo)
    if need > free:
        raise UserError(f"sampling {bs} image(s) of {h}x{w} px (h x w) needs about {need / 2**30:.1f} GiB even "
                        f"tiled, more than the {free / 2**30:.1f} GiB memory available; use a smaller --size, "
                        "--scale-hw or --batch-size")
    if tile is None:
        print(f"note: {bs} image(s) of {h}x{w} px do not fit untiled in the {free / 2**30:.1f} GiB available: "
              f"tiling on (--tile {use}; the same pictures, bounded memory)", file=sys.stderr)
    return use


def check_train_memory(sizes_hw: list[tuple[int, int]], config, device: torch.device) -> None:
    """On a CPU, refuse a run whose largest step cannot fit in memory (possibly hours in, when the
    random scale first lands on it), naming the config key to lower and the value that fits."""
    from .config import scale_batch_sizes

    free = _cpu_free(device)
    if free is None:
        return
    tc, dim = config.train, config.model.dim
    batches = scale_batch_sizes(tc, len(sizes_hw))
    needs = train_memory_by_scale(sizes_hw, batches, dim)
    need = max(needs)
    if need <= free:
        return
    s = needs.index(need)
    (h, w), b = sizes_hw[s], batches[s]
    fits = max(1, int(b * free // need))
    key = f"train.coarse_batch_sizes[{s}]" if s < len(tc.coarse_batch_sizes) else "train.batch_size"
    raise UserError(f"training width {dim} with batch {b} at {h}x{w} px (h x w) needs about {need / 2**30:.1f} GiB, "
                    f"more than the {free / 2**30:.1f} GiB memory available; set {key} to {fits} or less, or "
                    "lower image.max_pixels, in a config (configs/cpu.yaml is made for a CPU)")
