"""The public object `sinddm.SinDDM`: the README's Python API example runs, and every method gives
what the command line gives for the same seed (the CLI is written on top of the same pieces)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sinddm import SinDDM
from sinddm.cli import main
from sinddm.errors import UserError
from sinddm.pipeline import generate

from .conftest import ASSETS, CONFIGS

ROOT = Path(__file__).resolve().parent.parent
MODEL = ASSETS / "models" / "hubble-small.safetensors"
FP32 = ["--device", "cpu", "--precision", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def model():
    return SinDDM.load(MODEL, device="cpu", precision="fp32")


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- python-api: this block runs in tests/test_api.py -->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its Python API example"
    for name in ("assets", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert sorted(p.name for p in (tmp_path / "out" / "api").iterdir()) == ["grid.png", "sample_000.png",
                                                                            "sample_001.png"]


def test_sample_equals_the_cli_and_generate(model, tmp_path):
    images = model.sample(2, size=(50, 90), seed=7, batch_size=2)
    assert [im.size for im in images] == [(90, 50)] * 2
    assert main(["sample", str(MODEL), "--num", "2", "--size", "50x90", "--seed", "7", "--batch-size", "2",
                 "--out", str(tmp_path), *FP32]) == 0
    for i, im in enumerate(images):
        np.testing.assert_array_equal(np.asarray(im), _png(tmp_path / f"sample_{i:03d}.png"))
    tensors = model.sample(2, size=(50, 90), seed=7, batch_size=2, output="tensor")
    direct = generate(model.loaded, 2, model.sizes(size=(50, 90)), model.loaded.start_t, seed=7, batch_size=2,
                      progress=False)
    for a, b in zip(tensors, direct):
        assert torch.equal(a, b)


def _composite(model, tmp_path, corner, colour) -> np.ndarray:
    """c.png: the training field with a 20×20 square of `colour` at `corner`; m.png: its mask (returned)."""
    h, w = model.size
    comp = np.asarray(Image.open(ASSETS / "hubble.jpg").convert("RGB").resize((w, h))).copy()
    y, x = corner
    comp[y:y + 20, x:x + 20] = colour
    mask = np.zeros((h, w), np.uint8)
    mask[y:y + 20, x:x + 20] = 255
    Image.fromarray(comp).save(tmp_path / "c.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    return mask


def test_edits_equal_the_cli(model, tmp_path):
    mask = _composite(model, tmp_path, (40, 50), (220, 60, 40))
    cases = [
        (lambda: model.harmonize(tmp_path / "c.png", mask, num=1, seed=4),
         ["harmonize", "--composite", tmp_path / "c.png", "--mask", tmp_path / "m.png", "--seed", "4"], "harmonize"),
        (lambda: model.style_transfer(ASSETS / "rocket.jpg", num=1, seed=5),
         ["style-transfer", "--content", ASSETS / "rocket.jpg", "--seed", "5"], "style_transfer"),
        (lambda: model.roi_copy("74,17,16,16", [(8, 8, 16, 16)], num=1, seed=6),
         ["roi-copy", "--source", "74,17,16,16", "--target", "8,8,16,16", "--seed", "6"], "roi_copy"),
    ]
    for run, argv, prefix in cases:
        out = tmp_path / prefix
        assert main(["edit", str(MODEL), *map(str, argv), "--num", "1", "--out", str(out), *FP32]) == 0
        np.testing.assert_array_equal(np.asarray(run()[0]), _png(out / f"{prefix}_000.png"), err_msg=prefix)


def test_bad_input_is_a_user_error(model, tmp_path):
    with pytest.raises(UserError, match="target"):
        model.roi_copy((0, 0, 8, 8), [(0, 0, 8, 10_000)])
    with pytest.raises(UserError, match="start_level"):
        model.sample(1, start_level=99)
    with pytest.raises(UserError, match="content"):
        model.style_transfer(tmp_path / "missing.png")
    with pytest.raises(UserError, match="output"):
        model.sample(1, output="numpy")


def test_train_writes_the_run_the_cli_writes(tmp_path):
    picture = ROOT / "tests" / "golden" / "small_120x90.png"
    trained = SinDDM.train(picture, tmp_path / "api", config=CONFIGS / "smoke.yaml", steps=4, seed=3, device="cpu",
                           precision="fp32", progress=False)
    assert main(["train", str(picture), "--config", str(CONFIGS / "smoke.yaml"), "--steps", "4", "--seed", "3",
                 "--out", str(tmp_path / "cli"), *FP32]) == 0
    assert trained.loaded.step == 4
    cli_model = SinDDM.load(tmp_path / "cli", device="cpu")
    for (k, a), (_, b) in zip(trained.loaded.model.state_dict().items(), cli_model.loaded.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert (tmp_path / "api" / "loss.csv").read_bytes() == (tmp_path / "cli" / "loss.csv").read_bytes()


def test_walkthrough_example_runs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "walkthrough.py"), "--quick", "--out",
                           str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("panoramas/grid.png", "roi_copy/roi_copy_000.png", "style_transfer/style_transfer_000.png",
                 "run/model.safetensors"):
        assert (tmp_path / "w" / name).is_file(), name


def test_sizes_are_checked_like_the_cli(model):
    with pytest.raises(UserError, match="too small"):
        model.sample(1, size=(6, 6))
    with pytest.raises(UserError, match="too large"):
        model.sizes(size=(9000, 9000))


def test_the_api_equals_the_cli_at_non_default_arguments(model, tmp_path):
    """Each value reaches the work, not only the defaults: a noise level, a fixed size with start
    timesteps and a start level, as the CLI passes them."""
    _composite(model, tmp_path, (30, 40), (40, 200, 90))
    cases = [
        (lambda: model.harmonize(tmp_path / "c.png", tmp_path / "m.png", noise_level=12, seed=2),
         ["edit", "harmonize", "--composite", tmp_path / "c.png", "--mask", tmp_path / "m.png", "--noise-level", "12",
          "--seed", "2"], "harmonize"),
        (lambda: model.style_transfer(ASSETS / "rocket.jpg", noise_level=7, seed=1),
         ["edit", "style-transfer", "--content", ASSETS / "rocket.jpg", "--noise-level", "7", "--seed", "1"],
         "style_transfer"),
        (lambda: model.roi_copy("74,17,16,16", ["8,8,16,16"], size=(90, 150), start_t=[30, 5, 5], seed=3),
         ["edit", "roi-copy", "--source", "74,17,16,16", "--target", "8,8,16,16", "--size", "90x150",
          "--start-t", "30", "5", "5", "--seed", "3"], "roi_copy"),
        (lambda: model.sample(1, start_level=1, start_t=[20, 4, 4], seed=5),
         ["sample", "--start-level", "1", "--start-t", "20", "4", "4", "--seed", "5"], "sample"),
    ]
    for run, argv, prefix in cases:
        out = tmp_path / prefix
        assert main([argv[0], str(MODEL), *map(str, argv[1:]), "--num", "1", "--out", str(out), *FP32]) == 0
        mine = np.asarray(run()[0])
        np.testing.assert_array_equal(mine, _png(out / f"{prefix}_000.png"), err_msg=prefix)
    # and the non-default value mattered: the default noise level gives another picture
    default = np.asarray(model.harmonize(tmp_path / "c.png", tmp_path / "m.png", seed=2)[0])
    assert not np.array_equal(default, _png(tmp_path / "harmonize" / "harmonize_000.png"))
