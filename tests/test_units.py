"""Unit tests of the core's pure pieces: sample sizes, config validation, image loading, grids."""

import os
import struct
import zlib

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sinddm.cli import main
from sinddm.config import Config, config_from_dict, load_config, scale_batch_size
from sinddm.errors import UserError
from sinddm.image_io import load_rgb, make_grid, to_tensor, to_uint8
from sinddm.pyramid import build_pyramid, sample_sizes

from .conftest import CONFIGS, GOLDEN

# ---------------------------------------------------------------------------------------
# sample_sizes (method §5)
# ---------------------------------------------------------------------------------------

SIZES = [(48, 64), (66, 88), (90, 120)]  # small_120x90's pyramid, (h, w) coarsest first
R = 1.3693063937629153


def test_sample_sizes_default_is_the_training_pyramid():
    assert sample_sizes(SIZES, R) == SIZES
    assert sample_sizes(SIZES, R, scale_hw=(1.0, 1.0)) == SIZES


def test_sample_sizes_scale_hw_panorama():
    assert sample_sizes(SIZES, R, scale_hw=(1, 2)) == [(48, 128), (66, 176), (90, 240)]


def test_sample_sizes_scale_hw_truncates():
    # int(h * fh), int(w * fw): truncation, not rounding (66 * 0.75 = 49.5 -> 49, 88 * 1.3 = 114.4 -> 114)
    out = sample_sizes(SIZES, R, scale_hw=(0.75, 1.3))
    assert out == [(int(h * 0.75), int(w * 1.3)) for h, w in SIZES]
    assert out[1] == (49, 114)
    assert all(isinstance(v, int) for hw in out for v in hw)


def test_sample_sizes_fixed_size_is_exact_and_coarser_follow_r():
    out = sample_sizes(SIZES, R, size_hw=(101, 203))
    assert out[-1] == (101, 203)
    assert out[1] == (round(101 / R), round(203 / R))
    assert out[0] == (round(101 / R ** 2), round(203 / R ** 2))
    assert len(out) == len(SIZES)


def test_sample_sizes_start_level_shifts_and_extrapolates():
    out1 = sample_sizes(SIZES, R, start_level=1)
    assert out1 == [SIZES[1], SIZES[2], (round(90 * R), round(120 * R))]
    out2 = sample_sizes(SIZES, R, start_level=2)
    assert out2 == [SIZES[2], (round(90 * R), round(120 * R)), (round(90 * R ** 2), round(120 * R ** 2))]
    assert out2[-1] == (169, 225)


def test_sample_sizes_start_level_applies_after_scaling():
    out = sample_sizes(SIZES, R, scale_hw=(1, 2), start_level=1)
    assert out == [(66, 176), (90, 240), (round(90 * R), round(240 * R))]
    fixed = sample_sizes(SIZES, R, size_hw=(100, 100), start_level=1)
    assert fixed[-2] == (100, 100)
    assert fixed[-1] == (round(100 * R), round(100 * R))


def test_sample_sizes_single_scale():
    assert sample_sizes([(50, 60)], 1.0, scale_hw=(2, 1)) == [(100, 60)]
    assert sample_sizes([(50, 60)], 1.0, size_hw=(70, 80)) == [(70, 80)]


# ---------------------------------------------------------------------------------------
# config_from_dict / load_config
# ---------------------------------------------------------------------------------------

def test_config_defaults_are_the_paper_recipe():
    cfg = config_from_dict(None)
    assert cfg == Config()
    assert cfg.model.dim == 160 and cfg.train.steps == 120_000 and cfg.image.max_pixels == 50_000
    t = cfg.train  # method §4's numbers, written out here (paper.yaml == Config() cannot catch a shared typo)
    assert (t.batch_size, t.lr, t.lr_gamma) == (32, 1e-3, 0.5)
    assert t.lr_milestones == [20_000, 40_000, 70_000, 80_000, 90_000, 110_000]
    assert (t.ema_decay, t.ema_every, t.ema_start) == (0.995, 10, 2_000) and t.coarse_batch_sizes == []
    assert load_config(CONFIGS / "paper.yaml") == Config()


def test_config_partial_override_keeps_other_defaults():
    cfg = config_from_dict({"model": {"dim": 8}, "train": {"lr": 1, "steps": 5}, "image": None})
    assert cfg.model.dim == 8
    assert cfg.train.steps == 5
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # ints are accepted for floats
    assert cfg.train.batch_size == Config().train.batch_size
    assert cfg.image == Config().image


def test_smoke_config_loads():
    cfg = load_config(CONFIGS / "smoke.yaml")
    assert cfg.model.dim == 16 and cfg.image.max_pixels == 10_000 and cfg.train.lr_milestones == [40]


def test_scale_batch_size_coarse_list_then_batch_size():
    cfg = config_from_dict({"train": {"batch_size": 4, "coarse_batch_sizes": [16, 8]}})
    assert [scale_batch_size(cfg.train, s) for s in range(5)] == [16, 8, 4, 4, 4]
    paper = Config().train
    assert paper.coarse_batch_sizes == [] and [scale_batch_size(paper, s) for s in range(5)] == [32] * 5


def test_config_yaml_round_trip():
    cfg = config_from_dict({"model": {"dim": 12}, "train": {"lr_milestones": [3, 7], "ema_decay": 0.5}})
    assert config_from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


@pytest.mark.parametrize("data, words", [
    ({"optimizer": {"lr": 1}}, ["unknown section", "optimizer"]),
    ({"train": {"learning_rate": 1}}, ["unknown key", "train.learning_rate"]),
    ({"model": {"width": 8}}, ["unknown key", "model.width"]),
    ({"train": {"steps": "many"}}, ["train.steps", "expected int"]),
    ({"train": {"steps": 1.5}}, ["train.steps", "expected int"]),
    ({"train": {"steps": True}}, ["train.steps", "expected int"]),
    ({"train": {"lr": "fast"}}, ["train.lr", "expected float"]),
    ({"train": {"lr": False}}, ["train.lr", "expected float"]),
    ({"train": {"lr_milestones": 5}}, ["train.lr_milestones", "expected list"]),
    ({"train": {"lr_milestones": [1.5]}}, ["train.lr_milestones", "expected list"]),
    ({"model": {"dim": "8"}}, ["model.dim", "expected int"]),
    ({"train": {"steps": -5}}, ["train.steps", ">= 1"]),
    ({"train": {"steps": 0}}, ["train.steps", ">= 1"]),
    ({"train": {"batch_size": 0}}, ["train.batch_size", ">= 1"]),
    ({"train": {"coarse_batch_sizes": [8, 0]}}, ["train.coarse_batch_sizes", ">= 1"]),
    ({"train": {"coarse_batch_sizes": 8}}, ["train.coarse_batch_sizes", "expected list"]),
    ({"model": {"dim": 7}}, ["model.dim", "even"]),
    ({"model": {"dim": 0}}, ["model.dim", "even"]),
    ({"image": {"max_pixels": 1000}}, ["image.max_pixels"]),
    ({"train": {"lr": 0}}, ["train.lr", "> 0"]),
    ({"train": {"ema_decay": 1.0}}, ["train.ema_decay"]),
    ({"train": {"lr_milestones": [5, 3]}}, ["train.lr_milestones", "increasing"]),
    ({"train": {"grid_samples": -1}}, ["train.grid_samples"]),
    ({"train": [1, 2]}, ["section 'train'", "mapping"]),
    ([1, 2], ["mapping"]),
])
def test_config_from_dict_rejects(data, words):
    with pytest.raises(UserError) as e:
        config_from_dict(data, source="config 'x.yaml'")
    msg = str(e.value)
    assert msg.startswith("config 'x.yaml'")
    for w in words:
        assert w in msg, msg


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(UserError, match=r"bad\.yaml.*not valid YAML"):
        load_config(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_load_config_binary_file_is_not_a_text_file(tmp_path):
    jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(jpg)
    with pytest.raises(UserError, match=r"config '.*photo\.jpg': not a text file"):
        load_config(jpg)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"train:\n  steps: 5\0\n")
    with pytest.raises(UserError, match=r"nul\.yaml.*not a text file"):
        load_config(nul)


def test_load_config_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(UserError, match=r"config '.*': is a folder"):
        load_config(tmp_path)


def test_load_config_unreadable_file(tmp_path):
    cfg = tmp_path / "locked.yaml"
    cfg.write_text("train:\n  steps: 5\n")
    cfg.chmod(0)
    try:
        if os.geteuid() == 0 or os.access(cfg, os.R_OK):
            pytest.skip("running as root (or chmod 000 does not stop reading here)")
        with pytest.raises(UserError, match=r"locked\.yaml.*cannot be read \(permission denied\)"):
            load_config(cfg)
    finally:
        cfg.chmod(0o644)


def test_load_config_permission_error_is_a_user_error(tmp_path, monkeypatch):
    # the same path as test_load_config_unreadable_file, also where tests run as root
    cfg = tmp_path / "locked.yaml"
    cfg.write_text("train:\n  steps: 5\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(cfg), "read_bytes", denied)
    with pytest.raises(UserError, match=r"locked\.yaml.*cannot be read \(permission denied\)"):
        load_config(cfg)


@pytest.mark.parametrize("text, lr", [("1e-3", 0.001), ("5E-4", 5e-4), ("+2e3", 2000.0), ("1.5e-2", 0.015)])
def test_load_config_scientific_float_without_dot(tmp_path, text, lr):
    # YAML 1.1 (PyYAML) reads 1e-3 as the string '1e-3'; a float field takes it as the number
    path = tmp_path / "sci.yaml"
    path.write_text(f"train:\n  lr: {text}\n  lr_gamma: 5e-1\n")
    cfg = load_config(path)
    assert cfg.train.lr == lr and isinstance(cfg.train.lr, float)
    assert cfg.train.lr_gamma == 0.5


@pytest.mark.parametrize("data, words", [
    ({"train": {"lr": "fast"}}, ["train.lr", "expected float", "'fast'"]),
    ({"train": {"lr": "nan"}}, ["train.lr", "expected float"]),
    ({"train": {"lr": "inf"}}, ["train.lr", "expected float"]),
    ({"train": {"lr": "1e999"}}, ["train.lr", "expected float"]),
    ({"train": {"lr": "1e-3x"}}, ["train.lr", "expected float"]),
    ({"train": {"steps": "1e3"}}, ["train.steps", "expected int", "'1e3'"]),
    ({"train": {"lr_milestones": ["1e3"]}}, ["train.lr_milestones", "expected list"]),
])
def test_config_number_strings_only_for_float_fields(data, words):
    with pytest.raises(UserError) as e:
        config_from_dict(data, source="config 'x.yaml'")
    for w in words:
        assert w in str(e.value), str(e.value)


def test_load_config_scientific_string_refused_for_int_field(tmp_path):
    path = tmp_path / "steps.yaml"
    path.write_text("train:\n  steps: 1e3\n")
    with pytest.raises(UserError, match=r"steps\.yaml.*train\.steps: expected int, got '1e3'"):
        load_config(path)


@pytest.mark.parametrize("text, key, lines", [
    ("train:\n  steps: 5\nmodel:\n  dim: 8\ntrain:\n  lr: 0.5\n", "train", (1, 5)),
    ("train:\n  steps: 5\n  lr: 0.5\n  steps: 6\n", "steps", (2, 4)),
    ("model: {dim: 8, dim: 10}\n", "dim", (1, 1)),
])
def test_load_config_refuses_duplicate_keys(tmp_path, text, key, lines):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"config '{path}'"), msg
    assert f"'{key}'" in msg and f"line {lines[0]}" in msg and f"line {lines[1]}" in msg, msg


def test_load_config_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("train:\n  <<: {steps: 5, lr: 0.5}\n  steps: 7\n")
    cfg = load_config(path)
    assert (cfg.train.steps, cfg.train.lr) == (7, 0.5)


@pytest.mark.parametrize("content, words", [
    (None, ["not a text file"]),  # a JPEG given as --config
    (b"train:\n  steps: 2\n  steps: 3\n", ["'steps'", "line 2", "line 3"]),
])
def test_cli_bad_config_is_one_error_line(tmp_path, capsys, content, words):
    image = tmp_path / "img.png"
    Image.new("RGB", (64, 48), (10, 120, 200)).save(image)
    config = image if content is None else tmp_path / "cfg.yaml"
    if content is not None:
        config.write_bytes(content)
    code = main(["train", str(image), "--config", str(config), "--steps", "1", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert str(config) in lines[0]
    for w in words:
        assert w in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# Image loading: unusual but valid files all become 8-bit RGB of the right size
# ---------------------------------------------------------------------------------------

def _rgb(path) -> np.ndarray:
    img = load_rgb(path)
    assert img.mode == "RGB"
    a = np.asarray(img)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    return a


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _write_png16_rgb(path, a: np.ndarray) -> None:
    """A 48-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def test_load_16bit_grey_png_scales_not_clips(tmp_path):
    a = np.tile(np.array([0, 257 * 64, 32768, 65535], np.uint16), (44, 12))  # 44 x 48
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")  # really a 16-bit file
    out = _rgb(p)
    assert out.shape == (44, 48, 3)
    np.testing.assert_array_equal(out[0, :4, 0], [0, 64, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_load_16bit_rgb_png(tmp_path):
    a = np.zeros((45, 50, 3), np.uint16)
    a[..., 0] = 0xFFFF
    a[..., 1] = 0x8000
    a[..., 2] = 0x0100
    p = tmp_path / "rgb16.png"
    _write_png16_rgb(p, a)
    out = _rgb(p)
    assert out.shape == (45, 50, 3)
    assert tuple(out[3, 3]) == (255, 128, 1)


def test_load_palette_with_transparency_composites_on_white(tmp_path):
    img = Image.new("P", (50, 44), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 25, 44))  # left half: opaque blue; right half: index 0, transparent red
    p = tmp_path / "pal.png"
    img.save(p, transparency=0)
    assert Image.open(p).mode == "P"
    out = _rgb(p)
    assert out.shape == (44, 50, 3)
    assert tuple(out[10, 5]) == (0, 0, 255)
    assert tuple(out[10, 40]) == (255, 255, 255)  # the hidden red must not show


def test_load_grayscale(tmp_path):
    p = tmp_path / "grey.png"
    Image.new("L", (61, 47), 100).save(p)
    out = _rgb(p)
    assert out.shape == (47, 61, 3)
    assert (out == 100).all()


def test_load_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (255, 0, 0, 0)).save(p, quality=95)  # pure cyan
    assert Image.open(p).mode == "CMYK"
    out = _rgb(p)
    assert out.shape == (48, 64, 3)
    np.testing.assert_allclose(out[20, 30].astype(int), [0, 255, 255], atol=8)


def test_load_exif_rotated_jpeg_swaps_width_and_height(tmp_path):
    a = np.zeros((40, 60, 3), np.uint8)  # stored 60 wide, 40 high
    a[:10, :10] = (255, 0, 0)           # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6                    # orientation 6: display rotated 90° clockwise
    p = tmp_path / "rot.jpg"
    Image.fromarray(a).save(p, exif=exif, quality=95)
    assert Image.open(p).size == (60, 40)
    img = load_rgb(p)
    assert img.size == (40, 60)
    out = _rgb(p)
    assert out.shape == (60, 40, 3)
    assert out[:4, -4:, 0].mean() > 200 and out[:4, -4:, 1:].mean() < 40  # red moved to the top-right
    assert out[:4, :4].mean() < 40


def test_load_rgba_composites_on_white(tmp_path):
    a = np.zeros((44, 50, 4), np.uint8)
    a[:, :25] = (255, 0, 0, 128)  # half-transparent red
    a[:, 25:] = (0, 0, 0, 0)      # fully transparent black
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    out = _rgb(p)
    assert out.shape == (44, 50, 3)
    assert tuple(out[5, 40]) == (255, 255, 255)
    r, g, b = (int(v) for v in out[5, 5])
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_load_plain_rgb_png_is_unchanged():
    p = GOLDEN / "small_120x90.png"
    out = _rgb(p)
    assert out.shape == (90, 120, 3)
    np.testing.assert_array_equal(out, np.asarray(Image.open(p).convert("RGB")))


def test_tensor_round_trip_is_exact():
    a = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    x = to_tensor(a)
    assert tuple(x.shape) == (3, 7, 9)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    np.testing.assert_array_equal(to_uint8(x), a)


def test_build_pyramid_rejects_small_short_side():
    with pytest.raises(UserError, match=r"50x30 px is too small"):
        build_pyramid(Image.new("RGB", (50, 30)), name="image 'x.png'")
    with pytest.raises(UserError, match="pixel cap"):
        build_pyramid(Image.new("RGB", (600, 100)), max_pixels=2000)


# ---------------------------------------------------------------------------------------
# make_grid
# ---------------------------------------------------------------------------------------

def _solid(h, w, v):
    return np.full((h, w, 3), v, np.uint8)


@pytest.mark.parametrize("n, nrow, ncol", [(1, 1, 1), (2, 1, 2), (3, 2, 2), (4, 2, 2), (5, 2, 3), (10, 3, 4)])
def test_make_grid_shape(n, nrow, ncol):
    g = make_grid([_solid(10, 20, i) for i in range(n)], pad=2)
    assert g.dtype == np.uint8
    assert g.shape == (nrow * 12 + 2, ncol * 22 + 2, 3)


def test_make_grid_places_images_row_major_on_background():
    imgs = [_solid(10, 20, 10), _solid(5, 8, 20), _solid(12, 6, 30)]
    g = make_grid(imgs, pad=3, ncol=2)
    cell_h, cell_w = 12, 20
    assert g.shape == (2 * (cell_h + 3) + 3, 2 * (cell_w + 3) + 3, 3)
    assert (g[3:13, 3:23] == 10).all()
    assert (g[3:8, 26:34] == 20).all()
    assert (g[8:15, 26:34] == 255).all()          # the smaller image leaves background below it
    assert (g[18:30, 3:9] == 30).all()
    assert (g[:3] == 255).all() and (g[:, :3] == 255).all()
    assert (g[18:, 26:] == 255).all()             # the empty fourth cell


def test_default_batch_is_capped_on_cpu_and_memory_bound():
    from sinddm.devices import CPU_BATCH_CAP, auto_batch_size

    cpu = torch.device("cpu")
    assert auto_batch_size([(20, 20), (40, 40)], 16, cpu) == CPU_BATCH_CAP == 4
    # a finest scale too big for two images in the 2 GiB CPU budget → one at a time
    assert auto_batch_size([(50, 50), (6000, 6000)], 160, cpu) == 1
