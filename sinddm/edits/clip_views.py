"""CLIP views for text guidance (method §6): the views of x̂0 that CLIP scores, and the ViT
forward for views that are not square.

`ViewAugmenter` makes 16 views per image as batched, differentiable tensor ops: one
`grid_sample` for every crop/flip/affine/perspective of every view of every sample, then
colour jitter and grayscale as one affine colour map per view. `encode_views` runs open_clip's
ViT on views of any size, its positional embedding interpolated to the token grid.

View modes (`--clip-views`):
- `reference` (default): as the published implementation. View 0 is x̂0 resized as torchvision's
  `Resize(224, max_size=320)` does (short side 224 unless the long side would pass 320, then long
  side 320; integer truncations included), bilinear without antialiasing; the crops are resized
  to that size, so CLIP sees the picture's aspect ratio. The positional embedding is interpolated
  DINO-style (bicubic, target grid + 0.1) but laid out width-major: the reference passes
  (width, height) where the routine expects (height, width), so on non-square views the embedding
  grid is transposed against the tokens. A bug, kept on purpose like the uint8 wrap-around of
  the blur distance (`pyramid.blur_distance`): the paper's text edits were made with it.
- `aspect`: the same views, the embedding grid laid out as the tokens are.
- `square`: every view resampled to CLIP's square input (the picture squeezed); works with any
  image tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

N_VIEWS = 16
VIEW_MODES = ("reference", "aspect", "square")
DEFAULT_VIEW_MODE = "reference"
REFERENCE_MAX_LONG = 320 / 224      # Resize(224, max_size=320), scaled to other CLIP input sizes

_LUMA = (0.299, 0.587, 0.114)


def _quad_to_square(quad: torch.Tensor):
    """Per-view maps from the quadrilateral `quad` [N, 4, 2] (corners TL, TR, BR, BL in normalised
    coordinates) back to the square [-1, 1]²: the inverse of Heckbert's closed-form square-to-quad
    homography, as a function of (x, y) [N, P] (no linear solve, no host sync)."""
    p = (quad + 1) / 2                                   # unit-square coordinates
    x0, x1, x2, x3 = p[:, 0, 0], p[:, 1, 0], p[:, 2, 0], p[:, 3, 0]
    y0, y1, y2, y3 = p[:, 0, 1], p[:, 1, 1], p[:, 2, 1], p[:, 3, 1]
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    den = dx1 * dy2 - dx2 * dy1
    g = (dx3 * dy2 - dx2 * dy3) / den
    h = (dx1 * dy3 - dx3 * dy1) / den
    a, b, c = x1 - x0 + g * x1, x3 - x0 + h * x3, x0
    d, e, f = y1 - y0 + g * y1, y3 - y0 + h * y3, y0
    # adjugate of [[a, b, c], [d, e, f], [g, h, 1]]: the inverse up to scale
    inv = [e - f * h, c * h - b, b * f - c * e,
           f * g - d, a - c * g, c * d - a * f,
           d * h - e * g, b * g - a * h, a * e - b * d]
    inv = [v.unsqueeze(1) for v in inv]

    def apply(x: torch.Tensor, y: torch.Tensor):
        u, v = (x + 1) / 2, (y + 1) / 2
        w = inv[6] * u + inv[7] * v + inv[8]
        su = (inv[0] * u + inv[1] * v + inv[2]) / w
        sv = (inv[3] * u + inv[4] * v + inv[5]) / w
        return 2 * su - 1, 2 * sv - 1

    return apply


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
_CONSTANTS = {
    "luma": torch.tensor(_LUMA),
    "yiq": _YIQ.float(),
    "yiq_inv": torch.linalg.inv(_YIQ).float(),
    "corners": torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]),   # TL, TR, BR, BL
}
_DEVICE_CONSTANTS: dict = {}


def _const(name: str, device) -> torch.Tensor:
    """A constant on `device`, copied there once (a host-to-device copy per call would
    synchronise the stream and stall the GPU in the guided loop)."""
    key = (name, str(device))
    if key not in _DEVICE_CONSTANTS:
        _DEVICE_CONSTANTS[key] = _CONSTANTS[name].to(device)
    return _DEVICE_CONSTANTS[key]


def _colour_transform(b: torch.Tensor, c: torch.Tensor, s: torch.Tensor, hue: torch.Tensor, gray: torch.Tensor,
                      mean_gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour jitter (brightness b, contrast c, saturation s, hue shift in turns) then grayscale,
    folded into one affine map per view: x ← M x + v, M [N, 3, 3], v [N, 3, 1].

    Brightness scales, contrast blends with the view's mean gray (× b), saturation blends with
    the pixel's gray, hue rotates the chroma plane in YIQ; torchvision clamps after each of
    these, here one clamp follows the whole map (they differ only where a channel saturates).
    """
    n, dev = b.shape[0], b.device
    w = _const("luma", dev)
    eye = torch.eye(3, device=dev).expand(n, 3, 3)
    ones_w = torch.ones(3, 1, device=dev) * w.view(1, 3)               # 1·wᵀ (gray of every channel)
    sat = s.view(n, 1, 1) * eye + (1 - s).view(n, 1, 1) * ones_w
    ang = 2 * math.pi * hue
    rot = torch.zeros(n, 3, 3, device=dev)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(ang), -torch.sin(ang)
    rot[:, 2, 1], rot[:, 2, 2] = torch.sin(ang), torch.cos(ang)
    hue_m = _const("yiq_inv", dev) @ rot @ _const("yiq", dev)
    gray_m = torch.where(gray.view(n, 1, 1), ones_w.expand(n, 3, 3), eye)
    chain = gray_m @ hue_m @ sat                                        # after the contrast blend
    m = chain * (c * b).view(n, 1, 1)
    v = chain @ ((1 - c) * b * mean_gray).view(n, 1, 1).expand(n, 3, 1)
    return m, v


def resized_short_side(h: int, w: int, size: int, max_size: int) -> tuple[int, int]:
    """(h, w) after torchvision's `Resize(size, max_size)`: the short side to `size`, the long one
    int(size·long/short); if that passes `max_size`, the long side is `max_size` and the short one
    int(max_size·size/long) (from the truncated long side, as torchvision computes it)."""
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    if new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if h <= w else (new_long, new_short)


@dataclass
class ViewAugmenter:
    """n_views augmented views per image (method §6 / Text2LIVE-style): view 0 is the whole
    image resized to `size` on the short side (long side at most size·320/224), the others
    random crops of 60–100 % of the image, one scale for both sides (crops keep the picture's
    aspect), resized to view 0's size; every view gets flip (p .5), affine (±15°, translate
    10 %, fill 1, p .8), perspective (0.4, fill 1, p .5), colour jitter (0.1 each, p .7),
    grayscale (p .15), then CLIP normalisation (done by the caller).

    `mode` (see the module docstring): 'reference' and 'aspect' sample the views straight from
    the image at view 0's size (bilinear, no antialiasing); 'square' resizes the image first
    (antialiased) and resamples every view to `size`. The crop, flip, affine and perspective maps
    are composed into one sampling grid per view and all views of all samples are drawn by a
    single `grid_sample` call. Differentiable w.r.t. the images; the random parameters come from
    `generator`. `min_side` (the ViT's patch) keeps at least one token row on extreme panoramas.
    """

    size: tuple[int, int] = (224, 224)
    n_views: int = N_VIEWS
    mode: str = DEFAULT_VIEW_MODE
    min_side: int = 1
    crop_scale: tuple[float, float] = (0.6, 1.0)
    max_long_ratio: float = REFERENCE_MAX_LONG
    flip_p: float = 0.5
    affine_p: float = 0.8
    degrees: float = 15.0
    translate: float = 0.1
    perspective_p: float = 0.5
    distortion: float = 0.4
    jitter_p: float = 0.7
    jitter: float = 0.1
    gray_p: float = 0.15
    fill: float = 1.0

    def __post_init__(self):
        if self.mode not in VIEW_MODES:
            raise ValueError(f"view mode {self.mode!r}: use one of {', '.join(VIEW_MODES)}")

    def view_size(self, h: int, w: int) -> tuple[int, int]:
        """The (h, w) of every view of an h×w image."""
        if self.mode == "square":
            return tuple(self.size)
        short = min(self.size)
        vh, vw = resized_short_side(h, w, short, round(short * self.max_long_ratio))
        return max(vh, self.min_side), max(vw, self.min_side)

    def base(self, img: torch.Tensor) -> torch.Tensor:
        """'square' mode's source: the image resized (antialiased) to the view size on its short
        side, the long side capped."""
        h, w = img.shape[-2:]
        short = min(self.size)
        if h <= w:
            bh, bw = short, min(max(1, round(short * w / h)), round(short * self.max_long_ratio))
        else:
            bw, bh = short, min(max(1, round(short * h / w)), round(short * self.max_long_ratio))
        if (bh, bw) == (h, w):
            return img
        return F.interpolate(img, size=(bh, bw), mode="bilinear", align_corners=False, antialias=True)

    def view0(self, img: torch.Tensor) -> torch.Tensor:
        """View 0 without augmentation: [B, 3, view_size] (the deterministic part of the score)."""
        size = self.view_size(*img.shape[-2:])
        src = self.base(img) if self.mode == "square" else img
        if tuple(src.shape[-2:]) == size:
            return src
        return F.interpolate(src, size=size, mode="bilinear", align_corners=False, antialias=self.mode == "square")

    def __call__(self, img01: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] → [B·n_views, 3, view_size] in [0, 1] (sample-major)."""
        b = img01.shape[0]
        v = self.n_views
        n = b * v
        dev = img01.device
        rh, rw = self.view_size(*img01.shape[-2:])
        u = torch.rand(n, 24, generator=generator, device=dev)
        first = (torch.arange(n, device=dev) % v == 0)

        # crop box (half-size and centre in normalised source coordinates), one scale for both
        # sides (u[:, 1] is left unused); view 0: the whole image
        lo, hi = self.crop_scale
        sc = torch.where(first, 1.0, lo + (hi - lo) * u[:, 0])
        cx = (1 - sc) * (2 * u[:, 2] - 1)
        cy = (1 - sc) * (2 * u[:, 3] - 1)
        flip = torch.where(u[:, 4] < self.flip_p, -1.0, 1.0)
        aff = (u[:, 5] < self.affine_p).float()
        ang = math.radians(self.degrees) * (2 * u[:, 6] - 1) * aff
        tx = 2 * self.translate * (2 * u[:, 7] - 1) * aff
        ty = 2 * self.translate * (2 * u[:, 8] - 1) * aff
        per = (u[:, 9] < self.perspective_p).float()
        d = self.distortion * u[:, 10:18].view(n, 4, 2) * per.view(n, 1, 1)

        # output pixel centres (normalised, align_corners=False)
        ys = (torch.arange(rh, device=dev, dtype=torch.float32) * 2 + 1) / rh - 1
        xs = (torch.arange(rw, device=dev, dtype=torch.float32) * 2 + 1) / rw - 1
        oy, ox = torch.meshgrid(ys, xs, indexing="ij")
        ox, oy = ox.reshape(1, -1), oy.reshape(1, -1)

        # perspective: the corners move inward by up to `distortion` of the half-size; sample
        # through the homography from the moved corners back to the original ones
        corners = _const("corners", dev)
        moved = corners.unsqueeze(0) - corners.unsqueeze(0) * d   # each corner moves inward
        px, py = _quad_to_square(moved)(ox, oy)
        valid = (px.abs() <= 1) & (py.abs() <= 1)

        # affine (rotation about the centre, then translation): invert it; the rotation is in
        # pixels, so on a non-square view the normalised coordinates are scaled by the aspect
        c, s = torch.cos(ang).view(n, 1), torch.sin(ang).view(n, 1)
        qx, qy = px - tx.view(n, 1), py - ty.view(n, 1)
        ax, ay = c * qx + s * (rh / rw) * qy, -s * (rw / rh) * qx + c * qy
        valid &= (ax.abs() <= 1) & (ay.abs() <= 1)

        # flip, then the crop box in the source image
        gx = cx.view(n, 1) + sc.view(n, 1) * flip.view(n, 1) * ax
        gy = cy.view(n, 1) + sc.view(n, 1) * ay

        src = self.base(img01) if self.mode == "square" else img01
        grid = torch.stack([gx, gy], -1).view(b, v * rh, rw, 2)  # all views of a sample stacked in height
        views = F.grid_sample(src, grid.to(src.dtype), mode="bilinear", padding_mode="border",
                              align_corners=False)
        views = views.view(b, 3, v, rh, rw).transpose(1, 2).reshape(n, 3, rh, rw)
        views = torch.where(valid.view(n, 1, rh, rw), views, torch.full_like(views[:1, :1, :1, :1], self.fill))

        # colour jitter (p jitter_p) and grayscale (p gray_p): one per-view affine colour map
        jit = (u[:, 18] < self.jitter_p).float()
        j = self.jitter

        def factor(col):
            return 1 + j * (2 * u[:, col] - 1) * jit

        mean_gray = torch.einsum("nchw,c->n", views, _const("luma", dev)) / (rh * rw)
        m, off = _colour_transform(factor(19), factor(20), factor(21), j * (2 * u[:, 22] - 1) * jit,
                                   u[:, 23] < self.gray_p, mean_gray)
        views = torch.baddbmm(off, m, views.reshape(n, 3, rh * rw)).clamp(0, 1)
        return views.view(n, 3, rh, rw)


# -- the ViT on views of any size ------------------------------------------------------------------


class _PatchEmbed(torch.nn.Module):
    """A ViT patch embedding (a convolution with stride = kernel, no padding) as one matmul:
    the same weights and arithmetic as the convolution, without cuDNN's slow paths for this
    shape (its bf16 input-gradient kernel alone cost ~2 ms per 256 views on an H200)."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.patch = tuple(conv.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        ph, pw = self.patch
        gh, gw = h // ph, w // pw
        x = x[..., :gh * ph, :gw * pw].reshape(n, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
        y = F.linear(x.reshape(n * gh * gw, c * ph * pw), self.weight.reshape(self.weight.shape[0], -1), self.bias)
        return y.view(n, gh, gw, -1).permute(0, 3, 1, 2)


def patch_embed_as_matmul(model) -> None:
    """The ViT's patch convolution replaced by `_PatchEmbed` (same weights), where it is one."""
    conv = getattr(getattr(model, "visual", None), "conv1", None)
    if (isinstance(conv, torch.nn.Conv2d) and tuple(conv.kernel_size) == tuple(conv.stride)
            and tuple(conv.padding) == (0, 0) and tuple(conv.dilation) == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros"):
        model.visual.conv1 = _PatchEmbed(conv)


def accepts_any_size(visual) -> bool:
    """Whether `visual` is open_clip's own ViT (a patch embedding and a learnable positional table
    of a square grid), whose forward `encode_views` can run at any input size."""
    from open_clip.transformer import VisionTransformer

    pos = getattr(visual, "positional_embedding", None)
    if not isinstance(visual, VisionTransformer) or pos is None or pos.dim() != 2:
        return False
    return math.isqrt(pos.shape[0] - 1) ** 2 == pos.shape[0] - 1


def positional_embedding(pos: torch.Tensor, view_hw: tuple[int, int], patch: tuple[int, int],
                         mode: str) -> torch.Tensor:
    """The table pos [1 + n², D] of a square n×n grid for views of `view_hw` pixels: unchanged for
    a square view of n×n patches, else its grid resampled bicubically DINO-style (scale factor
    (g + 0.1) / n, so that the float size rounds down to g) to the (h//ph)×(w//pw) token grid;
    in 'reference' mode to (w//pw)×(h//ph), flattened row-major (see the module
    docstring). Float32."""
    n = math.isqrt(pos.shape[0] - 1)
    h, w = view_hw
    gh, gw = h // patch[0], w // patch[1]
    if gh * gw == n * n and h == w:
        return pos.float()
    # the reference's bug, kept on purpose: it asks for (width, height) where (height, width) is meant
    rows, cols = (gw, gh) if mode == "reference" else (gh, gw)
    grid = pos[1:].float().reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + 0.1) / n, (cols + 0.1) / n), mode="bicubic",
                         align_corners=False)
    return torch.cat([pos[:1].float(), grid.flatten(2)[0].t()])


def encode_views(visual, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The image embeddings of normalised views x [N, 3, h, w]: open_clip's ViT forward with the
    positional embedding for x's size ('square' mode: the model's own forward, unchanged)."""
    if mode == "square":
        return visual(x)
    patch = tuple(visual.patch_size)                           # open_clip keeps it as (ph, pw)
    t = visual.conv1(x)                                        # [N, D, gh, gw]
    t = t.flatten(2).transpose(1, 2)                           # tokens row-major, as the ViT's own
    cls = visual.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
    pos = positional_embedding(visual.positional_embedding, tuple(x.shape[-2:]), patch, mode)
    t = visual.ln_pre(visual.patch_dropout(torch.cat([cls, t], 1) + pos.to(t.dtype)))
    pooled, _ = visual._pool(visual.transformer(t))
    return pooled @ visual.proj if visual.proj is not None else pooled
