"""The README's large-output pictures (docs/gallery/): a wide panorama made tile by tile, and a
seamless texture as a 2×2 mosaic beside an ordinary sample's mosaic. CPU, seeded.

    python scripts/make_tiling_gallery.py --width 8192              # the panorama only
    python scripts/make_tiling_gallery.py --texture                 # the texture mosaics only

Every output comes from one `sinddm sample` command (printed, with its wall time and the load
average); the pictures only downscale, crop or repeat it.
"""
import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sinddm.cli import main as sinddm  # noqa: E402

MODEL = str(ROOT / "assets/models/hubble-small.safetensors")
GAP = 8


def run(*args: str) -> float:
    line = "sinddm " + " ".join(shlex.quote(a) for a in args)
    print(f"$ {line}   (load average {os.getloadavg()[0]:.1f})", flush=True)
    t0 = time.perf_counter()
    if sinddm([*args, "--quiet", "--device", "cpu", "--overwrite"]) != 0:
        raise SystemExit(f"failed: {line}")
    secs = time.perf_counter() - t0
    print(f"  {secs:.0f} s wall (load average now {os.getloadavg()[0]:.1f})", flush=True)
    return secs


def panorama(out: Path, width: int, height: int, tile: int, extra: list[str], keep_full: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run("sample", MODEL, "--size", f"{height}x{width}", "--num", "1", "--tile", str(tile), "--seed", "0",
            "--precision", "fp32", "--out", tmp, *extra)
        pano = Image.open(Path(tmp) / "sample_000.png").convert("RGB")
    if keep_full:
        pano.save(out / "panorama_full.png")
    view = pano.resize((min(width, 2048), round(height * min(width, 2048) / width)), Image.LANCZOS)
    view.save(out / "panorama_view.png")
    crop_w = min(width, 512)
    x0 = (width - crop_w) // 2
    pano.crop((x0, 0, x0 + crop_w, height)).save(out / "panorama_crop.png")


def mosaic(img: Image.Image) -> Image.Image:
    m = Image.new("RGB", (2 * img.width, 2 * img.height))
    for dx in (0, img.width):
        for dy in (0, img.height):
            m.paste(img, (dx, dy))
    return m


def texture(out: Path, zoom: int = 2) -> None:
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for flag in (["--tileable"], []):
            folder = Path(tmp) / ("t" if flag else "d")
            run("sample", MODEL, "--num", "1", "--seed", "1", "--precision", "fp32", "--out", str(folder), *flag)
            m = mosaic(Image.open(folder / "sample_000.png").convert("RGB"))
            tiles.append(m.resize((m.width * zoom, m.height * zoom), Image.NEAREST))
    canvas = Image.new("RGB", (tiles[0].width * 2 + GAP, tiles[0].height), (255, 255, 255))
    canvas.paste(tiles[0], (0, 0))
    canvas.paste(tiles[1], (tiles[0].width + GAP, 0))
    canvas.save(out / "tileable_mosaic.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs/gallery"))
    ap.add_argument("--width", type=int, help="make the panorama, this wide (px)")
    ap.add_argument("--height", type=int, default=101, help="panorama height (default: the training height)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--keep-full", action="store_true", help="also save the whole panorama (large)")
    ap.add_argument("--texture", action="store_true", help="make the texture mosaics")
    ap.add_argument("extra", nargs="*", help="more `sinddm sample` options for the panorama, after --")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.width:
        panorama(out, args.width, args.height, args.tile, args.extra, args.keep_full)
    if args.texture:
        texture(out)


if __name__ == "__main__":
    main()
