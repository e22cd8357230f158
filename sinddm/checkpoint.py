"""Self-describing model files: everything inference needs, in one safetensors file.

A run folder holds `model.safetensors` (EMA weights, the pyramid levels as uint8
tensors, and JSON metadata: config, pyramid facts, step) for inference, and
`checkpoint.pt` (optimizer, scheduler, RNG states...) for resuming training.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from .config import Config, config_from_dict
from .errors import UserError
from .model import Denoiser, infer_width
from .pyramid import Pyramid
from .schedule import Schedule, blend_gammas, start_timesteps

FORMAT = "sinddm/1"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "checkpoint.pt"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pyramid_tensors(pyramid: Pyramid) -> dict[str, torch.Tensor]:
    out = {}
    for i, level in enumerate(pyramid.levels):
        out[f"pyramid.level.{i}"] = torch.from_numpy(np.ascontiguousarray(level))
        if i > 0:
            out[f"pyramid.blurry.{i}"] = torch.from_numpy(np.ascontiguousarray(pyramid.blurry[i]))
    return out


def pyramid_facts(pyramid: Pyramid, schedule: Schedule | None = None) -> dict[str, Any]:
    schedule = schedule or Schedule.cosine()
    return {
        "input_wh": list(pyramid.input_wh),
        "sizes_hw": [list(s) for s in pyramid.sizes_hw],
        "n_scales": pyramid.n_scales,
        "scale_factor": pyramid.scale_factor,
        "blur_distance": pyramid.blur_distance,
        "start_t": start_timesteps(schedule, pyramid.blur_distance),
    }


def save_model(path: Path, weights: dict[str, torch.Tensor], pyramid: Pyramid, config: Config,
               step: int, source: str = "") -> None:
    """The inference file: EMA weights under `ema.`, the pyramid, metadata as JSON."""
    tensors = {f"ema.{k}": v.detach().float().cpu().contiguous() for k, v in weights.items()}
    tensors.update(pyramid_tensors(pyramid))
    meta = {"format": FORMAT, "config": config.to_dict(), "pyramid": pyramid_facts(pyramid),
            "step": step, "source": source}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata={"sinddm": json.dumps(meta)}))


@dataclass
class LoadedModel:
    """A trained model ready to sample: network, schedule tables and pyramid."""

    model: Denoiser
    pyramid: Pyramid
    config: Config
    step: int
    path: Path

    @property
    def schedule(self) -> Schedule:
        return Schedule.cosine()

    @property
    def start_t(self) -> list[int]:
        return start_timesteps(self.schedule, self.pyramid.blur_distance)

    @property
    def gammas(self) -> torch.Tensor:
        return blend_gammas(self.schedule, self.pyramid.blur_distance)


def resolve_model_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        raise UserError(f"run '{p}': no {MODEL_FILE} inside; is this a training run folder? "
                        "Train first or give a .safetensors model file")
    if not p.exists():
        raise UserError(f"model '{p}': no such file or folder; give a run folder or a .safetensors file")
    return p


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedModel:
    p = resolve_model_path(path)
    if p.suffix == ".pt":
        return _load_from_train_state(p, device)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta_raw = (f.metadata() or {}).get("sinddm")
        tensors = load_file(str(p))
    except Exception as e:  # safetensors raises its own error types across versions
        raise UserError(f"model '{p}': not a readable safetensors file ({e}); re-export or retrain") from None
    if meta_raw is None:
        raise UserError(f"model '{p}': no sinddm metadata; convert reference checkpoints with "
                        "'sinddm convert-reference'")
    try:
        meta = json.loads(meta_raw)
        if meta.get("format") != FORMAT:
            raise UserError(f"model '{p}': format {meta.get('format')!r} is not supported (expected {FORMAT!r})")
        facts = meta["pyramid"]
        n = facts["n_scales"]
        levels = [tensors[f"pyramid.level.{i}"].numpy() for i in range(n)]
        blurry = [None] + [tensors[f"pyramid.blurry.{i}"].numpy() for i in range(1, n)]
        pyramid = Pyramid(input_wh=tuple(facts["input_wh"]), scale_factor=facts["scale_factor"],
                          levels=levels, blurry=blurry, blur_distance=list(facts["blur_distance"]))
        weights = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        config = config_from_dict(meta["config"], source=f"model '{p}'")
        model = Denoiser(infer_width(weights))
        model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"model '{p}': incomplete or inconsistent model file ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}); retrain or re-convert it") from None
    model.to(device).eval()
    return LoadedModel(model=model, pyramid=pyramid, config=config, step=int(meta.get("step", 0)), path=p)


def pyramid_to_state(pyramid: Pyramid) -> dict[str, Any]:
    """The pyramid as plain tensors and numbers (loadable with weights_only=True)."""
    return {"input_wh": list(pyramid.input_wh), "scale_factor": pyramid.scale_factor,
            "blur_distance": list(pyramid.blur_distance),
            "levels": [torch.from_numpy(np.ascontiguousarray(a)) for a in pyramid.levels],
            "blurry": [None] + [torch.from_numpy(np.ascontiguousarray(a)) for a in pyramid.blurry[1:]]}


def pyramid_from_state(state: dict[str, Any]) -> Pyramid:
    return Pyramid(input_wh=tuple(state["input_wh"]), scale_factor=state["scale_factor"],
                   levels=[t.numpy() for t in state["levels"]],
                   blurry=[None] + [t.numpy() for t in state["blurry"][1:]],
                   blur_distance=list(state["blur_distance"]))


def _load_from_train_state(p: Path, device) -> LoadedModel:
    state = load_train_state(p)
    try:
        config = config_from_dict(state["config"], source=f"checkpoint '{p}'")
        pyramid = pyramid_from_state(state["pyramid"])
        model = Denoiser(config.model.dim)
        model.load_state_dict(ema_weights(state["ema"]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"checkpoint '{p}': incomplete or inconsistent training checkpoint ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}); sample from model.safetensors instead") from None
    model.to(device).eval()
    return LoadedModel(model=model, pyramid=pyramid, config=config, step=int(state["step"]), path=p)


def ema_weights(averaged_model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Denoiser weights inside an `AveragedModel` state dict (keys `module.*`)."""
    return {k[len("module."):]: v for k, v in averaged_model_state.items() if k.startswith("module.")}


def load_train_state(p: Path) -> dict[str, Any]:
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint '{p}': cannot be read ({type(e).__name__}); it may be truncated") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint '{p}': not a sinddm training checkpoint of format {FORMAT!r}")
    return state
