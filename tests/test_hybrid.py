"""Hybrid and training-free models (docs/method.md §11) through every door: the config key
`model.trained_scales`, training on the K coarsest scales only, model files that record K, a
picture given where a model goes (`sinddm sample PICTURE`, `SinDDM.from_image`), and every mode,
tiling and `--tileable` on both kinds. Tiny pictures and few steps: nothing judges quality."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sinddm import SinDDM
from sinddm.checkpoint import load_model
from sinddm.cli import main
from sinddm.config import config_from_dict
from sinddm.errors import UserError
from sinddm.hybrid import HybridDenoiser
from sinddm.image_io import load_rgb
from sinddm.samplers import sample_pyramid
from sinddm.sources import open_model
from sinddm.training import Trainer

from .conftest import ASSETS, CONFIGS

PHOTO = ASSETS / "rocket.jpg"
MAX_PIXELS = 5000                          # rocket.jpg → 2 scales: 45x68 and 57x86
PIX = ["--max-pixels", MAX_PIXELS]
SHORT_T = ["--start-t", "4", "2"]          # T[0], T[1]: a few denoiser calls per batch
COMMON = ["--device", "cpu", "--quiet", "--num", "2", "--batch-size", "2"]
TINY_CLIP = __import__("pathlib").Path(__file__).parent / "data" / "tiny-clip.json"


def cli(*args) -> int:
    return main([str(a) for a in args])


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory):
    """A hybrid (network on scale 0 of 2) trained 6 steps on the photo."""
    root = tmp_path_factory.mktemp("hybrid")
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    cfg["image"]["max_pixels"] = MAX_PIXELS
    cfg["model"]["trained_scales"] = 1
    cfg["train"].update(grid_samples=0, steps=6, checkpoint_every=6, log_every=2, ema_start=2, lr_milestones=[4])
    (root / "h.yaml").write_text(yaml.safe_dump(cfg))
    out = root / "run"
    assert cli("train", PHOTO, "--config", root / "h.yaml", "--out", out, "--seed", 0, "--device", "cpu",
               "--quiet", "--precision", "fp32") == 0
    return out


@pytest.fixture(scope="module", params=["hybrid", "training-free"])
def model_arg(request, hybrid_run):
    """What the CLI's MODEL names for either kind, and the options that go with it."""
    return (hybrid_run, []) if request.param == "hybrid" else (PHOTO, PIX)


# -- the config key and training ---------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, "2", 1.5, True])
def test_trained_scales_must_be_a_whole_number_from_zero(bad):
    with pytest.raises(UserError, match="model.trained_scales"):
        config_from_dict({"model": {"trained_scales": bad}})


def test_training_draws_only_the_network_scales(tmp_path):
    cfg = config_from_dict({"image": {"max_pixels": MAX_PIXELS}, "model": {"dim": 8, "trained_scales": 1}})
    from sinddm.pyramid import build_pyramid

    pyr = build_pyramid(load_rgb(PHOTO), MAX_PIXELS)
    assert pyr.n_scales == 2
    trainer = Trainer(cfg, pyr, tmp_path, "cpu")
    assert {trainer.draw_batch()[0] for _ in range(40)} == {0}
    paper = Trainer(config_from_dict({"image": {"max_pixels": MAX_PIXELS}, "model": {"dim": 8}}), pyr, tmp_path, "cpu")
    assert {paper.draw_batch()[0] for _ in range(40)} == {0, 1}


@pytest.mark.parametrize("k, message", [(3, "beyond the picture's 2 scales"), (0, "nothing to train")])
def test_training_refuses_k_beyond_the_pyramid_or_zero(k, message, tmp_path):
    cfg = config_from_dict({"image": {"max_pixels": MAX_PIXELS}, "model": {"dim": 8, "trained_scales": k}})
    from sinddm.pyramid import build_pyramid

    with pytest.raises(UserError, match=message):
        Trainer(cfg, build_pyramid(load_rgb(PHOTO), MAX_PIXELS), tmp_path, "cpu")


def test_the_model_file_records_k_and_loads_as_a_hybrid(hybrid_run):
    loaded = load_model(hybrid_run)
    assert loaded.config.model.trained_scales == 1
    net = loaded.model
    assert isinstance(net, HybridDenoiser) and net.trained_scales == 1 and net.network is not None
    assert net.patches.scales == [1]
    # the pyramid inside the file is the patch denoiser's source: the same as a fresh one
    fresh = open_model(PHOTO, max_pixels=MAX_PIXELS)
    for a, b in zip(loaded.pyramid.levels, fresh.pyramid.levels):
        assert np.array_equal(a, b)


def test_the_network_serves_the_coarse_scales_and_the_patches_the_rest(hybrid_run):
    loaded = load_model(hybrid_run)
    calls = []
    net, patches = loaded.model.network, loaded.model.patches
    net_fwd, patch_fwd = net.forward, patches.forward
    net.forward = lambda x, t, s: calls.append(("net", s, None)) or net_fwd(x, t, s)
    patches.forward = lambda x, t, s, blurry=None, gamma=None, origin=None: calls.append(("patch", s, blurry)) or \
        patch_fwd(x, t, s, blurry=blurry, gamma=gamma, origin=origin)
    sample_pyramid(loaded.model, loaded.schedule, loaded.gammas, loaded.pyramid.sizes_hw, [2, 2], 1,
                   generator=torch.Generator().manual_seed(0))
    assert [(k, s) for k, s, _ in calls] == [("net", 0), ("net", 0), ("patch", 1), ("patch", 1)]
    assert all(b is not None and b.shape[-2:] == loaded.pyramid.sizes_hw[1] for k, _, b in calls if k == "patch")


# -- a picture where a model goes -------------------------------------------------------------------

def test_sample_from_a_picture_equals_from_image(tmp_path):
    out = tmp_path / "s"
    assert cli("sample", PHOTO, *PIX, *SHORT_T, "--seed", 3, "--out", out, *COMMON) == 0
    model = SinDDM.from_image(PHOTO, max_pixels=MAX_PIXELS, device="cpu")
    assert "training-free" in repr(model)
    ours = model.sample(2, start_t=[4, 2], seed=3, output="tensor")
    from sinddm.image_io import to_uint8

    for i, x in enumerate(ours):
        assert np.array_equal(read_png(out / f"sample_{i:03d}.png"), to_uint8(x))
    assert read_png(out / "sample_000.png").shape == (57, 86, 3)


def test_from_image_takes_arrays_and_pil_alike():
    a = SinDDM.from_image(np.asarray(load_rgb(PHOTO)), max_pixels=MAX_PIXELS, device="cpu")
    b = SinDDM.from_image(load_rgb(PHOTO), max_pixels=MAX_PIXELS, device="cpu")
    x = a.sample(1, start_t=[3, 2], seed=1, output="tensor")[0]
    y = b.sample(1, start_t=[3, 2], seed=1, output="tensor")[0]
    assert torch.equal(x, y)


@pytest.mark.parametrize("argv, message", [
    (["sample", ASSETS / "models" / "hubble-small.safetensors", "--max-pixels", "5000"], "--max-pixels: applies"),
    (["sample", PHOTO, "--max-pixels", "1000"], "below the 42 px"),
    (["sample", PHOTO, "--max-pixels", "0"], "--max-pixels must be >= 1"),
])
def test_bad_pictures_and_caps_are_one_line(argv, message, tmp_path, capsys):
    assert cli(*argv, "--out", tmp_path / "o", "--device", "cpu", "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_too_small_a_picture_is_refused(tmp_path, capsys):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(small)
    assert cli("sample", small, "--out", tmp_path / "o", "--device", "cpu", "--quiet") == 2
    assert "too small" in capsys.readouterr().err


# -- every mode on both kinds ----------------------------------------------------------------------

def test_sample_sizes_aspect_ratios_and_start_level(model_arg, tmp_path):
    model, extra = model_arg
    assert cli("sample", model, *extra, *SHORT_T, "--scale-hw", 1, 1.5, "--out", tmp_path / "a", *COMMON) == 0
    assert read_png(tmp_path / "a" / "sample_001.png").shape == (57, 129, 3)
    assert cli("sample", model, *extra, *SHORT_T, "--size", "50x60", "--out", tmp_path / "b", *COMMON) == 0
    assert read_png(tmp_path / "b" / "sample_000.png").shape == (50, 60, 3)
    assert cli("sample", model, *extra, "--start-level", 1, "--start-t", 3, "--out", tmp_path / "c", *COMMON) == 0


def test_tiles_give_the_same_pictures(model_arg, tmp_path):
    model, extra = model_arg
    assert cli("sample", model, *extra, *SHORT_T, "--out", tmp_path / "whole", *COMMON) == 0
    assert cli("sample", model, *extra, *SHORT_T, "--tile", 24, "--out", tmp_path / "tiled", *COMMON) == 0
    for i in range(2):
        a = read_png(tmp_path / "whole" / f"sample_{i:03d}.png").astype(int)
        b = read_png(tmp_path / "tiled" / f"sample_{i:03d}.png").astype(int)
        assert np.abs(a - b).max() <= 1


def test_tileable_wraps_around(model_arg, tmp_path):
    model, extra = model_arg
    assert cli("sample", model, *extra, *SHORT_T, "--tileable", "--out", tmp_path / "t", *COMMON) == 0
    assert read_png(tmp_path / "t" / "sample_000.png").shape == (57, 86, 3)


def test_image_edits(model_arg, tmp_path):
    model, extra = model_arg
    finest = np.asarray(load_rgb(PHOTO).resize((86, 57)))
    composite = finest.copy()
    composite[20:35, 30:50] = [220, 40, 40]
    mask = np.zeros((57, 86), np.uint8)
    mask[20:35, 30:50] = 255
    Image.fromarray(composite).save(tmp_path / "c.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert cli("edit", model, *extra, "harmonize", "--composite", tmp_path / "c.png", "--mask", tmp_path / "m.png",
               "--out", tmp_path / "h", *COMMON) == 0
    out = read_png(tmp_path / "h" / "harmonize_000.png")
    assert np.array_equal(out[:2], composite[:2])  # far from the mask: the composite itself
    assert cli("edit", model, *extra, "style-transfer", "--content", ASSETS / "hubble.jpg", "--noise-level", 3,
               "--out", tmp_path / "s", *COMMON) == 0
    assert cli("edit", model, *extra, "roi-copy", "--source", "10,10,16,16", "--target", "30,50,16,16",
               *SHORT_T, "--out", tmp_path / "r", *COMMON) == 0
    assert read_png(tmp_path / "r" / "roi_copy_001.png").shape == (57, 86, 3)


def test_text_modes(model_arg, tiny_clip_ckpt, tmp_path):
    model, extra = model_arg
    clip = ["--clip-model", TINY_CLIP, "--clip-checkpoint", tiny_clip_ckpt]
    runs = [("text-content", ["--text", "a castle", *SHORT_T]),
            ("text-style", ["--text", "Monet", *SHORT_T]),
            ("text-style-transfer", ["--text", "Van Gogh", "--start-t", 3]),
            ("text-roi", ["--text", "a ball", "--box", "5,5,20,20", "--iterations", 2])]
    for mode, args in runs:
        out = tmp_path / mode
        assert cli("edit", model, *extra, mode, *args, *clip, "--out", out, *COMMON) == 0, mode
        assert read_png(out / f"{mode.replace('-', '_')}_001.png").shape == (57, 86, 3)


def test_job_file_and_eval(model_arg, tmp_path):
    model, extra = model_arg
    job = {"sample": {"model": str(model), "num": 1, "start_t": [3, 2], "out": str(tmp_path / "j"),
                      "device": "cpu", "quiet": True}}
    if extra:
        job["sample"]["max_pixels"] = MAX_PIXELS
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump([job]))
    assert cli("run", tmp_path / "jobs.yaml") == 0
    assert (tmp_path / "j" / "sample_000.png").is_file()
    assert cli("eval", model, *extra, "--num", 2, "--start-t", 3, 2, "--out", tmp_path / "e", "--device", "cpu",
               "--quiet") == 0
    assert (tmp_path / "e" / "metrics.json").is_file()


def test_on_a_torus_the_hybrid_commutes_with_shifts(hybrid_run):
    """--tileable: with circular padding, shifting the input (and x̃) shifts the output, at the
    network's scale and at the patch denoiser's."""
    from sinddm.tiling import TiledDenoiser

    loaded = load_model(hybrid_run)
    loaded.model.patches.candidates = None    # exact: the approximate search grid moves only in whole grid steps
    torus = TiledDenoiser(loaded.model, circular=True)
    gen = torch.Generator().manual_seed(0)
    for s, hw in enumerate(loaded.pyramid.sizes_hw):
        x = torch.randn(1, 3, *hw, generator=gen)
        b = torch.randn(1, 3, *hw, generator=gen).clamp(-1, 1)
        t = torch.tensor([30])
        kw = {"blurry": b, "gamma": torch.tensor(0.3)} if s else {}
        roll = lambda z: z.roll((7, 11), (-2, -1))  # noqa: E731
        out = torus(x, t, s, **kw)
        shifted = torus(roll(x), t, s, **({k: roll(v) if k == "blurry" else v for k, v in kw.items()}))
        torch.testing.assert_close(shifted, roll(out), atol=1e-4, rtol=0)


def test_the_studio_samples_and_edits_a_picture(tmp_path):
    """The studio on a picture (training-free): a panel's pictures, and its command writes them."""
    import shlex

    from sinddm.app.jobs import Studio

    model = SinDDM.from_image(PHOTO, max_pixels=MAX_PIXELS, device="cpu")
    studio = Studio(model, str(PHOTO), tmp_path / "studio", device_arg="cpu", max_pixels=MAX_PIXELS)
    r = studio.roi_copy("10,10,16,16", "30,50,16,16", 1, 4)
    assert r.images[0].size == (86, 57) and f"--max-pixels {MAX_PIXELS}" in r.command
    argv = shlex.split(r.command)[1:]
    assert main(argv) == 0
    out = Path(argv[argv.index("--out") + 1])
    assert np.array_equal(read_png(out / "roi_copy_000.png"), np.asarray(r.images[0]))
