"""Samplers: plain functions over a denoiser and a `Schedule` (method §5).

`model(x, t, scale)` predicts ε. Noise comes from a `noise_sampler(t)` callable so
that tests can replay recorded noise and callers can choose their generator.
An optional `x0_hook(x0, t)` sees (and may replace) every x̂0: guidance and region edits plug
in there. The blended sampler hands it the unclamped x̂0 and clamps later; the DDPM sampler
clamps first unless `hook_before_clamp` (ROI copying blends into the raw x̂0, then clamps, as
the reference does: method §7.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .schedule import SAMPLING_GAMMA_MAX, Schedule

NoiseSampler = Callable[[int], torch.Tensor]
X0Hook = Optional[Callable[[torch.Tensor, int], torch.Tensor]]


def default_noise_sampler(like: torch.Tensor, generator: torch.Generator | None = None) -> NoiseSampler:
    """Fresh N(0, I) noise shaped like `like` at every call, from `generator`."""
    return lambda t: torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _at(table: torch.Tensor, t: int) -> torch.Tensor:
    return table[t]


def predict_x0(schedule: Schedule, x_t: torch.Tensor, t: int, eps: torch.Tensor) -> torch.Tensor:
    """x̂0 = sqrt(1/ᾱ_t) x_t - sqrt(1/ᾱ_t - 1) ε̂ (Ho et al. 2020, eq. 15)."""
    return _at(schedule.sqrt_recip_alphas_cumprod, t) * x_t - _at(schedule.sqrt_recipm1_alphas_cumprod, t) * eps


def q_sample(schedule: Schedule, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε (Ho et al. 2020, eq. 4)."""
    return _at(schedule.sqrt_alphas_cumprod, t) * x0 + _at(schedule.sqrt_one_minus_alphas_cumprod, t) * noise


@torch.no_grad()
def ddpm_step(model, schedule: Schedule, x: torch.Tensor, t: int, scale: int, noise: torch.Tensor,
              x0_hook: X0Hook = None, hook_before_clamp: bool = False) -> torch.Tensor:
    """One ancestral step x_t → x_{t-1} through the posterior q(x_{t-1} | x_t, x̂0) (Ho et al. 2020, eq. 6-7).

    `x0_hook` sees the clamped x̂0 (text guidance), or with `hook_before_clamp` the raw one, and
    the clamp follows the hook (ROI copying)."""
    tt = schedule.timesteps[t].to(x.device).repeat(x.shape[0])  # the network's t (a respaced schedule skips some)
    x0 = predict_x0(schedule, x, t, model(x, tt, scale).float())
    if x0_hook is not None and hook_before_clamp:
        x0 = x0_hook(x0, t).clamp(-1, 1)
    else:
        x0 = x0.clamp(-1, 1)
        if x0_hook is not None:
            x0 = x0_hook(x0, t)
    mean = _at(schedule.posterior_mean_coef1, t) * x0 + _at(schedule.posterior_mean_coef2, t) * x
    if t == 0:
        return mean
    return mean + torch.exp(0.5 * _at(schedule.posterior_log_variance_clipped, t)) * noise


@torch.no_grad()
def sample_ddpm(model, schedule: Schedule, x_start: torch.Tensor, scale: int, noise_sampler: NoiseSampler,
                t_start: int | None = None, x0_hook: X0Hook = None, progress=None,
                hook_before_clamp: bool = False) -> torch.Tensor:
    """Ancestral sampling t = t_start-1 .. 0 from pure noise `x_start` (Ho et al. 2020, Alg. 2)."""
    x = x_start
    t_start = schedule.num_timesteps if t_start is None else t_start
    for t in range(t_start - 1, -1, -1):
        # Noise is drawn at t = 0 too (and not used) to keep the reference's RNG stream.
        x = ddpm_step(model, schedule, x, t, scale, noise_sampler(t), x0_hook, hook_before_clamp)
        if progress is not None:
            progress.update(1)
    return x


@torch.no_grad()
def sample_blended(model, schedule: Schedule, x_blurry: torch.Tensor, scale: int, t_start: int,
                   gammas: torch.Tensor, noise: torch.Tensor, x0_hook: X0Hook = None,
                   gamma_max: float = SAMPLING_GAMMA_MAX, progress=None,
                   step_noise: NoiseSampler | None = None, steps: int | None = None) -> torch.Tensor:
    """SinDDM's finer-scale sampling: noise x̃ to T[s], then DDIM (σ = 0) steps on the
    blur/clean mixture x^mix = γ x̃ + (1-γ) x (SinDDM, Sec. 3 and Alg. 2).

    `steps` < t_start visits only that many timesteps, evenly spaced from t_start−1 to 0 (DDIM's
    respacing, Song et al. 2021, eq. 12 with σ = 0); None visits every one, as the paper does.

    `gammas` is γ_t^s for this scale, length T, clamped here to [0, gamma_max].
    `step_noise(t)`, if given, is called once per step and its value discarded: the reference
    draws a posterior noise at every step and adds it times exp(0.5·log 1e-20) = 1e-10 (its
    zero variance, clamped), which no float32 pixel near [-1, 1] can register; drawing it keeps
    the reference's RNG stream, so a seed gives the published code's pictures (method §5.3).
    """
    g = gammas.to(x_blurry.device).clamp(0, gamma_max)
    sqrt_ac = schedule.sqrt_alphas_cumprod
    sqrt_1m = schedule.sqrt_one_minus_alphas_cumprod
    x = q_sample(schedule, x_blurry, t_start, noise)
    visit = blended_timesteps(t_start, steps)
    for i, t in enumerate(visit):
        if step_noise is not None:
            step_noise(t)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x_mix = predict_x0(schedule, x, t, _blended_eps(model, x, tt, scale, x_blurry, g[t]))
        x0 = (x_mix - g[t] * x_blurry) / (1 - g[t])
        if x0_hook is not None:
            x0 = x0_hook(x0, t)
        if t == 0:
            x = x0.clamp(-1, 1)
        else:
            nxt = visit[i + 1]
            x_mix_prev = (g[nxt] * x_blurry + (1 - g[nxt]) * x0).clamp(-1, 1)
            eps_dir = (x - sqrt_ac[t] * x_mix.clamp(-1, 1)) / sqrt_1m[t]
            x = sqrt_ac[nxt] * x_mix_prev + sqrt_1m[nxt] * eps_dir
        if progress is not None:
            progress.update(1)
    return x


def blended_timesteps(t_start: int, steps: int | None = None) -> list[int]:
    """The timesteps a finer scale visits, t_start−1 down to 0: all of them, or `steps` of them
    evenly spaced (both ends kept)."""
    if steps is None or steps >= t_start:
        return list(range(t_start - 1, -1, -1))
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    kept = np.unique(np.round(np.linspace(0, t_start - 1, steps)).astype(np.int64))
    return [int(t) for t in kept[::-1]]


def _blended_eps(model, x: torch.Tensor, tt: torch.Tensor, scale: int, x_blurry: torch.Tensor,
                 gamma: torch.Tensor) -> torch.Tensor:
    """ε at a blended step. A denoiser that declares `takes_blurry` (the closed-form patch denoiser,
    method §11) is also told x̃ and this step's γ; the network infers both from x_t."""
    if getattr(model, "takes_blurry", False):
        return model(x, tt, scale, blurry=x_blurry, gamma=gamma).float()
    return model(x, tt, scale).float()


def upsample(x: torch.Tensor, size_hw: tuple[int, int], wrap: bool = False) -> torch.Tensor:
    """The previous scale's output at this scale's size: bilinear, align_corners=False.
    `wrap`: on a torus (seamless textures), the border pixels interpolate with the opposite side."""
    if wrap:
        return _wrap_linear(_wrap_linear(x, size_hw[0], -2), size_hw[1], -1)
    return F.interpolate(x, size=tuple(size_hw), mode="bilinear", align_corners=False)


def _wrap_linear(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Linear resampling along `dim` to `size` with F.interpolate's grid (align_corners=False,
    source = (i + 0.5)·n/size − 0.5) but indices taken modulo n instead of clamped."""
    n = x.shape[dim]
    src = (torch.arange(size, device=x.device, dtype=torch.float64) + 0.5) * (n / size) - 0.5
    i0 = torch.floor(src)
    frac = (src - i0).to(x.dtype)
    i0 = i0.long()
    shape = [1] * x.dim()
    shape[dim] = size
    frac = frac.view(shape)
    return x.index_select(dim, i0 % n) * (1 - frac) + x.index_select(dim, (i0 + 1) % n) * frac


@torch.no_grad()
def sample_pyramid(model, schedule: Schedule, gammas: torch.Tensor, sizes_hw: list[tuple[int, int]],
                   start_t: list[int], batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu",
                   progress=None, schedule0: Schedule | None = None,
                   hooks: Sequence[X0Hook] | None = None, hook_before_clamp: bool = False,
                   wrap: bool = False, blended_steps: Sequence[int | None] | None = None,
                   start0: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Coarse-to-fine generation of `batch` images; returns every scale's output (method §5).

    `gammas[s-1]` holds γ^s; `start_t[s]` is T[s] (T[0] is the number of scale-0 steps).
    `schedule0` is scale 0's schedule if not `schedule`: a respaced one takes fewer steps.
    `hooks[s]` (None for none) is scale s's x̂0 hook.
    `hook_before_clamp`: scale 0's hook edits the raw x̂0 and the clamp follows (`ddpm_step`).
    The finer scales make the reference's discarded per-step draws (`sample_blended`'s `step_noise`).
    `wrap`: up-sample on a torus (seamless textures; the model then pads circularly, see `tiling`).
    `blended_steps[s]`: scale s's respaced step count (`sample_blended`'s `steps`; None: every step).
    `start0` (3×h×w): scale 0 starts from this picture noised to T[0] (with the same draw that is
    otherwise the pure noise) instead of from pure noise (a training-free model's layout, method §11.11).
    """
    if blended_steps is None:
        blended_steps = [None] * len(sizes_hw)
    if hooks is None:
        hooks = [None] * len(sizes_hw)
    outputs = []
    x = torch.randn((batch, 3, *sizes_hw[0]), generator=generator, device=device)
    if start0 is not None:
        x = q_sample(schedule0 or schedule, start0.to(x.device, x.dtype).expand_as(x), start_t[0], x)
    x = sample_ddpm(model, schedule0 or schedule, x, 0, default_noise_sampler(x, generator), t_start=start_t[0],
                    x0_hook=hooks[0], progress=progress, hook_before_clamp=hook_before_clamp)
    outputs.append(x)
    for s in range(1, len(sizes_hw)):
        x_blurry = upsample(x, sizes_hw[s], wrap)
        noise = torch.randn(x_blurry.shape, generator=generator, device=device)
        x = sample_blended(model, schedule, x_blurry, s, start_t[s], gammas[s - 1], noise,
                           x0_hook=hooks[s], progress=progress,
                           step_noise=default_noise_sampler(x_blurry, generator), steps=blended_steps[s])
        outputs.append(x)
    return outputs


@torch.no_grad()
def denoise_at_scale(model, schedule: Schedule, x: torch.Tensor, scale: int, t_start: int, noise: torch.Tensor,
                     ancestral: bool = False, generator: torch.Generator | None = None,
                     progress=None) -> torch.Tensor:
    """Noise a finished picture `x` (N×3×H×W) to t = t_start with `noise`, then denoise it at
    `scale` through steps t_start-1 .. 0 with γ = 0 (method §7): there is no blurry x̃ to mix back.

    Default: the finer-scale sampler with every γ_t = 0, i.e. DDIM (σ = 0) steps on x̂0, so the one
    noise draw is the only randomness. `ancestral=True` runs DDPM ancestral steps instead, with
    fresh noise from `generator` at every step (text-roi's final denoising).
    """
    if ancestral:
        x_t = q_sample(schedule, x, t_start, noise)
        return sample_ddpm(model, schedule, x_t, scale, default_noise_sampler(x_t, generator),
                           t_start=t_start, progress=progress)
    zeros = torch.zeros(schedule.num_timesteps, device=x.device, dtype=torch.float32)
    return sample_blended(model, schedule, x, scale, t_start, zeros, noise, progress=progress)


# -- pre-drawn noise (the CUDA-graph sampler replays these loops on static buffers) ------------

@dataclass
class PyramidNoise:
    """All the noise one `sample_pyramid` call draws, in draw order.

    `start`: scale 0's initial x_T; `steps[k]`: scale 0's ancestral noise at t = T[0]-1-k;
    `q[s-1]`: the noise that takes scale s's upsampled input to t = T[s]. The T[s] draws that
    follow each `q[s-1]` (see `sample_blended`'s `step_noise`) are made but not kept.
    """

    start: torch.Tensor
    steps: torch.Tensor
    q: list[torch.Tensor]

    @classmethod
    def zeros(cls, batch: int, sizes_hw: list[tuple[int, int]], start_t: list[int],
              device: torch.device | str = "cpu") -> "PyramidNoise":
        return cls(start=torch.zeros((batch, 3, *sizes_hw[0]), device=device),
                   steps=torch.zeros((start_t[0], batch, 3, *sizes_hw[0]), device=device),
                   q=[torch.zeros((batch, 3, *hw), device=device) for hw in sizes_hw[1:]])


def draw_pyramid_noise(batch: int, sizes_hw: list[tuple[int, int]], start_t: list[int],
                       generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                       out: PyramidNoise | None = None) -> PyramidNoise:
    """Draw (into `out`, if given) exactly the values `sample_pyramid` would draw from `generator`:
    same order, same shapes, each drawn by its own `normal_` call as `torch.randn` does."""
    noise = out if out is not None else PyramidNoise.zeros(batch, sizes_hw, start_t, device)
    noise.start.normal_(generator=generator)
    for k in range(noise.steps.shape[0]):
        noise.steps[k].normal_(generator=generator)
    for s, q in enumerate(noise.q, start=1):
        q.normal_(generator=generator)
        scratch = torch.empty_like(q)  # the finer loop's discarded per-step draws (reference RNG stream)
        for _ in range(start_t[s]):
            scratch.normal_(generator=generator)
    return noise


@torch.no_grad()
def sample_scale_from_noise(model, schedule: Schedule, gammas: torch.Tensor, sizes_hw: list[tuple[int, int]],
                            start_t: list[int], s: int, prev: torch.Tensor | None, noise: PyramidNoise,
                            x0_hook: X0Hook = None, progress=None, t_limit: int | None = None,
                            schedule0: Schedule | None = None) -> torch.Tensor:
    """Scale `s` of `sample_pyramid`, its noise taken from `noise` (`prev`: scale s-1's output).

    No RNG and no host sync: safe to capture in a CUDA graph. `t_limit` runs only the first
    min(t_limit, T[s]) timesteps' worth of the loop (to warm kernels up before a capture).
    """
    t0 = start_t[s] if t_limit is None else min(t_limit, start_t[s])
    if s == 0:
        n = noise.steps.shape[0]
        return sample_ddpm(model, schedule0 or schedule, noise.start, 0, lambda t: noise.steps[n - 1 - t], t_start=t0,
                           x0_hook=x0_hook, progress=progress)
    x_blurry = upsample(prev, sizes_hw[s])
    return sample_blended(model, schedule, x_blurry, s, t0, gammas[s - 1], noise.q[s - 1],
                          x0_hook=x0_hook, progress=progress)


@torch.no_grad()
def sample_pyramid_from_noise(model, schedule: Schedule, gammas: torch.Tensor, sizes_hw: list[tuple[int, int]],
                              start_t: list[int], noise: PyramidNoise, x0_hook: X0Hook = None,
                              progress=None, schedule0: Schedule | None = None) -> list[torch.Tensor]:
    """`sample_pyramid` with pre-drawn noise: identical outputs for noise from
    `draw_pyramid_noise(..., generator)` and the same generator state."""
    outputs, x = [], None
    for s in range(len(sizes_hw)):
        x = sample_scale_from_noise(model, schedule, gammas, sizes_hw, start_t, s, x, noise,
                                    x0_hook=x0_hook, progress=progress, schedule0=schedule0)
        outputs.append(x)
    return outputs
