"""Text guidance (sinddm.edits.guidance, sinddm.cli.edit_text) on a tiny random CLIP and a smoke model.

The CLIP is `tests/data/tiny-clip.json` (1 layer per tower, 32 px input) with random weights
saved by a fixture; nothing here may touch the network (a fixture makes sockets fail).
"""

import socket

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sinddm.edits import clip as C
from sinddm.edits import guidance as G
from sinddm.checkpoint import load_model
from sinddm.cli import main
from sinddm.errors import UserError

from .conftest import CONFIGS, GOLDEN

TINY_CLIP = GOLDEN.parent / "data" / "tiny-clip.json"
SMALL = GOLDEN / "small_120x90.png"
START_T = [4, 4, 8]                  # T[0..2] of the 3-scale smoke model: a few steps per scale
FAST_T = ["--start-t", *map(str, START_T)]


def cli(*args) -> int:
    return main([str(a) for a in args])


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: a connection attempt fails the test


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke") / "run"
    assert cli("train", SMALL, "--config", CONFIGS / "smoke.yaml", "--out", run, "--steps", 4,
               "--device", "cpu", "--seed", 0, "--quiet") == 0
    return run


@pytest.fixture(scope="module")
def loaded(smoke_run):
    return load_model(smoke_run)


@pytest.fixture(scope="module")
def clip_ckpt(tiny_clip_ckpt):
    return tiny_clip_ckpt


@pytest.fixture(scope="module")
def clip_args(clip_ckpt):
    return ["--clip-model", TINY_CLIP, "--clip-checkpoint", clip_ckpt]


@pytest.fixture(scope="module")
def clip(clip_ckpt):
    return C.load_clip(C.ClipSpec(str(TINY_CLIP), "none", str(clip_ckpt)), "cpu")


def make_guide(clip, prompt="a red castle", seed=0):
    return G.TextGuide(clip, prompt, generator=torch.Generator().manual_seed(seed))


def run_guided(loaded, guide, params, seed=0, batch=2, start_t=START_T, on_step=None, **kw):
    return G.sample_guided(loaded.model, loaded.schedule, loaded.pyramid.sizes_hw, start_t, batch, guide, params,
                           generator=torch.Generator().manual_seed(seed), on_step=on_step, **kw)


# ---------------------------------------------------------------------------------------------
# mask and step
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("q", ["0.0", "0.5", "0.8"])
def test_golden_thresholded_gradient(q, golden):
    """Bit-exact: q = 1 - f is the per-sample 'nearest' quantile of the energy, m = e > q (strict,
    so q = 0 leaves the minimum pixel out), g ← max(e - q, 0)·(g / e)."""
    mask, g = G.threshold_gradient(golden["clip/grad_in"].float(), 1 - float(q))
    assert torch.equal(mask, golden[f"clip/thresholded_q{q}/mask"])
    assert torch.equal(g, golden[f"clip/thresholded_q{q}/grad_out"])


@pytest.mark.parametrize("f", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_mask_area_is_the_fill_factor(f):
    g = torch.randn(3, 3, 37, 53, generator=torch.Generator().manual_seed(1))
    mask, gt = G.threshold_gradient(g, f)
    n = 37 * 53
    area = mask.mean(dim=(1, 2, 3))
    assert torch.all((area - f).abs() <= 1.5 / n), area
    assert torch.all(gt[mask.expand_as(g) == 0] == 0)
    assert torch.isfinite(G.threshold_gradient(torch.zeros(1, 3, 4, 4), 0.5)[1]).all()  # e = 0: no NaN


def test_guidance_step_is_normalised_and_masked():
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    g = torch.randn(2, 3, 8, 8)
    m = (torch.rand(2, 1, 8, 8) > 0.5).float()
    out = G.guidance_step(x0, g, m, 0.0)
    assert torch.equal(out, x0)
    out = G.guidance_step(x0 * 0.1, g, m, 0.5)
    outside = m.expand_as(g) == 0
    assert torch.equal(out[outside], (x0 * 0.1)[outside])
    step = (out - x0 * 0.1) * m  # η·δ·g·m with δ = ||x0 m|| / ||g m||: ||step|| = η ||x0 m|| (no clamp here)
    ratio = step.flatten(1).norm(dim=1) / (x0 * 0.1 * m).flatten(1).norm(dim=1)
    torch.testing.assert_close(ratio, torch.full((2,), 0.5), rtol=1e-5, atol=0)
    assert torch.equal(G.guidance_step(x0, torch.zeros_like(g), m, 1.0), x0)  # zero gradient: no NaN


# ---------------------------------------------------------------------------------------------
# CLIP: views, one forward, templates
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("views", ["reference", "aspect", "square"])
def test_all_views_in_one_forward(clip, monkeypatch, views):
    """Every view of every sample shares one size (view 0's: 32×45 for 40×57 at the tiny CLIP's
    32 px in the aspect-keeping modes), so the image tower's transformer runs once per step."""
    calls = []
    transformer = clip.model.visual.transformer
    real = transformer.forward
    monkeypatch.setattr(transformer, "forward", lambda x, *a, **k: calls.append(tuple(x.shape)) or real(x, *a, **k))
    guide = G.TextGuide(clip, "a red castle", generator=torch.Generator().manual_seed(0), views=views)
    x = torch.rand(3, 3, 40, 57) * 2 - 1
    score, g = guide.score_grad(x, "hq")
    vh, vw = (32, 32) if views == "square" else (32, 45)
    patch = clip.model.visual.patch_size
    assert calls == [(3 * G.N_VIEWS, 1 + (vh // patch[0]) * (vw // patch[1]), clip.model.visual.conv1.weight.shape[0])]
    assert score.shape == (3,) and g.shape == x.shape and g.abs().sum() > 0
    assert guide.image_forwards == 1


def test_views_are_augmented_and_differentiable():
    aug = G.ViewAugmenter(size=(32, 32))
    x = torch.rand(2, 3, 30, 50, requires_grad=True)
    v = aug(x, torch.Generator().manual_seed(0))
    assert v.shape == (2 * G.N_VIEWS, 3, 27, 46) and 0 <= v.min() and v.max() <= 1  # long side capped at 46
    assert not torch.allclose(v[1], v[2])
    v.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert len(G.HQ_TEMPLATES) == 14 and len(G.LQ_TEMPLATES) == 26


def test_template_subsets_average_templates(clip):
    guide = make_guide(clip)
    w = guide._template_weights(500, 14, "cpu")
    torch.testing.assert_close(w.sum(1), torch.ones(500))
    k = (w > 0).sum(1)
    assert k.min() >= 1 and k.max() > 7  # sizes spread over 1..n


def test_clip_is_cached_per_process(clip, clip_ckpt):
    again = C.load_clip(C.ClipSpec(str(TINY_CLIP), "none", str(clip_ckpt)), "cpu")
    assert again is clip


# ---------------------------------------------------------------------------------------------
# guided sampling
# ---------------------------------------------------------------------------------------------

def test_guided_steps_mask_and_tail(loaded, clip):
    """Guidance from scale 1; the mask covers f of the image when built, pixels outside it are
    untouched by the guidance step, and the last 3 steps of the finest scale run unguided."""
    guide = make_guide(clip)
    events = []
    params = G.GuidanceParams(strength=0.5, fill_factor=0.25, momentum=0.2, guide_from=1)
    run_guided(loaded, guide, params, on_step=events.append)
    n = loaded.pyramid.n_scales
    assert [(e.scale, e.t) for e in events] == [(s, t) for s in range(n) for t in range(START_T[s] - 1, -1, -1)]
    guided = [(e.scale, e.t) for e in events if e.guided]
    expect = [(s, t) for s in range(1, n) for t in range(START_T[s] - 1, -1, -1) if not (s == n - 1 and t < 3)]
    assert guided == expect
    assert guide.image_forwards == len(expect)  # one CLIP forward per guided step, none elsewhere

    built = [e for e in events if e.guided and e.mask_built]
    assert [(e.scale, e.t) for e in built] == [(1, START_T[1] - 1)]  # built once, then carried
    area = built[0].mask.mean(dim=(1, 2, 3))
    assert torch.all((area - 0.25).abs() <= 1.5 / built[0].mask[0].numel())
    for e in (x for x in events if x.guided):
        outside = (e.mask == 0).expand_as(e.x0_in)
        assert outside.any()
        assert torch.equal(e.x0_out[outside], e.x0_in[outside])
        assert not torch.equal(e.x0_out, e.x0_in)
    finest = [e for e in events if e.guided and e.scale == n - 1]
    assert tuple(finest[0].mask.shape[-2:]) == loaded.pyramid.sizes_hw[-1]  # resized to the finer scale


def test_scale_zero_start_leaves_first_half_unguided(loaded, clip):
    guide = make_guide(clip)
    events = []
    params = G.GuidanceParams(strength=0.3, fill_factor=0.5, guide_from=0)
    start_t = [6, 3, 5]
    run_guided(loaded, guide, params, batch=1, start_t=start_t, on_step=events.append)
    s0 = [e.guided for e in events if e.scale == 0]
    assert s0 == [False] * 3 + [True] * 3
    built = [(e.scale, e.t) for e in events if e.guided and e.mask_built]
    assert built == [(0, 2), (1, 2)]  # scale 0's mask is discarded and rebuilt at scale 1


def test_guided_samples_score_higher(loaded, clip):
    """Guidance ascends the CLIP score: guided samples beat unguided ones with the same noise."""
    params = G.GuidanceParams(strength=1.0, fill_factor=1.0, momentum=0.2, guide_from=1)
    guide = make_guide(clip)
    guided = run_guided(loaded, guide, params, seed=3, batch=3, start_t=[4, 6, 10])
    plain = run_guided(loaded, None, params, seed=3, batch=3, start_t=[4, 6, 10])
    never = run_guided(loaded, make_guide(clip), G.GuidanceParams(guide_from=3), seed=3, batch=3, start_t=[4, 6, 10])
    assert torch.equal(never, plain)  # the guide draws from its own generator: same noise stream
    s_guided, s_plain = guide.score(guided), guide.score(plain)
    assert torch.all(s_guided > s_plain), (s_guided, s_plain)


def test_roi_changes_only_the_box(loaded, clip):
    image = loaded.pyramid.level_tensor(loaded.pyramid.n_scales - 1).unsqueeze(0)
    box = (10, 20, 30, 40)
    out = G.optimize_roi(make_guide(clip), image, box, batch=2, iterations=5)
    inside = torch.zeros_like(image, dtype=torch.bool)
    inside[..., 10:40, 20:60] = True
    assert torch.equal(out[:, ~inside[0]], image.expand(2, -1, -1, -1)[:, ~inside[0]])
    assert not torch.equal(out[inside.expand_as(out)], image.expand_as(out)[inside.expand_as(out)])

    region = torch.zeros(1, 1, *image.shape[-2:])
    region[..., 15:30, 25:50] = 1
    out = G.optimize_roi(make_guide(clip), image, (15, 25, 15, 25), batch=1, region=region, iterations=3)
    changed = (out != image).any(1)
    assert changed.any() and not changed[region[:, 0] == 0].any()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def read_png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def test_cli_modes(smoke_run, loaded, clip_args, tmp_path):
    h, w = loaded.pyramid.sizes_hw[-1]
    common = ["--num", 2, "--batch-size", 2, "--device", "cpu", "--quiet", *clip_args]
    out = tmp_path / "content"
    assert cli("edit", smoke_run, "text-content", "--text", "a castle", "--fill-factor", 0.4, "--strength", 0.5,
               *FAST_T, "--size", "70x100", "--out", out, *common) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "text_content_000.png", "text_content_001.png"]
    assert read_png(out / "text_content_000.png").shape == (70, 100, 3)

    out = tmp_path / "style"
    assert cli("edit", smoke_run, "text-style", "--text", "Monet", *FAST_T, "--out", out, *common) == 0
    assert read_png(out / "text_style_001.png").shape == (h, w, 3)

    out = tmp_path / "transfer"
    assert cli("edit", smoke_run, "text-style-transfer", "--text", "Van Gogh", "--start-t", 6, 5, "--out", out,
               *common) == 0
    assert read_png(out / "text_style_transfer_000.png").shape == (h, w, 3)

    out = tmp_path / "roi"
    assert cli("edit", smoke_run, "text-roi", "--text", "a red ball", "--box", "10,20,30,40", "--iterations", 5,
               "--out", out, *common) == 0
    img = read_png(out / "text_roi_000.png")
    assert img.shape == (h, w, 3)
    mask = tmp_path / "mask.png"
    a = np.zeros((h, w), np.uint8)
    a[5:25, 30:60] = 255
    Image.fromarray(a).save(mask)
    assert cli("edit", smoke_run, "text-roi", "--text", "a red ball", "--mask", mask, "--iterations", 2,
               "--out", tmp_path / "roi_mask", *common) == 0


def test_cli_modes_use_the_design_defaults(smoke_run, loaded, clip, clip_args, tmp_path, monkeypatch):
    """method §6's numbers reach the guided loops when no option is given: text-content (λ 0.2,
    f 0.3, η 0.3, from scale 1), text-style (prompt + ' Style', f 1, η 0.3, λ 0.05, finest scale
    only), text-style-transfer (training level N-2 injected, the finest scale sampled) and
    text-roi (100 steps of 0.1 on the low-quality templates, then the finest scale from t = 3)."""
    import sinddm.samplers as S
    import sinddm.edits.text as T

    seen = []
    real_guide, real_score_grad = T.make_guide, G.TextGuide.score_grad

    def guide(prompt, *args, **kw):
        seen.append(("prompt", prompt))
        return real_guide(prompt, *args, **kw)

    def sample_guided(model, schedule, sizes, start_t, n, guide, params, init=None, first_scale=0, **kw):
        seen.append(("sample", params, first_scale, init))
        return torch.zeros(n, 3, *sizes[-1])

    def optimize_roi(guide, image, box, n, region=None, iterations=100, step=0.1, progress=None):
        seen.append(("roi", iterations, step))
        return image.expand(n, -1, -1, -1)

    def denoise(model, schedule, x, scale, t, **kw):
        seen.append(("denoise", scale, t))
        return x

    def score_grad(self, images, templates="hq"):
        seen.append(("templates", templates))
        return real_score_grad(self, images, templates)

    monkeypatch.setattr(T, "make_guide", guide)
    monkeypatch.setattr(G, "sample_guided", sample_guided)
    monkeypatch.setattr(S, "denoise_at_scale", denoise)
    monkeypatch.setattr(G.TextGuide, "score_grad", score_grad)
    real_optimize_roi = G.optimize_roi
    n = loaded.pyramid.n_scales
    common = ["--num", 1, "--device", "cpu", "--quiet", *clip_args]

    def run(mode, *argv):
        seen.clear()
        assert cli("edit", smoke_run, mode, "--text", "x", *argv, "--out", tmp_path / mode, *common) == 0
        return list(seen)

    (_, prompt), (_, p, first, init) = run("text-content")
    assert prompt == "x" and first == 0 and init is None
    assert (p.momentum, p.fill_factor, p.strength, p.guide_from) == (0.2, 0.3, 0.3, 1)
    (_, prompt), (_, p, first, init) = run("text-style")
    assert prompt == "x Style" and first == 0 and init is None
    assert (p.momentum, p.fill_factor, p.strength, p.guide_from) == (0.05, 1.0, 0.3, n - 1)
    (_, prompt), (_, p, first, init) = run("text-style-transfer")
    assert prompt == "x Style" and first == n - 1 and p.guide_from == n - 1
    assert torch.equal(init, loaded.pyramid.level_tensor(n - 2).unsqueeze(0))
    monkeypatch.setattr(G, "optimize_roi", optimize_roi)
    (_, prompt), roi, den = run("text-roi", "--box", "0,0,16,16")
    assert prompt == "x" and roi == ("roi", 100, 0.1) and den == ("denoise", n - 1, 3)
    seen.clear()  # and the region is optimised on the low-quality templates, every iteration
    real_optimize_roi(make_guide(clip), loaded.pyramid.level_tensor(n - 1).unsqueeze(0), (0, 0, 16, 16), 1,
                      iterations=2)
    assert seen == [("templates", "lq")] * 2


def test_cli_run_loads_clip_once(smoke_run, clip_args, tmp_path, monkeypatch):
    import open_clip

    created = []
    real = open_clip.create_model
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: created.append(a) or real(*a, **k))
    monkeypatch.setattr(C, "_CLIP_CACHE", {})
    clip_opts = {"clip_model": str(clip_args[1]), "clip_checkpoint": str(clip_args[3])}
    base = {"model": str(smoke_run), "num": 1, "device": "cpu", "quiet": True, "start_t": START_T, **clip_opts}
    jobs = [{"edit": {**base, "mode": "text-content", "text": "a castle", "out": str(tmp_path / "a")}},
            {"edit": {**base, "mode": "text-style", "text": "Monet", "out": str(tmp_path / "b")}}]
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(jobs))
    assert cli("run", path) == 0
    assert len(created) == 1
    assert (tmp_path / "a" / "text_content_000.png").is_file() and (tmp_path / "b" / "grid.png").is_file()


def test_offline_without_weights_is_one_line(smoke_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setattr(C, "_CLIP_CACHE", {})
    rc = cli("edit", smoke_run, "text-content", "--text", "a castle", "--device", "cpu", "--out", tmp_path / "o")
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "ViT-B-32" in err and "--clip-checkpoint" in err and "ViT-B-32.pt" in err
    assert not (tmp_path / "o").exists()


def _no_clip_download(monkeypatch, tmp_path, fake=None):
    """No cached CLIP weights, HF_HUB_OFFLINE unset, and every download function of open_clip and
    huggingface_hub replaced by `fake` (default: one that records the call and fails)."""
    import huggingface_hub
    import open_clip.factory
    import open_clip.pretrained

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "NO_PROXY", "no_proxy",
                *(f"{k}_proxy" for k in ("http", "https", "all", "HTTP", "HTTPS", "ALL"))):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setattr(C, "_CLIP_CACHE", {})
    monkeypatch.setattr(C, "_REACHABLE", {})
    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise OSError("download attempted")

    for mod, name in [(open_clip.factory, "download_pretrained"), (open_clip.pretrained, "download_pretrained"),
                      (open_clip.factory, "download_pretrained_from_hf"),
                      (open_clip.pretrained, "download_pretrained_from_hf"),
                      (open_clip.pretrained, "download_pretrained_from_url"),
                      (open_clip.pretrained, "hf_hub_download"), (huggingface_hub, "hf_hub_download")]:
        if hasattr(mod, name):
            monkeypatch.setattr(mod, name, fake or refuse)
    return calls


def test_unreachable_hub_without_offline_is_one_line(smoke_run, tmp_path, monkeypatch, capsys):
    """HF_HUB_OFFLINE unset and the hub unreachable: one line at once, no download attempted
    (which would retry for ~50 s and log ~45 lines), and HF_ENDPOINT is the host checked."""
    calls = _no_clip_download(monkeypatch, tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid:8443/")
    looked_up = []

    def no_dns(host, port, *a, **k):
        looked_up.append((host, port))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    rc = cli("edit", smoke_run, "text-style", "--text", "Van Gogh", "--num", 1, "--device", "cpu",
             "--out", tmp_path / "o")
    err = capsys.readouterr().err.strip()
    assert calls == []                                    # failed fast: no download was tried
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "ViT-B-32" in err and "--clip-checkpoint" in err and "hub.example.invalid is unreachable" in err
    assert looked_up and {h for h, _ in looked_up} == {"hub.example.invalid"} and looked_up[0][1] == 8443
    assert not (tmp_path / "o").exists()


def test_failed_download_is_one_line_and_quiet(smoke_run, tmp_path, monkeypatch, capsys):
    """The hub answers the reachability check but the download fails: huggingface_hub's retry
    warnings and open_clip's root-logger error are silenced, and the logging state is restored."""
    import logging

    def failing(*a, **k):
        calls.append(a)
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError("connection reset")

    calls = _no_clip_download(monkeypatch, tmp_path, failing)
    monkeypatch.setattr(C, "_reachable", lambda host, port, timeout=None: True)
    records = []
    probe = logging.Handler()
    probe.emit = records.append
    root = logging.getLogger()
    root.addHandler(probe)
    before = (list(root.handlers), logging.root.manager.disable)
    try:
        rc = cli("edit", smoke_run, "text-style", "--text", "Van Gogh", "--num", 1, "--device", "cpu",
                 "--out", tmp_path / "o")
        after = (list(root.handlers), logging.root.manager.disable)
    finally:
        root.removeHandler(probe)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and calls
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "the download failed" in err, err
    assert records == []                                  # nothing logged during the attempt
    assert after == before


@pytest.mark.parametrize("argv, needle", [
    (["text-content", "--text", " "], "--text"),
    (["text-content", "--text", "x", "--fill-factor", "1.5"], "--fill-factor"),
    (["text-content", "--text", "x", "--guide-from", "3"], "--guide-from"),
    (["text-roi", "--text", "x", "--box", "0,0,500,10"], "--box"),
    (["text-roi", "--text", "x", "--mask", "missing.png"], "--mask"),
    (["text-style", "--text", "x", "--clip-model", "no-such-model"], "--clip-model"),
    (["text-style", "--text", "x", "--clip-checkpoint", "missing.pt"], "--clip-checkpoint"),
])
def test_bad_inputs(smoke_run, tmp_path, capsys, argv, needle):
    rc = cli("edit", smoke_run, *argv, "--device", "cpu", "--out", tmp_path / "o")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_view_zero_is_224_on_the_short_side_with_the_long_side_capped():
    """method §6's view 0 as the reference makes it: torchvision's Resize(224, max_size=320) (the
    short side to 224, the long side int(224·long/short); past 320, the long side 320 and the
    short one int(320·224/long)); 'square' mode then squeezes every view to CLIP's 224×224."""
    aug = G.ViewAugmenter()
    for hw, want in [((186, 248), (224, 298)), ((248, 186), (298, 224)), ((91, 547), (53, 320)),
                     ((167, 298), (179, 320)), ((224, 224), (224, 224)), ((100, 100), (224, 224))]:
        assert aug.view_size(*hw) == want, hw
        assert tuple(aug.view0(torch.rand(1, 3, *hw)).shape[-2:]) == want, hw
    views = aug(torch.rand(2, 3, 91, 547), generator=torch.Generator().manual_seed(0))
    assert views.shape == (2 * G.N_VIEWS, 3, 53, 320)
    square = G.ViewAugmenter(mode="square")
    assert tuple(square.base(torch.rand(1, 3, 186, 248)).shape[-2:]) == (224, 299)   # antialiased, then squeezed
    views = square(torch.rand(2, 3, 91, 547), generator=torch.Generator().manual_seed(0))
    assert views.shape == (2 * G.N_VIEWS, 3, 224, 224)


def test_api_text_modes_equal_the_cli(smoke_run, clip_ckpt, tmp_path):
    """`SinDDM.text_*` give the CLI's pictures for the same seed (one library function serves both)."""
    from sinddm import SinDDM

    model = SinDDM.load(smoke_run, device="cpu", precision="fp32")
    spec = C.ClipSpec(str(TINY_CLIP), C.DEFAULT_CLIP_PRETRAINED, str(clip_ckpt))
    common = ["--num", 1, "--seed", 3, "--device", "cpu", "--precision", "fp32", "--quiet",
              "--clip-model", TINY_CLIP, "--clip-checkpoint", clip_ckpt]
    cases = [
        ("text-content", [*FAST_T, "--guide-from", 1, "--size", "70x100"],
         lambda: model.text_content("a castle", size=(70, 100), start_t=START_T, guide_from=1, seed=3, clip=spec)),
        ("text-style", FAST_T, lambda: model.text_style("a castle", start_t=START_T, seed=3, clip=spec)),
        ("text-roi", ["--box", "10,20,30,40", "--iterations", 3],
         lambda: model.text_roi("a castle", box=(10, 20, 30, 40), iterations=3, seed=3, clip=spec)),
        ("text-roi", ["--mask", tmp_path / "region.png", "--iterations", 2, "--step-size", 0.3],
         lambda: model.text_roi("a castle", mask=tmp_path / "region.png", iterations=2, step_size=0.3, seed=3,
                                clip=spec)),
    ]
    h, w = model.size
    region = np.zeros((h, w), np.uint8)
    region[12:40, 25:61] = 255   # its bounding box's last row and column count (the box is 28x36)
    Image.fromarray(region).save(tmp_path / "region.png")
    for mode, extra, api in cases:
        out = tmp_path / f"{mode}-{len(extra)}"
        argv = ["edit", smoke_run, mode, "--text", "a castle", *extra, "--out", out, *common]
        assert cli(*argv) == 0
        prefix = mode.replace("-", "_")
        np.testing.assert_array_equal(np.asarray(api()[0]), read_png(out / f"{prefix}_000.png"), err_msg=mode)
    with pytest.raises(UserError, match="^text: empty"):
        model.text_style("  ", clip=spec)
