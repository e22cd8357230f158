"""Quality metrics (sinddm.eval.metrics) on constructed cases, and `sinddm eval` / `eval-suite` end to end.

No InceptionV3 weights are downloaded or needed: SIFID runs on randomly initialised
weights saved to a temporary file, and TORCH_HOME points at an empty folder so that a
weight file in the real hub cache cannot change what the tests see.
"""

import csv
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sinddm.eval import inception
from sinddm.eval import metrics as M
from sinddm.checkpoint import load_model
from sinddm.cli import main

from .conftest import CONFIGS, GOLDEN

LAND = GOLDEN / "land_248x186.png"
SMALL = GOLDEN / "small_120x90.png"


def cli(*args) -> int:
    return main([str(a) for a in args])


def load(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def shuffle_tiles(a: np.ndarray, t: int = 16, seed: int = 0) -> np.ndarray:
    """The picture cut into t×t tiles, put back in a random order (the ragged border stays)."""
    h, w = a.shape[0] // t * t, a.shape[1] // t * t
    tiles = a[:h, :w].reshape(h // t, t, w // t, t, 3).transpose(0, 2, 1, 3, 4).reshape(-1, t, t, 3)
    tiles = tiles[np.random.default_rng(seed).permutation(len(tiles))]
    out = a.copy()
    out[:h, :w] = tiles.reshape(h // t, w // t, t, t, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)
    return out


def collage(a: np.ndarray, seed: int = 1) -> np.ndarray:
    """2×2 blocks, each a chunk copied from a random place of `a`: heavy copying."""
    rng = np.random.default_rng(seed)
    h, w = a.shape[:2]
    bh, bw = h // 2, w // 2
    out = a.copy()
    for by in range(2):
        for bx in range(2):
            y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            out[by * bh:(by + 1) * bh, bx * bw:(bx + 1) * bw] = a[y:y + bh, x:x + bw]
    return out


def noise_like(a: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, a.shape, dtype=np.uint8)


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """torch.hub.get_dir() → an empty folder: no weights are found unless a test puts them there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def land():
    return load(LAND)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A pytorch-fid-format state dict of the whole network, randomly initialised."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(inception.FIDInceptionV3().state_dict(), path)
    return path


# ---------------------------------------------------------------------------------------
# pixel diversity
# ---------------------------------------------------------------------------------------

def test_pixel_diversity_of_identical_samples_is_zero(land):
    assert M.pixel_diversity([land] * 4, land) == 0.0
    assert M.pixel_diversity([land, shuffle_tiles(land)], land) > 0.1


def test_pixel_diversity_closed_form():
    """Black and white samples: per-pixel std 127.5; a half-black half-white reference: std 127.5."""
    black, white = np.zeros((8, 10, 3), np.uint8), np.full((8, 10, 3), 255, np.uint8)
    ref = np.concatenate([black[:4], white[:4]])
    assert M.pixel_diversity([black, white], ref) == pytest.approx(1.0, abs=1e-12)
    assert M.pixel_diversity([black, white, black, white], ref[:, :5]) == pytest.approx(1.0, abs=1e-12)
    # grey is BT.601 luma: a pure-red sample against black differs by 0.299 * 255 in grey
    red = black.copy()
    red[..., 0] = 255
    assert M.pixel_diversity([black, red], ref) == pytest.approx(0.299, abs=1e-9)


# ---------------------------------------------------------------------------------------
# patch SWD
# ---------------------------------------------------------------------------------------

def test_swd_separates_self_shuffle_and_noise(land):
    swd = M.PatchSWD(land)
    assert swd.n_levels == 4
    self_, shuffled, noise = swd([land, shuffle_tiles(land), noise_like(land)])
    assert self_ == 0.0
    assert shuffled < 0.1
    assert noise > 0.15
    assert noise > 2.5 * shuffled


def test_swd_is_deterministic_for_a_seed(land):
    x = [shuffle_tiles(land, seed=3)]
    a = M.PatchSWD(land, M.SWDSettings(seed=5))(x)
    b = M.PatchSWD(land, M.SWDSettings(seed=5))(x)
    c = M.PatchSWD(land, M.SWDSettings(seed=6))(x)
    assert a == b
    assert a != c and c[0] == pytest.approx(a[0], rel=0.3)  # other directions, same picture


def test_swd_compares_pictures_of_other_sizes(land):
    """Sample and reference patch counts differ: quantile matching, not a shape error."""
    swd = M.PatchSWD(land)
    wide = np.concatenate([land, land[:, ::-1]], axis=1)   # same patches (mirrored), twice as many
    crop = land[20:150, 30:200]
    levels = swd.per_level([wide, crop])
    assert levels.shape == (2, 4) and torch.isfinite(levels).all()
    assert swd([wide])[0] < 0.05 and swd([crop])[0] < 0.1
    assert swd([wide])[0] < swd([noise_like(wide)])[0] / 4


def test_quantile_matching():
    a = torch.arange(10.0).view(1, 10)
    assert torch.equal(M.resample_sorted(a, 10), a)
    np.testing.assert_allclose(M.resample_sorted(a, 5).numpy(), [[0.5, 2.5, 4.5, 6.5, 8.5]])
    # W1 between U{0..9} and the same values shifted by 1: 1, whatever the counts
    b = torch.arange(1.0, 11.0, 0.5).view(1, 20)  # 20 values spread over [1, 10.5]
    assert float(M.sliced_w1_sorted(a, a + 1)) == pytest.approx(1.0)
    assert float(M.sliced_w1_sorted(a, b)) == pytest.approx(float(M.sliced_w1_sorted(b, a)))


# ---------------------------------------------------------------------------------------
# copying
# ---------------------------------------------------------------------------------------

def test_copy_measure_self_shuffle_noise_collage(land):
    cm = M.CopyMeasure(land)
    self_, shuffled, noise, chunks = cm([land, shuffle_tiles(land), noise_like(land), collage(land)])
    assert self_ == {"copy_mean_region": 1.0, "copy_large_fraction": 1.0, "copy_max_region": 1.0}
    assert shuffled["copy_mean_region"] < 0.02 and shuffled["copy_large_fraction"] == 0.0
    assert noise["copy_large_fraction"] == 0.0   # many positions matching one "hub" patch do not chain
    assert chunks["copy_large_fraction"] > 0.7 and chunks["copy_max_region"] > 0.15
    # one picture in, one dict out; the same numbers
    assert cm(shuffle_tiles(land)) == shuffled


def test_coherent_regions_on_constructed_fields():
    off = torch.zeros(4, 6, 2, dtype=torch.long)
    off[:, 3:] = torch.tensor([5, -2])                      # two blocks copied from different places
    labels = M.coherent_regions(off, tolerance=1)
    assert len(labels.unique()) == 2
    stats = M.region_stats(labels, 0.05)[0]
    assert stats == {"copy_mean_region": 0.5, "copy_large_fraction": 1.0, "copy_max_region": 0.5}
    assert len(M.coherent_regions(off, tolerance=7).unique()) == 1
    # every position matched to one reference patch: offsets -p, all regions single positions
    gy, gx = torch.meshgrid(torch.arange(4), torch.arange(6), indexing="ij")
    hub = torch.stack([-gy, -gx], -1)
    assert len(M.coherent_regions(hub, tolerance=1).unique()) == 24
    # batched: labels unique across pictures
    both = M.coherent_regions(torch.stack([off, hub]), tolerance=1)
    assert both.shape == (2, 4, 6) and len(both.unique()) == 26


# ---------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------

def test_frechet_distance_of_identical_statistics_is_zero():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(500, 40, generator=g) @ torch.randn(40, 40, generator=g)
    mu, sigma = M.gaussian_stats(f)
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * float(sigma.trace())
    # rank-deficient covariances (fewer vectors than dimensions) too
    mu, sigma = M.gaussian_stats(f[:20])
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-6 * float(sigma.trace())


def test_frechet_distance_closed_forms():
    # diagonal covariances: |m1-m2|² + Σ (√a - √b)²
    m1, m2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 4.0, 1.0])
    want = float(((m1 - m2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert M.frechet_distance(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(want, rel=1e-12)
    # non-commuting 2×2: tr √(S1 S2) = √(tr(S1 S2) + 2 √det(S1 S2))
    s1 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    p = s1 @ s2
    tr_sqrt = math.sqrt(float(p.trace()) + 2 * math.sqrt(float(torch.linalg.det(p))))
    want = float(s1.trace() + s2.trace()) - 2 * tr_sqrt
    assert M.frechet_distance(torch.zeros(2), s1, torch.zeros(2), s2) == pytest.approx(want, rel=1e-10)
    # from samples: 1-D Gaussians N(0, 1) and N(3, 2²): (0-3)² + (1-2)² = 10
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200_000, 1, generator=g), 3 + 2 * torch.randn(200_000, 1, generator=g)
    assert M.frechet_distance(*M.gaussian_stats(x), *M.gaussian_stats(y)) == pytest.approx(10.0, rel=0.01)


# ---------------------------------------------------------------------------------------
# InceptionV3 and SIFID
# ---------------------------------------------------------------------------------------

def test_inception_matches_the_published_layout():
    """Keys and shapes are torchvision's Inception3 (1008 classes, no aux head), i.e. the
    layout of pytorch-fid's weight file; the SIFID layers compute the same function."""
    from torchvision.models.inception import Inception3

    mine = inception.FIDInceptionV3().eval()
    ref = Inception3(num_classes=1008, aux_logits=False, init_weights=False).eval()
    assert inception.weight_keys(mine) == inception.weight_keys(ref)
    assert len(inception.weight_keys(mine)) == 472
    state = mine.state_dict()
    g = torch.Generator().manual_seed(0)
    for k, v in state.items():
        if k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("running_mean") or k.endswith("bn.bias"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
    mine.load_state_dict(state)
    ref.load_state_dict(state)
    x = torch.rand(2, 3, 80, 96, generator=g) * 2 - 1
    with torch.no_grad():
        out = mine(x, taps=["pre_pool1", "pre_pool2"])
        r1 = ref.Conv2d_2b_3x3(ref.Conv2d_2a_3x3(ref.Conv2d_1a_3x3(x)))
        r2 = ref.Conv2d_4a_3x3(ref.Conv2d_3b_1x1(ref.maxpool1(r1)))
        assert out["pre_pool1"].shape == (2, 64, 37, 45) and torch.equal(out["pre_pool1"], r1)
        assert out["pre_pool2"].shape == (2, 192, 16, 20) and torch.equal(out["pre_pool2"], r2)
        deep = mine(torch.zeros(1, 3, 75, 75), taps=["mixed_6e", "pool3", "logits"])
    assert {k: tuple(v.shape) for k, v in deep.items()} == {
        "mixed_6e": (1, 768, 3, 3), "pool3": (1, 2048), "logits": (1, 1008)}


def test_inception_loader_checks_keys_and_shapes(random_weights, tmp_path):
    net = inception.load_inception(random_weights, "pre_pool2")
    assert set(inception.weight_keys(net)) == {k for k in inception.weight_keys(inception.FIDInceptionV3("pre_pool2"))}
    assert not hasattr(net, "Mixed_5b")  # only what SIFID needs is built
    state = torch.load(random_weights, weights_only=True)
    broken = dict(state)
    del broken["Conv2d_4a_3x3.bn.running_var"]
    torch.save(broken, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="Conv2d_4a_3x3.bn.running_var"):
        inception.load_inception(tmp_path / "missing.pth", "pre_pool2")
    inception.load_inception(tmp_path / "missing.pth", "pre_pool1")  # that layer is not needed there
    broken = dict(state)
    broken["Conv2d_1a_3x3.conv.weight"] = torch.zeros(32, 3, 5, 5)
    torch.save(broken, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="shape"):
        inception.load_inception(tmp_path / "shape.pth", "pre_pool1")
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="cannot be read"):
        inception.load_inception(tmp_path / "junk.pth")


def test_sifid_with_random_weights(land, random_weights):
    sifid = M.SIFID(land, random_weights)
    out = sifid([land, shuffle_tiles(land), noise_like(land)])
    for d in (64, 192):
        self_, shuffled, noise = out[d]
        assert abs(self_) < 1e-6 * max(1.0, noise)
        assert 0 < shuffled < noise


def test_weights_are_found_in_the_hub_cache_only_by_name(random_weights, tmp_path):
    path, why = inception.find_inception_weights()
    assert path is None and "pt_inception-2015-12-05" in why and "nothing is downloaded" in why
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "some_other_model.pth").write_bytes(random_weights.read_bytes())
    assert inception.find_inception_weights()[0] is None
    (cache / "pt_inception-2015-12-05-6726825d.pth").write_bytes(random_weights.read_bytes())
    assert inception.find_inception_weights()[0] == cache / "pt_inception-2015-12-05-6726825d.pth"


def test_evaluate_skips_sifid_cleanly_without_weights(land):
    samples = [shuffle_tiles(land, seed=s) for s in range(3)]
    r = M.evaluate(land, samples)
    assert "no InceptionV3 weights" in r["skipped"]["sifid"]
    assert r["aggregate"]["sifid64"] is None and r["aggregate"]["sifid192"] is None
    assert all(row["sifid64"] is None and row["sifid192"] is None for row in r["per_sample"])
    assert r["aggregate"]["pixel_diversity"] > 0 and r["aggregate"]["swd"]["mean"] > 0
    assert [len(row["swd_levels"]) for row in r["per_sample"]] == [4, 4, 4]
    assert r["settings"]["sifid"]["weights"] is None
    assert M.evaluate(land, samples)["per_sample"] == r["per_sample"]  # deterministic


def test_paired_difference_cancels_what_the_pairs_share():
    rng = np.random.default_rng(0)
    shared = rng.normal(0.06, 0.01, 24)  # the spread that comes from the sample itself
    base = shared + rng.normal(0, 0.0005, 24)
    other = shared - 0.002 + rng.normal(0, 0.0005, 24)
    d = M.paired_difference(list(base), list(other))
    diff = other - base
    assert d["n"] == 24 and d["mean"] == pytest.approx(diff.mean(), abs=1e-15)
    assert d["se"] == pytest.approx(diff.std(ddof=1) / math.sqrt(24))
    assert d["unpaired_se"] == pytest.approx(math.sqrt((base.var(ddof=1) + other.var(ddof=1)) / 24))
    assert d["base_mean"] == pytest.approx(base.mean()) and d["other_mean"] == pytest.approx(other.mean())
    assert d["se"] < d["unpaired_se"] / 5 and abs(d["mean"] + 0.002) < 3 * d["se"]
    # a pair with a missing or non-finite value is dropped, and fewer than 2 pairs give None
    d = M.paired_difference([1.0, None, 3.0, 4.0], [2.0, 5.0, float("nan"), 6.0])
    assert d["n"] == 2 and d["mean"] == 1.5
    assert M.paired_difference([1.0, None], [2.0, 3.0]) is None
    with pytest.raises(ValueError):
        M.paired_difference([1.0, 2.0], [1.0])


# ---------------------------------------------------------------------------------------
# CLI: sinddm eval
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`sinddm train`, 2 steps of a width-8 net on a 2-scale pyramid, no grid."""
    base = tmp_path_factory.mktemp("evalrun")
    cfg = base / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "image": {"max_pixels": 6000}, "model": {"dim": 8},
        "train": {"steps": 2, "batch_size": 2, "lr_milestones": [1], "ema_every": 1, "ema_start": 1,
                  "checkpoint_every": 10, "log_every": 1, "grid_samples": 0}}))
    run = base / "run"
    assert cli("train", SMALL, "--config", cfg, "--out", run, "--steps", 2, "--device", "cpu", "--quiet") == 0
    return run


def fast_t(run) -> list:
    n = load_model(run).pyramid.n_scales
    return ["--start-t", 2] + [1] * (n - 1)


def test_eval_writes_metrics_and_report(tiny_run, capsys):
    assert cli("eval", tiny_run, "--num", 3, *fast_t(tiny_run), "--device", "cpu", "--quiet") == 0
    out = tiny_run / "eval"
    m = json.loads((out / "metrics.json").read_text())
    assert m["format"] == "sinddm-eval/1" and m["model_step"] == 2 and m["num_samples"] == 3
    assert m["training_image_hw"] == m["sample_hw"] == [67, 89]
    ref = load_model(tiny_run).pyramid.levels[-1]
    assert m["reference_sha256"] == hashlib.sha256(np.ascontiguousarray(ref).tobytes()).hexdigest()
    assert m["samples"]["source"] == "generated" and m["samples"]["seed"] == 0
    assert [r["file"] for r in m["per_sample"]] == [f"sample_{i:03d}.png" for i in range(3)]
    for r in m["per_sample"]:
        assert r["swd"] > 0 and 0 < r["copy_mean_region"] <= 1 and r["sifid64"] is None
    assert m["aggregate"]["pixel_diversity"] > 0
    assert "sifid" in m["skipped"] and "lpips_diversity" in m["skipped"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["grid.png"] + [
        f"sample_{i:03d}.png" for i in range(3)]
    with Image.open(out / "report.png") as im:
        assert im.width == 1280 and im.height > 800
    err = capsys.readouterr().err
    assert "patch SWD" in err and "sifid skipped" in err and "report.png" in err
    # the same call again refuses to write into the now non-empty folder without --overwrite
    assert cli("eval", tiny_run, "--num", 3, *fast_t(tiny_run), "--device", "cpu", "--quiet") == 2


def test_eval_of_a_samples_folder_with_weights(tiny_run, random_weights, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    ref = load_model(tiny_run).pyramid.levels[-1]
    for i, s in enumerate([ref, shuffle_tiles(ref, 8), ref[:, ::-1]]):
        Image.fromarray(np.ascontiguousarray(s)).save(folder / f"x{i}.png")
    Image.fromarray(ref).save(folder / "grid.png")  # ignored, as `sinddm sample` writes one
    out = tmp_path / "ev"
    assert cli("eval", tiny_run, "--samples", folder, "--inception-weights", random_weights, "--out", out,
               "--device", "cpu", "--quiet") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [r["file"] for r in m["per_sample"]] == ["x0.png", "x1.png", "x2.png"]
    assert m["samples"]["source"] == "folder" and "sifid" not in m["skipped"]
    first = m["per_sample"][0]
    assert first["swd"] == 0.0 and first["copy_large_fraction"] == 1.0 and abs(first["sifid64"]) < 1e-6
    assert all(math.isfinite(r["sifid192"]) for r in m["per_sample"])
    assert m["inception_weights"] == str(random_weights.resolve())
    assert not (out / "samples").exists()
    assert (out / "report.png").is_file()


@pytest.mark.parametrize("extra, words", [
    (["--samples", "{tmp}/nowhere"], "--samples"),
    (["--samples", "{tmp}/empty"], "no PNG files"),
    (["--samples", "{tmp}/two", "--num", "5"], "holds 2 PNG files"),
    (["--inception-weights", "{tmp}/none.pth"], "--inception-weights"),
    (["--inception-weights", "{tmp}/junk.pth", "--samples", "{tmp}/two"], "cannot be read"),
    (["--start-t", "1", "2", "3", "4", "5", "6"], "--start-t"),
    (["--num", "0"], "--num"),
    (["--samples", "{tmp}/broken"], "--samples '"),
])
def test_eval_bad_input(tiny_run, tmp_path, capsys, extra, words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    for i in range(2):
        Image.new("RGB", (89, 67), (i * 100, 0, 0)).save(tmp_path / "two" / f"{i}.png")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a picture")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert cli("eval", tiny_run, "--out", tmp_path / "out", "--device", "cpu", "--quiet", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]
    assert not (tmp_path / "out").exists()  # no output folder left behind


def test_eval_of_a_missing_run(tmp_path, capsys):
    assert cli("eval", tmp_path / "nope", "--device", "cpu") == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_eval_names_the_samples_size_when_it_is_not_the_training_image_s(tiny_run, tmp_path, capsys):
    ref = load_model(tiny_run).pyramid.levels[-1]
    h, w = ref.shape[:2]
    wide = np.concatenate([ref, ref[:, ::-1]], axis=1)
    cases = {"same": ([ref, ref[::-1]], f"2 samples vs the training image ({w}x{h} px)"),
             "wide": ([wide, wide[::-1]], f"2 samples of {2 * w}x{h} px vs the training image ({w}x{h} px)"),
             "mixed": ([ref, wide], f"2 samples of mixed sizes vs the training image ({w}x{h} px)")}
    for name, (pictures, line) in cases.items():
        capsys.readouterr()
        _eval_folder(tiny_run, tmp_path, name, pictures)
        assert capsys.readouterr().err.splitlines()[0].startswith(line + ", metrics in ")


# ---------------------------------------------------------------------------------------
# CLI: sinddm eval-compare
# ---------------------------------------------------------------------------------------

def _eval_folder(tiny_run, tmp_path, name, pictures) -> "Path":
    folder = tmp_path / f"{name}-png"
    folder.mkdir()
    for i, a in enumerate(pictures):
        Image.fromarray(np.ascontiguousarray(a)).save(folder / f"s{i}.png")
    assert cli("eval", tiny_run, "--samples", folder, "--out", tmp_path / name, "--device", "cpu", "--quiet") == 0
    return tmp_path / name


def test_eval_compare_pairs_samples_by_file(tiny_run, tmp_path, capsys):
    ref = load_model(tiny_run).pyramid.levels[-1]
    base = _eval_folder(tiny_run, tmp_path, "base", [shuffle_tiles(ref, 8, seed) for seed in range(3)])
    other = _eval_folder(tiny_run, tmp_path, "other", [ref, ref[:, ::-1], shuffle_tiles(ref, 16, 5)])
    capsys.readouterr()
    assert cli("eval-compare", base, other / "metrics.json", "--json", tmp_path / "c.json") == 0
    out = capsys.readouterr().out
    assert f"{other / 'metrics.json'} - {base}: 3 pairs, not drawn with one sampling seed" in out
    assert "patch SWD" in out and "SIFID-64" in out and "skipped" in out
    doc = json.loads((tmp_path / "c.json").read_text())
    a = [r["swd"] for r in json.loads((base / "metrics.json").read_text())["per_sample"]]
    b = [r["swd"] for r in json.loads((other / "metrics.json").read_text())["per_sample"]]
    (c,) = doc["comparisons"]
    assert c["pairs"] == 3 and c["same_seed"] is False and c["metrics"]["sifid64"] is None
    d = np.array(b) - np.array(a)
    assert b[0] == 0.0 and c["metrics"]["swd"]["mean"] == pytest.approx(d.mean())
    assert c["metrics"]["swd"]["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))

    # Drawn samples: two evaluations of one model with one seed are the same pictures, so every
    # difference is exactly 0; a run folder is found through its eval/metrics.json.
    assert cli("eval", tiny_run, "--num", 2, *fast_t(tiny_run), "--out", tmp_path / "d1", "--device", "cpu",
               "--quiet") == 0
    assert cli("eval", tiny_run, "--num", 2, *fast_t(tiny_run), "--out", tmp_path / "d2", "--device", "cpu",
               "--quiet") == 0
    capsys.readouterr()
    assert cli("eval-compare", tmp_path / "d1", tmp_path / "d2", "--json", tmp_path / "d.json",
               "--png", tmp_path / "d.png") == 0
    assert "2 pairs, both drawn with sampling seed 0" in capsys.readouterr().out
    (c,) = json.loads((tmp_path / "d.json").read_text())["comparisons"]
    assert c["same_seed"] and c["metrics"]["swd"]["mean"] == 0.0 and c["metrics"]["swd"]["se"] == 0.0
    # the picture: a row per evaluation, the training image (67 px tall, enlarged to 128) then the samples
    fig = np.asarray(Image.open(tmp_path / "d.png").convert("RGB"))
    assert fig.shape[0] == 8 + 2 * (128 + 8) + 16
    w = round(89 * 128 / 67)
    first = np.asarray(Image.open(tmp_path / "d2" / "samples" / "sample_000.png")).astype(float)
    assert abs(fig[160:288, 230 + w + 16:230 + 2 * w + 16].mean() - first.mean()) < 2
    assert np.array_equal(fig[24:152, 230:230 + w], fig[160:288, 230:230 + w])  # the same training image
    # folder samples that are gone: the picture cannot be drawn, which is an error before any output
    shutil.rmtree(tmp_path / "other-png")
    assert cli("eval-compare", base, other, "--png", tmp_path / "e.png") == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "--png" in cap.err and "is gone" in cap.err and not (tmp_path / "e.png").exists()


def test_eval_compare_refuses_what_does_not_pair(tiny_run, tmp_path, capsys):
    ref = load_model(tiny_run).pyramid.levels[-1]
    base = _eval_folder(tiny_run, tmp_path, "base", [ref, ref[::-1]])
    fewer = _eval_folder(tiny_run, tmp_path, "fewer", [ref])
    m = json.loads((base / "metrics.json").read_text())
    m["reference_sha256"] = "0" * 64
    (tmp_path / "elsewhere.json").write_text(json.dumps(m))
    (tmp_path / "junk.json").write_text('{"format": "something else"}')
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    for argv, words in [([fewer], "its 1 samples are not the 2"),
                        ([tmp_path / "elsewhere.json"], "another training picture"),
                        ([tmp_path / "junk.json"], "not a 'sinddm eval' metrics file"),
                        ([tmp_path / "empty"], "holds no metrics.json"), ([tmp_path / "nope"], "no such file"),
                        ([base, "--png", tmp_path / "x.jpg"], "ending in .png")]:
        assert cli("eval-compare", base, *argv, "--json", tmp_path / "never.json") == 2
        cap = capsys.readouterr()
        err = cap.err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], (argv, err)
        assert cap.out == "" and not (tmp_path / "never.json").exists()


def test_eval_and_compare_from_python(tiny_run, tmp_path):
    """The work of 'sinddm eval' and 'eval-compare' is library code: a run folder in, metrics out."""
    from sinddm.eval.compare import compare_evaluations
    from sinddm.eval.run import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval"))
    start_t = [2] + [1] * (load_model(run).pyramid.n_scales - 1)
    m = evaluate_run(run, num=2, start_t=start_t, device="cpu", progress=False)  # out: RUN_DIR/eval
    assert m["num_samples"] == 2 and m["samples"]["seed"] == 0 and (run / "eval" / "report.png").is_file()
    assert json.loads((run / "eval" / "metrics.json").read_text())["per_sample"] == m["per_sample"]
    c = compare_evaluations(run, [run / "eval"])  # a run folder and its eval folder: one evaluation
    assert c.results[0]["same_seed"] and c.results[0]["metrics"]["swd"]["mean"] == 0.0
    assert c.to_json()["comparisons"][0]["other"] == str(run / "eval" / "metrics.json")
    assert c.text().startswith(f"{run / 'eval'} - {run}: 2 pairs, both drawn with sampling seed 0")


# ---------------------------------------------------------------------------------------
# CLI: sinddm eval-suite
# ---------------------------------------------------------------------------------------

def test_eval_suite_trains_evaluates_and_tabulates(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    # 64x48 px: a one-scale pyramid, so that training and sampling take seconds
    Image.fromarray(load(SMALL)[10:58, 20:84]).save(images / "a.png")
    Image.fromarray(load(LAND)[50:98, 60:124]).save(images / "b.png")
    (images / "notes.txt").write_text("not a picture")
    out = tmp_path / "suite"
    common = ["--config", CONFIGS / "smoke.yaml", "--out", out, "--num", 2, "--device", "cpu", "--quiet"]
    assert cli("eval-suite", images, *common, "--steps", 2) == 0
    for img in ("a", "b"):
        assert load_model(out / "smoke" / img).step == 2
        assert (out / "smoke" / img / "eval" / "metrics.json").is_file()
        assert (out / "smoke" / img / "eval" / "report.png").is_file()
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["recipe"], r["image"]) for r in rows] == [("smoke", "a.png"), ("smoke", "b.png"),
                                                         ("smoke", "(mean)")]
    assert all(float(r["swd"]) > 0 and float(r["pixel_diversity"]) > 0 for r in rows)
    assert rows[0]["sifid64"] == "" and rows[0]["size"] == "64x48" and rows[0]["steps"] == "2"
    md = (out / "results.md").read_text()
    assert "| smoke | a.png | 64x48 |" in md and "Skipped:" in md and "patch SWD" in md
    assert json.loads((out / "results.json").read_text())["rows"][1]["image"] == "b.png"
    # samples.png: a row per run, each starting with its training image (64x48 enlarged to 128 px tall)
    # followed by its samples.
    fig = np.asarray(Image.open(out / "samples.png").convert("RGB"))
    assert fig.shape[0] == 8 + 2 * (128 + 8) + 16
    for r, img in enumerate(("a", "b")):
        ref = load_model(out / "smoke" / img).pyramid.levels[-1]
        big = np.asarray(Image.fromarray(ref).resize((171, 128), Image.NEAREST))
        y = 24 + r * 136
        assert np.array_equal(fig[y:y + 128, 230:230 + 171], big)
        first = np.asarray(Image.open(out / "smoke" / img / "eval" / "samples" / "sample_000.png"))
        tile = fig[y:y + 128, 230 + 171 + 16:230 + 171 + 16 + 171].astype(float)
        assert abs(tile.mean() - first.mean()) < 2  # the sample, enlarged, after the training image
    capsys.readouterr()

    # Again: both runs and both evaluations are reused, nothing is trained.
    before = (out / "smoke" / "a" / "model.safetensors").stat().st_mtime_ns
    assert cli("eval-suite", images, *common, "--steps", 2) == 0
    err = capsys.readouterr().err
    assert err.count("reusing the run") == 2 and err.count("reusing") == 4
    assert (out / "smoke" / "a" / "model.safetensors").stat().st_mtime_ns == before

    # More steps: both runs resume from their checkpoints and are evaluated anew.
    assert cli("eval-suite", images, *common, "--steps", 3) == 0
    err = capsys.readouterr().err
    assert err.count("resuming at step 2 -> 3") == 2 and "reusing" not in err
    with open(out / "results.csv") as f:
        assert [r["steps"] for r in csv.DictReader(f)] == ["3", "3", ""]

    # A recipe whose model differs from the runs in --out is refused before anything trains.
    other = tmp_path / "smoke.yaml"
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    cfg["model"]["dim"] = 8
    other.write_text(yaml.safe_dump(cfg))
    assert cli("eval-suite", images, "--config", other, "--out", out, "--steps", 2, "--device", "cpu",
               "--quiet") == 2
    assert "different recipe" in capsys.readouterr().err


def test_eval_suite_tabulates_paired_differences_against_the_baseline(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(load(SMALL)[10:58, 20:84]).save(images / "a.png")
    Image.fromarray(load(LAND)[50:98, 60:124]).save(images / "b.png")
    cfg = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    cfg["train"]["lr"] = 1e-2
    (tmp_path / "hot.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "suite"
    assert cli("eval-suite", images, "--config", tmp_path / "hot.yaml", CONFIGS / "smoke.yaml", "--baseline",
               "smoke", "--out", out, "--num", 3, "--steps", 2, "--device", "cpu", "--quiet") == 0
    paired = json.loads((out / "results.json").read_text())["paired"]
    assert paired["baseline"] == "smoke"
    assert [(r["recipe"], r["image"]) for r in paired["rows"]] == [("hot", "a.png"), ("hot", "b.png"),
                                                                  ("hot", "(mean)")]
    for r in paired["rows"][:2]:
        per = {k: [x["swd"] for x in json.loads((out / k / Path(r["image"]).stem / "eval" / "metrics.json")
                                                .read_text())["per_sample"]] for k in ("smoke", "hot")}
        d = np.array(per["hot"]) - np.array(per["smoke"])
        assert r["pairs"] == 3 and d.std() > 0  # a different LR gives different samples from the same noise
        assert r["swd"]["mean"] == pytest.approx(d.mean()) and r["swd"]["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
        assert r["sifid64"] is None
    a, b, mean = paired["rows"]
    assert mean["swd"]["mean"] == pytest.approx((a["swd"]["mean"] + b["swd"]["mean"]) / 2)
    assert mean["swd"]["se"] == pytest.approx(math.hypot(a["swd"]["se"], b["swd"]["se"]) / 2)
    md = (out / "results.md").read_text()
    assert "## Paired differences against `smoke`" in md and "| recipe | image | Δ patch SWD | Δ pixel div. |" in md
    assert md.count("| hot |") == 3 + 3  # three rows in each table


@pytest.mark.parametrize("setup, argv, words", [
    ("one", ["{tmp}/imgs", "--config", str(CONFIGS / "smoke.yaml"), "--baseline", "paper"],
     "not one of the recipes"),
    ("one-bad", ["{tmp}/imgs", "--config", str(CONFIGS / "smoke.yaml")], "z_broken.png"),  # checked before x trains
    (None, ["{tmp}/nowhere", "--config", str(CONFIGS / "smoke.yaml")], "no such folder"),
    ("empty", ["{tmp}/imgs", "--config", str(CONFIGS / "smoke.yaml")], "no pictures"),
    ("one", ["{tmp}/imgs", "--config", "{tmp}/missing.yaml"], "no such file"),
    ("one", ["{tmp}/imgs", "--config", str(CONFIGS / "smoke.yaml"), str(CONFIGS / "smoke.yaml")],
     "also named"),
    ("one", ["{tmp}/imgs"], "--config"),
])
def test_eval_suite_bad_input(tmp_path, capsys, setup, argv, words):
    if setup:
        (tmp_path / "imgs").mkdir()
    if setup in ("one", "one-bad"):
        Image.new("RGB", (64, 48)).save(tmp_path / "imgs" / "x.png")
    if setup == "one-bad":
        (tmp_path / "imgs" / "z_broken.png").write_bytes(b"not a picture")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli("eval-suite", *args, "--out", tmp_path / "suite", "--device", "cpu", "--quiet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]
    assert not (tmp_path / "suite").exists()


def test_eval_compare_keeps_an_existing_file_without_overwrite(tiny_run, tmp_path, capsys):
    ref = load_model(tiny_run).pyramid.levels[-1]
    base = _eval_folder(tiny_run, tmp_path, "base", [ref, ref[:, ::-1]])
    other = _eval_folder(tiny_run, tmp_path, "other", [ref[::-1], ref])
    (tmp_path / "c.json").write_text("mine")
    capsys.readouterr()
    assert cli("eval-compare", base, other, "--json", tmp_path / "c.json") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--json" in err[0] and "--overwrite" in err[0]
    assert (tmp_path / "c.json").read_text() == "mine"
    assert cli("eval-compare", base, other, "--json", tmp_path / "c.json", "--overwrite") == 0
    assert json.loads((tmp_path / "c.json").read_text())
