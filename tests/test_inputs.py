"""Bad input: exit code 2, one `error:` line naming the input, no traceback, nothing written."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from sinddm.checkpoint import save_model
from sinddm.cli import main
from sinddm.config import config_from_dict
from sinddm.image_io import load_rgb
from sinddm.model import Denoiser
from sinddm.pyramid import build_pyramid

from .conftest import ASSETS, GOLDEN

SMALL = GOLDEN / "small_120x90.png"
ROCKET = ASSETS / "rocket.jpg"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A sampleable 3-scale run with an untrained width-4 network (no training needed)."""
    run = tmp_path_factory.mktemp("fake") / "run"
    run.mkdir()
    config = config_from_dict({"image": {"max_pixels": 10_000}, "model": {"dim": 4}})
    torch.manual_seed(0)
    pyr = build_pyramid(load_rgb(SMALL), 10_000)
    assert pyr.n_scales == 3
    save_model(run / "model.safetensors", Denoiser(4).state_dict(), pyr, config, step=0, source="test")
    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad and good input files, by name (the tests check that none of them changes)."""
    d = tmp_path_factory.mktemp("in")
    (d / "empty.png").write_bytes(b"")
    data = SMALL.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    data = ROCKET.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "notes.txt").write_text("this is not a picture\n")
    (d / "fake.png").write_text("neither is this, whatever its name says\n")
    Image.new("RGB", (50, 30), (10, 200, 30)).save(d / "tiny_50x30.png")
    (d / "a_folder.png").mkdir()
    shutil.copy(SMALL, d / "good.png")

    def cfg(name, text):
        (d / name).write_text(text)

    # If validation were broken, these would still train for only 1 cheap step.
    cheap = "image: {max_pixels: 6000}\nmodel: {dim: 4}\ntrain: {steps: 1, batch_size: 1, grid_samples: 0}\n"
    cfg("cheap.yaml", cheap)
    cfg("bad_syntax.yaml", "model: {dim: 4\ntrain: [steps: 1\n")
    cfg("unknown_key.yaml", cheap.replace("dim: 4", "dim: 4, widht: 8"))
    cfg("unknown_section.yaml", cheap + "optimiser: {lr: 0.1}\n")
    cfg("wrong_type.yaml", cheap.replace("steps: 1", "steps: one"))
    cfg("odd_dim.yaml", cheap.replace("dim: 4", "dim: 5"))
    cfg("list.yaml", "- 1\n- 2\n")
    torch.save({"something": torch.zeros(2)}, d / "no_weights.pt")
    (d / "garbage.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    torch.save({"format": "something/else"}, d / "checkpoint.pt")
    ref = torch.load(GOLDEN / "reference.pt", weights_only=True)
    params = {f"denoise_fn.{k[len('net/params/'):]}": v for k, v in ref.items() if k.startswith("net/params/")}
    no_l4 = {k: v for k, v in params.items() if ".l4." not in k}
    torch.save({"model": no_l4, "ema": no_l4}, d / "partial.pt")
    torch.save({"model": params, "ema": params}, d / "ref.pt")
    misshapen = {k: (v[:1] if k.endswith("l3.net.0.weight") else v) for k, v in params.items()}
    torch.save({"ema": misshapen}, d / "misshapen.pt")
    torch.save({"model": [1, 2], "ema": "no"}, d / "odd_layout.pt")
    # a model.safetensors with sinddm metadata but a weight missing
    broken = d / "broken"
    broken.mkdir()
    pyr = build_pyramid(load_rgb(SMALL), 10_000)
    weights = {k: v for k, v in Denoiser(4).state_dict().items() if k != "out.weight"}
    save_model(broken / "model.safetensors", weights, pyr, config_from_dict({"model": {"dim": 4}}), step=0)
    torch.save({"format": "sinddm/1", "step": 3}, d / "hollow.pt")
    (d / "not_a_run").mkdir()
    busy = d / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    return d


def snapshot(*roots):
    """Every path under `roots`, with file contents."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            out[dirpath] = sorted(dirnames)
            for f in filenames:
                p = os.path.join(dirpath, f)
                out[p] = Path(p).read_bytes()
    return out


TRAIN_FAST = ["--config", "{in}/cheap.yaml", "--steps", "1", "--device", "cpu", "--quiet"]
SAMPLE_FAST = ["--num", "1", "--device", "cpu", "--quiet"]

# (id, argv with {in} = input folder and {run} = a valid run, words the message must contain)
CASES = [
    # -- pictures --------------------------------------------------------------------------
    ("train-missing-image", ["train", "{in}/missing.png", "--out", "out", *TRAIN_FAST],
     ["missing.png", "no such file"]),
    ("train-empty-file", ["train", "{in}/empty.png", "--out", "out", *TRAIN_FAST], ["empty.png", "empty"]),
    ("train-truncated-png", ["train", "{in}/truncated.png", "--out", "out", *TRAIN_FAST], ["truncated.png"]),
    ("train-truncated-jpeg", ["train", "{in}/truncated.jpg", "--out", "out", *TRAIN_FAST], ["truncated.jpg"]),
    ("train-text-file", ["train", "{in}/notes.txt", "--out", "out", *TRAIN_FAST], ["notes.txt", "not a picture"]),
    ("train-text-named-png", ["train", "{in}/fake.png", "--out", "out", *TRAIN_FAST], ["fake.png"]),
    ("train-folder-as-image", ["train", "{in}/a_folder.png", "--out", "out", *TRAIN_FAST], ["a_folder.png"]),
    ("train-too-small", ["train", "{in}/tiny_50x30.png", "--out", "out", *TRAIN_FAST], ["tiny_50x30.png", "42"]),
    ("train-default-out-too-small", ["train", "{in}/tiny_50x30.png", *TRAIN_FAST], ["tiny_50x30.png"]),
    ("inspect-missing-image", ["inspect", "{in}/missing.png", "--json"], ["missing.png"]),
    ("inspect-truncated", ["inspect", "{in}/truncated.jpg", "--preview", "prev.png"], ["truncated.jpg"]),
    ("inspect-too-small", ["inspect", "{in}/tiny_50x30.png"], ["tiny_50x30.png"]),
    ("inspect-preview-bad-type", ["inspect", "{in}/good.png", "--preview", "pyramid.txt"],
     ["--preview", "pyramid.txt"]),
    ("inspect-preview-no-folder", ["inspect", "{in}/good.png", "--preview", "nowhere/pyramid.png"],
     ["--preview", "nowhere"]),
    ("inspect-preview-under-file", ["inspect", "{in}/good.png", "--preview", "{in}/notes.txt/p.png"],
     ["--preview", "notes.txt"]),
    ("inspect-pixel-cap", ["inspect", "{in}/good.png", "--max-pixels", "100"], ["good.png", "pixel cap"]),
    # -- configs ---------------------------------------------------------------------------
    ("config-missing", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/nope.yaml"], ["nope.yaml"]),
    ("config-bad-yaml", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/bad_syntax.yaml"],
     ["bad_syntax.yaml", "YAML"]),
    ("config-unknown-key", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/unknown_key.yaml"],
     ["unknown_key.yaml", "model.widht"]),
    ("config-unknown-section", ["train", "{in}/good.png", "--out", "out", "--config",
                                "{in}/unknown_section.yaml"], ["unknown_section.yaml", "optimiser"]),
    ("config-wrong-type", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/wrong_type.yaml"],
     ["wrong_type.yaml", "train.steps", "'one'"]),
    ("config-odd-dim", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/odd_dim.yaml"],
     ["odd_dim.yaml", "model.dim"]),
    ("config-not-mapping", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/list.yaml"], ["list.yaml"]),
    # -- train flags and folders -----------------------------------------------------------
    ("train-steps-zero", ["train", "{in}/good.png", "--out", "out", "--config", "{in}/cheap.yaml", "--steps", "0"],
     ["--steps"]),
    ("train-steps-word", ["train", "{in}/good.png", "--out", "out", "--steps", "ten"], ["--steps", "ten"]),
    ("train-seed-negative", ["train", "{in}/good.png", "--out", "out", "--seed", "-1"], ["seed"]),
    ("train-bad-device", ["train", "{in}/good.png", "--out", "out", "--device", "tpu"], ["--device", "tpu"]),
    ("train-bad-precision", ["train", "{in}/good.png", "--out", "out", "--precision", "fp8"], ["--precision"]),
    ("train-busy-out", ["train", "{in}/good.png", "--out", "{in}/busy", *TRAIN_FAST], ["busy", "--overwrite"]),
    ("train-out-is-file", ["train", "{in}/good.png", "--out", "{in}/notes.txt", *TRAIN_FAST], ["notes.txt"]),
    ("train-out-under-file", ["train", "{in}/good.png", "--out", "{in}/notes.txt/run", *TRAIN_FAST],
     ["notes.txt", "--out"]),
    ("train-resume-nothing", ["train", "{in}/good.png", "--out", "out", "--resume", *TRAIN_FAST],
     ["--resume", "out"]),
    # -- sample ----------------------------------------------------------------------------
    ("size-no-width", ["sample", "{run}", "--out", "out", "--size", "10x", *SAMPLE_FAST], ["--size", "10x"]),
    ("size-zero", ["sample", "{run}", "--out", "out", "--size", "0x5", *SAMPLE_FAST], ["--size", "0x5"]),
    ("size-word", ["sample", "{run}", "--out", "out", "--size", "abc", *SAMPLE_FAST], ["--size", "abc"]),
    ("size-negative", ["sample", "{run}", "--out", "out", "--size", "-5x10", *SAMPLE_FAST], ["--size"]),
    ("size-too-small", ["sample", "{run}", "--out", "out", "--size", "5x5", *SAMPLE_FAST], ["--size", "small"]),
    ("size-and-scale", ["sample", "{run}", "--out", "out", "--size", "50x50", "--scale-hw", "1", "2",
                        *SAMPLE_FAST], ["--size", "--scale-hw"]),
    ("scale-zero", ["sample", "{run}", "--out", "out", "--scale-hw", "0", "1", *SAMPLE_FAST], ["--scale-hw"]),
    ("scale-word", ["sample", "{run}", "--out", "out", "--scale-hw", "1", "wide", *SAMPLE_FAST],
     ["--scale-hw", "wide"]),
    ("start-t-one-value", ["sample", "{run}", "--out", "out", "--start-t", "5", *SAMPLE_FAST], ["--start-t", "got 1"]),
    ("start-t-four-values", ["sample", "{run}", "--out", "out", "--start-t", "5", "5", "5", "5", *SAMPLE_FAST],
     ["--start-t", "got 4"]),
    ("start-t-too-big", ["sample", "{run}", "--out", "out", "--start-t", "50", "100", *SAMPLE_FAST],
     ["--start-t", "100"]),
    ("start-t-zero", ["sample", "{run}", "--out", "out", "--start-t", "0", "5", "5", *SAMPLE_FAST],
     ["--start-t", "T[0]"]),
    ("start-t0-too-big", ["sample", "{run}", "--out", "out", "--start-t", "101", "5", "5", *SAMPLE_FAST],
     ["--start-t", "101"]),
    ("start-t-negative", ["sample", "{run}", "--out", "out", "--start-t", "5", "-3", *SAMPLE_FAST],
     ["--start-t", "-3"]),
    ("start-t-word", ["sample", "{run}", "--out", "out", "--start-t", "5", "x", *SAMPLE_FAST], ["--start-t", "'x'"]),
    ("start-level-too-big", ["sample", "{run}", "--out", "out", "--start-level", "3", *SAMPLE_FAST],
     ["--start-level"]),
    ("start-level-negative", ["sample", "{run}", "--out", "out", "--start-level", "-1", *SAMPLE_FAST],
     ["--start-level"]),
    ("num-zero", ["sample", "{run}", "--out", "out", "--num", "0"], ["--num"]),
    ("batch-zero", ["sample", "{run}", "--out", "out", "--batch-size", "0", *SAMPLE_FAST], ["--batch-size"]),
    ("sample-not-a-run", ["sample", "{in}/not_a_run", "--out", "out", *SAMPLE_FAST], ["not_a_run"]),
    ("sample-missing-model", ["sample", "{in}/nothing_here", "--out", "out", *SAMPLE_FAST], ["nothing_here"]),
    ("sample-garbage-safetensors", ["sample", "{in}/garbage.safetensors", "--out", "out", *SAMPLE_FAST],
     ["garbage.safetensors"]),
    ("sample-tiny-image-as-model", ["sample", "{in}/tiny_50x30.png", "--out", "out", *SAMPLE_FAST],
     ["tiny_50x30.png", "too small"]),
    ("sample-foreign-checkpoint", ["sample", "{in}/checkpoint.pt", "--out", "out", *SAMPLE_FAST],
     ["checkpoint.pt"]),
    ("sample-out-under-file", ["sample", "{run}", "--out", "{in}/notes.txt/s", *SAMPLE_FAST],
     ["notes.txt", "--out"]),
    ("sample-broken-model", ["sample", "{in}/broken", "--out", "out", *SAMPLE_FAST], ["broken", "model.safetensors"]),
    ("sample-hollow-checkpoint", ["sample", "{in}/hollow.pt", "--out", "out", *SAMPLE_FAST], ["hollow.pt"]),
    ("sample-busy-out", ["sample", "{run}", "--out", "{in}/busy", *SAMPLE_FAST], ["busy", "--overwrite"]),
    # -- convert-reference -----------------------------------------------------------------
    ("convert-missing", ["convert-reference", "{in}/model-1.pt", "{in}/good.png", "--out", "out"], ["model-1.pt"]),
    ("convert-garbage", ["convert-reference", "{in}/garbage.pt", "{in}/good.png", "--out", "out"], ["garbage.pt"]),
    ("convert-text", ["convert-reference", "{in}/notes.txt", "{in}/good.png", "--out", "out"], ["notes.txt"]),
    ("convert-no-weights", ["convert-reference", "{in}/no_weights.pt", "{in}/good.png", "--out", "out"],
     ["no_weights.pt", "denoiser"]),
    ("convert-partial", ["convert-reference", "{in}/partial.pt", "{in}/good.png", "--out", "out"],
     ["partial.pt", "do not fit"]),
    ("convert-misshapen", ["convert-reference", "{in}/misshapen.pt", "{in}/good.png", "--out", "out"],
     ["misshapen.pt", "do not fit"]),
    ("convert-odd-layout", ["convert-reference", "{in}/odd_layout.pt", "{in}/good.png", "--out", "out"],
     ["odd_layout.pt"]),
    ("convert-bad-image", ["convert-reference", "{in}/ref.pt", "{in}/truncated.png", "--out", "out"],
     ["truncated.png"]),
    ("convert-too-small", ["convert-reference", "{in}/ref.pt", "{in}/tiny_50x30.png", "--out", "out"],
     ["tiny_50x30.png"]),
    ("convert-no-out", ["convert-reference", "{in}/no_weights.pt", "{in}/good.png"], ["--out"]),
    # -- the command itself ----------------------------------------------------------------
    ("no-command", [], ["COMMAND"]),
    ("unknown-command", ["fly"], ["fly"]),
    ("unknown-flag", ["sample", "{run}", "--colour", "red"], ["--colour"]),
]


def _argv(template, files, run):
    return [a.replace("{in}", str(files)).replace("{run}", str(run)) for a in template]


def assert_one_error_line(err: str, words) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    return line


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(argv, words, files, fake_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/<name>, ./samples) would land here
    before = snapshot(tmp_path, fake_run, files)
    rc = main(_argv(argv, files, fake_run))
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert_one_error_line(err, words)
    assert snapshot(tmp_path, fake_run, files) == before  # no output folder, no stray files


def test_convert_reference_busy_out(files, tmp_path, monkeypatch, capsys):
    """A valid reference checkpoint into a non-empty folder: refused, folder untouched."""
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path, files)
    assert main(["convert-reference", str(files / "ref.pt"), str(SMALL), "--out", str(files / "busy")]) == 2
    assert_one_error_line(capsys.readouterr().err, ["busy", "--overwrite"])
    assert snapshot(tmp_path, files) == before


def test_resume_with_another_image_is_refused(files, tmp_path, capsys):
    """--resume checks that the image is the run's: refused without touching the run."""
    run = tmp_path / "run"
    assert main(["train", str(SMALL), "--out", str(run), *_argv(TRAIN_FAST, files, None)]) == 0
    capsys.readouterr()
    before = snapshot(run)
    rc = main(["train", str(ROCKET), "--out", str(run), "--resume", "--steps", "2", "--device", "cpu", "--quiet"])
    assert rc == 2
    assert_one_error_line(capsys.readouterr().err, ["--resume", "rocket.jpg"])
    assert snapshot(run) == before


def test_resume_with_a_different_model_config_is_refused(files, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(SMALL), "--out", str(run), *_argv(TRAIN_FAST, files, None)]) == 0
    capsys.readouterr()
    other = tmp_path / "other.yaml"
    cfg = yaml.safe_load((files / "cheap.yaml").read_text())
    cfg["model"]["dim"] = 6
    other.write_text(yaml.safe_dump(cfg))
    before = snapshot(run)
    rc = main(["train", str(SMALL), "--out", str(run), "--resume", "--config", str(other), "--steps", "2",
               "--device", "cpu", "--quiet"])
    assert rc == 2
    assert_one_error_line(capsys.readouterr().err, ["--resume", "config"])
    assert snapshot(run) == before


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("sinddm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sinddm"]


def test_real_process_exit_code_and_one_line(files, tmp_path):
    """The installed `sinddm` command: exit status 2, one stderr line, no traceback, nothing written."""
    before = snapshot(tmp_path, files)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*_console_script(), "train", str(files / "truncated.png"), "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert_one_error_line(proc.stderr, ["truncated.png", "cannot be decoded"])
    assert snapshot(tmp_path, files) == before
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, what", [(["inspect", "{in}/good.png"], "image '"),
                                        (["sample", "{run}", "--num", "1"], "model '")])
def test_a_file_we_may_not_read_is_said_to_be_so(argv, what, files, fake_run, tmp_path, monkeypatch, capsys):
    """Not 'missing' or 'corrupt' (which would send the user off to re-export a good model)."""
    import sinddm.errors

    def refuse(path, *a, **k):  # chmod 000 does not stop root, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sinddm.errors, "open", refuse, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(_argv(argv, files, fake_run)) == 2
    line = assert_one_error_line(capsys.readouterr().err, [what, "cannot be read (permission denied)"])
    assert "corrupt" not in line and "no such file" not in line
