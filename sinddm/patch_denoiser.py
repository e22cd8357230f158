"""A training-free denoiser: the posterior mean of a distribution made of one picture's patches
(method §11).

`PatchDenoiser` is called as the network is, `(x, t, scale) → ε`, plus the finer-scale sampler's
blurry input `x̃` and mixing weight γ (`takes_blurry`). For every p×p patch q of x_t it forms the
posterior over the training level's patches y_j under SinDDM's own noising,
x_t = √ᾱ(γx̃ + (1−γ)y) + √(1−ᾱ)ε, which is a softmax over j of

    logit_j = −‖r − c·y_j‖² / (2σ²)  [ − ‖u − b_j‖² / (2τ²) ],    r = q − √ᾱ·γ·u,  c = √ᾱ(1−γ),  σ² = 1−ᾱ,

(u: the patch of x̃ at the same place, b_j: the training level's blurry patch, τ = `context_sigma`),
so the weights are an attention score: a dot product plus a bias per key (terms of r alone cancel in
the softmax). The posterior-mean patches are merged into ŷ (averaged where they overlap, or the
centre pixel of each), and ε is returned such that the sampler's x̂0 is exactly ŷ.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .patch_math import GROUP, patches_of, softmax_mean, spread_candidates, topk_by_groups
from .pyramid import Pyramid
from .schedule import Schedule

DEFAULT_PATCH = 5                # measured best of 5/7/9 at the finer scales (method §11.7)
DEFAULT_CHUNK = 1 << 24          # scores (query × key floats, 64 MB) held at once, at most
BLOCK_SCORES = 1 << 22           # exact path: scores per block (16 MB), measured faster than 64 MB
INDEX_DIMS = 16                  # principal components of the candidate index (approximate path)
MERGES = ("mean", "centre")
SEARCHES = ("query", "context")
SEARCH_STRIDE = 2                # one search per 2×2 query positions, its candidates shifted to the rest


def _per_scale(value, scales: list[int], n_scales: int, name: str) -> dict[int, int]:
    if isinstance(value, int):
        return {s: value for s in scales}
    value = list(value)
    if len(value) == n_scales:
        return {s: int(value[s]) for s in scales}
    if len(value) == len(scales):
        return {s: int(v) for s, v in zip(scales, value)}
    raise UserError(f"{name}: give one number, one per pyramid scale ({n_scales}) or one per entry of "
                    f"scales ({len(scales)}); got {len(value)}")


class PatchDenoiser(nn.Module):
    """Closed-form (x, t, scale[, blurry, gamma]) → ε from the patches of `pyramid`'s levels.

    `scales`: the scales it serves (default all). `patch_size`: odd, per scale or one for all.
    `context_sigma`: τ of the blurry-context term at the finer scales (None: left out).
    `candidates`: None for the exact posterior; k for exact weights over the k best keys of a
    low-dimensional index (approximate). `chunk`: the most query×key scores held at once.
    `merge`: "centre" (each pixel from the patch centred on it; borders padded by repeating the
    edge; measured better and faster) or "mean" (average of the overlapping patch estimates). `circular`: on a torus (patches
    wrap; `--tileable`). `flips`: also use the left-right mirrored training patches.
    `search` (approximate path): "query" (default) scores every key by the logit computed in the
    index's principal components and keeps the k best (exact top-k via group maxima); "context" takes
    the k training patches whose blurry version is nearest the query's blurry patch, found once per
    blurry picture (memoised: a scale's steps share it) wherever the sampler gives x̃ with γ > 0,
    else falls back to "query". `search_stride`: search every `search_stride`-th position in each
    direction and hand the candidates, shifted, to the positions in between (1: every position).
    `refresh`: reuse a query search for this many steps of one scale and blurry picture. A search
    grid commutes only with shifts by whole grid steps; tiles are told their `origin`, which anchors
    it in the whole picture, so tiled and whole pictures agree.
    """

    takes_blurry = True

    def __init__(self, pyramid: Pyramid, schedule: Schedule, scales: Sequence[int] | None = None,
                 patch_size: int | Sequence[int] = DEFAULT_PATCH, context_sigma: float | None = None,
                 candidates: int | None = None, chunk: int = DEFAULT_CHUNK, merge: str = "centre",
                 circular: bool = False, flips: bool = False, index_dims: int = INDEX_DIMS,
                 search: str = "query", search_stride: int = SEARCH_STRIDE, refresh: int = 1):
        super().__init__()
        n = pyramid.n_scales
        scales = list(range(n)) if scales is None else [int(s) for s in scales]
        for s in scales:
            if not 0 <= s < n:
                raise UserError(f"scales: scale {s} is outside the pyramid (0..{n - 1})")
        sizes = _per_scale(patch_size, scales, n, "patch_size")
        for s, p in sizes.items():
            h, w = pyramid.sizes_hw[s]
            if p < 1 or p % 2 == 0:
                raise UserError(f"patch_size must be an odd number >= 1, got {p}")
            if p > min(h, w):
                raise UserError(f"patch_size {p} is larger than scale {s}'s level ({h}x{w} px)")
        if context_sigma is not None and not context_sigma > 0:
            raise UserError(f"context_sigma must be > 0 (or None to leave the context out), got {context_sigma}")
        if candidates is not None and candidates < 1:
            raise UserError(f"candidates must be >= 1 (or None for the exact path), got {candidates}")
        if chunk < 1:
            raise UserError(f"chunk must be >= 1, got {chunk}")
        if merge not in MERGES:
            raise UserError(f"merge must be one of {', '.join(MERGES)}, got {merge!r}")
        if search not in SEARCHES:
            raise UserError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
        if isinstance(search_stride, bool) or not isinstance(search_stride, int) or search_stride < 1:
            raise UserError(f"search_stride must be a whole number >= 1, got {search_stride!r}")
        if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 1:
            raise UserError(f"refresh must be a whole number >= 1, got {refresh!r}")
        self.search, self.search_stride, self.refresh = search, search_stride, refresh
        self._memo = None        # (scale, padded blurry batch, candidates per sample): context search
        self._qmemo = None       # (scale, padded blurry batch, t searched at, candidates): query search
        self.scales, self.patch_sizes = scales, sizes
        self.context_sigma, self.candidates, self.chunk = context_sigma, candidates, int(chunk)
        self.merge, self.circular, self.flips = merge, circular, flips
        # ᾱ by the network's timestep index (a respaced schedule fills only the kept entries).
        steps = int(schedule.timesteps.max()) + 1
        tables = torch.full((2, steps), float("nan"))
        tables[0, schedule.timesteps.cpu()] = schedule.sqrt_alphas_cumprod.float().cpu()
        tables[1, schedule.timesteps.cpu()] = schedule.sqrt_one_minus_alphas_cumprod.float().cpu()
        self.register_buffer("sqrt_tables", tables)
        for s in scales:
            p = sizes[s]
            y, b = pyramid.level_tensor(s), pyramid.blurry_tensor(s)
            if flips:
                y, b = torch.cat([y, y.flip(-1)], -1), torch.cat([b, b.flip(-1)], -1)
            self.key_grid = getattr(self, "key_grid", {})
            self.key_grid[s] = (y.shape[-2] - p + 1, y.shape[-1] - p + 1)
            keys = patches_of(y, p)
            if flips:   # drop the patches that straddle the seam between the picture and its mirror
                keys = self._unseam(keys, y.shape[-1] // 2, p)
            self.register_buffer(f"keys_{s}", keys)
            self.register_buffer(f"keysT_{s}", keys.t().contiguous(), persistent=False)
            self.register_buffer(f"keysq_{s}", 0.5 * (keys ** 2).sum(1))
            vals = self._values(s, keys)
            self.register_buffer(f"vals_{s}", vals.contiguous(), persistent=False)
            self.register_buffer(f"vals1_{s}", F.pad(vals, (0, 1), value=1.0).contiguous(), persistent=False)
            if s > 0:
                ctx = patches_of(b, p)
                ctx = self._unseam(ctx, b.shape[-1] // 2, p) if flips else ctx
                self.register_buffer(f"ctx_{s}", ctx)
                self.register_buffer(f"ctxT_{s}", ctx.t().contiguous(), persistent=False)
                self.register_buffer(f"ctxsq_{s}", 0.5 * (ctx ** 2).sum(1))
            if candidates is not None:
                self._build_index(s, keys, ctx if s > 0 else None, index_dims)

    @staticmethod
    def _unseam(rows: torch.Tensor, w: int, p: int) -> torch.Tensor:
        wp = 2 * w - p + 1
        col = torch.arange(rows.shape[0]) % wp
        return rows[(col <= w - p) | (col >= w)]

    def _build_index(self, s: int, keys: torch.Tensor, ctx: torch.Tensor | None, dims: int) -> None:
        """The candidate index: keys projected on their top principal components (fixed per scale;
        the query's weighting of sharp against blurry parts changes with t, so it goes in the query)."""
        for name, k in (("idx", keys), ("idxc", ctx)):
            if k is None:
                continue
            mean = k.mean(0)
            cen = (k - mean).double()
            _, vecs = torch.linalg.eigh(cen.t() @ cen)
            basis = vecs[:, -min(dims, k.shape[1]):].float().contiguous()
            red = (k - mean) @ basis
            self.register_buffer(f"{name}_basis_{s}", basis)
            self.register_buffer(f"{name}_mean_{s}", mean)
            self.register_buffer(f"{name}_keys_{s}", red)
            self.register_buffer(f"{name}_sq_{s}", 0.5 * (red ** 2).sum(1))
            # the same padded to whole groups of GROUP keys (the pads score −inf) for `topk_by_groups`
            n_pad = -red.shape[0] % GROUP
            self.register_buffer(f"{name}_keysT_{s}", F.pad(red.t(), (0, n_pad)).contiguous(), persistent=False)
            self.register_buffer(f"{name}_sqpad_{s}", F.pad(0.5 * (red ** 2).sum(1), (0, n_pad), value=float("inf")),
                                 persistent=False)

    # -- geometry -----------------------------------------------------------------------------

    def radius(self, scale: int) -> int:
        p = self.patch_sizes[scale]
        r = p - 1 if self.merge == "mean" else p // 2
        if self.candidates is not None:     # a position takes its search-grid parent's candidates
            r += self._stride() - 1
        return r

    def _stride(self) -> int:
        return 1 if self.flips else self.search_stride          # mirrored keys break the shift rule

    @property
    def receptive_radius(self) -> int:
        """How far (px) an output pixel depends on the input: the halo exact tiling needs."""
        return max(self.radius(s) for s in self.scales)

    def _pad(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """The picture the valid patches are taken from (mean: as is, or wrapped by p−1 at the
        bottom and right on a torus; centre: p//2 on every side, repeated edge or wrapped)."""
        if self.merge == "centre":
            h = p // 2
            if self.circular:
                iy = torch.arange(-h, x.shape[-2] + h, device=x.device) % x.shape[-2]
                ix = torch.arange(-h, x.shape[-1] + h, device=x.device) % x.shape[-1]
                return x.index_select(-2, iy).index_select(-1, ix)
            return F.pad(x, (h, h, h, h), mode="replicate")
        if self.circular:
            iy = torch.arange(x.shape[-2] + p - 1, device=x.device) % x.shape[-2]
            ix = torch.arange(x.shape[-1] + p - 1, device=x.device) % x.shape[-1]
            return x.index_select(-2, iy).index_select(-1, ix)
        return x

    # -- the posterior ------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale, blurry: torch.Tensor | None = None,
                gamma=None, origin=None) -> torch.Tensor:
        """ε for x_t. `origin` (N×2, optional): where each input's top-left pixel lies in the whole
        picture, when it is a tile of it; the approximate path anchors its search grid there, so that
        tiles find what the whole picture finds."""
        scale = int(scale)
        if scale not in self.patch_sizes:
            raise UserError(f"scale {scale}: this patch denoiser serves scales {self.scales}")
        p = self.patch_sizes[scale]
        if self.merge == "mean" and not self.circular and min(x.shape[-2:]) < p:
            raise UserError(f"input {x.shape[-2]}x{x.shape[-1]} px is smaller than scale {scale}'s "
                            f"patch_size {p}")
        g = 0.0 if gamma is None or blurry is None else float(gamma)
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        if origin is not None:
            origin = torch.as_tensor(origin, dtype=torch.long).reshape(x.shape[0], 2).cpu()
        x = x.float()
        out = torch.empty_like(x)
        for tv in torch.unique(t).tolist():   # in practice one t for the whole batch
            sel = (t == tv).nonzero().flatten()
            a, sigma = (float(v) for v in self.sqrt_tables[:, tv])
            xs = x[sel]
            u = blurry[sel].float() if g > 0 else None
            r = xs - a * g * u if u is not None else xs
            c = a * (1 - g)
            y_hat = self.posterior_mean(r, c, sigma * sigma, scale, u if self.context_sigma is not None and scale > 0
                                        else None, search_u=u if scale > 0 else None, step=tv,
                                        origin=None if origin is None else origin[sel.cpu()])
            out[sel] = (r - c * y_hat) / sigma
        return out

    def posterior_mean(self, r: torch.Tensor, c, var, scale: int, u: torch.Tensor | None = None,
                       search_u: torch.Tensor | None = None, step: int | None = None,
                       origin: torch.Tensor | None = None) -> torch.Tensor:
        """ŷ (N×3×H×W) for residuals r = c·y + √var·ε, patch by patch, optionally weighed by the
        blurry context u against the training level's blurry patches. `search_u`: the blurry
        picture the approximate path's search may use or key its memo on; `step`: the timestep."""
        p = self.patch_sizes[scale]
        n, _, h, w = r.shape
        rp = self._pad(r, p)
        up = self._pad(u, p) if u is not None else None
        hp, wp = rp.shape[-2] - p + 1, rp.shape[-1] - p + 1     # patch positions
        cands = None
        if self.candidates is not None and self.candidates < getattr(self, f"keys_{scale}").shape[0]:
            sp = self._pad(search_u, p) if search_u is not None else None
            if self.search == "context" and sp is not None:
                cands = self._context_candidates(sp, scale, hp, wp, origin)
            else:
                cands = self._query_candidates(rp, up, c, var, scale, step, sp, origin)
        n_scores = self.candidates * 3 * p * p * (2 if u is not None else 1) if self.candidates else 0
        chunk = self.chunk if self.candidates else min(self.chunk, BLOCK_SCORES)
        per_block = max(1, chunk // max(getattr(self, f"keys_{scale}").shape[0], n_scores))
        rows = max(1, per_block // wp)
        if self.merge == "mean":
            acc = r.new_zeros((n, 3, rp.shape[-2], rp.shape[-1]))
        else:
            acc = r.new_empty((n, 3, hp, wp))
        for i in range(n):
            for r0 in range(0, hp, rows):
                r1 = min(hp, r0 + rows)
                q = patches_of(rp[i, :, r0:r1 + p - 1], p)
                uq = patches_of(up[i, :, r0:r1 + p - 1], p) if up is not None else None
                base = r0 * wp
                est = torch.cat([self._block(q[k:k + per_block], uq[k:k + per_block] if uq is not None else None,
                                             c, var, scale, None if cands is None else
                                             cands[i][base + k:base + min(k + per_block, q.shape[0])].long())
                                 for k in range(0, q.shape[0], per_block)])
                if self.merge == "mean":
                    acc[i, :, r0:r1 + p - 1] += F.fold(est.t()[None], (r1 - r0 + p - 1, rp.shape[-1]), p)[0]
                else:
                    acc[i, :, r0:r1] = est.t().reshape(3, r1 - r0, wp)
        if self.merge == "centre":
            return acc
        if self.circular:   # fold the wrapped margin back onto the torus: every pixel has p² patches
            iy = torch.arange(acc.shape[-2], device=r.device) % h
            ix = torch.arange(acc.shape[-1], device=r.device) % w
            acc = r.new_zeros((n, 3, h, acc.shape[-1])).index_add_(-2, iy, acc)
            return r.new_zeros((n, 3, h, w)).index_add_(-1, ix, acc) / (p * p)
        count = F.fold(F.unfold(r.new_ones((1, 1, h, w)), p), (h, w), p)
        return acc / count

    def _block(self, q: torch.Tensor, uq: torch.Tensor | None, c, var, scale: int,
               idx: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior-mean patches (or centre pixels) of a block of query rows (`idx`: their
        candidates, when already found)."""
        if idx is not None:
            return self._weigh(q, uq, c, var, scale, idx)
        # −‖q − c y‖²/(2σ²) = (c q·y − c²‖y‖²/2)/σ² + (terms of q alone, dropped by the softmax);
        # keys stored transposed and values contiguous so that neither is copied per block
        logits = torch.addmm(getattr(self, f"keysq_{scale}"), q, getattr(self, f"keysT_{scale}"),
                             beta=-(c * c) / var, alpha=c / var)
        if uq is not None:
            tau2 = self.context_sigma ** 2
            logits.addmm_(uq, getattr(self, f"ctxT_{scale}"), alpha=1.0 / tau2)
            logits.add_(getattr(self, f"ctxsq_{scale}"), alpha=-1.0 / tau2)
        return softmax_mean(logits, getattr(self, f"vals1_{scale}"))

    def _values(self, scale: int, keys: torch.Tensor) -> torch.Tensor:
        if self.merge == "mean":
            return keys
        p = self.patch_sizes[scale]
        centre = (p // 2) * p + p // 2
        return keys[:, centre::p * p]        # channel-major rows: the centre pixel's 3 values

    def _context_candidates(self, up: torch.Tensor, scale: int, hp: int, wp: int,
                            origin: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per sample, the (hp·wp)×k indices of the keys whose blurry patch is nearest (in the index's
        principal components) the blurry patch of each position of `up` (padded as the queries).
        A function of `up` alone, so memoised: a scale's steps share one search."""
        origin = torch.zeros((up.shape[0], 2), dtype=torch.long) if origin is None else origin
        memo = self._memo
        if (memo is not None and memo[0] == scale and memo[1].shape == up.shape and memo[1].device == up.device
                and torch.equal(memo[1], up) and torch.equal(memo[3], origin)):
            return memo[2]
        p = self.patch_sizes[scale]
        k = self.candidates
        basis, mean = getattr(self, f"idxc_basis_{scale}"), getattr(self, f"idxc_mean_{scale}")
        red, rsq = getattr(self, f"idxc_keys_{scale}"), getattr(self, f"idxc_sq_{scale}")
        st = self._stride()
        per_block = max(1, self.chunk // red.shape[0])
        out = []
        for i in range(up.shape[0]):
            sy, sx = (int(v) for v in (-origin[i]) % st)
            pat = F.unfold(up[i:i + 1, :, sy:, sx:], p, stride=st)[0].t()         # (hs·ws)×D
            # nearest blurry key: largest u·b − ‖b‖²/2 in the index's components
            idx = torch.cat([torch.addmm(rsq, (pat[j:j + per_block] - mean) @ basis, red.t(), beta=-1.0)
                             .topk(k, dim=1).indices for j in range(0, pat.shape[0], per_block)])
            out.append(spread_candidates(idx, self.key_grid[scale], hp, wp, st, sy, sx).to(torch.int32))
        self._memo = (scale, up.clone(), out, origin.clone())
        return out

    def _query_candidates(self, rp: torch.Tensor, up: torch.Tensor | None, c, var, scale: int, step,
                          memo_key: torch.Tensor | None, origin: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per sample, (hp·wp)×k indices of the keys with the best logit computed in the index's
        principal components (the sharp part for the residual, plus the context term when it is on),
        searched on every `search_stride`-th position. With `refresh` > 1 and a blurry picture
        (`memo_key`) the result is reused for the next refresh−1 steps of that scale and picture."""
        origin = torch.zeros((rp.shape[0], 2), dtype=torch.long) if origin is None else origin
        if self.refresh > 1 and memo_key is not None and step is not None:
            m = self._qmemo
            if (m is not None and m[0] == scale and m[1].shape == memo_key.shape and m[1].device == memo_key.device
                    and 0 < m[2] - step < self.refresh and torch.equal(m[1], memo_key) and torch.equal(m[4], origin)):
                return m[3]
        p = self.patch_sizes[scale]
        hp, wp = rp.shape[-2] - p + 1, rp.shape[-1] - p + 1
        k = self.candidates
        st = self._stride()
        basis, mean = getattr(self, f"idx_basis_{scale}"), getattr(self, f"idx_mean_{scale}")
        redT, rsq = getattr(self, f"idx_keysT_{scale}"), getattr(self, f"idx_sqpad_{scale}")
        per_block = max(1, self.chunk // redT.shape[1])
        out = []
        for i in range(rp.shape[0]):
            sy, sx = (int(v) for v in (-origin[i]) % st)
            pat = F.unfold(rp[i:i + 1, :, sy:, sx:], p, stride=st)[0].t()
            upat = F.unfold(up[i:i + 1, :, sy:, sx:], p, stride=st)[0].t() if up is not None else None
            blocks = []
            for j in range(0, pat.shape[0], per_block):
                # −‖P(q − cμ) − cP(y − μ)‖²/(2σ²) up to terms of q alone [+ the context's]
                sc = torch.addmm(rsq, (pat[j:j + per_block] - c * mean) @ basis, redT, beta=-(c * c) / var,
                                 alpha=c / var)
                if upat is not None:
                    tau2 = self.context_sigma ** 2
                    cb, cm = getattr(self, f"idxc_basis_{scale}"), getattr(self, f"idxc_mean_{scale}")
                    sc.addmm_((upat[j:j + per_block] - cm) @ cb, getattr(self, f"idxc_keysT_{scale}"), alpha=1.0 / tau2)
                    sc.add_(getattr(self, f"idxc_sqpad_{scale}"), alpha=-1.0 / tau2)
                blocks.append(topk_by_groups(sc, k))
            out.append(spread_candidates(torch.cat(blocks), self.key_grid[scale], hp, wp, st, sy, sx).to(torch.int32))
        if self.refresh > 1 and memo_key is not None and step is not None:
            self._qmemo = (scale, memo_key.clone(), step, out, origin.clone())
        return out

    def _weigh(self, q, uq, c, var, scale: int, idx: torch.Tensor) -> torch.Tensor:
        """The posterior over the candidate keys `idx` (Q×k) of each query: exact logits, softmax, mean."""
        keys = getattr(self, f"keys_{scale}")
        cand = keys[idx]                                         # Q×k×D
        logits = (c / var) * torch.einsum("qd,qkd->qk", q, cand) - (c * c / var) * getattr(self, f"keysq_{scale}")[idx]
        if uq is not None:
            tau2 = self.context_sigma ** 2
            cctx = getattr(self, f"ctx_{scale}")[idx]
            logits += (torch.einsum("qd,qkd->qk", uq, cctx) - getattr(self, f"ctxsq_{scale}")[idx]) / tau2
        wts = torch.softmax(logits, dim=1)
        vals = getattr(self, f"vals_{scale}")[idx]                    # Q×k×D (or Q×k×3)
        return torch.einsum("qk,qkd->qd", wts, vals)
