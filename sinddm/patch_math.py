"""Pure tensor helpers of the patch denoiser (method §11): patches as rows, the posterior's
weighted mean without subnormal exponentials, and the approximate path's exact top-k and
candidate spreading over a search grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

GROUP = 64                       # exact top-k via the maxima of groups of this many keys


def topk_by_groups(scores: torch.Tensor, k: int, group: int = GROUP) -> torch.Tensor:
    """Indices of the k largest scores of each row, exactly, via the rows' group maxima: the k best
    lie in the k groups of `group` columns with the largest maxima (a group holding one of them has
    a maximum at least that good, and at most k−1 other groups can beat it). The width must be a
    whole number of groups."""
    q, n = scores.shape
    if k * group * 4 > n:
        return scores.topk(k, dim=1).indices
    best = scores.view(q, n // group, group).amax(2).topk(k, dim=1).indices       # q×k groups
    cols = (best[:, :, None] * group + torch.arange(group, device=scores.device)).view(q, k * group)
    return cols.gather(1, scores.gather(1, cols).topk(k, dim=1).indices)


def softmax_mean(logits: torch.Tensor, values_1: torch.Tensor) -> torch.Tensor:
    """softmax(logits) @ values, overwriting `logits`; `values_1` is [values | 1]. Exponents are
    clamped at −80 first: a weight below e^−80 (2e−35, still a normal float) is as good as zero,
    and the denormals that lower exponents give make exp several-fold slower on x86 CPUs. The
    normaliser comes out of the same matmul (the column of ones) and divides Q×D numbers instead of
    Q×N (measured 3-4× faster than torch.softmax then matmul on peaked rows)."""
    logits.sub_(logits.amax(1, keepdim=True)).clamp_(min=-80.0).exp_()
    out = logits @ values_1
    return out[:, :-1] / out[:, -1:]


def patches_of(img: torch.Tensor, p: int) -> torch.Tensor:
    """All valid p×p patches of a 3×H×W picture as rows: ((H−p+1)(W−p+1)) × 3p², channel-major."""
    return F.unfold(img[None], p)[0].t().contiguous()


def spread_candidates(idx: torch.Tensor, key_grid: tuple[int, int], hp: int, wp: int, st: int, sy: int = 0,
                      sx: int = 0) -> torch.Tensor:
    """Candidates found on the grid of positions (sy + st·a, sx + st·b) → all hp×wp positions:
    (y, x) takes its grid parent's candidates moved by the same offset (a patch one pixel on
    matches a key one pixel on); `key_grid` is the keys' (rows, columns) of positions. (sy, sx)
    anchors the grid in the whole picture, so a tile's positions have the parents they have in
    the whole picture, but in its margin."""
    if st == 1:
        return idx
    hk, wk = key_grid
    hs, ws = (hp - sy + st - 1) // st, (wp - sx + st - 1) // st
    yy = torch.arange(hp, device=idx.device)
    xx = torch.arange(wp, device=idx.device)
    ay = torch.div(yy - sy, st, rounding_mode="floor").clamp_(0, hs - 1)
    ax = torch.div(xx - sx, st, rounding_mode="floor").clamp_(0, ws - 1)
    parent = (ay[:, None] * ws + ax[None, :]).flatten()
    dy = (yy - sy - st * ay)[:, None].expand(hp, wp).flatten()[:, None]
    dx = (xx - sx - st * ax)[None, :].expand(hp, wp).flatten()[:, None]
    idx = idx[parent]
    ky = (idx // wk + dy).clamp_(0, hk - 1)
    kx = (idx % wk + dx).clamp_(0, wk - 1)
    return ky * wk + kx
