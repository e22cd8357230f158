"""Hybrid and training-free models (docs/method.md §11): the network for the K coarsest scales,
the closed-form patch denoiser for the finer ones, behind the network's own call.

`model.trained_scales` (config) is K: None is the paper (the network at every scale), 0 is no
network at all. Samplers, x̂0 hooks, edits, tiling and `--tileable` see one denoiser either way.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import Config
from .errors import UserError
from .patch_denoiser import PatchDenoiser
from .pyramid import Pyramid
from .schedule import Schedule
from .tiling import receptive_radius

# Settings of the patch denoisers built here that override what a model's config says
# (`model.patch_candidates`, `model.patch_context`): for benchmarks that vary them. Empty: the config's.
PATCH_SETTINGS: dict = {}

# Width used for memory estimates (batch size, tiling) when there is no network: the patch
# denoiser's live tensors per pixel are about those of a network this wide.
PATCH_ONLY_DIM = 64


def network_scales(config: Config, n_scales: int) -> int:
    """K, the scales the network serves, checked against a pyramid of `n_scales` (UserError)."""
    k = config.model.trained_scales
    if k is None:
        return n_scales
    if k > n_scales:
        raise UserError(f"model.trained_scales is {k}, beyond the picture's {n_scales} scales; "
                        f"use 0..{n_scales}, or null for every scale")
    return k


class HybridDenoiser(nn.Module):
    """ε for scale s from `network` when s < `trained_scales`, else from `patches`, which is also
    told x̃ and γ at the finer scales' blended steps (`takes_blurry`)."""

    takes_blurry = True

    def __init__(self, network: nn.Module | None, patches: PatchDenoiser, trained_scales: int):
        super().__init__()
        if trained_scales > 0 and network is None:
            raise ValueError("a hybrid with trained scales needs its network")
        self.network, self.patches, self.trained_scales = network, patches, trained_scales
        self.dim = network.dim if network is not None else PATCH_ONLY_DIM

    @property
    def receptive_radius(self) -> int:
        net = receptive_radius(self.network) if self.network is not None else 0
        return max(net, self.patches.receptive_radius)

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale, blurry: torch.Tensor | None = None,
                gamma=None, origin=None) -> torch.Tensor:
        if int(scale) < self.trained_scales:
            return self.network(x, t, scale)
        return self.patches(x, t, scale, blurry=blurry, gamma=gamma, origin=origin)


def build_denoiser(network: nn.Module | None, pyramid: Pyramid, config: Config,
                   source: str = "model") -> nn.Module:
    """The denoiser a model file or a picture stands for: the network alone (the paper), or a
    `HybridDenoiser` when `model.trained_scales` is set. UserError (naming `source`) when the
    config and what the file holds disagree."""
    if network is None and config.model.trained_scales != 0:
        raise UserError(f"{source}: no network weights inside; retrain or re-convert it")
    try:
        k = network_scales(config, pyramid.n_scales)
    except UserError as e:
        raise UserError(f"{source}: {e}") from None
    if k == pyramid.n_scales:
        return network
    settings = dict(candidates=config.model.patch_candidates, context_sigma=config.model.patch_context)
    settings.update(PATCH_SETTINGS)
    patches = PatchDenoiser(pyramid, Schedule.cosine(), scales=range(k, pyramid.n_scales), **settings)
    return HybridDenoiser(network if k > 0 else None, patches, k)


def blended_steps(denoiser: nn.Module, config: Config, n_scales: int) -> list[int | None]:
    """Per scale, the respaced step count the sampler uses there: `model.patch_steps` where the
    patch denoiser serves the scale, None (every step) where the network does."""
    if not isinstance(denoiser, HybridDenoiser) or config.model.patch_steps is None:
        return [None] * n_scales
    return [None if s < denoiser.trained_scales else config.model.patch_steps for s in range(n_scales)]


def layout_start(denoiser: nn.Module, config: Config, pyramid: Pyramid) -> torch.Tensor | None:
    """Scale 0's starting picture (3×h×w in [-1, 1], the pyramid's coarsest level) where the patch
    denoiser serves scale 0 and `model.layout_t` is set; None where scale 0 starts from noise."""
    if not isinstance(denoiser, HybridDenoiser) or denoiser.trained_scales > 0 or config.model.layout_t is None:
        return None
    return pyramid.level_tensor(0)
