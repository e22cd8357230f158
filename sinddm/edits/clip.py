"""CLIP weights for text guidance: find them offline-first, load an open_clip model once per process.

`load_clip(ClipSpec, device)` gives an open_clip model + tokenizer. Weights come from
open_clip's download cache or a local file; nothing is downloaded when HF_HUB_OFFLINE=1 (or
when the weights are already cached), and a missing file is a one-line `UserError` that says
how to provide it. OpenAI's original files (TorchScript archives, or state dicts with OpenAI's
integer entries) load too, always with QuickGELU and OpenAI's normalisation constants; other
weights take both from the pretrained tag (the model config's own without one).
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .clip_views import patch_embed_as_matmul
from ..errors import UserError

DEFAULT_CLIP_MODEL = "ViT-B-32"
DEFAULT_CLIP_PRETRAINED = "openai"
CACHE_ENV = "SINDDM_CLIP_CACHE"   # optional: open_clip's cache_dir (default: open_clip's own)
_RANDOM_TAGS = ("none", "random", "")


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP: an open_clip model name (or a JSON config file, or 'local-dir:PATH'), a
    pretrained tag of that model ('none': random weights, for tests and timing), and an optional
    local weights file that replaces the download (the tag still decides QuickGELU and the
    normalisation, except for OpenAI's own files)."""

    model: str = DEFAULT_CLIP_MODEL
    pretrained: Optional[str] = DEFAULT_CLIP_PRETRAINED
    checkpoint: Optional[str] = None

    @classmethod
    def from_args(cls, args) -> "ClipSpec":
        return cls(model=getattr(args, "clip_model", None) or DEFAULT_CLIP_MODEL,
                   pretrained=getattr(args, "clip_pretrained", DEFAULT_CLIP_PRETRAINED),
                   checkpoint=getattr(args, "clip_checkpoint", None))


@dataclass(frozen=True)
class ResolvedClip:
    name: str                      # open_clip model name
    file: Optional[str] = None     # local weights file (None: random, a download, or a local-dir)
    tag: Optional[str] = None      # pretrained tag to download (only when `file` is None)
    quick_gelu: bool = False       # force QuickGELU (OpenAI weights need it)
    random: bool = False
    mean: Optional[tuple] = None   # the tag's normalisation (None: the model config's own)
    std: Optional[tuple] = None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _offline() -> bool:
    return _truthy("HF_HUB_OFFLINE")


def _cache_dir() -> Optional[str]:
    return os.environ.get(CACHE_ENV) or None


REACH_TIMEOUT = 3.0                       # seconds for the "can we reach the download host?" check
_REACHABLE: dict[tuple[str, int], bool] = {}   # per process: (host, port) -> answer


def _download_url(tag_cfg: dict) -> str:
    """Where open_clip will fetch a tag's weights: the Hugging Face Hub (HF_ENDPOINT, if set) when
    the tag has hub weights and huggingface_hub is installed, else the tag's plain URL."""
    import importlib.util

    if tag_cfg.get("hf_hub") and importlib.util.find_spec("huggingface_hub") is not None:
        return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return tag_cfg.get("url", "")


def _host_port(url: str) -> Optional[tuple[str, int]]:
    """The (host, port) a request to `url` first connects to: the proxy's, when one applies."""
    import urllib.request
    from urllib.parse import urlsplit

    defaults = {"http": 80, "https": 443, "socks5": 1080, "socks5h": 1080, "socks4": 1080}
    u = urlsplit(url)
    if not u.hostname:
        return None
    try:
        proxies = urllib.request.getproxies()
        proxy = proxies.get(u.scheme) or proxies.get("all")
        if proxy and not urllib.request.proxy_bypass(u.hostname):
            p = urlsplit(proxy if "://" in proxy else "http://" + proxy)
            if p.hostname:
                return p.hostname, p.port or defaults.get(p.scheme, 80)
        return u.hostname, u.port or defaults.get(u.scheme, 443)
    except ValueError:   # a malformed port
        return None


def _reachable(host: str, port: int, timeout: float = REACH_TIMEOUT) -> bool:
    """Whether a TCP connection to host:port opens within `timeout` seconds (name lookup included:
    it runs in a daemon thread, so a hanging resolver cannot stall the caller)."""
    import socket
    import threading

    key = (host, port)
    if key in _REACHABLE:
        return _REACHABLE[key]
    ok = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except Exception:
            pass

    t = threading.Thread(target=probe, name="sinddm-clip-reach", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    _REACHABLE[key] = bool(ok)
    return _REACHABLE[key]


@contextlib.contextmanager
def _quiet_logging(level: int):
    """During the `with` block, log records up to `level` are dropped (open_clip logs on the root
    logger, huggingface_hub warns on each retry); afterwards the logging state is as before, without
    the root handler that `logging.error()` installs on first use."""
    import logging

    root = logging.getLogger()
    disabled, handlers = logging.root.manager.disable, list(root.handlers)
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(disabled)
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)


def _model_name(model: str) -> str:
    """The open_clip name for `model`; a JSON config file is registered under its stem."""
    import open_clip

    if model.startswith("local-dir:"):
        if not (Path(model[len("local-dir:"):]) / "open_clip_config.json").is_file():
            raise UserError(f"--clip-model '{model}': no open_clip_config.json in that folder")
        return model
    if model.startswith("hf-hub:"):
        return model
    if model.lower().endswith(".json"):
        p = Path(model)
        if not p.is_file():
            raise UserError(f"--clip-model '{model}': no such config file")
        open_clip.add_model_config(p)
        if p.stem not in open_clip.list_models():
            raise UserError(f"--clip-model '{model}': not an open_clip model config "
                            "(needs embed_dim, vision_cfg and text_cfg)")
        return p.stem
    name = model.replace("/", "-")
    if name not in open_clip.list_models():
        raise UserError(f"--clip-model '{model}': unknown open_clip model; e.g. ViT-B-32, ViT-B-16, ViT-L-14, "
                        "or a model config .json file")
    return name


def _hf_file(tag_cfg: dict) -> tuple[str, list[str]] | None:
    """(repo id, candidate file names) of a tag's Hugging Face Hub weights."""
    hub = tag_cfg.get("hf_hub", "")
    if not hub:
        return None
    repo, fname = os.path.split(hub)
    return repo, [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def _cached_weights(tag_cfg: dict, cache_dir: Optional[str]) -> Optional[str]:
    """A tag's weights file if open_clip's caches already hold it (never touches the network)."""
    hf = _hf_file(tag_cfg)
    if hf is not None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, names = hf
            for name in names:
                hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
    url = tag_cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _missing_message(name: str, tag: str, tag_cfg: dict, why: str = "") -> str:
    hf = _hf_file(tag_cfg)
    files = []
    if tag_cfg.get("url"):
        files.append(os.path.basename(tag_cfg["url"]))
    if hf:
        files.append(f"{hf[1][0]} from huggingface.co/{hf[0]}")
    where = " or ".join(files) or "its weights file"
    return (f"CLIP weights for {name} (pretrained '{tag}') are not in the local cache{why}: run once on a "
            f"machine with internet access to cache them, or pass --clip-checkpoint PATH to a local copy "
            f"({where})")


def resolve_clip(spec: ClipSpec) -> ResolvedClip:
    """Find the weights without loading them; raises `UserError` if they cannot be had."""
    import open_clip

    name = _model_name(spec.model)
    tag = spec.pretrained
    tag = None if tag is None or str(tag).strip().lower() in _RANDOM_TAGS else str(tag)
    builtin = not name.startswith(("local-dir:", "hf-hub:"))
    tag_cfg = open_clip.get_pretrained_cfg(name, tag) if (tag and builtin) else {}
    quick = bool(tag_cfg.get("quick_gelu", False))
    norm = {k: tuple(tag_cfg[k]) for k in ("mean", "std") if tag_cfg.get(k)}
    if spec.checkpoint:
        p = Path(spec.checkpoint)
        if not p.is_file():
            raise UserError(f"--clip-checkpoint '{p}': no such file; give the CLIP weights file for {name}")
        return ResolvedClip(name=name, file=str(p), quick_gelu=quick, **norm)
    if not builtin:
        return ResolvedClip(name=name)
    if tag is None:
        return ResolvedClip(name=name, random=True)
    if not tag_cfg:
        known = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise UserError(f"--clip-pretrained '{tag}': not a pretrained tag of {name} (known: {known}); "
                        "or give --clip-checkpoint PATH")
    cached = _cached_weights(tag_cfg, _cache_dir())
    if cached:
        return ResolvedClip(name=name, file=cached, quick_gelu=quick, **norm)
    if _offline():
        raise UserError(_missing_message(name, tag, tag_cfg, " and HF_HUB_OFFLINE is set"))
    where = _host_port(_download_url(tag_cfg))
    if where is not None and not _reachable(*where):   # offline: fail now, not after a minute of retries
        raise UserError(_missing_message(name, tag, tag_cfg, f" and the download failed ({where[0]} is unreachable)"))
    return ResolvedClip(name=name, tag=tag, quick_gelu=quick)


def _is_torchscript(path: str) -> bool:
    """OpenAI's original .pt files are TorchScript archives (torch.load(weights_only) refuses them)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")   # integers in OpenAI's files


def _layout_error(path: str) -> UserError:
    return UserError(f"--clip-checkpoint '{path}': not CLIP weights in a known layout (OpenAI's TorchScript .pt, an "
                     "OpenAI or open_clip state dict, or open_clip's .safetensors/.bin)")


def _openai_state_dict(path: str) -> Optional[dict]:
    """The weights of an OpenAI-layout file (its TorchScript archive, or a state dict with OpenAI's
    integer entries) without those integers; None for other CLIP files (open_clip loads those);
    a `UserError` for a file without CLIP weights."""
    if path.endswith((".npz", ".npy")):
        return None                                  # big_vision weights: open_clip's own loader
    script = _is_torchscript(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                state = dict.fromkeys(f.keys())
        elif script:
            with warnings.catch_warnings():     # torch's deprecation notice for TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(path, map_location="cpu").state_dict()
        else:   # memory-mapped: only the keys are needed unless the file is OpenAI's
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception:
        raise _layout_error(path) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(str(k).startswith(("visual.", "module.visual.", "image_encoder."))
                                              for k in state):
        raise _layout_error(path)
    if not (script or any(k in state for k in _OPENAI_EXTRAS)):
        return None
    return {k.removeprefix("module."): v for k, v in state.items() if k not in _OPENAI_EXTRAS}


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenizer: Callable
    name: str
    image_size: tuple[int, int]
    mean: torch.Tensor     # [1, 3, 1, 1] on the model's device
    std: torch.Tensor
    device: torch.device
    dtype: torch.dtype = torch.float32
    random_weights: bool = False
    _text_cache: dict = field(default_factory=dict)
    _graphs: dict = field(default_factory=dict)    # CUDA-graphed image encoders by input shape

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings [n, D] (float32), cached per list of strings."""
        key = tuple(texts)
        if key not in self._text_cache:
            tokens = self.tokenizer(list(texts)).to(self.device)
            self._text_cache[key] = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return self._text_cache[key]


_CLIP_CACHE: dict[tuple, LoadedClip] = {}


def _cache_key(spec: ClipSpec, device: torch.device, dtype: torch.dtype) -> tuple:
    model = spec.model
    if model.lower().endswith(".json") and Path(model).is_file():
        model = str(Path(model).resolve())
    ckpt = str(Path(spec.checkpoint).resolve()) if spec.checkpoint else None
    return (model, spec.pretrained, ckpt, str(device), str(dtype), _cache_dir())


def load_clip(spec: ClipSpec = ClipSpec(), device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> LoadedClip:
    """The CLIP model for `spec` on `device` in `dtype`, loaded once per process (`sinddm run`
    reuses it). bfloat16 weights are what precision 'fast' uses on CUDA."""
    device = torch.device(device)
    key = _cache_key(spec, device, dtype)
    if key in _CLIP_CACHE:
        return _CLIP_CACHE[key]
    import open_clip

    r = resolve_clip(spec)
    openai = _openai_state_dict(r.file) if r.file else None
    norm = {k: v for k, v in (("mean", r.mean), ("std", r.std)) if v is not None}
    try:
        import logging

        if openai is not None:
            # OpenAI's weights were trained with QuickGELU and OpenAI's constants, whatever the tag says;
            # (open_clip's "initialized randomly" warning is about the moment before they are loaded)
            with _quiet_logging(logging.WARNING):
                model = open_clip.create_model(r.name, pretrained=None, force_quick_gelu=True, force_preprocess_cfg={
                    "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD})
            model.load_state_dict(openai, strict=True)
        else:
            # open_clip warns on the root logger (random weights: sinddm says it once, below), and a
            # failing download logs huggingface_hub's retries and open_clip's error: the UserError
            # below says it in one line
            quiet = (_quiet_logging(logging.WARNING) if r.random else
                     _quiet_logging(logging.CRITICAL) if r.tag else contextlib.nullcontext())
            with quiet:
                model = open_clip.create_model(r.name, pretrained=r.file or r.tag, force_quick_gelu=r.quick_gelu,
                                               force_preprocess_cfg=norm or None, cache_dir=_cache_dir())
        tokenizer = open_clip.get_tokenizer(r.name)
    except UserError:
        raise
    except Exception as e:
        detail = " ".join(str(e).split())[:160]
        if r.tag:
            import open_clip as oc
            raise UserError(_missing_message(r.name, r.tag, oc.get_pretrained_cfg(r.name, r.tag),
                                             f" and the download failed ({type(e).__name__})")) from None
        raise UserError(f"CLIP {r.name}: cannot load weights '{r.file}' ({type(e).__name__}: {detail}); "
                        "check --clip-model matches the --clip-checkpoint file") from None
    if r.random:
        import sys

        print(f"warning: CLIP {r.name} has random weights (--clip-pretrained none): the guidance is "
              "meaningless, for tests and timing only", file=sys.stderr)
    model = model.to(device).eval().float()
    model.requires_grad_(False)
    patch_embed_as_matmul(model)
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    cfg = open_clip.get_model_preprocess_cfg(model)     # the model's own (a tag's, when a tag named it)
    mean, std = cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN, cfg.get("std") or open_clip.OPENAI_DATASET_STD
    loaded = LoadedClip(model=model, tokenizer=tokenizer, name=r.name, image_size=size,
                        mean=torch.tensor(mean, device=device).view(1, 3, 1, 1),
                        std=torch.tensor(std, device=device).view(1, 3, 1, 1),
                        device=device, random_weights=r.random)
    loaded.text_features([""])       # (warms the tokenizer)
    if dtype != torch.float32:
        loaded._text_cache.clear()
        model.to(dtype)
        loaded.dtype = dtype
    _CLIP_CACHE[key] = loaded
    return loaded
