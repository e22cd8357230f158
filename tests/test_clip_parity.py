"""The CLIP path of text guidance against the published implementation (tests/golden/clip_reference.pt).

The record was made with the reference's own CLIP code on a small random CLIP in OpenAI's
state-dict layout (clip_reference.json says what each entry is). Here that state dict is written
as a TorchScript archive in OpenAI's layout and loaded the way a user loads OpenAI's ViT-B-32.pt
(`--clip-checkpoint FILE`), with a model config built from the state dict's shapes as OpenAI's
`build_model` reads them. Views 'reference' must reproduce the record; nothing here downloads.
"""

import json
import math

import pytest
import torch
import yaml

from sinddm.edits import clip as C
from sinddm.edits import clip_views as V
from sinddm.edits import guidance as G
from sinddm.cli import main
from sinddm.errors import UserError

from .conftest import CONFIGS, GOLDEN

RECORD = GOLDEN / "clip_reference.pt"
SHAPES = range(4)                      # (167, 298), (298, 167), (200, 200), (91, 547)


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: a connection attempt fails the test


@pytest.fixture(scope="module")
def record():
    return torch.load(RECORD, weights_only=True)


@pytest.fixture(scope="module")
def rec(record):
    return record["records"]


def openai_config(sd: dict) -> dict:
    """The open_clip model config of an OpenAI-layout ViT state dict (as OpenAI's build_model infers it)."""
    width = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)
    text_width = sd["ln_final.weight"].shape[0]

    def layers(prefix):
        return len({k.split(".")[len(prefix.split("."))] for k in sd if k.startswith(prefix + ".")})

    return {"embed_dim": sd["text_projection"].shape[1],
            "vision_cfg": {"image_size": patch * grid, "layers": layers("visual.transformer.resblocks"),
                           "width": width, "head_width": 64, "patch_size": patch},
            "text_cfg": {"context_length": sd["positional_embedding"].shape[0],
                         "vocab_size": sd["token_embedding.weight"].shape[0], "width": text_width,
                         "heads": text_width // 64, "layers": layers("transformer.resblocks")}}


def write_openai_archive(sd: dict, path) -> None:
    """A TorchScript archive whose state dict is `sd` under OpenAI's names (the form of OpenAI's
    ViT-B-32.pt: torch.jit.load(...).state_dict() gives the float16 weights and the integers)."""
    root = torch.nn.Module()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, torch.nn.Module())
            module = getattr(module, name)
        if value.is_floating_point():
            module.register_parameter(leaf, torch.nn.Parameter(value.clone(), requires_grad=False))
        else:
            module.register_buffer(leaf, value.clone())
    with pytest.warns(FutureWarning):   # torch calls TorchScript deprecated; OpenAI's files still are it
        torch.jit.save(torch.jit.script(root), str(path))


@pytest.fixture(scope="module")
def files(record, tmp_path_factory):
    d = tmp_path_factory.mktemp("clip-ref")
    sd = record["clip_state_dict_fp16"]
    cfg = d / "ref-clip.json"
    cfg.write_text(json.dumps(openai_config(sd)))
    write_openai_archive(sd, d / "ViT-ref.pt")
    return {"config": cfg, "archive": d / "ViT-ref.pt", "dir": d}


@pytest.fixture(scope="module")
def ref_clip(files):
    return C.load_clip(C.ClipSpec(str(files["config"]), "none", str(files["archive"])), "cpu")


def guide(clip, rec, views="reference", **kw):
    return G.TextGuide(clip, rec["prompt"], views=views, deterministic=True, **kw)


def x0_of(rec, i):
    return rec[f"image_{i}"]["x0_fp16"].float()


def embed(g, x0):
    """Raw (unnormalised) image embeddings of view 0 of x0, as the record keeps them."""
    with torch.no_grad():
        v = g.augment.view0((x0 + 1) / 2)
        return V.encode_views(g.clip.model.visual, (v - g.clip.mean) / g.clip.std, g.views)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------------------------------------
# text, views, embeddings, score, gradient
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which, templates", [("hr", G.HQ_TEMPLATES), ("lr", G.LQ_TEMPLATES)])
def test_text_embeddings_match_the_record(ref_clip, rec, which, templates):
    strings = [t.format(rec["prompt"]) for t in templates]
    assert strings == rec[f"text_{which}_strings"]
    tokens = ref_clip.tokenizer(strings)
    assert torch.equal(tokens, rec[f"text_{which}_tokens"])
    with torch.no_grad():
        emb = ref_clip.model.encode_text(tokens)
    torch.testing.assert_close(emb, rec[f"text_{which}_embeddings"], rtol=0, atol=1e-5)
    g = guide(ref_clip, rec)   # what the guide scores against: the same, unit-norm
    key = "hq" if which == "hr" else "lq"
    torch.testing.assert_close(g.text[key], torch.nn.functional.normalize(rec[f"text_{which}_embeddings"], dim=-1),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("i", SHAPES)
def test_view_zero_matches_the_record(ref_clip, rec, i):
    r = rec[f"image_{i}"]
    view = guide(ref_clip, rec).augment.view0((x0_of(rec, i) + 1) / 2)
    assert list(view.shape[-2:]) == r["view_hw"]
    torch.testing.assert_close(view, r["view_fp16"].float(), rtol=0, atol=1e-3)   # stored as float16


@pytest.mark.parametrize("i", SHAPES)
def test_image_embeddings_match_the_record(ref_clip, rec, i):
    want = rec[f"image_{i}"]["image_embedding"]
    assert rel(embed(guide(ref_clip, rec), x0_of(rec, i)), want) < 1e-4


@pytest.mark.parametrize("i", SHAPES)
def test_score_and_gradient_match_the_record(ref_clip, rec, i):
    """The record's score sums −1.2·(1 − mean cosine) over the batch; its gradient is w.r.t. x̂0."""
    r = rec[f"image_{i}"]
    score, grad = guide(ref_clip, rec).score_grad(x0_of(rec, i), "hq")
    assert abs(score.sum().item() - r["score"].item()) < 1e-5
    assert rel(grad, r["grad_score_wrt_x0"]) < 1e-4


def test_aspect_equals_reference_on_the_square_shape_only(ref_clip, rec):
    ref, asp = guide(ref_clip, rec, "reference"), guide(ref_clip, rec, "aspect")
    for i in SHAPES:
        x0 = x0_of(rec, i)
        assert asp.augment.view_size(*x0.shape[-2:]) == ref.augment.view_size(*x0.shape[-2:])
        a, b = embed(asp, x0), embed(ref, x0)
        if x0.shape[-1] == x0.shape[-2]:
            assert torch.equal(a, b)
        else:
            assert rel(a, b) > 1e-2, i   # the transposed grid is a real difference, not rounding


def test_positional_grid_layout():
    """'aspect' resamples the table to the token grid (rows × cols); 'reference' to cols × rows,
    flattened row-major: on a 2×3 token grid its rows are those of a 3×2 resampled table."""
    n, d = 4, 5
    pos = torch.randn(1 + n * n, d, generator=torch.Generator().manual_seed(0))
    asp = V.positional_embedding(pos, (2 * 8, 3 * 8), (8, 8), "aspect")
    ref = V.positional_embedding(pos, (2 * 8, 3 * 8), (8, 8), "reference")
    grid = pos[1:].reshape(1, n, n, d).permute(0, 3, 1, 2)

    def dino(rows, cols):   # DINO's interpolation: bicubic, scale factor (g + 0.1) / n
        g = torch.nn.functional.interpolate(grid, scale_factor=((rows + 0.1) / n, (cols + 0.1) / n), mode="bicubic")
        return g.permute(0, 2, 3, 1).reshape(-1, d)

    torch.testing.assert_close(asp[1:], dino(2, 3), rtol=0, atol=0)
    torch.testing.assert_close(ref[1:], dino(3, 2), rtol=0, atol=0)
    assert torch.equal(asp[0], pos[0]) and torch.equal(ref[0], pos[0])
    assert torch.equal(V.positional_embedding(pos, (32, 32), (8, 8), "reference"), pos)  # trained size: as is


def test_mapping_and_normalisation_constants(ref_clip, rec):
    """x̂0 in [-1, 1] reaches CLIP as (x̂0 + 1) / 2, normalised by the OpenAI constants the record used."""
    assert ref_clip.mean.flatten().tolist() == pytest.approx(rec["mean"], abs=1e-7)
    assert ref_clip.std.flatten().tolist() == pytest.approx(rec["std"], abs=1e-7)
    g = guide(ref_clip, rec)
    x0 = torch.linspace(-1, 1, 3 * 224 * 224).view(1, 3, 224, 224)
    torch.testing.assert_close(g.augment.view0((x0 + 1) / 2), (x0 + 1) / 2, rtol=0, atol=0)
    seen = []
    real = g._encode
    g._encode = lambda views: seen.append(views) or real(views)
    g.similarity(x0, augment=False, subset=False)
    torch.testing.assert_close(seen[0], (x0 + 1) / 2, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# the two guided updates of the reference's sampler
# ---------------------------------------------------------------------------------------------

def _state(g, u):
    return G._GuideState(g, G.GuidanceParams(strength=u["strength"], fill_factor=u["fill_factor"],
                                             momentum=u["momentum_lambda"]))


def test_guided_updates_match_the_record(ref_clip, rec):
    """Step a builds the mask from the thresholded gradient; step b blends with a's output by
    momentum inside the mask (λ on the new x̂0, 1 − λ on the previous) and takes the plain gradient."""
    u = rec["guided_update"]
    state = _state(guide(ref_clip, rec), u)
    step = state.hook(1)
    a = step(x0_of(rec, 0), 10)
    assert torch.equal(state.mask, u["a_mask"].float())
    torch.testing.assert_close(a, u["a_x0_out"], rtol=0, atol=1e-4)
    b_in = u["b_x0_in_fp16"].float()
    b = step(b_in, 9)
    assert not state.event.mask_built
    torch.testing.assert_close(b, u["b_x0_out"], rtol=0, atol=1e-4)
    inside = u["a_mask"].bool().expand_as(b)
    assert (b - b_in)[inside].abs().max() > 0.1   # the blend and step did move x̂0 inside the mask


def test_guided_update_arithmetic_on_the_recorded_gradients(rec):
    """The update code alone, fed the record's own gradients: mask bit-exact, outputs to float rounding."""
    u = rec["guided_update"]

    class Recorded:
        grads = [rec["image_0"]["grad_score_wrt_x0"], u["b_grad"]]

        def score_grad(self, x, templates):
            return torch.zeros(x.shape[0]), self.grads.pop(0)

    state = _state(Recorded(), u)
    step = state.hook(1)
    a = step(x0_of(rec, 0), 10)
    assert torch.equal(state.mask, u["a_mask"].float())
    torch.testing.assert_close(a, u["a_x0_out"], rtol=0, atol=1e-6)
    torch.testing.assert_close(step(u["b_x0_in_fp16"].float(), 9), u["b_x0_out"], rtol=0, atol=1e-6)


def test_threshold_rank_is_torch_quantiles():
    """The mask's quantile picks the element torch.quantile('nearest') picks, at every size; the
    record's 167×298 mask (q·(n−1) = 0.7·49765, within 1e-3 of a half) depends on it."""
    gen = torch.Generator().manual_seed(0)
    cases = [(49766, 0.7), (480, 0.5), (480, 0.8), (16, 0.7), (2, 0.5), (7, 0.0), (7, 1.0)]
    cases += [(int(torch.randint(2, 5000, (1,), generator=gen)), float(torch.rand(1, generator=gen)))
              for _ in range(200)]
    for n, q in cases:
        v = torch.randn(2, n, generator=gen)
        want = torch.quantile(v, q, dim=1, interpolation="nearest")
        assert torch.equal(G.nearest_quantile(v, q), want), (n, q)


# ---------------------------------------------------------------------------------------------
# loading: OpenAI's TorchScript archive, state dicts, the tag's normalisation, unknown layouts
# ---------------------------------------------------------------------------------------------

def _gelu_types(clip):
    return {type(m).__name__ for m in clip.model.modules() if "GELU" in type(m).__name__}


def test_openai_archive_loads_with_quickgelu_whatever_the_tag(ref_clip, rec, record, files):
    """`--clip-pretrained none --clip-checkpoint ViT-B-32.pt` used to build plain GELU: the
    archive must get QuickGELU, and its embeddings are then the record's; the same weights with
    plain GELU are not."""
    assert _gelu_types(ref_clip) == {"QuickGELU"}
    assert rel(embed(guide(ref_clip, rec), x0_of(rec, 0)), rec["image_0"]["image_embedding"]) < 1e-4
    # the same weights saved open_clip-style (no OpenAI integers): the tag decides, and 'none' is GELU
    sd = {k: v.float() for k, v in record["clip_state_dict_fp16"].items() if v.is_floating_point()}
    torch.save(sd, files["dir"] / "open_clip_style.pt")
    plain = C.load_clip(C.ClipSpec(str(files["config"]), "none", str(files["dir"] / "open_clip_style.pt")), "cpu")
    assert _gelu_types(plain) == {"GELU"}
    assert rel(embed(guide(plain, rec), x0_of(rec, 0)), rec["image_0"]["image_embedding"]) > 1e-3
    # an OpenAI state dict saved with torch.save (its integer entries kept) is OpenAI's too
    torch.save(dict(record["clip_state_dict_fp16"]), files["dir"] / "openai_state_dict.pt")
    sd_clip = C.load_clip(C.ClipSpec(str(files["config"]), "none", str(files["dir"] / "openai_state_dict.pt")), "cpu")
    assert _gelu_types(sd_clip) == {"QuickGELU"}
    torch.testing.assert_close(embed(guide(sd_clip, rec), x0_of(rec, 1)), embed(guide(ref_clip, rec), x0_of(rec, 1)),
                               rtol=0, atol=0)


@pytest.fixture
def fake_tag(files, monkeypatch, tmp_path):
    """A pretrained tag of the record's model with its own normalisation (0.5, 0.5, 0.5), its
    weights already in the cache (SINDDM_CLIP_CACHE), as a downloaded tag's are."""
    import open_clip.pretrained as P

    name = files["config"].stem
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(C.CACHE_ENV, str(cache))
    monkeypatch.setattr(C, "_CLIP_CACHE", {})
    monkeypatch.setitem(P._PRETRAINED, name, {"halfnorm": P._pcfg(url="https://example.invalid/ref-weights.pt",
                                                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))})
    return cache


def test_cached_tag_weights_take_the_tags_normalisation(record, files, fake_tag):
    import open_clip

    sd = {k: v.float() for k, v in record["clip_state_dict_fp16"].items() if v.is_floating_point()}
    torch.save(sd, fake_tag / "ref-weights.pt")
    loaded = C.load_clip(C.ClipSpec(str(files["config"]), "halfnorm"), "cpu")
    assert loaded.mean.flatten().tolist() == [0.5] * 3 and loaded.std.flatten().tolist() == [0.5] * 3
    local = C.load_clip(C.ClipSpec(str(files["config"]), "halfnorm", str(fake_tag / "ref-weights.pt")), "cpu")
    assert local.mean.flatten().tolist() == [0.5] * 3
    # OpenAI's own archive keeps OpenAI's constants (and QuickGELU) whatever the tag says
    arch = C.load_clip(C.ClipSpec(str(files["config"]), "halfnorm", str(files["archive"])), "cpu")
    assert arch.mean.flatten().tolist() == pytest.approx(list(open_clip.OPENAI_DATASET_MEAN), abs=1e-7)
    assert _gelu_types(arch) == {"QuickGELU"}


@pytest.mark.parametrize("content", ["not weights at all", "tensors"])
def test_file_in_no_known_layout_is_one_line(files, tmp_path, content):
    path = tmp_path / "weights.pt"
    if content == "tensors":
        torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    else:
        path.write_text(content)
    with pytest.raises(UserError) as e:
        C.load_clip(C.ClipSpec(str(files["config"]), "none", str(path)), "cpu")
    msg = str(e.value)
    assert "known layout" in msg and str(path) in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------
# CLI: --clip-views on every text mode and in job files, a checkpoint file through the CLI
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["train", str(GOLDEN / "small_120x90.png"), "--config", str(CONFIGS / "smoke.yaml"), "--out",
                 str(run), "--steps", "4", "--device", "cpu", "--seed", "0", "--quiet"]) == 0
    return run


@pytest.fixture
def seen_views(monkeypatch):
    seen = []
    real = G.TextGuide.__init__

    def init(self, *a, **k):
        seen.append(k.get("views"))
        real(self, *a, **k)

    monkeypatch.setattr(G.TextGuide, "__init__", init)
    return seen


def test_clip_views_option_reaches_every_text_mode(smoke_run, files, tmp_path, seen_views):
    clip = ["--clip-model", str(files["config"]), "--clip-checkpoint", str(files["archive"])]
    common = ["--num", "1", "--device", "cpu", "--quiet", *clip]
    runs = [("text-content", ["--start-t", "2", "2", "4"]), ("text-style", ["--start-t", "2", "2", "4"]),
            ("text-style-transfer", ["--start-t", "2", "4"]), ("text-roi", ["--box", "0,0,20,20", "--iterations", "1"])]
    for k, (mode, extra) in enumerate(runs):
        views = V.VIEW_MODES[k % 3]
        out = tmp_path / mode
        assert main(["edit", str(smoke_run), mode, "--text", "fire", "--clip-views", views, *extra,
                     "--out", str(out), *common]) == 0
        assert seen_views[-1] == views and (out / "grid.png").is_file()
    assert main(["edit", str(smoke_run), "text-style", "--text", "fire", "--start-t", "2", "2", "4",
                 "--out", str(tmp_path / "default"), *common]) == 0
    assert seen_views[-1] == "reference"


def test_clip_views_in_a_job_file(smoke_run, files, tmp_path, seen_views):
    job = {"model": str(smoke_run), "mode": "text-content", "text": "fire", "num": 1, "device": "cpu",
           "quiet": True, "start_t": [2, 2, 4], "clip_model": str(files["config"]),
           "clip_checkpoint": str(files["archive"]), "clip_views": "aspect", "out": str(tmp_path / "a")}
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump([{"edit": job}]))
    assert main(["run", str(path)]) == 0
    assert seen_views == ["aspect"]


def test_bad_clip_views_and_bad_weights_are_one_line(smoke_run, files, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    for argv, needle in [(["--clip-views", "wide"], "--clip-views"),
                         (["--clip-checkpoint", str(bad)], "known layout")]:
        rc = main(["edit", str(smoke_run), "text-content", "--text", "x", "--device", "cpu",
                   "--clip-model", str(files["config"]), *argv, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
