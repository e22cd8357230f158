"""Batch generation on top of the samplers: memory-safe batches and per-batch seeds."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .checkpoint import LoadedModel
from .fast import FastPyramidSampler, prepare_backends, sampling_options
from .fast_cpu import keep_freed_memory
from .samplers import sample_pyramid
from .schedule import Schedule

# Rough float32 bytes per pixel per sample held at once by the denoiser's forward
# pass under no_grad (a few feature maps of `dim` channels plus the image tensors).
_LIVE_MAPS = 6


# On a CPU, larger batches are slower per image once activations leave the caches (shipped
# width-48 model, 101x118 px, 2 cores: 3.4 / 3.9 / 4.1 / 5.1 s per image at batch 2 / 4 / 8 / 24).
CPU_BATCH_CAP = 4


def auto_batch_size(sizes_hw: list[tuple[int, int]], dim: int, device: torch.device) -> int:
    """The largest batch whose finest-scale activations fit a conservative budget (at most
    `CPU_BATCH_CAP` on a CPU)."""
    h, w = sizes_hw[-1]
    per_sample = h * w * dim * 4 * _LIVE_MAPS
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(free // 2 // max(per_sample, 1)))
    budget = 2 * 1024 ** 3
    return max(1, min(CPU_BATCH_CAP, int(budget // max(per_sample, 1))))


# What a sample's finest-scale forward really holds at once (measured: the shipped width-48 model at
# 800x944 px on a CPU peaked ~3.7 maps of `dim` channels above start-up): the floor for refusing.
_NEEDED_MAPS = 4


def memory_needed(sizes_hw: list[tuple[int, int]], dim: int, batch: int) -> int:
    """Bytes that sampling `batch` images at `sizes_hw` needs at least (the finest scale dominates)."""
    h, w = max(sizes_hw, key=lambda hw: hw[0] * hw[1])
    return batch * h * w * dim * 4 * _NEEDED_MAPS


def available_memory(device: torch.device) -> int | None:
    """Free bytes where sampling runs: the GPU's free memory, or the OS's MemAvailable; None if unknown."""
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


def batch_seed(seed: int, index: int) -> int:
    """Seed of batch `index`: samples depend on (seed, batch size), not on how many are asked for."""
    return seed + 1_000_003 * index


def generate(loaded: LoadedModel, num: int, sizes_hw: list[tuple[int, int]], start_t: list[int],
             seed: int = 0, batch_size: int | None = None, device: torch.device | str = "cpu",
             progress: bool = True, precision: str = "fp32", compile: bool | None = None,
             cuda_graphs: bool | None = None, scale0_steps: int | None = None) -> list[torch.Tensor]:
    """`num` samples (3×H×W tensors in [-1, 1], on the CPU) through the whole pyramid.

    precision 'auto'/'fast': the device's fast path (`sinddm.fast.sampling_options`): a bf16
    network in channels_last (on a CPU, bf16 only where native), one CUDA graph per scale
    loop on CUDA; 'fp32' is the exact path the golden tests pin. The noise is the same for
    every precision (drawn in fp32): batch b always draws from its own generator seeded
    with `batch_seed(seed, b)`.
    `scale0_steps` < T samples scale 0 on a respaced schedule (faster; T[0] is then ignored).
    """
    from .training import resolve_precision

    device = torch.device(device)
    resolve_precision(precision, device)  # rejects unknown names
    if device.type == "cpu":
        keep_freed_memory()  # every precision: no number changes, page faults go
    model = loaded.model.to(device).eval()
    schedule = loaded.schedule.to(device)
    gammas = loaded.gammas.to(device)
    schedule0 = None
    if scale0_steps is not None and scale0_steps < schedule.num_timesteps:
        schedule0 = Schedule.cosine_respaced(scale0_steps, schedule.num_timesteps, device)
        start_t = [schedule0.num_timesteps, *start_t[1:]]
    bs = batch_size or auto_batch_size(sizes_hw, model.dim, device)
    n_batches = math.ceil(num / bs)
    steps_per_batch = sum(start_t)
    out: list[torch.Tensor] = []
    fast = None
    opts = sampling_options(precision, device, compile=compile, graphs=cuda_graphs)
    if opts is not None:
        prepare_backends(device)
        fast = FastPyramidSampler(model, schedule, gammas, sizes_hw, start_t, device, opts, schedule0=schedule0)
    with tqdm(total=n_batches * steps_per_batch, desc="sample", unit="step", disable=not progress,
              dynamic_ncols=True) as bar:
        for b in range(n_batches):
            n = min(bs, num - b * bs)
            gen = torch.Generator(device=device).manual_seed(batch_seed(seed, b))
            if fast is not None:
                outs = fast.sample(n, gen, progress=bar)
            else:
                outs = sample_pyramid(model, schedule, gammas, sizes_hw, start_t, n, generator=gen,
                                      device=device, progress=bar, schedule0=schedule0)
            out.extend(outs[-1].cpu().contiguous())  # the CPU fast path leaves NHWC strides
    return out
