"""Self-describing model files: everything inference needs, in one safetensors file.

A run folder holds `model.safetensors` (EMA weights, the pyramid levels as uint8
tensors, and JSON metadata: config, pyramid facts, step) for inference, and
`checkpoint.pt` (optimizer, scheduler, RNG states...) for resuming training, with
the last `train.keep_checkpoints` training checkpoints kept in `checkpoints/` (written
by `sinddm.train_checkpoints`; read, checked and chosen for --resume here).

Crash safety: every file is written to a temporary file in the same folder, flushed
to disk, renamed over the old one and the folder is flushed too (`atomic_write`), so
a crash leaves either the old or the new file, never a torn one (at worst a stale
`.NAME.XXXXXXXX.tmp`, removed when training continues). Training checkpoints carry a checksum of
their contents, so a damaged file (truncated, or bits changed on disk) is detected
on load, and --resume falls back to the newest intact one in `checkpoints/`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, safe_open, save_file

from .config import Config, config_from_dict
from .errors import UserError, check_readable
from .hybrid import build_denoiser
from .model import Denoiser, infer_width
from .pyramid import Pyramid
from .schedule import Schedule, blend_gammas, start_timesteps

FORMAT = "sinddm/1"
MODEL_FILE = "model.safetensors"
TRAIN_STATE_FILE = "checkpoint.pt"
CHECKPOINT_DIR = "checkpoints"     # history of training checkpoints: step_XXXXXXX.pt
HISTORY_RE = re.compile(r"step_(\d+)\.pt")

def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode a plain open() would give a new file (mkstemp's is 0600), or the old file's."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0o022)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, fsync it, rename it over `path`,
    then fsync the folder: after a crash `path` is the old file or the new one, never a mix.

    `write(tmp)` writes the temporary file by name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        try:
            os.chmod(tmp, _file_mode(path))
        except OSError:
            pass
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


_TEMP_RE = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")
_OUR_FILES = re.compile(r"(checkpoint\.pt|model\.safetensors|loss\.csv|loss\.png|config\.yaml|step_\d+\.pt)")


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files an interrupted `atomic_write` left in a run folder."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINT_DIR):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = _TEMP_RE.fullmatch(p.name)
            if m and _OUR_FILES.fullmatch(m.group(1)) and p.is_file():
                p.unlink()
                removed.append(p)
    return removed


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
    check_readable(p, "model")
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
            raise UserError(f"model '{p}': format {meta.get('format')!r} is not supported (expected {FORMAT!r}); "
                            "use the sinddm version that wrote it")
        facts = meta["pyramid"]
        n = facts["n_scales"]
        levels = [tensors[f"pyramid.level.{i}"].numpy() for i in range(n)]
        blurry = [None] + [tensors[f"pyramid.blurry.{i}"].numpy() for i in range(1, n)]
        pyramid = Pyramid(input_wh=tuple(facts["input_wh"]), scale_factor=facts["scale_factor"],
                          levels=levels, blurry=blurry, blur_distance=list(facts["blur_distance"]))
        weights = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
        config = config_from_dict(meta["config"], source=f"model '{p}'")
        model = None
        if weights:  # a training-free model has none
            model = Denoiser(infer_width(weights))
            model.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"model '{p}': incomplete or inconsistent model file ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}); retrain or re-convert it") from None
    model = build_denoiser(model, pyramid, config, source=f"model '{p}'")
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
    try:
        state = load_train_state(p)
    except CheckpointDamaged as e:
        raise CheckpointDamaged(f"{e}; sample from the run's {MODEL_FILE} (or an intact file in "
                                f"{CHECKPOINT_DIR}/) instead") from None
    try:
        config = config_from_dict(state["config"], source=f"checkpoint '{p}'")
        pyramid = pyramid_from_state(state["pyramid"])
        model = Denoiser(config.model.dim)
        model.load_state_dict(ema_weights(state["ema"]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise UserError(f"checkpoint '{p}': incomplete or inconsistent training checkpoint ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}); sample from model.safetensors instead") from None
    model = build_denoiser(model, pyramid, config, source=f"model '{p}'")
    model.to(device).eval()
    return LoadedModel(model=model, pyramid=pyramid, config=config, step=int(state["step"]), path=p)


def ema_weights(averaged_model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Denoiser weights inside an `AveragedModel` state dict (keys `module.*`)."""
    return {k[len("module."):]: v for k, v in averaged_model_state.items() if k.startswith("module.")}


# -- training checkpoints ---------------------------------------------------------------------

class CheckpointDamaged(UserError):
    """A training checkpoint that cannot be used: truncated, changed on disk, or incomplete."""


class CheckpointIncompatible(UserError):
    """A training checkpoint of another format version: not damaged, so no fallback."""


# What --resume needs, and the type each entry must have.
_REQUIRED = {"step": int, "seed": int, "source": str, "config": dict, "pyramid": dict, "model": dict,
             "ema": dict, "optimizer": dict, "lr_scheduler": dict, "rng": dict, "loss_history": list}


def state_checksum(state: dict[str, Any]) -> str:
    """sha256 over every value of a checkpoint (tensors by dtype, shape and bytes), in order.

    torch.load does not verify its zip's CRCs, so without this a bit changed inside a
    tensor would load silently. The "checksum" entry itself is left out.
    """
    h = hashlib.sha256()

    def feed(x) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, dict):
            h.update(b"{")
            for k, v in x.items():
                if k == "checksum" and x is state:
                    continue
                feed(k)
                feed(v)
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed(state)
    return "sha256:" + h.hexdigest()


def train_state_bytes(state: dict[str, Any]) -> bytes:
    """`state` with its checksum, serialised by torch.save."""
    state = dict(state)
    state.pop("checksum", None)
    state["checksum"] = state_checksum(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_train_state(p: Path) -> dict[str, Any]:
    """Read and check a training checkpoint.

    Raises CheckpointDamaged (unreadable, truncated, checksum mismatch, entries missing)
    or CheckpointIncompatible (another format version); both are UserErrors.
    """
    p = Path(p)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointDamaged(f"checkpoint '{p}': no such file") from None
    except Exception as e:
        raise CheckpointDamaged(f"checkpoint '{p}': cannot be read ({type(e).__name__}); it is truncated or "
                                "corrupt") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointDamaged(f"checkpoint '{p}': not a sinddm training checkpoint (no format tag)")
    if state["format"] != FORMAT:
        raise CheckpointIncompatible(
            f"checkpoint '{p}': format {state['format']!r} is not supported by this version of sinddm "
            f"(it reads {FORMAT!r}); use the sinddm version that wrote it, or start a new run")
    saved_sum = state.get("checksum")
    if saved_sum is not None and saved_sum != state_checksum(state):
        raise CheckpointDamaged(f"checkpoint '{p}': checksum mismatch; the file was changed or damaged on disk")
    missing = [k for k, t in _REQUIRED.items() if not isinstance(state.get(k), t)]
    if missing:
        raise CheckpointDamaged(f"checkpoint '{p}': incomplete training checkpoint (missing or invalid: "
                                f"{', '.join(missing)})")
    return state


def history_paths(run_dir: Path) -> list[tuple[int, Path]]:
    """`checkpoints/step_XXXXXXX.pt` files as (step, path), newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = HISTORY_RE.fullmatch(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def history_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def resume_candidates(run_dir: Path) -> list[Path]:
    """Where --resume looks, in order: checkpoint.pt, then the history, newest first."""
    return [Path(run_dir) / TRAIN_STATE_FILE] + [p for _, p in history_paths(run_dir)]


def load_latest_train_state(run_dir: Path) -> tuple[dict[str, Any], Path, str | None]:
    """The newest intact training checkpoint of a run: (state, path, note).

    `note` is None when checkpoint.pt itself was used; otherwise one line saying which file
    was used and why. A checkpoint of another format version stops the search (it is not
    damage: falling back would silently throw away the newer run's progress).
    """
    run_dir = Path(run_dir)
    problems = []
    for p in resume_candidates(run_dir):
        try:
            state = load_train_state(p)
        except CheckpointDamaged as e:
            problems.append((p, str(e)))
            continue
        if not problems:
            return state, p, None
        first, why = problems[0]
        why = why.split(": ", 1)[-1]
        skipped = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        note = (f"{first.relative_to(run_dir)}: {why}{skipped}; resuming from "
                f"{p.relative_to(run_dir)} (step {int(state['step'])}) instead")
        return state, p, note
    if len(problems) == 1 and not Path(problems[0][0]).exists():
        if not any((run_dir / f).exists() for f in (MODEL_FILE, "config.yaml")):
            raise CheckpointDamaged(f"--resume: '{run_dir}' is not a sinddm run folder (no {TRAIN_STATE_FILE}); "
                                    "give the run's folder as --out, or start a new run without --resume")
        raise CheckpointDamaged(f"--resume: no {TRAIN_STATE_FILE} in '{run_dir}' (stopped before its first "
                                "checkpoint: nothing to resume); start it again with --overwrite")
    details = "; ".join(f"{p.relative_to(run_dir)}: {w.split(': ', 1)[-1]}" for p, w in problems)
    raise CheckpointDamaged(f"--resume: no intact training checkpoint in '{run_dir}' ({details}); start again "
                            "with --overwrite")
