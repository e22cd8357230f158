"""`sinddm app MODEL|PICTURE [--port P] [--device ...] [--out DIR]`: the studio, a local web page
(sinddm.app, Gradio: `pip install sinddm[app]`) bound to 127.0.0.1."""

from __future__ import annotations

from ..errors import UserError
from .common import MODEL_HELP, MODEL_METAVAR, add_device_arguments, int_arg, positive_int

APP_EXTRA_MISSING = "the studio needs Gradio: pip install 'sinddm[app]'"


def add_parsers(sub) -> None:
    from ..pyramid import DEFAULT_MAX_PIXELS

    a = sub.add_parser("app", help="the studio: sample and edit in a local web page (needs sinddm[app])",
                       description="Serve a local page (http://127.0.0.1:PORT) with panels for sampling, "
                                   "regions (roi-copy, text-roi boxes), harmonization, style transfer and "
                                   "text guidance; each shows the sinddm command that reproduces its result. "
                                   "It starts from MODEL, a model file or a picture; on the page a photograph "
                                   "can be uploaded (a training-free model at once) and a hybrid trained on it "
                                   "(configs/hybrid-cpu.yaml). Never shared beyond this machine.")
    a.add_argument("model", metavar=MODEL_METAVAR, help=MODEL_HELP)
    # Unlike elsewhere, --max-pixels goes with a model file too: it caps the photos uploaded on the page.
    a.add_argument("--max-pixels", type=positive_int("--max-pixels"), metavar="N",
                   help=f"the pixel cap of a PICTURE and of the photos uploaded on the page: each is shrunk to "
                        f"at most N pixels first, as training does (default: a picture's {DEFAULT_MAX_PIXELS}; "
                        "with a model file, the cap it was trained at)")
    a.add_argument("--port", type=int_arg("--port", 1, 65535), default=7860, help="port on 127.0.0.1 (default 7860)")
    a.add_argument("--out", default="studio", help="folder every result (and every upload, photo and "
                                                   "trained hybrid) is written into (default ./studio)")
    a.add_argument("--clip-checkpoint", metavar="PATH", help="local CLIP weights for the text panels "
                                                              "(as 'sinddm edit ... --clip-checkpoint')")
    a.add_argument("--open", action="store_true", help="open the page in the default browser")
    add_device_arguments(a)


def cmd_app(args) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise UserError(APP_EXTRA_MISSING)
    from pathlib import Path

    from ..app.jobs import Studio
    from ..app.page import serve
    from ..sources import is_picture
    from .common import open_sinddm

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}': is a file; give a folder")
    picture = is_picture(args.model)
    photo_cap, args.max_pixels = args.max_pixels, args.max_pixels if picture else None
    model = open_sinddm(args)
    studio = Studio(model, args.model, out, device_arg=args.device, clip_checkpoint=args.clip_checkpoint,
                    max_pixels=args.max_pixels, photo_max_pixels=photo_cap)
    print(f"sinddm studio: {model}; results in {out}; http://127.0.0.1:{args.port} (Ctrl-C stops)", flush=True)
    serve(studio, args.port, open_browser=args.open)
    return 0


COMMANDS = {"app": cmd_app}
