"""Regenerate the README gallery (docs/gallery/) from a shipped model and photographs, on CPU.

    python scripts/make_gallery.py [--model assets/models/hubble-small.safetensors] [--out docs/gallery]
    python scripts/make_gallery.py --skip-model [--photos-runs runs/photos] [--photos dandelions ...]

Every picture comes from one `sinddm` command (printed as it runs), seeded, so the gallery
is reproducible; the panels only add the inputs beside the outputs. The shipped model's part takes
about 4 minutes on 2 cores. The photographs' part makes photos-NAME.png for each photograph
assets/photos/NAME.jpg: its training image (12k px), then 4 samples each from the runs
PHOTOS_RUNS/NAME-trained (configs/cpu.yaml) and PHOTOS_RUNS/NAME-hybrid (configs/hybrid-cpu.yaml),
where both exist, and from the picture itself as a training-free model.
"""
import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sinddm.checkpoint import load_model  # noqa: E402
from sinddm.cli import main as sinddm  # noqa: E402
from sinddm.image_io import load_rgb, make_grid  # noqa: E402
from sinddm.sources import picture_model  # noqa: E402

GAP = 4
BACKGROUND = (255, 255, 255)
# The photographs docs/gallery.md shows (assets/photos/NAME.jpg), their pixel cap (cpu.yaml's and
# hybrid-cpu.yaml's) and the seed of every sample row.
PHOTOS = ["autumn-mountains", "dandelions", "foliage", "forest-stream", "gravel", "mountain-trail", "summer-palace",
          "sunset-hills"]
PHOTO_PIXELS = 12000
PHOTO_SEED = 6


def run(*args: str) -> None:
    print("$ sinddm " + " ".join(shlex.quote(a) for a in args), flush=True)
    if sinddm([*args, "--quiet", "--device", "cpu"]) != 0:
        raise SystemExit(f"failed: sinddm {' '.join(args)}")


def pictures(folder: Path) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*_[0-9][0-9][0-9].png"))]


def label_width(label: str) -> int:
    return 8 + 7 * len(label)


def row(images: list[Image.Image], zoom: int, label: str | None = None, label_w: int | None = None) -> Image.Image:
    """The images side by side (nearest-neighbour zoom: the pixels are the result), a caption on the left
    in a margin `label_w` px wide (default: the caption's width)."""
    tiles = make_grid([np.asarray(im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)) for im in images],
                      pad=GAP, ncol=len(images))
    if label_w is None:
        label_w = 0 if label is None else label_width(label)
    canvas = Image.new("RGB", (label_w + tiles.shape[1], tiles.shape[0]), BACKGROUND)
    canvas.paste(Image.fromarray(tiles), (label_w, 0))
    if label is not None:
        ImageDraw.Draw(canvas).text((4, tiles.shape[0] // 2 - 6), label, fill=(0, 0, 0))
    return canvas


def column(rows: list[Image.Image]) -> Image.Image:
    """Rows of different heights stacked tightly (make_grid's cells would all take the tallest height)."""
    canvas = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), BACKGROUND)
    y = 0
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height
    return canvas


def boxed(image: Image.Image, boxes: list[tuple[int, int, int, int]], colour=(255, 220, 0)) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for y, x, h, w in boxes:
        draw.rectangle((x - 1, y - 1, x + w, y + h), outline=colour)
    return image


def shown(path: Path) -> str:
    """`path` relative to the current folder where it lies below it, so the printed commands read as typed."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def photo_gallery(name: str, runs: Path, out: Path, zoom: int, tmp: Path) -> Path:
    """photos-NAME.png: the training image, then a row of samples per model (trained, hybrid,
    training-free; the first two only where both runs have a model.safetensors)."""
    photo = ROOT / "assets/photos" / f"{name}.jpg"
    if not photo.is_file():
        raise SystemExit(f"no photograph {photo}")
    seed = ["--num", "4", "--seed", str(PHOTO_SEED)]
    models = [(runs / f"{name}-trained", "trained (cpu.yaml)"), (runs / f"{name}-hybrid", "hybrid (hybrid-cpu.yaml)")]
    if not all((d / "model.safetensors").is_file() for d, _ in models):
        print(f"{name}: no model.safetensors in both {shown(models[0][0])} and {shown(models[1][0])}: "
              "training-free row only", flush=True)
        models = []
    # The training image: the finest pyramid level (the trained run's, else the one training would build).
    pyramid = (load_model(models[0][0]) if models else picture_model(load_rgb(photo), PHOTO_PIXELS)).pyramid
    labels = ["training", *(label for _, label in models), "training-free"]
    w = max(label_width(label) for label in labels)
    rows = [row([Image.fromarray(pyramid.levels[-1])], zoom, "training", w)]
    for i, (run_dir, label) in enumerate(models):
        run("sample", shown(run_dir), *seed, "--out", str(tmp / f"{name}-{i}"))
        rows.append(row(pictures(tmp / f"{name}-{i}"), zoom, label, w))
    run("sample", shown(photo), "--max-pixels", str(PHOTO_PIXELS), *seed, "--out", str(tmp / f"{name}-free"))
    rows.append(row(pictures(tmp / f"{name}-free"), zoom, "training-free", w))
    target = out / f"photos-{name}.png"
    column(rows).save(target)
    return target


def model_gallery(args: argparse.Namespace, out: Path) -> None:
    """The shipped model's pictures: samples, object sizes, harmonization, style transfer, ROI copy."""
    loaded = load_model(args.model)
    training = Image.fromarray(loaded.pyramid.levels[-1])
    fh, fw = loaded.pyramid.sizes_hw[-1]
    model, z = args.model, args.zoom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        # Samples at three aspect ratios, the training image first.
        panels = [row([training], z, "training")]
        for fy, fx, num in (("1", "1", 4), ("1", "2", 2), ("2", "1", 4)):
            run("sample", model, "--num", str(num), "--scale-hw", fy, fx, "--seed", "1", "--out", str(tmp / f"s{fy}{fx}"))
            panels.append(row(pictures(tmp / f"s{fy}{fx}"), z, f"{fy}x{fx}"))
        column(panels).save(out / "samples.png")

        # Object sizes: the coarsest noise starts at level k's size.
        panels = []
        for k in range(loaded.pyramid.n_scales):
            run("sample", model, "--num", "4", "--start-level", str(k), "--seed", "2", "--out", str(tmp / f"k{k}"))
            panels.append(row(pictures(tmp / f"k{k}"), z, f"k={k}"))
        column(panels).save(out / "object_sizes.png")

        # Harmonization: a crop of rocket.jpg pasted into the training image.
        composite = training.copy()
        rocket = Image.open(ROOT / "assets/rocket.jpg").convert("RGB").crop((230, 40, 430, 300))
        ph, pw = fh // 3, fh // 3 * 200 // 260
        py, px = fh // 3, fw // 2
        composite.paste(rocket.resize((pw, ph), Image.LANCZOS), (px, py))
        mask = np.zeros((fh, fw), np.uint8)
        mask[py:py + ph, px:px + pw] = 255
        composite.save(tmp / "composite.png")
        Image.fromarray(mask).save(tmp / "mask.png")
        run("edit", model, "harmonize", "--composite", str(tmp / "composite.png"), "--mask", str(tmp / "mask.png"),
            "--noise-level", "12", "--num", "3", "--seed", "3", "--out", str(tmp / "harmonize"))
        row([composite, *pictures(tmp / "harmonize")], z, "composite | harmonized").save(out / "harmonize.png")

        # Style transfer: rocket.jpg in the training image's colours and textures.
        run("edit", model, "style-transfer", "--content", str(ROOT / "assets/rocket.jpg"), "--num", "3",
            "--seed", "4", "--out", str(tmp / "style"))
        restyled = pictures(tmp / "style")
        content = Image.open(ROOT / "assets/rocket.jpg").convert("RGB").resize(restyled[0].size, Image.LANCZOS)
        row([content, *restyled], z, "content | restyled").save(out / "style_transfer.png")

        # ROI-guided generation: the source box's galaxy at two targets.
        source = tuple(int(v) for v in args.source.split(","))
        sy, sx, sh, sw = source
        targets = [(8, 8, sh, sw), (fh - sh - 8, fw - sw - 8, sh, sw)]
        run("edit", model, "roi-copy", "--source", args.source, "--target", *[",".join(map(str, t)) for t in targets],
            "--num", "3", "--seed", "5", "--out", str(tmp / "roi"))
        row([boxed(training, [source]), *[boxed(p, targets, (0, 200, 255)) for p in pictures(tmp / "roi")]], z,
            "source | targets").save(out / "roi_copy.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "assets/models/hubble-small.safetensors"))
    ap.add_argument("--out", default=str(ROOT / "docs/gallery"))
    ap.add_argument("--zoom", type=int, default=2, help="nearest-neighbour zoom of the pictures")
    ap.add_argument("--source", default="74,17,16,16", help="roi-copy source box y,x,h,w")
    ap.add_argument("--photos-runs", default=str(ROOT / "runs/photos"), metavar="DIR",
                    help="where the photographs' runs NAME-trained and NAME-hybrid are (default runs/photos)")
    ap.add_argument("--photos", nargs="+", default=PHOTOS, metavar="NAME",
                    help=f"the photographs assets/photos/NAME.jpg to show (default: {' '.join(PHOTOS)})")
    ap.add_argument("--skip-model", action="store_true", help="only the photographs, not the shipped model's pictures")
    ap.add_argument("--skip-photos", action="store_true", help="only the shipped model's pictures")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.skip_model:
        model_gallery(args, out)
    if not args.skip_photos:
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.photos:
                start = time.perf_counter()
                target = photo_gallery(name, Path(args.photos_runs), out, args.zoom, Path(tmp))
                print(f"{target} in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"gallery written to {out}")


if __name__ == "__main__":
    main()
