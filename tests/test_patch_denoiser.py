"""The closed-form patch denoiser (method §11) against a brute-force float64 posterior, and the
properties the samplers and tiling rely on. Tiny pictures: 12×10 keys, 9×11 queries, p = 3."""

import numpy as np
import pytest
import torch

from sinddm.errors import UserError
from sinddm.patch_denoiser import PatchDenoiser
from sinddm.patch_math import softmax_mean
from sinddm.pyramid import Pyramid
from sinddm.samplers import predict_x0, q_sample
from sinddm.schedule import Schedule
from sinddm.tiling import TiledDenoiser

# ŷ and ε agree with the float64 reference to this (the float32 logits carry ~1e-5 relative error).
ATOL = 1e-4


@pytest.fixture(scope="module")
def schedule():
    return Schedule.cosine()


@pytest.fixture(scope="module")
def pyramid():
    rng = np.random.default_rng(0)
    levels = [rng.integers(0, 256, (8, 7, 3), dtype=np.uint8), rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)]
    blurry = [None, rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)]
    return Pyramid(input_wh=(10, 12), scale_factor=1.4, levels=levels, blurry=blurry, blur_distance=[0.2])


def brute_force(pyramid, schedule, x, t, scale, p, blurry=None, gamma=0.0, tau=None, centre=False):
    """ŷ and ε by the definition: for every query patch, explicit Gaussian log-likelihoods of every
    training patch, a softmax, the weighted mean; overlapping estimates averaged (or, `centre`,
    each pixel the centre of the estimate of the patch centred on it, the edge repeated). float64."""
    a = float(schedule.sqrt_alphas_cumprod[t])
    sig = float(schedule.sqrt_one_minus_alphas_cumprod[t])
    Y = pyramid.level_tensor(scale).double().numpy()
    B = pyramid.blurry_tensor(scale).double().numpy()
    X = x.double().numpy()
    U = blurry.double().numpy() if blurry is not None else np.zeros_like(X)
    n, _, h, w = X.shape
    m = p // 2
    if centre:
        X0, U0 = X, U
        X = np.pad(X, ((0, 0), (0, 0), (m, m), (m, m)), mode="edge")
        U = np.pad(U, ((0, 0), (0, 0), (m, m), (m, m)), mode="edge")
    keys = [(Y[:, i:i + p, j:j + p], B[:, i:i + p, j:j + p])
            for i in range(Y.shape[1] - p + 1) for j in range(Y.shape[2] - p + 1)]
    y_hat = np.zeros((n, 3, h, w))
    for k in range(n):
        acc, cnt = np.zeros((3, X.shape[2], X.shape[3])), np.full((X.shape[2], X.shape[3]), float(centre))
        for i in range(X.shape[2] - p + 1):
            for j in range(X.shape[3] - p + 1):
                q, u = X[k, :, i:i + p, j:j + p], U[k, :, i:i + p, j:j + p]
                logl = []
                for y, b in keys:
                    # x_t patch ~ N(a(γu + (1−γ)y), σ²); context u ~ N(b, τ²)
                    ll = -np.sum((q - a * (gamma * u + (1 - gamma) * y)) ** 2) / (2 * sig ** 2)
                    if tau is not None:
                        ll -= np.sum((u - b) ** 2) / (2 * tau ** 2)
                    logl.append(ll)
                logl = np.array(logl)
                wts = np.exp(logl - logl.max())
                wts /= wts.sum()
                est = sum(wv * y for wv, (y, _) in zip(wts, keys))
                if centre:
                    acc[:, i, j], cnt[i, j] = est[:, m, m], 1
                else:
                    acc[:, i:i + p, j:j + p] += est
                    cnt[i:i + p, j:j + p] += 1
        y_hat[k] = (acc / cnt)[:, :h, :w]
    if centre:
        X, U = X0, U0
    eps = (X - a * (gamma * U + (1 - gamma) * y_hat)) / sig
    return torch.from_numpy(y_hat), torch.from_numpy(eps)


def _inputs(seed=1, n=2, hw=(9, 11)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, *hw), generator=g) * 2 - 1, torch.rand((n, 3, *hw), generator=g) * 2 - 1


def _x0(schedule, x, t, eps, blurry, gamma):
    """What `samplers.sample_blended` recovers from ε."""
    return (predict_x0(schedule, x, t, eps) - gamma * blurry) / (1 - gamma)


@pytest.mark.parametrize("t", [15, 60])
def test_scale0_matches_brute_force(pyramid, schedule, t):
    x, _ = _inputs()
    pd = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3)
    eps = pd(x, torch.full((2,), t), 0)
    y_ref, eps_ref = brute_force(pyramid, schedule, x, t, 0, 3)
    torch.testing.assert_close(eps.double(), eps_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(predict_x0(schedule, x, t, eps).double(), y_ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("t", [15, 60])
@pytest.mark.parametrize("tau", [None, 0.5])
def test_finer_scale_with_context_matches_brute_force(pyramid, schedule, t, tau):
    x, xb = _inputs()
    gamma = torch.tensor(0.4)
    pd = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3, context_sigma=tau)
    eps = pd(x, torch.full((2,), t), 1, blurry=xb, gamma=gamma)
    y_ref, eps_ref = brute_force(pyramid, schedule, x, t, 1, 3, xb, 0.4, tau)
    torch.testing.assert_close(eps.double(), eps_ref, atol=ATOL, rtol=0)
    # the sampler's round trip: x̂0 = (x̂_mix − γx̃)/(1 − γ) is the posterior mean ŷ
    torch.testing.assert_close(_x0(schedule, x, t, eps, xb, 0.4).double(), y_ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("t", [15, 60])
def test_centre_merge_matches_brute_force(pyramid, schedule, t):
    x, xb = _inputs()
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, context_sigma=0.5, merge="centre")
    eps = pd(x, torch.full((2,), t), 1, blurry=xb, gamma=0.4)
    _, eps_ref = brute_force(pyramid, schedule, x, t, 1, 3, xb, 0.4, 0.5, centre=True)
    torch.testing.assert_close(eps.double(), eps_ref, atol=ATOL, rtol=0)


def test_round_trip_is_the_posterior_mean(pyramid, schedule):
    x, xb = _inputs()
    pd = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3, context_sigma=0.3)
    t, g = 30, 0.25
    a = float(schedule.sqrt_alphas_cumprod[t])
    sig = float(schedule.sqrt_one_minus_alphas_cumprod[t])
    y_hat = pd.posterior_mean(x - a * g * xb, a * (1 - g), sig * sig, 1, xb)
    eps = pd(x, torch.full((2,), t), 1, blurry=xb, gamma=g)
    torch.testing.assert_close(_x0(schedule, x, t, eps, xb, g), y_hat, atol=1e-5, rtol=0)
    # γ = 0 or no blurry picture: the plain posterior, no context
    plain = pd.posterior_mean(x, a, sig * sig, 1)
    torch.testing.assert_close(predict_x0(schedule, x, t, pd(x, torch.full((2,), t), 1, blurry=xb, gamma=0.0)),
                               plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(predict_x0(schedule, x, t, pd(x, torch.full((2,), t), 1)), plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("merge", ["mean", "centre"])
def test_output_depends_only_on_receptive_radius(pyramid, schedule, merge):
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, merge=merge, context_sigma=0.5)
    r = pd.receptive_radius
    assert r == (2 if merge == "mean" else 1)
    x, xb = _inputs(hw=(15, 15))
    tt = torch.full((2,), 10)
    base = pd(x, tt, 1, blurry=xb, gamma=0.3)
    for what in ("x", "blurry"):
        x2, xb2 = x.clone(), xb.clone()
        (x2 if what == "x" else xb2)[:, :, 7, 7] += 0.5
        changed = (pd(x2, tt, 1, blurry=xb2, gamma=0.3) - base).abs().amax(dim=(0, 1)) > 0
        ys, xs = torch.nonzero(changed, as_tuple=True)
        assert int(max((ys - 7).abs().max(), (xs - 7).abs().max())) == r   # reaches r, never beyond


@pytest.mark.parametrize("merge", ["mean", "centre"])
def test_tiling_with_that_halo_is_exact(pyramid, schedule, merge):
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, merge=merge)
    x, _ = _inputs(hw=(17, 19))
    tt = torch.full((2,), 12)
    tiled = TiledDenoiser(pd, tile=5, halo=pd.receptive_radius)
    # same numbers up to float32 summation order (the blocks differ in size)
    torch.testing.assert_close(tiled(x, tt, 1), pd(x, tt, 1), atol=5e-5, rtol=0)


@pytest.mark.parametrize("merge", ["mean", "centre"])
def test_circular_mode_wraps(pyramid, schedule, merge):
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, merge=merge, circular=True, context_sigma=0.5)
    x, xb = _inputs(hw=(9, 11))
    tt = torch.full((2,), 20)
    out = pd(x, tt, 1, blurry=xb, gamma=0.2)
    # on a torus, shifting the input shifts the output (no border)
    shifted = pd(x.roll((4, 5), (-2, -1)), tt, 1, blurry=xb.roll((4, 5), (-2, -1)), gamma=0.2)
    torch.testing.assert_close(shifted, out.roll((4, 5), (-2, -1)), atol=1e-5, rtol=0)
    # a pixel on the left edge depends on the right edge
    x2 = x.clone()
    x2[:, :, 4, -1] += 0.5
    assert (pd(x2, tt, 1, blurry=xb, gamma=0.2) - out)[:, :, 4, 0].abs().max() > 0
    # works on a picture as small as the patch
    small = pd(x[:, :, :3, :3], tt, 1)
    assert small.shape == (2, 3, 3, 3) and torch.isfinite(small).all()


def test_picture_as_small_as_the_patch(pyramid, schedule):
    pd = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3)
    x, _ = _inputs(hw=(3, 3))
    _, eps_ref = brute_force(pyramid, schedule, x, 40, 0, 3)
    torch.testing.assert_close(pd(x, torch.full((2,), 40), 0).double(), eps_ref, atol=ATOL, rtol=0)
    with pytest.raises(UserError, match="patch_size"):
        pd(x[:, :, :2], torch.full((2,), 40), 0)


def test_approximate_path(pyramid, schedule):
    x, xb = _inputs()
    exact = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3, context_sigma=0.5)
    n_keys = exact.keys_1.shape[0]
    every = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3, context_sigma=0.5, candidates=n_keys)
    for t in (3, 50):
        tt = torch.full((2,), t)
        # compared on x̂0: ε = (r − cŷ)/σ magnifies float32 summation-order differences by c/σ (20 at t = 3)
        torch.testing.assert_close(predict_x0(schedule, x, t, every(x, tt, 1, blurry=xb, gamma=0.3)),
                                   predict_x0(schedule, x, t, exact(x, tt, 1, blurry=xb, gamma=0.3)),
                                   atol=1e-5, rtol=0)
    # few candidates: near t = 0 the posterior of a noised picture like the training one sits on a
    # handful of patches, which the index finds
    few = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3, candidates=8, search_stride=1)
    t = 3
    g = torch.Generator().manual_seed(5)
    clean = pyramid.level_tensor(1)[None, :, 1:10].flip(-1).repeat(2, 1, 1, 1)
    x = q_sample(schedule, clean, t, torch.randn(clean.shape, generator=g))
    y_few = predict_x0(schedule, x, t, few(x, torch.full((2,), t), 1))
    y_all = predict_x0(schedule, x, t, exact(x, torch.full((2,), t), 1))
    diff = (y_few - y_all).abs()
    assert diff.mean() < 0.01 and diff.median() < 1e-4, (diff.mean(), diff.median())


@pytest.mark.parametrize("merge", ["mean", "centre"])
def test_chunking_does_not_change_results(pyramid, schedule, merge):
    x, xb = _inputs()
    tt = torch.full((2,), 25)
    outs = [PatchDenoiser(pyramid, schedule, merge=merge, patch_size=3, context_sigma=0.5, chunk=c, candidates=k)
            (x, tt, 1, blurry=xb, gamma=0.3) for k in (None, 12) for c in (1, 97, 1 << 24)]
    for o in outs[1:3]:
        torch.testing.assert_close(o, outs[0], atol=1e-5, rtol=0)   # float32 summation order only
    for o in outs[4:]:
        torch.testing.assert_close(o, outs[3], atol=1e-5, rtol=0)


def test_flipped_keys_double_the_patches(pyramid, schedule):
    pd = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3, flips=True, context_sigma=0.5)
    plain = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3)
    assert pd.keys_1.shape[0] == 2 * plain.keys_1.shape[0] == pd.ctx_1.shape[0]
    # every mirrored key is a training patch flipped left-right
    k = plain.keys_1.view(-1, 3, 3, 3).flip(-1).flatten(1)
    assert torch.equal(torch.sort(pd.keys_1, 0).values, torch.sort(torch.cat([plain.keys_1, k]), 0).values)


def test_batch_with_mixed_timesteps(pyramid, schedule):
    x, _ = _inputs()
    pd = PatchDenoiser(pyramid, schedule, merge="mean", patch_size=3)
    both = pd(x, torch.tensor([10, 40]), 0)
    torch.testing.assert_close(both[:1], pd(x[:1], torch.tensor([10]), 0))
    torch.testing.assert_close(both[1:], pd(x[1:], torch.tensor([40]), 0))


@pytest.mark.parametrize("kwargs, name", [
    (dict(patch_size=9), "patch_size"),          # larger than scale 0's 8×7 level
    (dict(patch_size=4), "patch_size"),
    (dict(patch_size=0), "patch_size"),
    (dict(patch_size=-3), "patch_size"),
    (dict(patch_size=(3, 5, 7)), "patch_size"),
    (dict(scales=[2]), "scales"),
    (dict(scales=[-1]), "scales"),
    (dict(context_sigma=0.0), "context_sigma"),
    (dict(candidates=0), "candidates"),
    (dict(chunk=0), "chunk"),
    (dict(merge="median"), "merge"),
])
def test_bad_parameters(pyramid, schedule, kwargs, name):
    with pytest.raises(UserError, match=name) as e:
        PatchDenoiser(pyramid, schedule, **kwargs)
    assert "\n" not in str(e.value)


def test_scale_not_served(pyramid, schedule):
    pd = PatchDenoiser(pyramid, schedule, scales=[1], patch_size=3)
    with pytest.raises(UserError, match="scale 0"):
        pd(torch.zeros(1, 3, 5, 5), torch.tensor([3]), 0)


# -- the approximate path's searches ----------------------------------------------------------------

def test_grouped_topk_is_exact():
    from sinddm.patch_math import topk_by_groups as _topk
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(300, 64 * 40, generator=g)
    scores[:, -5:] = float("-inf")                      # padding columns
    for k in (1, 5, 9):
        got = torch.sort(_topk(scores, k, group=64), 1).values
        assert torch.equal(got, torch.sort(scores.topk(k, dim=1).indices, 1).values)


def test_query_search_in_all_dimensions_weighs_the_best_keys(pyramid, schedule):
    """Index in all 27 dimensions, search at every position: the candidates are the k keys of
    largest exact logit, so ŷ is the posterior renormalised over them (checked against k = all)."""
    x, xb = _inputs(n=1)
    t = 30
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=6, search_stride=1, index_dims=27)
    rp = pd._pad(x, 3)
    cands = pd._query_candidates(rp, None, float(schedule.sqrt_alphas_cumprod[t]),
                                 float(schedule.sqrt_one_minus_alphas_cumprod[t]) ** 2, 0, t, None)[0].long()
    from sinddm.patch_math import patches_of as _patches
    a = float(schedule.sqrt_alphas_cumprod[t])
    sig2 = float(schedule.sqrt_one_minus_alphas_cumprod[t]) ** 2
    q = _patches(rp[0], 3).double()
    logits = -((q[:, None] - a * pd.keys_0.double()[None]) ** 2).sum(-1) / (2 * sig2)
    assert torch.equal(torch.sort(cands, 1).values, torch.sort(logits.topk(6, 1).indices, 1).values)


def test_query_search_refresh_reuses_candidates_within_a_scale(pyramid, schedule, monkeypatch):
    x, xb = _inputs()
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=5, refresh=3)
    searches = []
    real = pd._query_candidates.__func__
    monkeypatch.setattr(pd, "_query_candidates", lambda *a: searches.append(a[5]) or real(pd, *a))
    for t in (20, 19, 18, 17, 16):
        pd(x, torch.full((2,), t), 1, blurry=xb, gamma=0.3)
    assert searches == [20, 19, 18, 17, 16]
    assert pd._qmemo[2] == 17                                         # searched at 20 and 17 only
    pd(x, torch.full((2,), 15), 1, blurry=xb.flip(-1), gamma=0.3)     # another picture: searched
    assert pd._qmemo[2] == 15


# -- the context search (candidates from the blurry picture; measured worse, not the default) -------

def _nearest_blurry(pd, u, scale, k):
    """Brute force: per position of the padded blurry picture, the k keys with the nearest blurry patch."""
    from sinddm.patch_math import patches_of as _patches
    p = pd.patch_sizes[scale]
    pat = _patches(pd._pad(u, p)[0], p).double()
    ctx = pd.ctx_1.double()
    d = torch.cdist(pat, ctx)
    return d.topk(k, dim=1, largest=False).indices


def test_context_search_finds_the_nearest_blurry_patches(pyramid, schedule):
    x, xb = _inputs(n=1)
    # index in all 27 dimensions and a search at every position: the exact k nearest
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=6, search_stride=1, index_dims=27)
    p = 3
    cands = pd._context_candidates(pd._pad(xb, p), 1, 9, 11)[0].long()
    ref = _nearest_blurry(pd, xb, 1, 6)
    assert torch.equal(torch.sort(cands, 1).values, torch.sort(ref, 1).values)


def test_context_path_weighs_its_candidates_exactly(pyramid, schedule):
    """ŷ at each pixel is the float64 posterior mean over that position's candidates (centre merge)."""
    from sinddm.patch_math import patches_of as _patches
    x, xb = _inputs(n=1)
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=5, search="context")
    t, gamma = 12, 0.3
    eps = pd(x, torch.tensor([t]), 1, blurry=xb, gamma=gamma)
    y_hat = _x0(schedule, x, t, eps, xb, gamma).double()
    a = float(schedule.sqrt_alphas_cumprod[t])
    sig = float(schedule.sqrt_one_minus_alphas_cumprod[t])
    r = (x - a * gamma * xb).double()
    c = a * (1 - gamma)
    q = _patches(pd._pad(r, 3)[0], 3)
    cands = pd._context_candidates(pd._pad(xb, 3), 1, 9, 11)[0].long()
    keys = pd.keys_1.double()[cands]                                # Q×k×D
    logits = -((q[:, None] - c * keys) ** 2).sum(-1) / (2 * sig ** 2)
    ref = (torch.softmax(logits, 1)[..., None] * keys[..., 4::9]).sum(1)   # centre pixel of a 3×3 patch
    torch.testing.assert_close(y_hat[0].flatten(1).t(), ref, atol=1e-4, rtol=0)


def test_stride_hands_shifted_candidates_to_the_positions_between(pyramid, schedule):
    x, xb = _inputs(n=1)
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=4, search_stride=2)
    hk, wk = pd.key_grid[1]
    cands = pd._context_candidates(pd._pad(xb, 3), 1, 9, 11)[0].long().view(9, 11, 4)
    parent = cands[0::2, 0::2]
    right = cands[0::2, 1::2]
    ky, kx = parent[:, :5] // wk, parent[:, :5] % wk
    assert torch.equal(right, ky * wk + (kx + 1).clamp(max=wk - 1))


def test_context_search_is_memoised_per_blurry_picture(pyramid, schedule, monkeypatch):
    x, xb = _inputs()
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=5, search="context")
    calls = []
    real = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    first = pd(x, torch.full((2,), 20), 1, blurry=xb, gamma=0.3)
    n_first = len(calls)
    again = pd(x, torch.full((2,), 19), 1, blurry=xb, gamma=0.3)
    assert n_first > 0 and len(calls) == n_first                       # a scale's later steps: no search
    pd(x, torch.full((2,), 19), 1, blurry=xb.flip(-1), gamma=0.3)
    assert len(calls) > n_first                                        # another picture: searched anew
    fresh = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=5, search="context")
    torch.testing.assert_close(again, fresh(x, torch.full((2,), 19), 1, blurry=xb, gamma=0.3))
    assert first.shape == again.shape


def test_context_path_near_the_training_picture_is_close_to_exact(pyramid, schedule):
    """A noised crop of the training level with its own blurry crop: the candidates hold the true
    patches, so near t = 0 the approximate posterior matches the exact one (away from the border,
    whose repeated-edge patches are no training patch; the test's "blurry" level is white noise, so
    the search runs at every position, in all dimensions)."""
    exact = PatchDenoiser(pyramid, schedule, patch_size=3)
    approx = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=8, search_stride=1, index_dims=27,
                           search="context")
    g = torch.Generator().manual_seed(5)
    clean = pyramid.level_tensor(1)[None, :, 1:10].repeat(2, 1, 1, 1)
    xb = pyramid.blurry_tensor(1)[None, :, 1:10].repeat(2, 1, 1, 1)
    t, gamma = 3, 0.3
    x = q_sample(schedule, gamma * xb + (1 - gamma) * clean, t, torch.randn(clean.shape, generator=g))
    tt = torch.full((2,), t)
    ya = _x0(schedule, x, t, approx(x, tt, 1, blurry=xb, gamma=gamma), xb, gamma)
    ye = _x0(schedule, x, t, exact(x, tt, 1, blurry=xb, gamma=gamma), xb, gamma)
    diff = (ya - ye).abs()[..., 1:-1, 1:-1]
    assert diff.mean() < 0.01 and diff.median() < 1e-4, (diff.mean(), diff.median())


@pytest.mark.parametrize("kwargs, name", [
    (dict(search="faiss"), "search"),
    (dict(search_stride=0), "search_stride"),
    (dict(search_stride=1.5), "search_stride"),
])
def test_bad_search_parameters(pyramid, schedule, kwargs, name):
    with pytest.raises(UserError, match=name) as e:
        PatchDenoiser(pyramid, schedule, patch_size=3, candidates=4, **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spread", [0.1, 10.0, 1e4])
def test_the_in_place_softmax_mean_equals_softmax_then_matmul(spread):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn((64, 500), generator=gen) * spread
    values = torch.randn((500, 3), generator=gen)
    want = torch.softmax(logits.double(), 1) @ values.double()
    got = softmax_mean(logits.clone(), torch.cat([values, torch.ones(500, 1)], 1))
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("search", ["query", "context"])
@pytest.mark.parametrize("oy, ox", [(3, 5), (2, 4), (1, 0)])
def test_a_tile_told_its_origin_finds_what_the_whole_picture_finds(pyramid, schedule, search, oy, ox):
    """The search grid is anchored in the whole picture: a window's interior (beyond the stated
    receptive radius from its edges) equals the whole picture's, for odd and even offsets alike."""
    x, xb = _inputs(n=1)
    pd = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=4, search_stride=2, search=search,
                       context_sigma=0.7)
    t = torch.full((1,), 20)
    whole = pd(x, t, 1, blurry=xb, gamma=0.3)
    r = pd.receptive_radius
    h, w = x.shape[-2:]
    win = (slice(None), slice(None), slice(oy, h), slice(ox, w))
    tile = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=4, search_stride=2, search=search,
                         context_sigma=0.7)(x[win], t, 1, blurry=xb[win], gamma=0.3, origin=[[oy, ox]])
    torch.testing.assert_close(tile[..., r:h - oy - r, r:w - ox - r], whole[..., oy + r:h - r, ox + r:w - r])
    if (oy, ox) != (2, 4):   # without its origin, an odd offset puts the grid elsewhere
        blind = PatchDenoiser(pyramid, schedule, patch_size=3, candidates=4, search_stride=2, search=search,
                              context_sigma=0.7)(x[win], t, 1, blurry=xb[win], gamma=0.3)
        assert not torch.equal(blind[..., r:h - oy - r, r:w - ox - r], whole[..., oy + r:h - r, ox + r:w - r])
