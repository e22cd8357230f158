"""The `sinddm` command line end to end, in-process, on tiny images and tiny models.

One smoke training run (configs/smoke.yaml, a few steps) is shared by the module's
tests. Sampling tests pass small `--start-t` values so that each call runs a handful
of network evaluations instead of ~200.
"""

import argparse
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file

from sinddm.checkpoint import history_paths, load_model
from sinddm.cli import COMMAND_MODULES, build_parser, main
from sinddm.config import load_config
from sinddm.convert import from_reference_state_dict
from sinddm.image_io import load_rgb, make_grid
from sinddm.pyramid import build_pyramid

from .conftest import CONFIGS, GOLDEN

SMALL = GOLDEN / "small_120x90.png"
SMOKE_STEPS = 4
FAST_T = ["--start-t", "2", "1", "1"]  # T[0..2] for a 3-scale model: 4 network calls per batch
GOLDEN_CASES = ["small_120x90", "land_248x186", "portrait_186x248", "big_400x300", "pano_600x100"]


def cli(*args) -> int:
    return main([str(a) for a in args])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im).copy()


def sample(model, out, *extra, fast=True) -> int:
    return cli("sample", model, "--out", out, "--device", "cpu", "--quiet", *(FAST_T if fast else []), *extra)


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """`sinddm train` with the shipped smoke config, cut to a few steps."""
    run = tmp_path_factory.mktemp("smoke") / "run"
    rc = cli("train", SMALL, "--config", CONFIGS / "smoke.yaml", "--out", run, "--steps", SMOKE_STEPS,
             "--device", "cpu", "--seed", 0, "--quiet")
    assert rc == 0
    return run


@pytest.fixture(scope="module")
def smoke_pyramid():
    return build_pyramid(load_rgb(SMALL), load_config(CONFIGS / "smoke.yaml").image.max_pixels)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """Even smaller than smoke: 2 scales, width 8, batch 2, no grid; every schedule edge inside 8 steps."""
    cfg = {
        "image": {"max_pixels": 6000},
        "model": {"dim": 8},
        "train": {"steps": 8, "batch_size": 2, "lr": 1e-3, "lr_milestones": [6], "lr_gamma": 0.5,
                  "ema_decay": 0.8, "ema_every": 2, "ema_start": 2, "checkpoint_every": 3, "log_every": 2,
                  "grid_samples": 0},
    }
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------

def test_train_writes_a_complete_run(smoke_run, smoke_pyramid):
    names = set(listing(smoke_run))
    assert {"model.safetensors", "checkpoint.pt", "config.yaml", "pyramid.png", "loss.csv", "loss.png",
            "samples_grid.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes leave no temporaries

    cfg = load_config(smoke_run / "config.yaml")
    smoke = load_config(CONFIGS / "smoke.yaml")
    assert cfg.model == smoke.model and cfg.image == smoke.image
    assert cfg.train.steps == SMOKE_STEPS  # the --steps override is what the run records

    lines = (smoke_run / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss"
    last_step, last_loss = lines[-1].split(",")
    assert int(last_step) == SMOKE_STEPS and 0 < float(last_loss) < 10

    # The grid: the finest training level then grid_samples samples, each of the finest size.
    grid = read_png(smoke_run / "samples_grid.png")
    h, w = smoke_pyramid.sizes_hw[-1]
    n = 1 + smoke.train.grid_samples
    assert grid.shape == make_grid([np.zeros((h, w, 3), np.uint8)] * n).shape
    np.testing.assert_array_equal(grid[2:2 + h, 2:2 + w], smoke_pyramid.levels[-1])
    for name in ("pyramid.png", "loss.png"):
        with Image.open(smoke_run / name) as im:
            im.load()
            assert im.width > 0


def test_train_model_file_is_self_describing(smoke_run, smoke_pyramid):
    loaded = load_model(smoke_run)
    assert loaded.path == smoke_run / "model.safetensors"
    assert loaded.step == SMOKE_STEPS
    assert loaded.config.model.dim == 16 and loaded.model.dim == 16
    assert loaded.pyramid.sizes_hw == smoke_pyramid.sizes_hw == [(48, 64), (64, 86), (86, 115)]
    assert loaded.pyramid.scale_factor == smoke_pyramid.scale_factor
    assert loaded.pyramid.blur_distance == smoke_pyramid.blur_distance
    for a, b in zip(loaded.pyramid.levels, smoke_pyramid.levels):
        np.testing.assert_array_equal(a, b)
    with safe_open(str(smoke_run / "model.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["sinddm"])
    assert meta["format"] == "sinddm/1" and meta["step"] == SMOKE_STEPS
    assert meta["pyramid"]["sizes_hw"] == [[48, 64], [64, 86], [86, 115]]

    # checkpoint.pt carries the same EMA weights as model.safetensors.
    from_ckpt = load_model(smoke_run / "checkpoint.pt")
    assert from_ckpt.step == SMOKE_STEPS
    a, b = loaded.model.state_dict(), from_ckpt.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_config, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    assert cli("train", SMALL, "--config", tiny_config, "--out", out, "--steps", 1, "--device", "cpu",
               "--quiet", "--overwrite") == 2
    assert (out / "holiday.jpg").read_bytes() == b"precious"
    assert "not a sinddm run folder" in capsys.readouterr().err


def test_train_overwrite_refuses_a_project_folder_with_a_config_yaml(tmp_path, tiny_config, capsys):
    out = tmp_path / "myproj"
    (out / "src").mkdir(parents=True)
    (out / "config.yaml").write_text("db: x")  # a common name: alone it does not make a run
    (out / "src" / "main.py").write_text("code")
    assert cli("train", SMALL, "--config", tiny_config, "--out", out, "--steps", 1, "--device", "cpu",
               "--quiet", "--overwrite") == 2
    assert "not a sinddm run folder" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == "db: x" and (out / "src" / "main.py").read_text() == "code"


def test_train_overwrite_replaces_the_run_and_leaves_other_files(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    common = ["--config", tiny_config, "--out", out, "--device", "cpu", "--quiet"]
    assert cli("train", SMALL, *common, "--steps", 2) == 0
    (out / "notes.txt").write_text("mine")
    for folder in ("samples", "eval", "edit_harmonize"):  # what sample/eval/edit write there by default
        (out / folder).mkdir()
        (out / folder / "x.png").write_bytes(b"old")
    capsys.readouterr()
    assert cli("train", SMALL, *common, "--steps", 1, "--overwrite") == 0
    assert load_model(out).step == 1
    err = capsys.readouterr().err
    assert "steps 0 -> 1" in err and "done:" in err and "left 1 other entries as they were (notes.txt)" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert not any((out / f).exists() for f in ("samples", "eval", "edit_harmonize"))
    assert "samples_grid.png" not in listing(out)  # grid_samples: 0
    assert [s for s, _ in history_paths(out)] == [1]  # the old run's checkpoints went with it


def test_train_reports_per_scale_batches_and_unused_entries(tmp_path, tiny_config, capsys):
    data = yaml.safe_load(tiny_config.read_text())
    data["train"]["coarse_batch_sizes"] = [3, 1, 5]  # the tiny image has 2 scales: 5 is unused
    cfg = tmp_path / "coarse.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert cli("train", SMALL, "--config", cfg, "--out", tmp_path / "run", "--steps", 1, "--device", "cpu",
               "--quiet") == 0
    err = capsys.readouterr().err
    assert "batch 3/1 (coarse to fine)" in err
    assert "warning: train.coarse_batch_sizes lists 1 more batch size(s) than this image has scales (2)" in err
    assert load_config(tmp_path / "run" / "config.yaml").train.coarse_batch_sizes == [3, 1, 5]


def _tensors(path):
    return {k: v.clone() for k, v in load_file(str(path)).items()}


def test_resume_at_odd_steps_gives_the_same_weights(tmp_path):
    """Interrupted off the log/EMA/checkpoint grid (steps 3 and 5): the weights still match."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "image": {"max_pixels": 6000}, "model": {"dim": 4},
        "train": {"batch_size": 1, "lr_milestones": [4], "ema_decay": 0.7, "ema_every": 2, "ema_start": 2,
                  "checkpoint_every": 100, "log_every": 2, "grid_samples": 0}}))
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--device", "cpu", "--quiet", "--seed", 3]
    assert cli("train", SMALL, "--config", cfg, "--out", a, "--steps", 3, *common) == 0
    assert cli("train", SMALL, "--out", a, "--steps", 5, "--resume", *common) == 0
    assert cli("train", SMALL, "--out", a, "--steps", 7, "--resume", *common) == 0
    assert cli("train", SMALL, "--config", cfg, "--out", b, "--steps", 7, *common) == 0
    ta, tb = _tensors(a / "model.safetensors"), _tensors(b / "model.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_resume_equals_uninterrupted_run(tmp_path, tiny_config, capsys):
    common = ["--config", tiny_config, "--device", "cpu", "--seed", 7, "--quiet"]
    a, b = tmp_path / "interrupted", tmp_path / "straight"
    assert cli("train", SMALL, "--out", a, "--steps", 4, *common) == 0
    after_4 = _tensors(a / "model.safetensors")
    capsys.readouterr()
    assert cli("train", SMALL, "--out", a, "--steps", 8, "--resume", "--device", "cpu", "--quiet") == 0
    assert "steps 4 -> 8" in capsys.readouterr().err
    assert cli("train", SMALL, "--out", b, "--steps", 8, *common) == 0

    ta, tb = _tensors(a / "model.safetensors"), _tensors(b / "model.safetensors")
    assert ta.keys() == tb.keys()
    assert any(k.startswith("ema.") for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"
    # ... and the resumed run really trained on: the step-4 weights differ.
    assert any(not torch.equal(after_4[k], ta[k]) for k in ta if k.startswith("ema."))
    assert (a / "loss.csv").read_bytes() == (b / "loss.csv").read_bytes()
    assert [int(l.split(",")[0]) for l in (a / "loss.csv").read_text().splitlines()[1:]] == [2, 4, 6, 8]
    assert load_model(a).step == 8

    sa = torch.load(a / "checkpoint.pt", weights_only=True)
    sb = torch.load(b / "checkpoint.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 8
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert torch.equal(sa["rng"]["noise"], sb["rng"]["noise"])
    assert torch.equal(sa["rng"]["scale"], sb["rng"]["scale"])
    assert sa["lr_scheduler"] == sb["lr_scheduler"]


# ---------------------------------------------------------------------------------------
# sample
# ---------------------------------------------------------------------------------------

def test_sample_scale_hw_doubles_the_width(smoke_run, smoke_pyramid, tmp_path, capsys):
    out = tmp_path / "pano"
    assert sample(smoke_run, out, "--num", 2, "--scale-hw", 1, 2) == 0
    names = listing(out)
    assert names == ["grid.png", "sample_000.png", "sample_001.png"]
    assert [n for n in names if "grid" in n] == ["grid.png"]
    h, w = smoke_pyramid.sizes_hw[-1]
    samples = [read_png(out / f"sample_{i:03d}.png") for i in range(2)]
    for s in samples:
        assert s.shape == (int(h * 1), int(w * 2), 3) == (86, 230, 3)
    np.testing.assert_array_equal(read_png(out / "grid.png"), make_grid(samples))
    assert "wrote 2 samples of 230x86 px" in capsys.readouterr().err


def test_sample_fractional_scale_uses_int_truncation(smoke_run, smoke_pyramid, tmp_path):
    out = tmp_path / "frac"
    assert sample(smoke_run, out, "--num", 1, "--scale-hw", 1.5, 0.7) == 0
    h, w = smoke_pyramid.sizes_hw[-1]
    assert read_png(out / "sample_000.png").shape == (int(h * 1.5), int(w * 0.7), 3) == (129, 80, 3)


def test_sample_fixed_size_is_exact(smoke_run, tmp_path):
    out = tmp_path / "fixed"
    assert sample(smoke_run, out, "--num", 3, "--size", "70x151", "--batch-size", 2) == 0
    names = listing(out)
    assert names == ["grid.png", "sample_000.png", "sample_001.png", "sample_002.png"]
    for i in range(3):
        with Image.open(out / f"sample_{i:03d}.png") as im:
            assert im.size == (151, 70)


def test_sample_start_level_extrapolates_beyond_the_finest(smoke_run, smoke_pyramid, tmp_path):
    out = tmp_path / "objects"
    assert sample(smoke_run, out, "--num", 1, "--start-level", 1) == 0
    h, w = smoke_pyramid.sizes_hw[-1]
    r = smoke_pyramid.scale_factor
    assert read_png(out / "sample_000.png").shape == (round(h * r), round(w * r), 3)


def test_sample_default_out_is_inside_the_run(smoke_run, tmp_path, monkeypatch):
    run = tmp_path / "copy"
    run.mkdir()
    shutil.copy(smoke_run / "model.safetensors", run / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    assert cli("sample", run, "--num", 1, "--device", "cpu", "--quiet", *FAST_T) == 0
    assert listing(run / "samples") == ["grid.png", "sample_000.png"]
    assert listing(tmp_path) == ["copy"]


def test_sample_from_checkpoint_pt_equals_model_file(smoke_run, tmp_path):
    assert sample(smoke_run / "checkpoint.pt", tmp_path / "a", "--num", 1) == 0
    assert sample(smoke_run / "model.safetensors", tmp_path / "b", "--num", 1) == 0
    np.testing.assert_array_equal(read_png(tmp_path / "a" / "sample_000.png"),
                                  read_png(tmp_path / "b" / "sample_000.png"))


def test_sample_overwrite_writes_into_the_folder(smoke_run, tmp_path):
    out = tmp_path / "o"
    assert sample(smoke_run, out, "--num", 3) == 0
    (out / "notes.txt").write_text("mine")
    assert sample(smoke_run, out, "--num", 1, "--seed", 5, "--overwrite") == 0
    # this call's samples replace the earlier ones (no stale sample_001/002); other files stay
    assert listing(out) == ["grid.png", "notes.txt", "sample_000.png"]
    assert (out / "notes.txt").read_text() == "mine"


def test_sample_overwrite_into_the_run_folder_keeps_the_model(smoke_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    files = lambda: {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}  # noqa: E731
    before = files()
    assert sample(run, run, "--num", 1, "--overwrite") == 0
    after = files()
    assert set(after) == set(before) | {"sample_000.png", "grid.png"}
    assert all(after[k] == v for k, v in before.items())
    load_model(run)


def test_sample_start_t_changes_the_result(smoke_run, tmp_path):
    for name, ts in {"a": (2, 1, 1), "b": (2, 1, 2), "c": (3, 1, 1)}.items():
        assert sample(smoke_run, tmp_path / name, "--num", 1, "--start-t", *ts, fast=False) == 0
    a, b, c = (read_png(tmp_path / x / "sample_000.png") for x in "abc")
    assert not np.array_equal(a, b)  # T[2] differs
    assert not np.array_equal(a, c)  # T[0] differs


# ---------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seeded(smoke_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded")
    runs = {"s0": ("--seed", 0, "--num", 2, "--batch-size", 2),
            "s0_again": ("--seed", 0, "--num", 2, "--batch-size", 2),
            "s1": ("--seed", 1, "--num", 2, "--batch-size", 2),
            "s0_four": ("--seed", 0, "--num", 4, "--batch-size", 2)}
    for name, extra in runs.items():
        assert sample(smoke_run, root / name, *extra) == 0
    return root


def test_same_seed_gives_identical_files(seeded):
    for name in ("sample_000.png", "sample_001.png", "grid.png"):
        assert (seeded / "s0" / name).read_bytes() == (seeded / "s0_again" / name).read_bytes(), name


def test_different_seed_gives_different_samples(seeded):
    for i in range(2):
        a = read_png(seeded / "s0" / f"sample_{i:03d}.png")
        b = read_png(seeded / "s1" / f"sample_{i:03d}.png")
        assert not np.array_equal(a, b)
    # and the two samples of one batch differ from each other
    assert not np.array_equal(read_png(seeded / "s0" / "sample_000.png"),
                              read_png(seeded / "s0" / "sample_001.png"))


def test_more_samples_keep_the_first_ones(seeded):
    assert listing(seeded / "s0_four") == ["grid.png"] + [f"sample_{i:03d}.png" for i in range(4)]
    for i in range(2):
        np.testing.assert_array_equal(read_png(seeded / "s0" / f"sample_{i:03d}.png"),
                                      read_png(seeded / "s0_four" / f"sample_{i:03d}.png"))
    # the second batch is new material, not a repeat of the first
    for i in range(2):
        assert not np.array_equal(read_png(seeded / "s0_four" / f"sample_{i:03d}.png"),
                                  read_png(seeded / "s0_four" / f"sample_{i + 2:03d}.png"))


# ---------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_inspect_json_matches_reference(case, golden_json, capsys):
    assert cli("inspect", GOLDEN / f"{case}.png", "--json") == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert set(data) == {"sizes_hw", "n_scales", "scale_factor", "blur_distance", "start_t"}
    ref = golden_json["pyramids"][case]
    assert data["sizes_hw"] == [[h, w] for w, h in ref["sizes_wh"]]
    assert data["n_scales"] == ref["n_scales"] == len(data["sizes_hw"])
    assert data["scale_factor"] == pytest.approx(ref["scale_factor"], rel=1e-12)
    assert data["blur_distance"] == pytest.approx(ref["blur_distance"], rel=1e-12)
    assert data["start_t"] == ref["start_t"]


def test_inspect_text_and_preview(tmp_path, capsys, golden_json):
    preview = tmp_path / "pyr.png"
    assert cli("inspect", SMALL, "--preview", preview) == 0
    out = capsys.readouterr().out
    ref = golden_json["pyramids"]["small_120x90"]
    assert "120x90 px (w x h) -> 3 scales" in out
    for i, ((w, h), t) in enumerate(zip(ref["sizes_wh"], ref["start_t"])):
        assert any(line.split()[:1] == [str(i)] and f"{h} x {w}" in line and line.split()[-1] == str(t)
                   for line in out.splitlines()), (i, out)
    with Image.open(preview) as im:
        assert im.width >= sum(w for w, _ in ref["sizes_wh"])
        assert im.height >= 2 * 90


def test_inspect_max_pixels(capsys):
    assert cli("inspect", SMALL, "--json", "--max-pixels", 10000) == 0
    assert json.loads(capsys.readouterr().out)["sizes_hw"] == [[48, 64], [64, 86], [86, 115]]


# ---------------------------------------------------------------------------------------
# convert-reference
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference_params(golden):
    return {k[len("net/params/"):]: v for k, v in golden.items() if k.startswith("net/params/")}


@pytest.fixture(scope="module")
def converted_run(reference_params, tmp_path_factory):
    """A checkpoint in the reference's layout: EMA = the golden net, live model = something else."""
    root = tmp_path_factory.mktemp("convert")
    buffers = {"betas": torch.linspace(1e-4, 0.02, 100), "alphas_cumprod": torch.linspace(1, 0.01, 100),
               "sqrt_alphas_cumprod": torch.linspace(1, 0.1, 100)}
    ema = {f"denoise_fn.{k}": v.clone() for k, v in reference_params.items()} | buffers
    live = {f"denoise_fn.{k}": v + 1.0 for k, v in reference_params.items()} | buffers
    ckpt = root / "model-12.pt"
    torch.save({"model": live, "ema": ema}, ckpt)
    run = root / "run"
    assert cli("convert-reference", ckpt, SMALL, "--out", run) == 0
    return run


def test_convert_reference_writes_a_run(converted_run, golden_json):
    assert {"model.safetensors", "config.yaml", "pyramid.png"} <= set(listing(converted_run))
    assert load_config(converted_run / "config.yaml").model.dim == golden_json["net"]["dim"] == 32
    loaded = load_model(converted_run)
    assert loaded.model.dim == 32
    ref = golden_json["pyramids"]["small_120x90"]
    assert loaded.pyramid.sizes_hw == [(h, w) for w, h in ref["sizes_wh"]]
    assert loaded.start_t == ref["start_t"]


def test_converted_weights_reproduce_the_reference_forward(converted_run, golden, reference_params):
    loaded = load_model(converted_run)
    expected = from_reference_state_dict(reference_params)
    got = loaded.model.state_dict()
    assert got.keys() == expected.keys()
    for k in got:
        assert torch.equal(got[k], expected[k]), k  # the EMA weights, not the live ones
    with torch.no_grad():
        for s in range(3):
            out = loaded.model(golden["net/x"].float(), golden["net/t"], s)
            torch.testing.assert_close(out, golden[f"net/forward_s{s}"], atol=1e-5, rtol=0)


def test_sample_from_converted_run(converted_run, tmp_path):
    out = tmp_path / "conv"
    assert cli("sample", converted_run, "--out", out, "--num", 2, "--start-t", 3, 2, 2, "--device", "cpu",
               "--quiet") == 0
    assert listing(out) == ["grid.png", "sample_000.png", "sample_001.png"]
    for i in range(2):
        with Image.open(out / f"sample_{i:03d}.png") as im:
            assert im.size == (120, 90)


# ---------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------

def test_help_lists_every_command(capsys):
    """Every subcommand the parser registers is listed in `sinddm --help`, each on its own entry with
    its one-line help, and each has a handler."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = list(sub.choices)
    helps = {c.dest: " ".join(c.help.split()) for c in sub._choices_actions}
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^ {4}(\S+)", out, flags=re.M)    # argparse's entries under COMMAND
    assert listed == commands
    flat = " ".join(out.split())                            # argparse wraps long help lines
    for command in commands:
        assert f"{command} {helps[command]}" in flat, command
    for command in ("inspect", "train", "sample", "convert-reference"):
        assert command in out
    handlers = {name for module in COMMAND_MODULES for name in module.COMMANDS}
    assert set(commands) <= handlers, set(commands) - handlers


# ---------------------------------------------------------------------------------------
# sinddm run: every job checked before the first one writes; environment errors in one line
# ---------------------------------------------------------------------------------------

def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    return lines[0]


@pytest.mark.parametrize("second, words", [
    ({"model": "{tmp}/nowhere"}, ["job 2", "nowhere", "no such file"]),
    ({"start_level": 7}, ["job 2", "--start-level"]),
    ({"out": "{tmp}/afile"}, ["job 2", "afile", "not a folder"]),
    ({"out": "{tmp}/first"}, ["jobs 1 and 2 both write to", "first"]),
])
def test_run_checks_every_job_before_the_first_writes(smoke_run, tmp_path, capsys, second, words):
    (tmp_path / "afile").write_text("x")
    job = {"model": str(smoke_run), "num": 1, "start_t": [2, 1, 1], "device": "cpu", "quiet": True}
    later = {**job, "out": str(tmp_path / "second"), **{k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str)
                                                         else v for k, v in second.items()}}
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump([{"sample": {**job, "out": str(tmp_path / "first")}},
                                                        {"sample": later}]))
    assert cli("run", tmp_path / "jobs.yaml") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert all(w in line for w in words), line
    assert not (tmp_path / "first").exists() and not (tmp_path / "second").exists()


def test_run_jobs_take_dashed_keys_and_a_size_list(smoke_run, tmp_path):
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump([{"sample": {
        "model": str(smoke_run), "--num": 2, "size": [40, 60], "start_t": [2, 1, 1], "device": "cpu",
        "quiet": True, "out": str(tmp_path / "o")}}]))
    assert cli("run", tmp_path / "jobs.yaml") == 0
    assert [read_png(tmp_path / "o" / f"sample_{i:03d}.png").shape for i in range(2)] == [(40, 60, 3)] * 2


@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary", "not a text file"),
    (b"- sample: runs/x\n", "must map option names to values"),
    (b"- sample: {model: runs/x, help: true}\n", "'help' is not a job option"),
])
def test_run_bad_jobs_files_are_one_line(tmp_path, capsys, content, words):
    (tmp_path / "jobs.yaml").write_bytes(content)
    assert cli("run", tmp_path / "jobs.yaml") == 2
    assert words in _one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc (a folder nobody can write in)")
def test_an_output_folder_that_cannot_be_written_fails_before_any_work(smoke_run, monkeypatch, capsys):
    import sinddm.pipeline

    monkeypatch.setattr(sinddm.pipeline, "generate", lambda *a, **k: pytest.fail("sampled before the check"))
    assert sample(smoke_run, "/proc/sinddm-test-out", "--num", 1) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "output folder '/proc/sinddm-test-out'" in line and "cannot write in '/proc'" in line


def test_machine_errors_are_one_line_with_exit_1(smoke_run, tmp_path, monkeypatch, capsys):
    import sinddm.pipeline

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "sample_000.png"))

    monkeypatch.setattr(sinddm.pipeline, "generate", full_disk)
    assert sample(smoke_run, tmp_path / "o", "--num", 1) == 1
    assert _one_error_line(capsys.readouterr().err) == f"error: No space left on device ('{tmp_path}/o/sample_000.png')"

    def no_memory(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9000000000 bytes.")

    monkeypatch.setattr(sinddm.pipeline, "generate", no_memory)
    assert sample(smoke_run, tmp_path / "o", "--num", 1) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: out of memory (DefaultCPUAllocator") and "--batch-size" in line

    monkeypatch.setattr(sinddm.pipeline, "generate", lambda *a, **k: 1 / 0)  # a bug still shows its traceback
    with pytest.raises(ZeroDivisionError):
        sample(smoke_run, tmp_path / "o", "--num", 1)


def test_train_interrupted_before_its_first_save_leaves_no_folder(tmp_path, tiny_config, monkeypatch, capsys):
    import sinddm.training

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sinddm.training.Trainer, "__init__", interrupt)  # after config.yaml and pyramid.png
    out = tmp_path / "run"
    assert cli("train", SMALL, "--config", tiny_config, "--out", out, "--device", "cpu", "--quiet") == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert not out.exists()


def test_train_interrupted_before_it_owns_the_folder_leaves_an_existing_run_alone(smoke_run, tmp_path, monkeypatch):
    import sinddm.pyramid

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    (run / "checkpoint.pt").unlink()  # like a converted run: a model and no training state
    before = sorted(p.name for p in run.iterdir())

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sinddm.pyramid, "build_pyramid", interrupt)  # before the folder is checked
    assert cli("train", SMALL, "--out", run, "--device", "cpu", "--quiet") == 130
    assert sorted(p.name for p in run.iterdir()) == before


def test_train_resume_and_overwrite_contradict(tmp_path, tiny_config, capsys):
    assert cli("train", SMALL, "--out", tmp_path / "run", "--resume", "--overwrite", "--device", "cpu") == 2
    assert "give one of them" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_version(capsys):
    from sinddm import __version__

    with pytest.raises(SystemExit) as e:
        cli("--version")
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sinddm {__version__}"


def test_train_refuses_a_run_that_cannot_fit_in_memory_before_any_work(tiny_config, tmp_path, monkeypatch, capsys):
    import sinddm.devices as D
    import sinddm.training as T

    cfg = load_config(tiny_config)
    sizes = build_pyramid(load_rgb(SMALL), cfg.image.max_pixels).sizes_hw
    need = D.train_memory_needed(sizes, [2] * len(sizes), cfg.model.dim)
    (h, w) = sizes[-1]  # batch 2 everywhere: the finest scale is the largest step
    assert need == 2 * h * w * cfg.model.dim * 4 * D._TRAIN_MAPS
    monkeypatch.setattr(T.Trainer, "__init__", lambda *a, **k: pytest.fail("trained before the check"))
    monkeypatch.setattr(D, "available_memory", lambda device: need - 1)
    run = tmp_path / "run"
    assert cli("train", SMALL, "--config", tiny_config, "--out", run, "--device", "cpu", "--quiet") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"training width 8 with batch 2 at {h}x{w} px (h x w)" in line
    assert "set train.batch_size to 1 or less" in line and not run.exists()

    # A per-scale batch that makes a coarse scale the largest step is the one named.
    data = yaml.safe_load(tiny_config.read_text())
    data["train"]["coarse_batch_sizes"] = [40]
    big = tmp_path / "coarse.yaml"
    big.write_text(yaml.safe_dump(data))
    (h0, w0) = sizes[0]
    need0 = D.train_memory_needed(sizes, [40, 2], 8)
    assert need0 == 40 * h0 * w0 * 8 * 4 * D._TRAIN_MAPS > need
    monkeypatch.setattr(D, "available_memory", lambda device: need0 // 2)
    assert cli("train", SMALL, "--config", big, "--out", run, "--device", "cpu", "--quiet") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"batch 40 at {h0}x{w0} px" in line and "set train.coarse_batch_sizes[0] to 20 or less" in line

    # Unknown (no /proc/meminfo) or enough: training goes ahead.
    monkeypatch.setattr(D, "available_memory", lambda device: None)
    with pytest.raises(pytest.fail.Exception, match="trained before the check"):
        cli("train", SMALL, "--config", tiny_config, "--out", run, "--device", "cpu", "--quiet")


def test_train_resume_checks_memory_too(tiny_config, tmp_path, monkeypatch, capsys):
    import sinddm.devices as D

    run = tmp_path / "run"
    assert cli("train", SMALL, "--config", tiny_config, "--out", run, "--steps", 3, "--device", "cpu", "--quiet") == 0
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    monkeypatch.setattr(D, "available_memory", lambda device: 1)
    assert cli("train", SMALL, "--out", run, "--resume", "--steps", 8, "--device", "cpu", "--quiet") == 2
    assert "GiB memory available" in _one_error_line(capsys.readouterr().err)
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_sample_tiles_what_does_not_fit_and_refuses_what_cannot_before_any_work(smoke_run, tmp_path, monkeypatch,
                                                                                capsys):
    import sinddm.devices as D
    import sinddm.pipeline as P

    loaded = load_model(smoke_run)
    sizes = [(2 * h, 2 * w) for h, w in loaded.pyramid.sizes_hw]
    one = D.memory_needed(sizes, loaded.model.dim, 1)
    assert one == 4 * sizes[-1][0] * sizes[-1][1] * loaded.model.dim * D._NEEDED_MAPS
    calls = []

    def fake_generate(loaded, num, sizes_hw, *a, tile=None, **k):
        calls.append(tile)
        return [torch.zeros(3, *sizes_hw[-1])] * num

    monkeypatch.setattr(P, "generate", fake_generate)
    monkeypatch.setattr("sinddm.tiling.TILE_PASS_BUDGET", one // 8)     # windows per pass, scaled to this size
    monkeypatch.setattr(D, "available_memory", lambda device: one - 1)   # untiled does not fit: tiles
    assert sample(smoke_run, tmp_path / "o", "--num", 1, "--scale-hw", 2, 2) == 0
    err = capsys.readouterr().err
    assert "tiling on" in err and calls[-1] is not None and calls[-1] < max(sizes[-1])
    monkeypatch.setattr(D, "available_memory", lambda device: 3 * one // 2)   # --batch-size 2 is kept: tiles
    assert sample(smoke_run, tmp_path / "o2", "--num", 2, "--batch-size", 2, "--scale-hw", 2, 2) == 0
    assert "tiling on" in capsys.readouterr().err and calls[-1] is not None
    monkeypatch.setattr(D, "available_memory", lambda device: 1000)       # not even the images fit: refused
    assert sample(smoke_run, tmp_path / "o3", "--num", 1, "--scale-hw", 2, 2) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{sizes[-1][0]}x{sizes[-1][1]} px (h x w)" in line and "even tiled" in line
    assert not (tmp_path / "o3").exists() and len(calls) == 2
    monkeypatch.setattr(D, "available_memory", lambda device: None)  # unknown: no check, sampling goes on untiled
    assert sample(smoke_run, tmp_path / "o4", "--num", 1, "--scale-hw", 2, 2) == 0
    assert calls[-1] is None


def test_inspect_preview_is_not_overwritten_without_overwrite(tmp_path, capsys):
    preview = tmp_path / "p.png"
    preview.write_bytes(b"mine")
    assert cli("inspect", SMALL, "--preview", preview) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--preview" in line and "--overwrite" in line and preview.read_bytes() == b"mine"
    assert cli("inspect", SMALL, "--preview", preview, "--overwrite") == 0
    assert Image.open(preview).size[0] > 0


def test_an_empty_config_says_it_means_the_paper_recipe(tmp_path, capsys):
    from sinddm.config import Config

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set yet\n")
    capsys.readouterr()
    assert load_config(empty) == Config()
    err = capsys.readouterr().err
    assert "is empty" in err and "paper's recipe" in err
