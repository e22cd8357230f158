"""Cosine noise schedule, per-scale start timesteps and blur-mixing weights (method §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

T_STEPS = 100
SAMPLING_GAMMA_MAX = 0.55


def cosine_alphas_cumprod(timesteps: int = T_STEPS, s: float = 0.008) -> np.ndarray:
    """ᾱ_t of Improved DDPM (Nichol & Dhariwal 2021, eq. 17), betas clipped to 0.999."""
    x = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64)
    f = np.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    f = f / f[0]
    betas = np.clip(1 - (f[1:] / f[:-1]), 0, 0.999)
    return np.cumprod(1.0 - betas)


@dataclass
class Schedule:
    """Per-timestep float32 tables, each of length T, on one device.

    Computed in float64 and stored as float32, as the reference does. `timesteps[i]` is
    the t the network is told at index i: i itself, except in a respaced schedule.
    """

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_alphas_cumprod: torch.Tensor
    sqrt_one_minus_alphas_cumprod: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    timesteps: torch.Tensor

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @classmethod
    def cosine(cls, timesteps: int = T_STEPS, device: torch.device | str = "cpu") -> "Schedule":
        return cls.from_alphas_cumprod(cosine_alphas_cumprod(timesteps), np.arange(timesteps), device)

    @classmethod
    def cosine_respaced(cls, steps: int, timesteps: int = T_STEPS,
                        device: torch.device | str = "cpu") -> "Schedule":
        """`steps` evenly spaced timesteps of the cosine schedule, from 0 to T-1, as a
        schedule of their own (Nichol & Dhariwal 2021, Sec. 4: respacing keeps ᾱ at the kept t)."""
        if not 2 <= steps <= timesteps:
            raise ValueError(f"steps must be in 2..{timesteps}, got {steps}")
        kept = np.unique(np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64))
        return cls.from_alphas_cumprod(cosine_alphas_cumprod(timesteps)[kept], kept, device)

    @classmethod
    def from_alphas_cumprod(cls, ac: np.ndarray, kept: np.ndarray,
                            device: torch.device | str = "cpu") -> "Schedule":
        """All tables from float64 ᾱ at the kept timesteps (betas follow from consecutive ratios)."""
        ac_prev = np.append(1.0, ac[:-1])
        betas = 1.0 - ac / ac_prev
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        tables = dict(
            betas=betas,
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            sqrt_alphas_cumprod=np.sqrt(ac),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - ac),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1),
            posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
            posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
            # variance at t = 0 is 0: use t = 1's in the log (its noise is never added)
            posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])),
        )
        tensors = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in tables.items()}
        return cls(**tensors, timesteps=torch.as_tensor(kept, dtype=torch.long, device=device))

    def to(self, device: torch.device | str) -> "Schedule":
        return Schedule(**{k: v.to(device) for k, v in self.__dict__.items()})

    def noise_to_signal(self) -> np.ndarray:
        """σ_t = sqrt(1 - ᾱ_t) / sqrt(ᾱ_t), from the float32 tables as the reference does."""
        num = self.sqrt_one_minus_alphas_cumprod.double().cpu().numpy()
        return num / self.sqrt_alphas_cumprod.double().cpu().numpy()


def start_timesteps(schedule: Schedule, blur_distances: list[float]) -> list[int]:
    """T[0] = T; T[s] is the first t with σ_t > d_s, where blur and noise match."""
    sigma = schedule.noise_to_signal()
    return [schedule.num_timesteps] + [int(np.argmax(sigma > d)) for d in blur_distances]


def blend_gammas(schedule: Schedule, blur_distances: list[float]) -> torch.Tensor:
    """γ_t^s = clamp(σ_t / d_s, 0, 1) for s = 1..N-1: shape [N-1, T], float32."""
    sigma = schedule.noise_to_signal()
    g = np.stack([np.clip(sigma / d, 0.0, 1.0) for d in blur_distances]) if blur_distances \
        else np.zeros((0, schedule.num_timesteps))
    return torch.tensor(g, dtype=torch.float32)
