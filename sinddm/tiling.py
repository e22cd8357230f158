"""Exact tiled evaluation of the denoiser, and seamless (torus) evaluation (method §3, §5).

The denoiser is fully convolutional, stride 1, with no statistic taken across the image, so an
output pixel depends only on the input within the receptive-field radius r around it (r = 16 px
for the shipped layers: four blocks of depthwise 5×5 + 3×3 + 3×3). `TiledDenoiser` wraps a
denoiser with the same `(x, t, scale)` call and evaluates it on overlapping windows: each window
is a tile's core plus a halo of r pixels, and only the core of each window's output is kept.

Exactness at the true image border: the untiled network zero-pads *every* layer at the border,
so windows are cut from the image itself, never from a zero-padded copy (zeros fed in as input
would go through the biases and not stay zero). A window touching the border is shifted inwards;
all windows have one size and run as batches. An interior window edge is at least r pixels from
any kept pixel, so what its own zero padding changes never reaches the core.

`circular=True` evaluates the network on a torus (every convolution padding circularly): the image
is wrapped around by r pixels on each side, and the cores are taken from the middle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools

import torch
from torch import nn

# Layers that mix information across the whole image (or change its resolution): tiling is not exact.
_NOT_LOCAL = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm,
              nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
              nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd, nn.Upsample, nn.MultiheadAttention,
              nn.ConvTranspose2d)
# Bytes of activations one pass of windows may plan for (several windows per pass keep the cores busy).
TILE_PASS_BUDGET = 64 * 1024 ** 2
_MAPS_PER_WINDOW = 4   # live maps of `dim` channels per window (devices._NEEDED_MAPS)


def receptive_radius(model: nn.Module) -> int:
    """Pixels on each side that one output pixel of `model` sees: Σ dilation·(kernel−1)/2 over every
    2-D convolution (the convolutions of the denoiser are in series, apart from 1×1 skips, which add
    nothing; a parallel branch would only make this an over-estimate, which is still exact).
    ValueError for a layer that makes tiling inexact (strides, normalisation over the image, pooling).
    A denoiser that states its own `receptive_radius` (the patch denoiser, a hybrid) is taken at its word."""
    stated = getattr(model, "receptive_radius", None)
    if isinstance(stated, int):
        return stated
    radius = 0
    for name, m in model.named_modules():
        if isinstance(m, _NOT_LOCAL):
            raise ValueError(f"layer '{name}' ({type(m).__name__}) mixes the whole image: no exact tiling")
        if isinstance(m, nn.Conv2d):
            if any(s != 1 for s in m.stride):
                raise ValueError(f"layer '{name}' has stride {m.stride}: no exact tiling")
            radius += max(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
    return radius


def probe_radius(model: nn.Module, size: int, scale: int = 0) -> int:
    """The receptive-field radius measured by a gradient probe: the extent of the input pixels with a
    non-zero gradient of the centre output pixel (`size` odd, larger than 2r+1)."""
    x = torch.randn(1, 3, size, size, requires_grad=True)
    c = size // 2
    with torch.enable_grad():
        model(x, torch.tensor([5]), scale)[0, :, c, c].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum(dim=(0, 1)), as_tuple=True)
    return int(max(c - ys.min(), ys.max() - c, c - xs.min(), xs.max() - c))


def wrap_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """`x` (N×C×H×W) padded by `pad` pixels on every side by wrapping around (any pad, even > H)."""
    h, w = x.shape[-2:]
    iy = torch.arange(-pad, h + pad, device=x.device) % h
    ix = torch.arange(-pad, w + pad, device=x.device) % w
    return x.index_select(-2, iy).index_select(-1, ix)


@contextlib.contextmanager
def circular_convs(model: nn.Module):
    """Every zero-padding convolution of `model` pads circularly inside the block, and every part
    with a `circular` switch (the patch denoiser's patches) wraps around."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros"]
    switches = [m for m in model.modules() if getattr(m, "circular", None) is False]
    for m in convs:
        m.padding_mode = "circular"
    for m in switches:
        m.circular = True
    try:
        yield model
    finally:
        for m in convs:
            m.padding_mode = "zeros"
        for m in switches:
            m.circular = False


def spans(length: int, tile: int, halo: int, offset: int = 0, core: int | None = None) -> list[tuple[int, int, int]]:
    """Along one axis of `length` pixels: (core start, core end, window start) of each window, the
    cores tiling [offset, offset + core) in steps of `tile`, every window min(tile + 2·halo, length) long
    and at least `halo` pixels beyond its core on each side, except where it meets the axis' end."""
    core = length - 2 * offset if core is None else core
    size = min(tile + 2 * halo, length)
    out = []
    for c0 in range(offset, offset + core, tile):
        c1 = min(c0 + tile, offset + core)
        out.append((c0, c1, min(max(c0 - halo, 0), length - size)))
    return out


class TiledDenoiser(nn.Module):
    """`model` evaluated tile by tile (`tile` px cores; None: whole image) and/or on a torus
    (`circular`), with the model's `(x, t, scale)` call. `halo` defaults to the receptive-field
    radius; `max_windows` windows run per pass (default: what `TILE_PASS_BUDGET` allows)."""

    def __init__(self, model: nn.Module, tile: int | None = None, halo: int | None = None,
                 circular: bool = False, max_windows: int | None = None):
        super().__init__()
        if tile is not None and tile < 1:
            raise ValueError(f"tile must be >= 1 px, got {tile}")
        self.model, self.tile, self.circular = model, tile, circular
        self.halo = receptive_radius(model) if halo is None else halo
        self.dim = getattr(model, "dim", 64)
        self.max_windows = max_windows
        self.takes_blurry = getattr(model, "takes_blurry", False)

    def _windows_per_pass(self, win_h: int, win_w: int) -> int:
        if self.max_windows is not None:
            return self.max_windows
        return max(1, TILE_PASS_BUDGET // (win_h * win_w * self.dim * 4 * _MAPS_PER_WINDOW))

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale, blurry: torch.Tensor | None = None,
                gamma=None) -> torch.Tensor:
        """The wrapped model's call; `blurry` (x̃, for a model that `takes_blurry`) is cut like `x`."""
        context = {} if blurry is None else {"blurry": blurry, "gamma": gamma}
        h, w = x.shape[-2:]
        r = self.halo
        if self.circular and self.tile is None and min(h, w) >= r:   # no tiles: the convs wrap (no halo to pay)
            with circular_convs(self.model):
                return self.model(x, t, scale, **context)
        if self.circular:
            x = wrap_pad(x, r)
            blurry = None if blurry is None else wrap_pad(blurry, r)
        offset = r if self.circular else 0
        tile = self.tile or max(x.shape[-2:])
        ys = spans(x.shape[-2], tile, r, offset, h)
        xs = spans(x.shape[-1], tile, r, offset, w)
        if len(ys) == 1 and len(xs) == 1 and not self.circular:
            return self.model(x, t, scale, **context)
        return self._tiled(x, t, scale, ys, xs, (h, w), blurry, gamma)

    def _tiled(self, x, t, scale, ys, xs, out_hw, blurry=None, gamma=None) -> torch.Tensor:
        n = x.shape[0]
        size_h = min((self.tile or x.shape[-2]) + 2 * self.halo, x.shape[-2])
        size_w = min((self.tile or x.shape[-1]) + 2 * self.halo, x.shape[-1])
        jobs = [(i, sy, sx) for sy, sx in itertools.product(ys, xs) for i in range(n)]
        per_pass = self._windows_per_pass(size_h, size_w)
        scale_t = scale if torch.is_tensor(scale) else None
        off = self.halo if self.circular else 0
        out = None
        for k in range(0, len(jobs), per_pass):
            chunk = jobs[k:k + per_pass]
            idx = torch.tensor([i for i, _, _ in chunk], device=t.device)
            batch = torch.stack([x[i, :, sy[2]:sy[2] + size_h, sx[2]:sx[2] + size_w] for i, sy, sx in chunk])
            context = {} if blurry is None else {"gamma": gamma, "blurry": torch.stack(
                [blurry[i, :, sy[2]:sy[2] + size_h, sx[2]:sx[2] + size_w] for i, sy, sx in chunk])}
            if getattr(self.model, "takes_blurry", False):   # where each window lies (the patch search's grid)
                context["origin"] = torch.tensor([[sy[2] - off, sx[2] - off] for _, sy, sx in chunk])
            res = self.model(batch, t[idx], scale_t[idx] if scale_t is not None else scale, **context)
            if out is None:
                out = res.new_empty((n, res.shape[1], *out_hw))
            for j, (i, sy, sx) in enumerate(chunk):
                out[i, :, sy[0] - off:sy[1] - off, sx[0] - off:sx[1] - off] = \
                    res[j, :, sy[0] - sy[2]:sy[1] - sy[2], sx[0] - sx[2]:sx[1] - sx[2]]
        return out


def seam_z(image: torch.Tensor) -> tuple[float, float]:
    """How much the seams of a 2×2 mosaic of `image` (C×H×W) stand out, per axis (columns, rows): the
    mean absolute difference across the seam (between pixel W−1 of one copy and pixel 0 of the next)
    as a z-score within the same statistic over every interior pair of neighbouring columns (rows).
    |z| ≤ 3: the seam is within the interior's distribution; a visible seam is far outside it."""
    mosaic = image.repeat(1, 2, 2)
    h, w = image.shape[-2:]
    out = []
    for dim, n in ((-1, w), (-2, h)):
        d = image.diff(dim=dim).abs().mean(dim=(0, 1 if dim == -1 else 2))
        seam = (mosaic.select(dim, n) - mosaic.select(dim, n - 1)).abs().mean()
        out.append(float((seam - d.mean()) / d.std()))
    return out[0], out[1]


def tiled_loaded(loaded, tile: int | None = None, circular: bool = False, max_windows: int | None = None):
    """A view of a `LoadedModel` whose network is a `TiledDenoiser` (itself when neither is asked for):
    every sampling and edit path takes it as it is, and only the network call changes."""
    if tile is None and not circular:
        return loaded
    return dataclasses.replace(loaded, model=TiledDenoiser(loaded.model, tile, circular=circular,
                                                           max_windows=max_windows))
