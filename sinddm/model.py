"""The SinDDM denoiser: a fully convolutional net with a 33×33 receptive field (method §3; the
paper says 35×35, but its layers, here and in the reference, reach 16 px on each side).

It maps (noisy image, timestep t, scale index s) to predicted noise and knows
nothing about noise schedules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EMBED_DIM = 32  # per sinusoidal embedding (t and s), and the width of the conditioning vector


def sinusoidal_embedding(x: torch.Tensor, dim: int = EMBED_DIM) -> torch.Tensor:
    """Transformer positional encoding of a 1-D tensor of integers: [sin, cos], `dim` wide."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000) / (half - 1)))
    angles = x.float()[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ConvBlock(nn.Module):
    """Depthwise 5×5 + conditioning bias, then conv3×3 → GELU → conv3×3, plus a residual."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int = EMBED_DIM):
        super().__init__()
        self.cond = nn.Sequential(nn.GELU(), nn.Linear(cond_dim, cond_dim))
        self.cond_to_channels = nn.Conv2d(cond_dim, c_in, 1)
        self.depthwise = nn.Conv2d(c_in, c_in, 5, padding=2, groups=c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        bias = self.cond_to_channels(self.cond(cond)[:, :, None, None])
        h = self.depthwise(x) + bias
        h = self.conv2(F.gelu(self.conv1(h)))
        return h + self.skip(x)


class Denoiser(nn.Module):
    """Predicts ε from x_t, t and the scale index s. Any spatial size works."""

    def __init__(self, dim: int = 160):
        if dim % 2 or dim < 2:
            raise ValueError(f"denoiser width must be an even number >= 2, got {dim}")
        super().__init__()
        self.dim = dim
        self.embed = nn.Sequential(
            nn.Linear(2 * EMBED_DIM, 4 * EMBED_DIM), nn.GELU(), nn.Linear(4 * EMBED_DIM, EMBED_DIM))
        half = dim // 2
        self.blocks = nn.ModuleList([
            ConvBlock(3, half), ConvBlock(half, dim), ConvBlock(dim, dim), ConvBlock(dim, half)])
        self.out = nn.Conv2d(half, 3, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: int | torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(scale):
            scale = torch.full_like(t, int(scale))
        cond = self.embed(torch.cat((sinusoidal_embedding(t), sinusoidal_embedding(scale)), dim=-1))
        h = x
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)


def infer_width(state_dict: dict[str, torch.Tensor]) -> int:
    """The `dim` of a Denoiser state dict (in this library's key names)."""
    return state_dict["blocks.1.conv1.weight"].shape[0]
