"""Exact tiled evaluation (sinddm.tiling) on every sampler path, and its wiring (CLI, API, memory).

Tiled against untiled on the CPU in fp32: the same seed must give the same numbers to 1e-5, for tile
sizes that do and do not divide the image. Each comparison also runs with a halo too small for the
network, which must *not* match: the tolerance is tight enough to see a wrong halo.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sinddm import SinDDM
from sinddm.edits import guidance as G
from sinddm.checkpoint import LoadedModel
from sinddm.config import config_from_dict
from sinddm.edits.image import harmonize, roi_generate
from sinddm.model import Denoiser
from sinddm.pipeline import generate
from sinddm.pyramid import build_pyramid, sample_sizes
from sinddm.edits.regions import Box
from sinddm.samplers import upsample
from sinddm import tiling
from sinddm.tiling import (TiledDenoiser, probe_radius, receptive_radius, seam_z, spans, tiled_loaded,
                           wrap_pad)

from .conftest import ASSETS, GOLDEN

TOL = 1e-5
TILES = [8, 13, 24]                 # network tests; 13 and 24 divide none of the sizes below
SAMPLER_TILES = [24, 50]            # sampler tests (86x115 px finest): 24 and 50 divide no scale's sides
SMALL = GOLDEN / "small_120x90.png"
START_T = [5, 3, 3]
SHIPPED = ASSETS / "models" / "hubble-small.safetensors"


@pytest.fixture(scope="module")
def loaded():
    """A width-8 random denoiser over the smoke config's 3-scale pyramid (no training needed:
    exactness is a property of the arithmetic, not of the weights)."""
    torch.manual_seed(0)
    pyr = build_pyramid(Image.open(SMALL).convert("RGB"), 10000)
    assert pyr.n_scales == 3                      # scale 0 and two finer scales
    cfg = config_from_dict({"image": {"max_pixels": 10000}, "model": {"dim": 8}})
    return LoadedModel(model=Denoiser(8).eval(), pyramid=pyr, config=cfg, step=0, path=Path("x"))


def close(a, b) -> float:
    return float((torch.stack(list(a)) - torch.stack(list(b))).abs().max())


# -- the halo -------------------------------------------------------------------------------------

def test_receptive_radius_from_layers_matches_a_gradient_probe():
    torch.manual_seed(0)
    net = Denoiser(4)
    assert receptive_radius(net) == probe_radius(net, 41) == 16
    net.blocks[2].depthwise.dilation = (2, 2)            # a wider layer: both must see it
    net.blocks[2].depthwise.padding = (4, 4)
    assert receptive_radius(net) == probe_radius(net, 49) == 18


def test_layers_that_see_the_whole_image_are_refused():
    net = Denoiser(4)
    net.blocks[0].skip = nn.GroupNorm(1, 3)
    with pytest.raises(ValueError, match="mixes the whole image"):
        receptive_radius(net)
    net = Denoiser(4)
    net.out.stride = (2, 2)
    with pytest.raises(ValueError, match="stride"):
        receptive_radius(net)


@pytest.mark.parametrize("length,tile,halo,offset", [(37, 8, 5, 0), (37, 13, 16, 0), (10, 64, 16, 0),
                                                    (37 + 32, 13, 16, 16), (5 + 32, 4, 16, 16)])
def test_spans_cover_each_pixel_once_with_a_full_halo(length, tile, halo, offset):
    core = length - 2 * offset
    sp = spans(length, tile, halo, offset)
    covered = [p for c0, c1, _ in sp for p in range(c0, c1)]
    assert covered == list(range(offset, offset + core))
    size = min(tile + 2 * halo, length)
    for c0, c1, w0 in sp:
        assert 0 <= w0 and w0 + size <= length
        assert c0 - w0 >= halo or w0 == 0                 # a short margin only at the true border
        assert w0 + size - c1 >= halo or w0 + size == length


# -- the network call ------------------------------------------------------------------------------

@pytest.mark.parametrize("max_windows", [1, 5, None])
def test_tiled_network_equals_untiled(max_windows):
    torch.manual_seed(1)
    net = Denoiser(8).eval()
    x, t = torch.randn(2, 3, 37, 53), torch.tensor([3, 70])
    with torch.no_grad():
        ref = net(x, t, 1)
        for tile in TILES:
            assert close(TiledDenoiser(net, tile, max_windows=max_windows)(x, t, 1), ref) < TOL
            assert close(TiledDenoiser(net, tile, max_windows=max_windows)(x, t, torch.tensor([1, 2])),
                         net(x, t, torch.tensor([1, 2]))) < TOL
        assert close(TiledDenoiser(net, 8, halo=4)(x, t, 1), ref) > 1e-3   # a short halo shows


def test_circular_mode_equals_circular_padding_in_every_conv():
    torch.manual_seed(2)
    net = Denoiser(8).eval()
    circ = copy.deepcopy(net)
    for m in circ.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"
    x, t = torch.randn(2, 3, 29, 41), torch.tensor([5, 9])
    with torch.no_grad():
        ref = circ(x, t, 0)
        for tile in [None, *TILES]:
            assert close(TiledDenoiser(net, tile, circular=True)(x, t, 0), ref) < TOL
        small = torch.randn(1, 3, 7, 9)          # smaller than the halo: wraps around several times
        assert close(TiledDenoiser(net, circular=True)(small, t[:1], 0), circ(small, t[:1], 0)) < TOL
        assert close(net(x, t, 0), ref) > 1e-3


def test_wrap_pad_and_wrapped_upsampling():
    x = torch.randn(1, 3, 13, 17)
    assert torch.equal(wrap_pad(x, 2), torch.nn.functional.pad(x, (2, 2, 2, 2), mode="circular"))
    assert torch.equal(wrap_pad(x, 30)[..., 30:43, 30:47], x)
    up, plain = upsample(x, (26, 39), wrap=True), upsample(x, (26, 39))
    assert close(up[..., 2:-2, 2:-2], plain[..., 2:-2, 2:-2]) < TOL     # the grid of F.interpolate
    rolled = upsample(torch.roll(x, (1, 1), (-2, -1)), (26, 34), wrap=True)   # exact ×2: roll by 2
    assert close(torch.roll(upsample(x, (26, 34), wrap=True), (2, 2), (-2, -1)), rolled) < TOL
    assert close(torch.roll(plain, (2, 3), (-2, -1)), upsample(torch.roll(x, (1, 1), (-2, -1)), (26, 39))) > 0.1


class _BatchRecorder(nn.Module):
    """The denoiser, recording how many windows each call gets."""

    def __init__(self, net: Denoiser):
        super().__init__()
        self.net, self.dim, self.batches = net, net.dim, []

    def forward(self, x, t, scale):
        self.batches.append(x.shape[0])
        return self.net(x, t, scale)


def _planned_window_bytes(win_h: int, win_w: int, dim: int) -> int:
    """What the plan counts for one window (tiling's docstring: `_MAPS_PER_WINDOW` live maps of `dim`
    float32 channels): h·w·dim·4 bytes·maps."""
    return win_h * win_w * dim * 4 * tiling._MAPS_PER_WINDOW


def test_a_pass_holds_the_windows_its_budget_plans(monkeypatch):
    net = _BatchRecorder(Denoiser(16).eval())
    tile, win = 16, 16 + 2 * 16                          # cores of 16 px, halo 16 on each side
    planned = _planned_window_bytes(win, win, 16)
    monkeypatch.setattr(tiling, "TILE_PASS_BUDGET", 5 * planned + planned // 2)
    per_pass = tiling.TILE_PASS_BUDGET // planned        # 5
    x, t = torch.randn(2, 3, 96, 112), torch.tensor([3, 70])
    windows = 2 * (96 // tile) * (112 // tile)           # 84
    assert per_pass >= 2 and windows > 4 * per_pass      # a pass of 4x the windows would show
    with torch.no_grad():
        TiledDenoiser(net, tile)(x, t, 0)
    assert net.batches == [per_pass] * (windows // per_pass) + [windows % per_pass]


def _peak_allocated(fn) -> int:
    """Peak bytes held by PyTorch's CPU allocator while `fn` runs (over what was held before):
    every allocation and free the profiler records, oneDNN's buffers included, in time order."""
    from torch.profiler import ProfilerActivity, profile

    try:
        allocation = torch._C._profiler._EventType.Allocation
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except AttributeError as e:   # the profiler's event tree is not public API
        pytest.skip(f"no allocation events from this torch's profiler: {e}")
    events, todo = [], list(roots)
    while todo:
        e = todo.pop()
        todo += e.children
        if e.tag == allocation:
            events.append((e.start_time_ns, e.extra_fields.alloc_size))
    held = peak = 0
    for _, size in sorted(events):
        held += size
        peak = max(peak, held)
    return peak


def test_a_pass_stays_near_its_memory_budget(monkeypatch):
    """One tiled forward measured at the allocator: the passes' peak is the pass budget, give or take
    what the plan does not count. The plan counts 4 maps of `dim` channels per window; measured here
    ~5.2 (width 32; oneDNN's conversions and the 1×1 convolutions' buffers), so a pass takes ~1.3× its
    budget; 1.5× is the bound. A pass that ignored the budget (4× the windows) takes ~5×."""
    torch.manual_seed(0)
    net = Denoiser(32).eval()
    tile, win = 24, 24 + 2 * 16
    planned = _planned_window_bytes(win, win, 32)
    monkeypatch.setattr(tiling, "TILE_PASS_BUDGET", 4 * planned)
    x, t = torch.randn(1, 3, 120, 120), torch.tensor([5])          # 25 windows: passes of 4
    tiled = TiledDenoiser(net, tile)
    with torch.no_grad():
        tiled(x, t, 0)                                             # oneDNN's one-off set-up
        peak = _peak_allocated(lambda: tiled(x, t, 0))
    assert tiling.TILE_PASS_BUDGET / 2 < peak <= 1.5 * tiling.TILE_PASS_BUDGET, peak / tiling.TILE_PASS_BUDGET


# -- every sampler path, same seed ----------------------------------------------------------------

def test_sample_tiled_equals_untiled_every_scale(loaded):
    """Scale 0's DDPM and the finer scales' blended steps, through `generate` (its seeds)."""
    sizes = sample_sizes(loaded.pyramid.sizes_hw, loaded.pyramid.scale_factor, scale_hw=(1, 1.25))
    ref = generate(loaded, 2, sizes, START_T, seed=3, batch_size=2, progress=False, precision="fp32")
    for tile in SAMPLER_TILES:
        out = generate(loaded, 2, sizes, START_T, seed=3, batch_size=2, progress=False, precision="fp32", tile=tile)
        assert close(out, ref) < TOL, tile
    short = tiled_loaded(loaded, 50)
    short.model.halo = 3
    assert close(generate(short, 2, sizes, START_T, seed=3, batch_size=2, progress=False), ref) > TOL


def test_scale0_only_tiled_equals_untiled(loaded):
    sizes = loaded.pyramid.sizes_hw[:1]
    ref = generate(loaded, 1, sizes, [8], seed=5, progress=False, precision="fp32")
    assert close(generate(loaded, 1, sizes, [8], seed=5, progress=False, precision="fp32", tile=13), ref) < TOL


def test_edits_tiled_equal_untiled(loaded):
    """Harmonization (finest-scale denoising) and ROI copy (hooks at every coarse step)."""
    h, w = loaded.pyramid.sizes_hw[-1]
    comp = torch.rand(3, h, w) * 2 - 1
    mask = torch.zeros(1, 1, h, w)
    mask[..., 10:40, 20:50] = 1
    sizes = list(loaded.pyramid.sizes_hw)
    src, tgt = Box(5, 5, 20, 20), [Box(30, 40, 20, 20)]
    ref_h = harmonize(loaded, comp, mask, num=2, seed=1, noise_level=4)
    ref_r = roi_generate(loaded, sizes, START_T, src, tgt, num=1, seed=2)
    for tile in SAMPLER_TILES:
        tl = tiled_loaded(loaded, tile)
        assert close(harmonize(tl, comp, mask, num=2, seed=1, noise_level=4), ref_h) < TOL
        assert close(roi_generate(tl, sizes, START_T, src, tgt, num=1, seed=2), ref_r) < TOL


def test_guided_sampling_tiled_equals_untiled(loaded, tmp_path):
    """Text guidance with the tiny random CLIP (tests/data/tiny-clip.json): hooks on the whole image."""
    import open_clip

    from sinddm.edits import clip as C

    tiny = GOLDEN.parent / "data" / "tiny-clip.json"
    open_clip.add_model_config(tiny)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip", pretrained=None).state_dict(), tmp_path / "clip.pt")
    clip = C.load_clip(C.ClipSpec(str(tiny), "none", str(tmp_path / "clip.pt")), "cpu")
    params = G.GuidanceParams(strength=0.3, fill_factor=0.5, momentum=0.2, guide_from=1, unguided_tail=1)
    sizes = list(loaded.pyramid.sizes_hw)

    def run(model):
        guide = G.TextGuide(clip, "a red castle", generator=torch.Generator().manual_seed(7))
        return G.sample_guided(model, loaded.schedule, sizes, START_T, 2, guide, params,
                               generator=torch.Generator().manual_seed(7))

    ref = run(loaded.model)
    assert close(run(TiledDenoiser(loaded.model, 24)), ref) < TOL


# -- seamless textures ------------------------------------------------------------------------------

def test_seam_z_sees_a_seam():
    steps = torch.randn(3, 40, 50, generator=torch.Generator().manual_seed(0))
    walk = torch.cumsum(steps, dim=-1) * 0.05            # random walks along x: their ends do not meet
    zc, zr = seam_z(walk)
    assert zc > 3 and abs(zr) <= 3                       # rows are independent walks: no seam between them
    loop = torch.cumsum(steps - steps.mean(dim=-1, keepdim=True), dim=-1) * 0.05   # closed walks: ends meet
    assert max(map(abs, seam_z(loop))) <= 3


def test_tileable_output_has_no_seam_and_default_has_one():
    """The shipped model, a short schedule: the 2×2 mosaic's wrap seams of a --tileable sample are within
    the interior's distribution of neighbour differences (|z| ≤ 3 on both axes); the default's are not.
    (At the full schedule the default's seams on this sparse deep-sky model are also within |z| ≤ 3:
    the statistic cannot see them through the black background; README, gallery.)"""
    m = SinDDM.load(SHIPPED, device="cpu", precision="fp32")
    kw = dict(seed=0, start_t=[15, 8, 8], output="tensor", batch_size=2)
    for img in m.sample(2, tileable=True, **kw):
        assert max(map(abs, seam_z(img))) <= 3
    for img in m.sample(2, **kw):
        assert max(map(abs, seam_z(img))) > 3


# -- wiring: CLI, job files, API, the memory plan ----------------------------------------------------

def test_plan_tile_switches_on_where_untiled_does_not_fit(monkeypatch, capsys):
    from sinddm import devices
    from sinddm.errors import UserError

    net, cpu, sizes = Denoiser(48), torch.device("cpu"), [(1000, 4000)]
    untiled = devices.memory_needed(sizes, 48, 1)
    tiled = devices.tiled_memory_needed(sizes, 48, 1, devices.DEFAULT_TILE, receptive_radius(net))
    assert tiled < untiled / 3                         # tiling bounds what the network holds
    monkeypatch.setattr(devices, "available_memory", lambda d: untiled + 1)
    assert devices.plan_tile(sizes, net, 1, cpu) is None and capsys.readouterr().err == ""
    assert devices.plan_tile(sizes, net, 1, cpu, tile=64) == 64
    monkeypatch.setattr(devices, "available_memory", lambda d: untiled // 2)
    assert devices.plan_tile(sizes, net, 1, cpu) == devices.DEFAULT_TILE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiling on" in err
    monkeypatch.setattr(devices, "available_memory", lambda d: tiled // 2)
    with pytest.raises(UserError, match="even tiled"):
        devices.plan_tile(sizes, net, 1, cpu)


def test_cli_tile_matches_untiled_and_bad_tile_is_one_line(tmp_path, capsys):
    from sinddm.cli import main

    base = ["sample", SHIPPED, "--size", "40x56", "--start-t", "3", "2", "2", "--num", "1", "--device", "cpu",
            "--precision", "fp32", "--quiet"]
    assert main([*map(str, base), "--out", str(tmp_path / "a")]) == 0
    assert main([*map(str, base), "--out", str(tmp_path / "b"), "--tile", "17"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / d / "sample_000.png"), dtype=int) for d in "ab")
    assert np.abs(a - b).max() <= 1                    # fp32 equal to 1e-5: at most a rounding step in uint8
    capsys.readouterr()
    assert main([*map(str, base), "--out", str(tmp_path / "c"), "--tile", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tile" in err


def test_job_files_and_api_take_tile(loaded):
    from sinddm.cli.jobs import _job_parser, job_argv

    args = _job_parser().parse_args(job_argv({"sample": {"model": "m", "tile": 64, "tileable": True}}, 0, "j"))
    assert args.tile == 64 and args.tileable
    args = _job_parser().parse_args(job_argv({"edit": {"model": "m", "mode": "style-transfer", "content": "c.png",
                                                       "tile": 32}}, 0, "j"))
    assert args.tile == 32
    api = SinDDM(loaded, torch.device("cpu"), "fp32")
    kw = dict(seed=1, start_t=START_T, output="tensor")
    assert close(api.sample(1, tile=24, **kw), api.sample(1, **kw)) < TOL
    from sinddm.errors import UserError
    with pytest.raises(UserError, match="tile"):
        api.sample(1, tile=0, **kw)
