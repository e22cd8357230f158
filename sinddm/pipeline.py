"""Batch generation on top of the samplers: memory-safe batches and per-batch seeds.

`seeded_batches` is the one batching loop of the library: sampling and every edit mode call it,
so that batch b of any path is seeded with `batch_seed(seed, b)`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoint import LoadedModel
from .devices import auto_batch_size, resolve_precision
from .fast import FastPyramidSampler, prepare_backends, sampling_options
from .fast.cpu import keep_freed_memory
from .hybrid import blended_steps, layout_start
from .samplers import blended_timesteps, sample_pyramid, upsample
from .schedule import Schedule
from .tiling import tiled_loaded

BATCH_SEED_STRIDE = 1_000_003


def batch_seed(seed: int, index: int) -> int:
    """Seed of batch `index`: samples depend on (seed, batch size), not on how many are asked for."""
    return seed + BATCH_SEED_STRIDE * index


def seeded_batches(num: int, batch_size: int, seed: int,
                   fn: Callable[[int, int], torch.Tensor],
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """`fn(n, batch_seed(seed, b))` for each batch b of at most `batch_size` of `num` images;
    the images (N×3×H×W per call) come back as one list of 3×H×W CPU tensors.
    With a `generator`, each batch's seed is drawn from it instead (its state advances)."""
    out: list[torch.Tensor] = []
    for b in range(math.ceil(num / batch_size)):
        n = min(batch_size, num - b * batch_size)
        s = batch_seed(seed, b) if generator is None else int(
            torch.randint(2 ** 62, (1,), generator=generator, device=generator.device))
        out.extend(fn(n, s).float().cpu().contiguous())  # the CPU fast path leaves NHWC strides
    return out


def make_generator(device: torch.device | str, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def progress_bar(total: int, desc: str, progress: bool = True):
    return tqdm(total=total, desc=desc, unit="step", disable=not progress, dynamic_ncols=True)


def generate(loaded: LoadedModel, num: int, sizes_hw: list[tuple[int, int]], start_t: list[int],
             seed: int = 0, batch_size: int | None = None, device: torch.device | str = "cpu",
             progress: bool = True, precision: str = "fp32", compile: bool | None = None,
             cuda_graphs: bool | None = None, scale0_steps: int | None = None, tile: int | None = None,
             tileable: bool = False, generator: torch.Generator | None = None, callback=None,
             all_scales: bool = False) -> list[torch.Tensor] | list[list[torch.Tensor]]:
    """`num` samples (3×H×W tensors in [-1, 1], on the CPU) through the whole pyramid.

    precision 'auto'/'fast': the device's fast path (`sinddm.fast.sampling_options`): a bf16
    network in channels_last (on a CPU, bf16 only where native), one CUDA graph per scale
    loop on CUDA; 'fp32' is the exact path the golden tests pin. The noise is the same for
    every precision (drawn in fp32): batch b always draws from its own generator seeded
    with `batch_seed(seed, b)`.
    `scale0_steps` < T samples scale 0 on a respaced schedule (faster; T[0] is then ignored).
    `tile`: the network runs on tiles of this many px (the same numbers, bounded memory; `tiling`);
    `generator`: batch seeds are drawn from it instead of derived from `seed`.
    `callback(scale, t, x0)` sees every step's x̂0; `all_scales` returns every scale's outputs
    (a list per scale, coarsest first) instead of the finest only. Both run the eager path.
    `tileable`: on a torus, so the output tiles seamlessly. Either runs the exact fp32 eager path, as
    do hybrid and training-free models (`hybrid`), whose patch-denoiser scales (scale 0 too, unless
    `scale0_steps` or T[0] says otherwise) take `model.patch_steps` respaced steps. A training-free
    model's scale 0 starts from its picture's coarsest level noised to T[0] (`model.layout_t` by
    default; not with `tileable`, nor with `scale0_steps`, which start from pure noise).
    """
    device = torch.device(device)
    resolve_precision(precision, device)  # rejects unknown names
    if device.type == "cpu":
        keep_freed_memory()  # every precision: no number changes, page faults go
    tiled = tile is not None or tileable
    model = tiled_loaded(loaded, tile, tileable).model.to(device).eval()
    schedule = loaded.schedule.to(device)
    gammas = loaded.gammas.to(device)
    schedule0 = None
    steps = blended_steps(loaded.model, loaded.config, len(sizes_hw))
    start0 = layout_start(loaded.model, loaded.config, loaded.pyramid)
    if tileable or scale0_steps is not None:
        start0 = None               # a torus has no picture layout; respaced scale-0 steps start from noise
    if start0 is not None:
        if start_t[0] >= schedule.num_timesteps:
            start_t = [loaded.config.model.layout_t, *start_t[1:]]
        if sizes_hw[0] != loaded.pyramid.sizes_hw[0]:
            start0 = upsample(start0[None], sizes_hw[0])[0]
        start0 = start0.to(device)
    elif scale0_steps is None and steps[0] is not None and start_t[0] == schedule.num_timesteps:
        scale0_steps = steps[0]     # a training-free model's scale 0 takes model.patch_steps too
    if scale0_steps is not None and scale0_steps < schedule.num_timesteps:
        schedule0 = Schedule.cosine_respaced(scale0_steps, schedule.num_timesteps, device)
        start_t = [schedule0.num_timesteps, *start_t[1:]]
    bs = batch_size or auto_batch_size(sizes_hw, model.dim, device)
    fast = None
    # The fast paths compile the network; a hybrid or training-free model (its patch denoiser
    # is plain matmuls already) runs the eager path.
    exact_only = tiled or getattr(loaded.model, "takes_blurry", False) or callback is not None
    opts = None if exact_only else sampling_options(precision, device, compile=compile, graphs=cuda_graphs)
    if opts is not None:
        prepare_backends(device)
        fast = FastPyramidSampler(model, schedule, gammas, sizes_hw, start_t, device, opts, schedule0=schedule0)
    hooks = None if callback is None else [_reporting_hook(callback, s) for s in range(len(sizes_hw))]
    coarser: list[list[torch.Tensor]] = []   # every batch's coarser scales, for `all_scales`
    visits = start_t[0] + sum(len(blended_timesteps(t, n)) for t, n in zip(start_t[1:], steps[1:]))
    with progress_bar(math.ceil(num / bs) * visits, "sample", progress) as bar:
        def one(n: int, s: int) -> torch.Tensor:
            gen = make_generator(device, s)
            if fast is not None:
                outs = fast.sample(n, gen, progress=bar)
            else:
                outs = sample_pyramid(model, schedule, gammas, sizes_hw, start_t, n, generator=gen, device=device,
                                      progress=bar, schedule0=schedule0, wrap=tileable, hooks=hooks,
                                      blended_steps=steps, start0=start0)
            if all_scales:
                coarser.append([x.float().cpu().contiguous() for x in outs[:-1]])
            return outs[-1]

        finest = seeded_batches(num, bs, seed, one, generator)
    if not all_scales:
        return finest
    per_scale = [[x for batch in coarser for x in batch[s]] for s in range(len(sizes_hw) - 1)]
    return [*per_scale, finest]


def _reporting_hook(callback, scale: int):
    """An x̂0 hook that shows `callback(scale, t, x0)` each step's x̂0 and changes nothing."""
    def hook(x0: torch.Tensor, t: int) -> torch.Tensor:
        callback(scale, t, x0)
        return x0
    return hook
