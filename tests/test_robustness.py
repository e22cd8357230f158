"""Reliability: the bad-input sweep, unusual-but-valid pictures, the numeric guard and
output safety.

Bad input always means exit code 2, one `error:` line naming the input and the fix, no
traceback and nothing written. Cases tested elsewhere are not repeated here:
- tests/test_inputs.py: empty, truncated (PNG, JPEG), text and text-named-.png files, a
  folder as image, 50x30 px (train and inspect), configs with bad YAML, unknown
  keys/sections, a wrong type (steps: one), odd model.dim, a list; --steps 0/ten,
  --seed -1, --device tpu, every --size/--scale-hw/--start-t/--start-level/--num/
  --batch-size error, sample (and so edit: the same loader) from a missing path, a
  folder that is not a run, a foreign or hollow checkpoint, busy and file-shaped --out
  folders, --resume of a missing folder, with another image, with another model config;
  convert-reference inputs.
- tests/test_cli.py: --overwrite refuses a folder that is not a run.
- tests/test_editing.py: roi-copy boxes out of bounds, malformed and negative; harmonize
  masks of the wrong size, empty, missing, unreadable; style-transfer inputs.
- tests/test_resume.py: damaged checkpoints (fallback, or one error line when none is
  intact), a checkpoint.pt of another format version under --resume.
"""

import struct
import zlib

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from sinddm.checkpoint import history_paths, load_model, load_train_state
from sinddm.cli import main
from sinddm.config import config_from_dict
from sinddm.image_io import load_rgb
from sinddm.pyramid import build_pyramid
from sinddm.training import NonFiniteLoss, Trainer

from .conftest import GOLDEN
from .test_inputs import assert_one_error_line, snapshot

SMALL = GOLDEN / "small_120x90.png"
CPU = torch.device("cpu")
QUICK = ["--device", "cpu", "--quiet"]


def cli(*args) -> int:
    return main([str(a) for a in args])


TINY = {"image": {"max_pixels": 6000}, "model": {"dim": 4},
        "train": {"steps": 2, "batch_size": 1, "lr_milestones": [1], "ema_every": 1, "ema_start": 1,
                  "checkpoint_every": 1, "log_every": 1, "grid_samples": 0}}


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def tiny_run(tiny_yaml, tmp_path_factory):
    """One tiny trained run (2 scales, width 4, 2 steps) shared by the module."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert cli("train", SMALL, "--config", tiny_yaml, "--out", run, *QUICK) == 0
    return run


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h RGB pixels, with no pixel data at all."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


SVG = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="200" '
       'height="150"><rect width="200" height="150" fill="teal"/></svg>\n')


@pytest.fixture(scope="module")
def inputs(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "drawing.svg").write_text(SVG)
    (d / "drawing_svg.png").write_text(SVG)  # an SVG under a picture's name
    Image.new("RGB", (1, 1), "red").save(d / "one_px.png")
    Image.new("RGB", (20, 15), "red").save(d / "img_20x15.png")
    (d / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))   # Pillow's own guard
    (d / "bomb_64mpx.png").write_bytes(_png_header_only(8_001, 8_000))  # just over sinddm's 64 Mpx
    base = yaml.safe_dump(TINY)

    def cfg(name, section, key, value):
        data = yaml.safe_load(base)
        data[section][key] = value
        (d / name).write_text(yaml.safe_dump(data))

    cfg("negative_steps.yaml", "train", "steps", -5)
    cfg("batch_zero.yaml", "train", "batch_size", 0)
    cfg("batch_float.yaml", "train", "batch_size", 2.5)
    cfg("lr_word.yaml", "train", "lr", "fast")
    cfg("lr_negative.yaml", "train", "lr", -0.001)
    cfg("milestones_words.yaml", "train", "lr_milestones", ["a"])
    cfg("milestones_down.yaml", "train", "lr_milestones", [5, 3])
    cfg("dim_bool.yaml", "model", "dim", True)
    cfg("dim_zero.yaml", "model", "dim", 0)
    cfg("dim_odd.yaml", "model", "dim", 7)
    cfg("max_pixels_small.yaml", "image", "max_pixels", 100)
    cfg("unknown_train_key.yaml", "train", "epochs", 3)
    cfg("keep_negative.yaml", "train", "keep_checkpoints", -1)
    cfg("nonfinite_zero.yaml", "train", "max_nonfinite_steps", 0)
    (d / "train_list.yaml").write_text("train: [1, 2]\n")
    # run folders
    early = d / "killed_early"  # what a run killed before its first checkpoint leaves
    early.mkdir()
    (early / "config.yaml").write_text(base)
    (early / "pyramid.png").write_bytes((tiny_run / "pyramid.png").read_bytes())
    (d / "holiday").mkdir()
    (d / "holiday" / "beach.jpg").write_bytes(b"precious")
    future = d / "future_run"
    future.mkdir()
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    state["format"] = "sinddm/2"
    torch.save(state, future / "checkpoint.pt")
    future_model = d / "future_model"
    future_model.mkdir()
    with safe_open(str(tiny_run / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["sinddm"] = meta["sinddm"].replace('"format": "sinddm/1"', '"format": "sinddm/2"')
    save_file(tensors, str(future_model / "model.safetensors"), metadata=meta)
    return d


TRAIN = ["--out", "out", *QUICK]
SAMPLE = ["--out", "out", "--num", "1", *QUICK]
ROI = ["roi-copy", "--source", "0,0,10,10", "--target", "5,5,10,10", *SAMPLE]

# (id, argv with {in} = the inputs folder, {run} = the tiny run and {cfg} = its config, words)
CASES = [
    # -- pictures --------------------------------------------------------------------------
    ("svg", ["train", "{in}/drawing.svg", "--config", "{cfg}", *TRAIN], ["drawing.svg", "SVG", "PNG"]),
    ("svg-named-png", ["train", "{in}/drawing_svg.png", "--config", "{cfg}", *TRAIN], ["drawing_svg.png", "SVG"]),
    ("one-pixel", ["train", "{in}/one_px.png", "--config", "{cfg}", *TRAIN], ["one_px.png", "1x1", "42"]),
    ("20x15", ["train", "{in}/img_20x15.png", "--config", "{cfg}", *TRAIN], ["img_20x15.png", "20x15", "42"]),
    ("bomb", ["train", "{in}/bomb.png", "--config", "{cfg}", *TRAIN], ["bomb.png", "pixels", "downscale"]),
    ("bomb-64mpx", ["train", "{in}/bomb_64mpx.png", "--config", "{cfg}", *TRAIN],
     ["bomb_64mpx.png", "8001x8000", "downscale"]),
    ("inspect-bomb", ["inspect", "{in}/bomb.png", "--json"], ["bomb.png", "pixels"]),
    ("style-content-bomb", ["edit", "{run}", "style-transfer", "--content", "{in}/bomb.png", *SAMPLE],
     ["--content", "bomb.png"]),
    ("harmonize-svg", ["edit", "{run}", "harmonize", "--composite", "{in}/drawing.svg", "--mask",
                       "{in}/one_px.png", *SAMPLE], ["--composite", "drawing.svg", "SVG"]),
    # -- configs ---------------------------------------------------------------------------
    ("negative-steps", ["train", SMALL, "--config", "{in}/negative_steps.yaml", *TRAIN],
     ["negative_steps.yaml", "train.steps", ">= 1"]),
    ("batch-zero", ["train", SMALL, "--config", "{in}/batch_zero.yaml", *TRAIN], ["batch_zero.yaml", "batch_size"]),
    ("batch-float", ["train", SMALL, "--config", "{in}/batch_float.yaml", *TRAIN],
     ["batch_float.yaml", "train.batch_size", "2.5"]),
    ("lr-word", ["train", SMALL, "--config", "{in}/lr_word.yaml", *TRAIN], ["lr_word.yaml", "train.lr", "'fast'"]),
    ("lr-negative", ["train", SMALL, "--config", "{in}/lr_negative.yaml", *TRAIN], ["lr_negative.yaml", "train.lr"]),
    ("milestones-words", ["train", SMALL, "--config", "{in}/milestones_words.yaml", *TRAIN],
     ["milestones_words.yaml", "lr_milestones", "list of whole numbers"]),
    ("milestones-down", ["train", SMALL, "--config", "{in}/milestones_down.yaml", *TRAIN],
     ["milestones_down.yaml", "increasing"]),
    ("dim-bool", ["train", SMALL, "--config", "{in}/dim_bool.yaml", *TRAIN], ["dim_bool.yaml", "model.dim"]),
    ("dim-zero", ["train", SMALL, "--config", "{in}/dim_zero.yaml", *TRAIN], ["dim_zero.yaml", "model.dim", "even"]),
    ("max-pixels-small", ["train", SMALL, "--config", "{in}/max_pixels_small.yaml", *TRAIN],
     ["max_pixels_small.yaml", "image.max_pixels"]),
    ("unknown-train-key", ["train", SMALL, "--config", "{in}/unknown_train_key.yaml", *TRAIN],
     ["unknown_train_key.yaml", "train.epochs"]),
    ("keep-negative", ["train", SMALL, "--config", "{in}/keep_negative.yaml", *TRAIN],
     ["keep_negative.yaml", "train.keep_checkpoints"]),
    ("nonfinite-zero", ["train", SMALL, "--config", "{in}/nonfinite_zero.yaml", *TRAIN],
     ["nonfinite_zero.yaml", "train.max_nonfinite_steps"]),
    ("section-not-mapping", ["train", SMALL, "--config", "{in}/train_list.yaml", *TRAIN],
     ["train_list.yaml", "'train'"]),
    # -- command-line values ---------------------------------------------------------------
    ("train-seed-2^63", ["train", SMALL, "--config", "{cfg}", "--seed", str(2 ** 63), *TRAIN], ["seed", "2^63"]),
    ("sample-seed-word", ["sample", "{run}", "--seed", "abc", *SAMPLE], ["seed", "'abc'"]),
    ("sample-seed-negative", ["sample", "{run}", "--seed", "-7", *SAMPLE], ["seed", "-7"]),
    ("sample-size-huge", ["sample", "{run}", "--size", "9000x9000", *SAMPLE], ["too large", "--size"]),
    ("roi-target-beyond-size", ["edit", "{run}", "roi-copy", "--source", "0,0,10,10", "--target", "40,0,10,10",
                                "--size", "45x60", *SAMPLE], ["--target", "45 rows"]),
    ("roi-source-past-edge", ["edit", "{run}", "roi-copy", "--source", "60,80,10,10", "--target", "0,0,10,10",
                              *SAMPLE], ["--source", "finest"]),
    ("harmonize-mask-size", ["edit", "{run}", "harmonize", "--composite", SMALL, "--mask", "{in}/img_20x15.png",
                             *SAMPLE], ["--mask", "img_20x15.png", "20x15", "120x90"]),
    # -- run folders -----------------------------------------------------------------------
    ("resume-not-a-run", ["train", SMALL, "--out", "{in}/holiday", "--resume", *QUICK],
     ["--resume", "holiday", "not a sinddm run folder"]),
    ("resume-killed-before-first-checkpoint", ["train", SMALL, "--out", "{in}/killed_early", "--resume", *QUICK],
     ["--resume", "killed_early", "first checkpoint", "--overwrite"]),
    ("resume-future-format", ["train", SMALL, "--out", "{in}/future_run", "--resume", *QUICK],
     ["future_run", "checkpoint.pt", "'sinddm/2'", "not supported"]),
    ("sample-future-format", ["sample", "{in}/future_model", *SAMPLE], ["future_model", "'sinddm/2'", "version"]),
    ("sample-future-checkpoint", ["sample", "{in}/future_run/checkpoint.pt", *SAMPLE], ["checkpoint.pt", "sinddm/2"]),
    ("train-over-a-run", ["train", SMALL, "--config", "{cfg}", "--out", "{run}", *QUICK],
     ["run", "not empty", "--overwrite", "--resume"]),
    ("sample-into-a-run", ["sample", "{run}", "--out", "{run}", "--num", "1", *QUICK], ["run", "--overwrite"]),
]


def _argv(template, inputs, run, cfg):
    return [str(a).replace("{in}", str(inputs)).replace("{run}", str(run)).replace("{cfg}", str(cfg))
            for a in template]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv, words, inputs, tiny_run, tiny_yaml, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path, inputs, tiny_run)
    rc = main(_argv(argv, inputs, tiny_run, tiny_yaml))
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert out == ""
    assert_one_error_line(err, words)
    assert snapshot(tmp_path, inputs, tiny_run) == before


# ---------------------------------------------------------------------------------------
# unusual but valid pictures
# ---------------------------------------------------------------------------------------

def _picture(kind, path):
    """Write a picture of `kind`; return the 8-bit RGB picture it should load as."""
    w, h = 64, 48
    ramp = np.linspace(0, 1, w)[None, :].repeat(h, 0)
    if kind == "png16":  # 16-bit grey: scaled to 8 bits, not clipped at 255
        a16 = np.round(ramp * 65535).astype("<u2")
        Image.frombytes("I;16", (w, h), a16.tobytes()).save(path)
        a8 = np.round(a16 * 255.0 / 65535).astype(np.uint8)
        return np.repeat(a8[:, :, None], 3, 2)
    if kind == "png48":  # 16 bits per channel RGB (Pillow cannot write these: encoded by hand)
        rgb16 = np.stack([np.round(ramp * 65535), np.round(ramp[:, ::-1] * 65535), np.full((h, w), 30000.0)], 2)
        rgb16 = rgb16.astype(">u2")
        raw = b"".join(b"\x00" + row.tobytes() for row in rgb16)  # filter type 0 per scanline

        def chunk(kind_, data):
            return struct.pack(">I", len(data)) + kind_ + data + struct.pack(">I", zlib.crc32(kind_ + data))
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
        return np.round(rgb16.astype(np.float64) / 257).astype(np.uint8)
    if kind == "grey":
        a8 = np.round(ramp * 255).astype(np.uint8)
        Image.fromarray(a8, "L").save(path)
        return np.repeat(a8[:, :, None], 3, 2)
    if kind == "cmyk_jpeg":
        Image.new("CMYK", (w, h), (0, 255, 255, 0)).save(path, quality=100)  # red in CMYK
        return None
    if kind == "palette_alpha":  # index 0 transparent: shows white, not its hidden colour
        p = Image.new("P", (w, h), 0)
        p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
        p.paste(1, (0, 0, w // 2, h))
        p.save(path, transparency=0)
        rgb = np.full((h, w, 3), 255, np.uint8)
        rgb[:, : w // 2] = (0, 0, 255)
        return rgb
    if kind == "animated_gif":  # the first frame, not a later one
        frames = [Image.new("P", (w, h), i) for i in range(3)]
        for f in frames:
            f.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
        return np.broadcast_to(np.array([255, 0, 0], np.uint8), (h, w, 3)).copy()
    if kind == "exif_rotated":  # stored 64x48, shown 48x64 (orientation 6: rotate 90° clockwise)
        stored = np.zeros((h, w, 3), np.uint8)
        stored[:, : w // 2] = (255, 255, 255)  # white left half -> white top half once rotated
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(stored).save(path, exif=exif, quality=100)
        shown = np.zeros((w, h, 3), np.uint8)
        shown[: w // 2] = 255
        return shown
    raise AssertionError(kind)


UNUSUAL = {"png16": "png", "png48": "png", "grey": "png", "cmyk_jpeg": "jpg", "palette_alpha": "png",
           "animated_gif": "gif", "exif_rotated": "jpg"}


@pytest.mark.parametrize("kind", sorted(UNUSUAL))
def test_unusual_pictures_train(kind, tiny_yaml, tmp_path, capsys):
    path = tmp_path / f"{kind}.{UNUSUAL[kind]}"
    expected = _picture(kind, path)
    got = np.asarray(load_rgb(path))
    if kind == "cmyk_jpeg":
        assert got.shape == (48, 64, 3) and (np.abs(got.astype(int) - (255, 0, 0)).max(axis=2) < 40).all()
    elif kind == "png48":  # 8 bits per channel, within a rounding step
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 1
    elif kind == "exif_rotated":
        assert got.shape == expected.shape == (64, 48, 3)
        assert np.abs(got.astype(int) - expected).mean() < 10
    else:
        np.testing.assert_array_equal(got, expected)
    run = tmp_path / "run"
    assert cli("train", path, "--config", tiny_yaml, "--out", run, *QUICK) == 0, capsys.readouterr().err
    loaded = load_model(run)
    assert loaded.step == 2
    assert loaded.pyramid.input_wh == (got.shape[1], got.shape[0])
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())


# ---------------------------------------------------------------------------------------
# numeric guard
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pyramid():
    return build_pyramid(load_rgb(SMALL), 6000)


def tiny_config(**train):
    t = dict(steps=12, batch_size=1, lr=1e-3, lr_milestones=[6], ema_decay=0.9, ema_every=1, ema_start=2,
             checkpoint_every=100, log_every=4, grid_samples=0, max_nonfinite_steps=3)
    t.update(train)
    return config_from_dict({"image": {"max_pixels": 6000}, "model": {"dim": 4}, "train": t})


def poison(trainer, bad_calls):
    """Make the network output NaN on the given (1-based) calls, so loss and gradients are NaN."""
    net, calls = trainer.net, [0]

    def forward(x, t, s):
        calls[0] += 1
        out = net(x, t, s)
        return out * float("nan") if calls[0] in bad_calls else out
    trainer.net = forward


def weights(trainer):
    return [p.detach().clone() for p in trainer.model.parameters()]


def adam_state(trainer):
    return [{k: v.clone() for k, v in st.items()} for st in trainer.optimizer.state.values()]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def same_adam(a, b):
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_a_nan_step_is_skipped_exactly_on_the_cpu(pyramid, tmp_path):
    tr = Trainer(tiny_config(), pyramid, tmp_path / "run", CPU, seed=1)
    assert tr.guard.mode == "host"
    poison(tr, {3, 5, 10})
    for step in range(1, 7):
        w, st = weights(tr), adam_state(tr)
        loss = tr.train_step()
        if step in (3, 5):
            assert not torch.isfinite(loss)
            assert same(weights(tr), w) and same_adam(adam_state(tr), st)  # no weight, no Adam state moved
        else:
            assert torch.isfinite(loss) and not same(weights(tr), w)
        assert tr.step == step
    assert tr.guard.skipped_steps == 2
    assert tr.lr_scheduler.last_epoch == 6  # the schedule counts skipped steps
    tr.train(12, progress=False)  # step 10 is skipped inside the loop's log window 9-12
    assert [s for s, _ in tr.loss_log.rows] == [8, 12]
    assert all(np.isfinite(v) for _, v in tr.loss_log.rows)  # means over the applied steps
    assert tr.guard.skipped_steps == 3
    state = load_train_state(tmp_path / "run" / "checkpoint.pt")
    assert state["nonfinite"] == {"run": 0, "total": 3}
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_finite_steps_are_untouched_by_the_guard(pyramid, tmp_path):
    """Skipping needs no change to finite steps: with the guard's inputs all finite, the CPU
    trainer matches plain Adam on the same draws bit for bit."""
    a = Trainer(tiny_config(), pyramid, tmp_path / "a", CPU, seed=4)
    b = Trainer(tiny_config(), pyramid, tmp_path / "b", CPU, seed=4)
    for _ in range(5):
        a.train_step()
        s, t, noise = b.draw_batch()
        loss = b._loss(s, t, noise)
        b.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        b.optimizer.step()  # unguarded
        b.lr_scheduler.step()
        b.step += 1
        if b.step % b.config.train.ema_every == 0:
            b._update_ema(force_copy=b.step <= b.config.train.ema_start)
    assert same(weights(a), weights(b))
    assert same(list(a.ema.parameters()), list(b.ema.parameters()))


def _with_fused_adam(tr):
    """The CUDA fast path's optimizer (fused Adam, found_inf) on the CPU."""
    try:
        tr.optimizer = torch.optim.Adam(tr.model.parameters(), lr=tr.config.train.lr, fused=True)
    except (RuntimeError, ValueError):
        pytest.skip("no fused Adam on this CPU build")
    tr.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(tr.optimizer, milestones=tr.config.train.lr_milestones,
                                                           gamma=tr.config.train.lr_gamma)
    tr._fused, tr.guard.mode = True, "found_inf"
    return tr


@pytest.mark.parametrize("mode", ["found_inf", "zero_grad"])
def test_device_guard_modes(mode, pyramid, tmp_path):
    """The GPU modes, run on the CPU: no host read per step; the stop comes at the next read-back."""
    tr = Trainer(tiny_config(max_nonfinite_steps=2, log_every=4), pyramid, tmp_path / "run", CPU, seed=2)
    if mode == "found_inf":
        _with_fused_adam(tr)
    else:
        tr.guard.mode = "zero_grad"
    poison(tr, {2, 6, 7})
    tr.train_step()
    w, st = weights(tr), adam_state(tr)
    tr.train_step()  # step 2: NaN
    if mode == "found_inf":  # fused Adam skipped the update and its step count
        assert same(weights(tr), w) and same_adam(adam_state(tr), st)
    else:  # gradients zeroed: momentum still moves the weights, which stay finite
        assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in tr.model.parameters())
        assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    assert tr.guard.skipped_steps == 0  # not read back yet
    with pytest.raises(NonFiniteLoss, match=r"at step 8: .* 2 steps in a row .*3 skipped in all.*nothing was saved"):
        tr.train(12, progress=False)  # 6, 7 in a row; seen at the read-back of step 8
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_save_refuses_non_finite_weights(pyramid, tmp_path):
    tr = Trainer(tiny_config(), pyramid, tmp_path / "run", CPU, seed=3)
    tr.train(4, progress=False)
    before = snapshot(tmp_path)
    with torch.no_grad():
        next(tr.model.parameters())[0].fill_(float("inf"))
    with pytest.raises(NonFiniteLoss, match="weights are no longer finite.*step 4"):
        tr.save()
    assert snapshot(tmp_path) == before


def test_cli_stops_after_too_many_nonfinite_steps(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"image": {"max_pixels": 6000}, "model": {"dim": 4},
                                   "train": {**TINY["train"], "steps": 20, "checkpoint_every": 3, "log_every": 2,
                                             "max_nonfinite_steps": 4, "ema_decay": 0.5}}))  # no EMA warning
    real, calls = Trainer._loss, [0]

    def loss(self, s, t, noise):  # the network's outputs (so the loss and its gradients) NaN
        calls[0] += 1
        out = real(self, s, t, noise)
        return out * float("nan") if calls[0] >= 8 else out  # from step 8 on
    monkeypatch.setattr(Trainer, "_loss", loss)
    run = tmp_path / "run"
    rc = cli("train", SMALL, "--config", cfg, "--out", run, *QUICK)
    err = capsys.readouterr().err
    assert rc == 2
    line = assert_one_error_line(err.splitlines()[-1] + "\n", ["step 11", "4 steps in a row",
                                                                "train.max_nonfinite_steps",
                                                                "last checkpoint (step 9) is intact", "train.lr"])
    assert len(err.splitlines()) == 2 and err.startswith("training ")  # the start line, then the error
    assert "Traceback" not in err and line
    state = load_train_state(run / "checkpoint.pt")  # saved during the streak: finite, counted
    assert state["step"] == 9 and state["nonfinite"] == {"run": 2, "total": 2}
    assert all(torch.isfinite(v).all() for part in ("model", "ema") for v in state[part].values())
    assert [s for s, _ in history_paths(run)] == [9, 6]
    assert load_model(run).step == 9
    assert (run / "loss.csv").read_text().splitlines()[-1].startswith("8,")
    assert not list(run.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------
# output safety
# ---------------------------------------------------------------------------------------

def _new_paths(before, after):
    return sorted(set(after) - set(before))


def test_commands_write_only_inside_their_output_folder(tiny_run, tiny_yaml, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    watched = [tmp_path, tiny_run, tiny_yaml.parent]
    before = snapshot(*watched)
    assert cli("train", SMALL, "--config", tiny_yaml, "--out", tmp_path / "a" / "run", *QUICK) == 0
    assert cli("sample", tiny_run, "--out", tmp_path / "s", "--num", "1", "--start-t", "2", "1", *QUICK) == 0
    assert cli("edit", tiny_run, "roi-copy", "--source", "0,0,10,10", "--target", "5,5,10,10", "--start-t", "2",
               "1", "--out", tmp_path / "e", "--num", "1", *QUICK) == 0
    assert cli("train", SMALL, "--out", tmp_path / "a" / "run", "--resume", "--steps", "3", *QUICK) == 0
    after = snapshot(*watched)
    changed = [p for p in before if p in after and after[p] != before[p]]
    assert changed == [str(tmp_path)]  # only the listing of the folder the outputs went into
    new = _new_paths(before, after)
    allowed = (str(tmp_path / "a"), str(tmp_path / "s"), str(tmp_path / "e"))
    assert new and all(p.startswith(allowed) for p in new), new
    assert not [p for p in new if p.endswith(".tmp")]
