"""One table of bad input through every door: the Python API, the command line, a job file and
the studio's callbacks. The library checks (naming its parameter); each door shows the same
refusal under its own name for it (a flag, the same flag in a job, a field label)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sinddm import SinDDM
from sinddm.app.jobs import Studio
from sinddm.cli import main
from sinddm.errors import ParameterError, UserError

from .conftest import ASSETS

MODEL = ASSETS / "models" / "hubble-small.safetensors"


@pytest.fixture(scope="module")
def model():
    return SinDDM.load(MODEL, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("door")
    h, w = model.size
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(d / "composite.png")
    Image.fromarray(np.zeros((h, w), np.uint8)).save(d / "black.png")
    Image.fromarray(np.full((h - 1, w), 255, np.uint8)).save(d / "short.png")
    return d


# (case, API method, API arguments, parameter, words the message has, CLI argv after MODEL,
#  studio call or None). "{d}" is the files folder.
CASES = [
    ("start_t_one_too_many", "sample", dict(start_t=[5, 5, 5, 5]), "start_t", "got 4",
     ["sample", "--start-t", "5", "5", "5", "5"], None),
    ("start_t_negative", "sample", dict(start_t=[-3, -3, -3]), "start_t", "T[0] must be in 1..100",
     ["sample", "--start-t", "-3", "-3", "-3"], None),
    ("start_t_too_big", "sample", dict(start_t=[1000] * 3), "start_t", "1000",
     ["sample", "--start-t", "1000", "1000", "1000"], None),
    ("num_zero", "sample", dict(num=0), "num", ">= 1", ["sample", "--num", "0"], ("sample", dict(n=0, seed=0))),
    ("num_negative", "sample", dict(num=-1), "num", ">= 1", ["sample", "--num", "-1"], None),
    ("seed_word", "sample", dict(seed="x"), "seed", "whole number", ["sample", "--seed", "x"],
     ("sample", dict(n=1, seed="x"))),
    ("batch_size_zero", "sample", dict(batch_size=0), "batch_size", ">= 1", ["sample", "--batch-size", "0"], None),
    ("scale_hw_zero", "sample", dict(scale_hw=(0, 1)), "scale_hw", "(0, 64]", ["sample", "--scale-hw", "0", "1"],
     ("sample", dict(n=1, seed=0, scale_h=0, scale_w=1))),
    ("start_level_n_scales", "sample", dict(start_level=3), "start_level", "0..2", ["sample", "--start-level", "3"],
     ("sample", dict(n=1, seed=0, start_level=3))),
    ("size_too_small", "sample", dict(size=(6, 6)), "size", "too small", ["sample", "--size", "6x6"], None),
    ("noise_level_100", "harmonize", dict(composite="{d}/composite.png", mask="{d}/short.png", noise_level=100),
     "noise_level", "1..99", ["edit", "harmonize", "--composite", "{d}/composite.png", "--mask", "{d}/short.png",
                              "--noise-level", "100"], None),
    ("mask_size", "harmonize", dict(composite="{d}/composite.png", mask="{d}/short.png"), "mask",
     "of the composite's size", ["edit", "harmonize", "--composite", "{d}/composite.png", "--mask",
                                 "{d}/short.png"], None),
    ("mask_empty", "harmonize", dict(composite="{d}/composite.png", mask="{d}/black.png"), "mask", "empty",
     ["edit", "harmonize", "--composite", "{d}/composite.png", "--mask", "{d}/black.png"], None),
    ("source_outside", "roi_copy", dict(source=(95, 0, 16, 16), targets=[(0, 0, 16, 16)]), "source",
     "reaches beyond", ["edit", "roi-copy", "--source", "95,0,16,16", "--target", "0,0,16,16"],
     ("roi_copy", dict(source_text="95,0,16,16", targets_text="0,0,16,16", n=1, seed=0))),
    ("target_outside", "roi_copy", dict(source=(0, 0, 16, 16), targets=[(0, 110, 16, 16)]), "targets",
     "reaches beyond", ["edit", "roi-copy", "--source", "0,0,16,16", "--target", "0,110,16,16"], None),
    ("empty_prompt", "text_content", dict(text="  "), "text", "empty", ["edit", "text-content", "--text", "  "],
     None),
    ("guide_from_3", "text_content", dict(text="a castle", guide_from=3, clip="none-such-model"), "guide_from",
     "0..2", ["edit", "text-content", "--text", "a castle", "--guide-from", "3"], None),
    ("text_roi_box_outside", "text_roi", dict(text="a ball", box=(90, 0, 20, 20)), "box", "outside",
     ["edit", "text-roi", "--text", "a ball", "--box", "90,0,20,20"], None),
    ("fast_harmonize", "harmonize", dict(composite="{d}/composite.png", mask="{d}/short.png"), "precision",
     "exact fp32 path", ["edit", "harmonize", "--composite", "{d}/composite.png", "--mask", "{d}/short.png",
                         "--precision", "fast"], None),
]
FLAGS = {"targets": "--target"}
IDS = [c[0] for c in CASES]


def _fill(value, d: Path):
    if isinstance(value, str):
        return value.replace("{d}", str(d))
    if isinstance(value, dict):
        return {k: _fill(v, d) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, d) for v in value]
    return value


def _flag(param: str) -> str:
    return FLAGS.get(param, "--" + param.replace("_", "-"))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_api_names_the_parameter(case, model, files):
    _, method, kwargs, param, words, _, _ = case
    target = SinDDM.load(MODEL, device="cpu", precision="fast") if param == "precision" else model
    with pytest.raises(ParameterError) as e:
        getattr(target, method)(**_fill(kwargs, files))
    assert e.value.param == param and words in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"{param}: ")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_cli_names_the_flag(case, files, tmp_path, capsys):
    _, _, _, param, words, argv, _ = case
    argv = _fill(argv, files)
    full = [argv[0], str(MODEL), *argv[1:]]
    assert main([*full, "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert _flag(param) in err and words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_job_file_names_the_flag_and_the_job(case, files, tmp_path, capsys):
    _, _, _, param, words, argv, _ = case
    argv = _fill(argv, files)
    command, rest = argv[0], argv[1:]
    opts = {"model": str(MODEL), "out": str(tmp_path / "o"), "device": "cpu", "quiet": True}
    if command == "edit":
        opts["mode"], rest = rest[0], rest[1:]
    key, values = None, []
    for a in rest + ["--end"]:
        if a.startswith("--") and not a[2:].replace("-", "").isdigit():
            if key is not None:
                opts[key] = values[0] if len(values) == 1 else values
            key, values = a[2:].replace("-", "_"), []
        else:
            values.append(a)
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump([{"sample": {"model": str(MODEL), "num": 1, "out": str(tmp_path / "ok")}},
                                    {command: opts}]))
    assert main(["run", str(jobs)]) == 2
    err = capsys.readouterr().err.strip()
    assert "job 2" in err and _flag(param) in err and words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "ok").exists() and not (tmp_path / "o").exists()  # checked before the first job ran


STUDIO_FIELDS = {"num": "count", "seed": "seed", "scale_hw": "scale factors", "start_level": "object size",
                 "source": "source"}


@pytest.mark.parametrize("case", [c for c in CASES if c[6] is not None], ids=[c[0] for c in CASES if c[6]])
def test_the_studio_names_the_field(case, model, tmp_path):
    _, _, _, param, words, _, (callback, values) = case
    studio = Studio(model, str(MODEL), tmp_path / "studio", device_arg="cpu")
    with pytest.raises(UserError) as e:
        getattr(studio, callback)(**values)
    assert str(e.value).startswith(STUDIO_FIELDS[param]) and words in str(e.value)
    assert not any((tmp_path / "studio").iterdir())


def test_n_minus_one_start_timesteps_keep_t0(model):
    """start_t with N-1 values gives T[1..N-1] (T[0] from the pyramid), as --start-t does."""
    a = model.sample(1, start_t=[3, 2], output="tensor", seed=4)
    b = model.sample(1, start_t=[model.start_t[0], 3, 2], output="tensor", seed=4)
    assert torch.equal(a[0], b[0])


def test_generator_and_callback(model):
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    a = model.sample(2, start_t=[3, 2, 2], generator=g1, output="tensor")
    b = model.sample(2, start_t=[3, 2, 2], generator=g2, output="tensor")
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = model.sample(2, start_t=[3, 2, 2], generator=g1, output="tensor")   # the generator moved on
    assert not torch.equal(a[0], c[0])
    seen = []
    scales = model.sample(1, start_t=[3, 2, 2], seed=1, callback=lambda s, t, x0: seen.append((s, t, x0.shape)),
                          all_scales=True, output="tensor")
    assert [(s, t) for s, t, _ in seen] == [(0, 2), (0, 1), (0, 0), (1, 1), (1, 0), (2, 1), (2, 0)]
    assert [tuple(x[0].shape[-2:]) for x in scales] == [tuple(hw) for hw in model.pyramid.sizes_hw]
    plain = model.sample(1, start_t=[3, 2, 2], seed=1, output="tensor")
    assert torch.equal(scales[-1][0], plain[0])  # the callback changes nothing


def test_to_moves_the_model(model):
    assert model.to("cpu") is model and next(model.loaded.model.parameters()).device.type == "cpu"
