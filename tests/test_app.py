"""The studio without a browser: command builders, the runs behind each panel (through the public
API, on the shipped model), the messages bad input gets, and `sinddm app` without its extra."""

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sinddm.app import commands as C
from sinddm.app.jobs import Studio, mask_from_layers, read_upload
from sinddm.cli import build_parser, main
from sinddm.errors import UserError
from sinddm.edits.regions import Box

MODEL = Path(__file__).resolve().parent.parent / "assets" / "models" / "hubble-small.safetensors"


@pytest.fixture(scope="module")
def model():
    from sinddm import SinDDM

    return SinDDM.load(MODEL, device="cpu")


@pytest.fixture
def studio(model, tmp_path):
    return Studio(model, str(MODEL), tmp_path / "out", device_arg="cpu")


def test_two_clicks_make_a_box_whatever_their_order_clipped_to_the_image():
    assert C.box_from_corners((17, 74), (32, 89), (101, 118)) == Box(74, 17, 16, 16)
    assert C.box_from_corners((32, 89), (17, 74), (101, 118)) == Box(74, 17, 16, 16)
    assert C.box_from_corners((5, 5), (5, 5), (101, 118)) == Box(5, 5, 1, 1)
    assert C.box_from_corners((110, 90), (500, 500), (101, 118)) == Box(90, 110, 11, 8)


def test_fields_are_checked_with_messages_naming_them():
    assert C.parse_boxes_field("8,8,16,16\n77,94,16,16", "targets") == [Box(8, 8, 16, 16), Box(77, 94, 16, 16)]
    with pytest.raises(UserError, match="source box: empty"):
        C.parse_box_field("  ", "source box")
    with pytest.raises(UserError, match="targets: .*y,x,h,w"):
        C.parse_boxes_field("8,8,16", "targets")
    with pytest.raises(UserError, match="size: expected HEIGHTxWIDTH"):
        C.parse_size_field("100 by 200")
    assert C.parse_size_field(" 50x90 ") == (50, 90) and C.parse_size_field("") is None
    # slider values become whole numbers where they are; the rest goes to the library, which refuses it
    assert C.as_int(4.0) == 4 and C.as_int(2.5) == 2.5 and C.as_int("x") == "x"


def test_commands_are_the_cli_lines_that_parse():
    out = Path("studio/sample-001-cli")
    line = C.sample_command("m.safetensors", 1, 7, out, scale_hw=(1, 2), start_level=1, device="cpu")
    assert line == ("sinddm sample m.safetensors --scale-hw 1 2 --start-level 1 --num 1 --seed 7 "
                    "--out studio/sample-001-cli --device cpu")
    assert "--scale-hw" not in C.sample_command("m", 4, 0, out, scale_hw=(1.0, 1.0))
    assert "--size 50x90" in C.sample_command("m", 4, 0, out, size=(50, 90))
    roi = C.roi_copy_command("my model", Box(74, 17, 16, 16), [Box(8, 8, 16, 16), Box(77, 94, 16, 16)], 3, 5, out)
    assert roi == ("sinddm edit 'my model' roi-copy --source 74,17,16,16 --target 8,8,16,16 77,94,16,16 "
                   "--num 3 --seed 5 --out studio/sample-001-cli")
    text = C.text_command("m", "text-roi", "a red balloon", 2, 0, out, box=Box(40, 60, 50, 50), step_size=0.1)
    assert "--text 'a red balloon' --box 40,60,50,50 --step-size 0.1" in text
    for line in (roi, text, C.harmonize_command("m", "c.png", "k.png", 12, 3, 0, out),
                 C.style_transfer_command("m", "c.png", 15, 3, 4, out)):
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.out == str(out)


def test_sample_panel_writes_what_its_command_writes(studio, tmp_path, monkeypatch):
    r = studio.sample(1, 3, size_text="50x90")
    assert [im.size for im in r.images] == [(90, 50)]
    assert r.paths[0] == studio.out / "sample-001" / "sample_000.png" and r.paths[-1].name == "grid.png"
    assert all(p.is_file() for p in r.paths)
    assert r.command.startswith(f"sinddm sample {MODEL} --size 50x90 --num 1 --seed 3")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(r.command)[1:] + ["--quiet"]) == 0
    cli = np.asarray(Image.open(studio.out / "sample-001-cli" / "sample_000.png"))
    assert np.array_equal(cli, np.asarray(r.images[0]))
    assert studio.sample(1, 0, 1, 2).paths[0].parent.name == "sample-002"  # never over an earlier result


def test_roi_copy_panel_and_its_messages(studio):
    r = studio.roi_copy("74,17,16,16", "8,8,16,16\n", 1, 5)
    assert r.images[0].size == (118, 101)
    assert "--source 74,17,16,16 --target 8,8,16,16 --num 1 --seed 5" in r.command
    with pytest.raises(UserError, match="source box: empty"):
        studio.roi_copy("", "8,8,16,16", 1, 0)
    with pytest.raises(UserError, match="target boxes: empty"):
        studio.roi_copy("74,17,16,16", "", 1, 0)
    with pytest.raises(UserError, match="reaches beyond"):
        studio.roi_copy("74,17,16,16", "100,100,16,16", 1, 0)


def test_harmonize_panel_turns_painted_strokes_into_the_mask_file(studio, tmp_path):
    picture = studio.finest_image()
    composite = tmp_path / "composite.png"
    picture.save(composite)
    stroke = np.zeros((picture.height, picture.width, 4), np.uint8)
    stroke[30:50, 40:70] = (255, 255, 255, 255)
    r = studio.harmonize(str(composite), [Image.fromarray(stroke, "RGBA")], 5, 1, 0)
    folder = r.paths[0].parent
    mask = np.asarray(Image.open(folder / "mask.png").convert("L"))
    assert mask[30:50, 40:70].min() == 255 and mask.sum() == 255 * 20 * 30
    assert f"--composite {folder / 'composite.png'} --mask {folder / 'mask.png'} --noise-level 5" in r.command
    with pytest.raises(UserError, match="nothing painted"):
        mask_from_layers([np.zeros_like(stroke)], picture.size)


def test_a_non_image_upload_is_one_line_naming_the_file_not_the_server_path(tmp_path, studio):
    bad = tmp_path / "uploads" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not a picture")
    with pytest.raises(UserError) as e:
        read_upload(str(bad), "content")
    assert str(e.value) == "content: image 'notes.png': not a picture Pillow can read; give a PNG or JPEG file"
    with pytest.raises(UserError, match="content: image 'notes.png'"):
        studio.style_transfer(str(bad), 15, 1, 0)
    assert not list(studio.out.glob("style-transfer-*"))


def test_text_panels_without_clip_weights_say_so_and_write_nothing(studio, tmp_path, monkeypatch):
    import sinddm.edits.clip as clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(clip.CACHE_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setattr(clip, "_CLIP_CACHE", {})
    for mode in ("text-content", "text-style", "text-roi"):
        with pytest.raises(UserError, match="--clip-checkpoint") as e:
            studio.text(mode, "a castle", 1, 0, 0.3, 0.3, 0.2, box_text="10,10,20,20")
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="prompt: empty"):
        studio.text("text-content", "  ", 1, 0, 0.3, 0.3, 0.2)
    assert list(studio.out.iterdir()) == []


def test_app_help_says_it_starts_from_a_model_or_a_picture_and_takes_photos(capsys):
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "MODEL|PICTURE" in text and "or a picture, which becomes a training-free model" in text
    assert "a photograph can be uploaded" in text and "the photos uploaded on the page" in text


def test_app_without_gradio_is_one_line_naming_the_extra(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["app", str(MODEL), "--port", "7999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: the studio needs Gradio: pip install 'sinddm[app]'"


# -- starting from a photo -------------------------------------------------------------------
PHOTOS = MODEL.parent.parent / "photos"
PHOTO_CAP = 3000          # summer-palace.jpg → one scale of 67x44 px: seconds per sample


@pytest.fixture
def photo_studio(model, tmp_path):
    return Studio(model, str(MODEL), tmp_path / "out", device_arg="cpu", photo_max_pixels=PHOTO_CAP)


def test_an_uploaded_photo_becomes_the_model_of_every_panel(photo_studio, tmp_path, monkeypatch):
    studio = photo_studio
    header = studio.use_photo(str(PHOTOS / "summer-palace.jpg"))
    kept = studio.out / "photo-001" / "summer-palace.jpg"
    assert kept.read_bytes() == (PHOTOS / "summer-palace.jpg").read_bytes()
    assert studio.model.size == (44, 67) and studio.finest_image().size == (67, 44)
    assert f"`{kept}`: training-free" in header and "pixel cap 3000" in header
    r = studio.sample(1, 2, 0.5, 0.5)
    assert r.images[0].size == (33, 22)
    assert r.command.startswith(f"sinddm sample {kept} --max-pixels {PHOTO_CAP} --scale-hw 0.5 0.5 --num 1 --seed 2")
    monkeypatch.chdir(tmp_path)
    assert main(shlex.split(r.command)[1:] + ["--quiet"]) == 0      # the command names the kept photo
    cli = np.asarray(Image.open(studio.out / "sample-001-cli" / "sample_000.png"))
    assert np.array_equal(cli, np.asarray(r.images[0]))
    edit = studio.style_transfer(str(PHOTOS / "gravel.jpg"), 5, 1, 0)
    assert edit.images[0].size == (54, 54)                          # the content's, at the photo's cap
    assert f"sinddm edit {kept} --max-pixels {PHOTO_CAP} style-transfer" in edit.command


def test_train_hybrid_trains_on_the_photo_then_every_panel_uses_it(model, tmp_path):
    from sinddm.config import config_from_dict

    tiny = config_from_dict({"image": {"max_pixels": 5000}, "model": {"dim": 4, "trained_scales": 1},
                             "train": {"steps": 2, "batch_size": 1, "grid_samples": 0, "log_every": 1}})
    studio = Studio(model, str(MODEL), tmp_path / "out", device_arg="cpu", photo_max_pixels=PHOTO_CAP,
                    hybrid_config=tiny)
    with pytest.raises(UserError, match="^train hybrid: no photo to train on; upload a photograph first$"):
        studio.train_hybrid()
    assert list(studio.out.iterdir()) == []
    studio.use_photo(str(PHOTOS / "summer-palace.jpg"))
    header = studio.train_hybrid()
    run = studio.out / "hybrid-001"
    assert (run / "model.safetensors").is_file() and studio.model_arg == str(run)
    assert f"`{run}`: hybrid (a network at 1 of 2 scales)" in header
    assert studio.model.loaded.step == 2 and studio.model.size == (57, 86)    # the recipe's own pixel cap
    r = studio.sample(1, 0, size_text="30x44")
    assert r.images[0].size == (44, 30) and r.command.startswith(f"sinddm sample {run} --size 30x44")
    assert studio.photo == str(studio.out / "photo-001" / "summer-palace.jpg")   # still the photo to train on


def test_the_embedded_hybrid_recipe_is_configs_hybrid_cpu_yaml():
    from sinddm.app.uploads import HYBRID_CPU
    from sinddm.config import config_from_dict, load_config

    assert config_from_dict(HYBRID_CPU) == load_config(MODEL.parent.parent.parent / "configs" / "hybrid-cpu.yaml")


def _bad_uploads(folder: Path) -> dict:
    """file → the start of its message; none of them a picture the studio takes."""
    folder.mkdir()
    (folder / "notes.png").write_text("not a picture")
    Image.new("RGB", (30, 200)).save(folder / "sliver.png")
    data = (PHOTOS / "summer-palace.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    Image.new("1", (6000, 5000)).save(folder / "bomb.png")       # 30 MP declared in a few kB
    with open(folder / "huge.jpg", "wb") as f:                   # 21 MB (sparse: costs no disk)
        f.truncate(21 * 2 ** 20)
    return {"notes.png": "photo: image 'notes.png': not a picture Pillow can read",
            "sliver.png": "photo 'sliver.png': 30x200 px is too small",
            "cut.jpg": "photo: image 'cut.jpg': cannot be decoded",
            "bomb.png": "photo 'bomb.png': 6000x5000 px is over the studio's limit of 25,000,000 pixels",
            "huge.jpg": "photo 'huge.jpg': 21.0 MB is over the studio's upload limit of 20 MB"}


def test_bad_or_too_large_photos_are_one_line_and_leave_nothing(photo_studio, tmp_path):
    studio = photo_studio
    for name, words in _bad_uploads(tmp_path / "uploads").items():
        with pytest.raises(UserError) as e:
            studio.use_photo(str(tmp_path / "uploads" / name))
        assert str(e.value).startswith(words) and "\n" not in str(e.value) and str(tmp_path) not in str(e.value)
    with pytest.raises(UserError, match="photo: no picture uploaded"):
        studio.use_photo(None)
    assert list(studio.out.iterdir()) == [] and studio.model_arg == str(MODEL)
    # the same caps hold for every upload (composite, content)
    with pytest.raises(UserError, match="^content 'bomb.png': 6000x5000 px is over"):
        studio.style_transfer(str(tmp_path / "uploads" / "bomb.png"), 5, 1, 0)
    assert list(studio.out.iterdir()) == []
